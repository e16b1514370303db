"""The log viewer: every log record of this run, newest at the bottom."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer, Header, Log

from rescue_app.tui import keymap
from rescue_app.tui.screens.base import LiferaftScreen


class LogScreen(LiferaftScreen):
    BINDINGS = keymap.LOG

    def compose(self) -> ComposeResult:
        yield Header()
        yield Log(id="log", highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Log"
        self.action_reload()

    def action_reload(self) -> None:
        view = self.query_one(Log)
        view.clear()
        lines = self.lapp.log_handler.lines()
        view.write_lines(lines or ["(nothing logged yet)"])
        view.focus()
