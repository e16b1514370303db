"""Source: choose where the images are (attached media, the default, a typed path,
or the network screen for a URL)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.widgets import Footer, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from rescue_app.errors import LiferaftError
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import RepositoryOpeningScreen
from rescue_app.tui.sources import (
    RepositorySource,
    ScanContext,
    discover_sources,
    source_for_typed,
)


class SourceScreen(RepositoryOpeningScreen):
    BINDINGS = keymap.SOURCE

    def __init__(self, purpose: str = "restore") -> None:
        super().__init__()
        self.purpose = purpose  # "restore" or "verify"
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "Where are the images? Choose a repository and press Enter.", classes="section"
        )
        yield OptionList(id="source-list")
        yield Static("Or type the path of a repository folder:", classes="section")
        yield Input(placeholder="/mnt/usb/liferaft", id="source-path")
        yield Static("", id="source-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Restore: source" if self.purpose == "restore" else "Verify: source"
        self.query_one("#source-list", OptionList).focus()
        self.query_one("#source-path", Input).value = self.lapp.last_typed_repository
        if self.lapp.sources_scanned:
            self.show_sources(self.lapp.sources)
        else:
            self.action_rescan()

    def show_sources(self, sources: list[RepositorySource]) -> None:
        self.lapp.sources = sources
        self.lapp.sources_scanned = True
        box = self.query_one("#source-list", OptionList)
        box.clear_options()
        for i, source in enumerate(sources):
            detail = f"  ({source.kind}{', ' + source.detail if source.detail else ''})"
            box.add_option(Option(source.label + detail, id=str(i)))
        if not sources:
            box.add_option(
                Option(
                    "No repository found on attached media; type a path below.",
                    id="none",
                    disabled=True,
                )
            )
        box.add_option(
            Option("Network: set up the network, type a URL and a password...", id="network")
        )
        box.highlighted = 0 if sources else len(box.options) - 1
        self.set_status("")

    def set_status(self, text: str) -> None:
        self.query_one("#source-status", Static).update(text)

    def action_rescan(self) -> None:
        self.set_status("Scanning attached disks (read-only)...")
        self.scan()

    def action_network(self) -> None:
        from rescue_app.tui.screens.network import NetworkScreen

        self.app.push_screen(NetworkScreen(purpose=self.purpose))

    def action_focus_path(self) -> None:
        self.query_one("#source-path", Input).focus()

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def scan(self) -> None:
        app = self.lapp
        disks = app.engine.list_disks()
        sources = discover_sources(
            ScanContext(app.engine, disks, app.profile.repository, app.scan_filter())
        )
        self.app.call_from_thread(self.show_sources, sources)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id == "network":
            self.action_network()
        elif event.option.id and event.option.id.isdigit():
            self.choose(self.lapp.sources[int(event.option.id)])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = event.value.strip()
        if not path:
            return
        try:
            source = source_for_typed(path)
        except LiferaftError as exc:  # a malformed URL: say so, keep the screen
            self.lapp.show_error(exc)
            return
        self.lapp.last_typed_repository = path
        self.choose(source)

    def choose(self, source: RepositorySource) -> None:
        if self.busy:
            return
        self.busy = True
        self.show_opening(f"Opening {source.label}...")
        self.open_source(source)

    def show_opening(self, text: str) -> None:
        self.set_status(text)
