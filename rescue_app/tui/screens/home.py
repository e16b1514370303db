"""Home: the disks and image sources at a glance, and what can be done."""

from __future__ import annotations

import os

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from rescue_app.engine import BlockDisk, human_size
from rescue_app.errors import LiferaftError
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import LiferaftScreen
from rescue_app.tui.sources import ScanContext, discover_sources

ACTIONS = [
    ("restore", "r", "Restore an image onto a disk"),
    ("backup", "b", "Back up disks into a repository"),
    ("verify", "v", "Verify an image"),
    ("network", "n", "Network and network repositories"),
    ("disks", "d", "Disks"),
    ("shell", "s", "Shell"),
    ("log", "l", "Log"),
    ("power", "p", "Reboot / Power off"),
]


def disk_state(disk: BlockDisk) -> str:
    state = "in use: " + "; ".join(disk.in_use) if disk.in_use else "free"
    if disk.incomplete_restore:
        state = f"{disk.incomplete_restore}; {state}"
    return state


class HomeScreen(LiferaftScreen):
    BINDINGS = keymap.HOME

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Disks", classes="section")
        table: DataTable[str] = DataTable(id="home-disks", cursor_type="row", zebra_stripes=False)
        yield table
        yield Static("Image sources", classes="section")
        yield Static(self._sources_text(scanning=True), id="home-sources", markup=False)
        yield OptionList(
            *[Option(Text(f"{key}  {text}"), id=name) for name, key, text in ACTIONS],
            id="home-actions",
        )
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#home-disks", DataTable)
        table.add_columns("Disk", "Size", "What", "State")
        self.query_one("#home-actions", OptionList).focus()
        self.refresh_disks(rescan=not self.lapp.sources_scanned)

    def on_screen_resume(self) -> None:
        # Back home from any flow: unmount the repository medium it left open.
        if self.lapp.open_source is not None:
            self.lapp.release_in_worker(then=self.refresh_disks)

    def _sources_text(self, scanning: bool = False) -> str:
        app = self.lapp
        lines = []
        if app.profile.repository:
            lines.append(f"Default repository: {app.profile.repository}")
        else:
            lines.append("Default repository: none in the profile")
        found = [s for s in app.sources if s.kind == "attached media"]
        if scanning and not app.sources_scanned:
            lines.append("Attached media: scanning...")
        elif found:
            lines.append(
                "Attached media: "
                + ", ".join(s.label for s in found[:3])
                + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            )
        else:
            lines.append("Attached media: no repository found")
        return "\n".join(lines)

    def refresh_disks(self, rescan: bool = False) -> None:
        self.load_disks(rescan)

    @work(thread=True, exclusive=True, exit_on_error=False, group="home")
    def load_disks(self, rescan: bool) -> None:
        app = self.lapp
        disks = app.engine.list_disks()
        self.app.call_from_thread(self._show_disks, disks)
        if rescan:
            ctx = ScanContext(app.engine, disks, app.profile.repository, app.scan_filter())
            sources = discover_sources(ctx)
            self.app.call_from_thread(self._show_sources, sources)

    def _show_disks(self, disks: list[BlockDisk]) -> None:
        self.lapp.disks = disks
        table = self.query_one("#home-disks", DataTable)
        table.clear()
        for disk in disks:
            what = disk.model or (
                f"loop {os.path.basename(disk.backing_file)}"
                if disk.backing_file
                else disk.transport
            )
            if disk.serial:
                what += f" {disk.serial}"
            table.add_row(
                disk.path, human_size(disk.size), what[:26], disk_state(disk)[:30], key=disk.path
            )
        if not disks:
            table.add_row("-", "", "no disks found", "")

    def _show_sources(self, sources: list) -> None:  # type: ignore[type-arg]
        self.lapp.sources = sources
        self.lapp.sources_scanned = True
        self.query_one("#home-sources", Static).update(self._sources_text())

    # ------------------------------------------------------------ actions

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        action = event.option.id
        if action == "log":
            self.lapp.action_show_log()
        elif action:
            getattr(self, f"action_{action}")()

    def action_restore(self) -> None:
        from rescue_app.tui.screens.source import SourceScreen

        self.app.push_screen(SourceScreen(purpose="restore"))

    def action_verify(self) -> None:
        from rescue_app.tui.screens.source import SourceScreen

        self.app.push_screen(SourceScreen(purpose="verify"))

    def action_backup(self) -> None:
        from rescue_app.tui.screens.backup import BackupScreen

        self.app.push_screen(BackupScreen())

    def action_network(self) -> None:
        from rescue_app.tui.screens.network import NetworkScreen

        self.app.push_screen(NetworkScreen(purpose="restore"))

    def action_disks(self) -> None:
        from rescue_app.tui.screens.disks import DisksScreen

        self.app.push_screen(DisksScreen())

    def action_rescan(self) -> None:
        self.lapp.sources_scanned = False
        self.query_one("#home-sources", Static).update(self._sources_text(scanning=True))
        self.refresh_disks(rescan=True)

    def action_shell(self) -> None:
        shell = os.environ.get("SHELL") or "/bin/bash"
        with self.app.suspend():
            print("liferaft: type `exit` to return to the menu.")
            try:
                self.lapp.engine.run_shell(shell)
            except LiferaftError as exc:
                print(f"liferaft: {exc.message}")
        self.refresh_disks()

    def action_power(self) -> None:
        from rescue_app.tui.screens.power import PowerModal

        self.app.push_screen(PowerModal())

    def action_quit_app(self) -> None:
        self.app.exit(0)
