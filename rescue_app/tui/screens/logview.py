"""The log viewer: every log record of this run, newest at the bottom."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Log

from rescue_app.tui.screens.base import LiferaftScreen


class LogScreen(LiferaftScreen):
    BINDINGS = [
        Binding("escape,q,l", "app.pop_screen", "Back"),
        Binding("r", "reload", "Refresh"),
    ]

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
