"""The Disks screen: what `liferaft disks` prints, with the reasons disks are busy."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from rescue_app.engine import format_disks_table
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import LiferaftScreen


class DisksScreen(LiferaftScreen):
    BINDINGS = keymap.DISKS

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="disks-scroll"):
            yield Static("Reading disks...", id="disks-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Disks"
        self.query_one("#disks-scroll").focus()
        self.action_reload()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def action_reload(self) -> None:
        disks = self.lapp.engine.list_disks()
        text = format_disks_table(disks) if disks else "No disks found."
        self.app.call_from_thread(self.query_one("#disks-text", Static).update, text)
