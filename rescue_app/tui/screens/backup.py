"""Back up: choose disks, a destination repository and a name; then progress."""

from __future__ import annotations

import socket

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Select, Static
from textual.widgets.selection_list import Selection

from rescue_app.engine import LUKS_TYPE, NAME_RE, BlockDisk, Repository
from rescue_app.errors import LiferaftError, UsageError
from rescue_app.tui import keymap
from rescue_app.tui.checklist import CheckList, MarkedCheckbox
from rescue_app.tui.screens.base import LiferaftScreen
from rescue_app.tui.screens.question import QuestionModal
from rescue_app.tui.sources import (
    MediaSource,
    RepositorySource,
    ScanContext,
    discover_sources,
    source_for_typed,
)


def backup_candidates(disks: list[BlockDisk]) -> list[BlockDisk]:
    """Disks worth backing up: not the rescue system's own disk or boot medium."""
    return [d for d in disks if not d.ours]


def default_name() -> str:
    host = socket.gethostname().split(".")[0]
    return host if NAME_RE.match(host) else "backup"


class BackupScreen(LiferaftScreen):
    BINDINGS = keymap.BACKUP

    def __init__(self) -> None:
        super().__init__()
        self.disks: list[BlockDisk] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="backup-form"):
            yield Static("Disks to back up (Space ticks [x] / unticks [ ]):", classes="section")
            yield CheckList(id="backup-disks")
            yield Static("Destination repository (found on attached media):", classes="section")
            yield Select[int]([], prompt="choose, or type a folder below", id="backup-dest")
            yield Input(placeholder="or a folder path, e.g. /mnt/nas/liferaft", id="backup-path")
            yield Static("Image name:", classes="section")
            yield Input(value=default_name(), id="backup-name")
            # shown when a disk holds a LUKS volume (capture --unlock)
            yield MarkedCheckbox(
                "Open LUKS volumes and store the used blocks inside "
                "(asks the passphrase; encrypted repository only)",
                id="backup-unlock",
            )
        with Horizontal(classes="buttons"):
            yield Button("Start backup (ctrl+n)", id="start", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Back up"
        self.query_one("#backup-path", Input).value = self.lapp.last_typed_repository
        self.query_one("#backup-disks").focus()
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load(self) -> None:
        app = self.lapp
        disks = app.engine.list_disks()
        refusals = {d.path: app.engine.capture_refusals(d) for d in backup_candidates(disks)}
        sources = app.sources
        if not app.sources_scanned:
            sources = discover_sources(
                ScanContext(app.engine, disks, app.profile.repository, app.scan_filter())
            )
        self.app.call_from_thread(self.show, disks, sources, refusals)

    def show(
        self,
        disks: list[BlockDisk],
        sources: list[RepositorySource],
        refusals: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.lapp.sources = sources
        self.lapp.sources_scanned = True
        self.disks = backup_candidates(disks)
        picker = self.query_one("#backup-disks", CheckList)
        picker.clear_options()
        for disk in self.disks:
            refused = (refusals or {}).get(disk.path, ())
            note = ""
            if disk.incomplete_restore:
                note = f"  ({disk.incomplete_restore})"
            if refused:
                note = f"  (cannot back up: {refused[0]})"
            picker.add_option(
                Selection(disk.describe() + note, disk.path, False, disabled=bool(refused))
            )
        unlock = self.query_one("#backup-unlock", MarkedCheckbox)
        unlock.display = any(p.fstype == LUKS_TYPE for d in self.disks for p in d.partitions)
        dest = self.query_one("#backup-dest", Select)
        dest.set_options([(f"{s.label} ({s.kind})", i) for i, s in enumerate(sources)])

    def destination(self) -> RepositorySource:
        typed = self.query_one("#backup-path", Input).value.strip()
        if typed:
            source = source_for_typed(typed)
            self.lapp.last_typed_repository = typed
            return source
        value = self.query_one("#backup-dest", Select).value
        if isinstance(value, int):
            return self.lapp.sources[value]
        raise UsageError("choose a destination repository or type a folder path")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "start":
            self.action_start()

    def action_start(self) -> None:
        try:
            devices = list(self.query_one("#backup-disks", CheckList).selected)
            if not devices:
                raise UsageError("tick at least one disk to back up (Space on a disk)")
            name = self.query_one("#backup-name", Input).value.strip()
            if not NAME_RE.match(name):
                raise UsageError(
                    f"image name {name!r} is not allowed",
                    hint="use letters, digits, '.', '_' or '-'",
                )
            source = self.destination()
            if isinstance(source, MediaSource) and source.disk in devices:
                raise UsageError(
                    f"the destination is on {source.disk}, which is being backed up",
                    hint="choose a repository on another disk",
                )
        except LiferaftError as exc:  # bad name, malformed URL, destination on a source
            self.lapp.show_error(exc)
            return
        from rescue_app.tui.screens.progress import backup_job

        app = self.lapp
        chosen = [d for d in self.disks if d.path in devices]
        box = self.query_one("#backup-unlock", MarkedCheckbox)
        unlock = bool(box.display and box.value)
        summary = "\n".join(
            [
                "Disks to read (nothing is written to them):",
                *[f"  [x] {d.describe()}" for d in chosen],
                f"Repository: {source.label} ({source.kind})",
                f"Image name: {name}",
                *(["LUKS volumes: opened, used blocks inside stored"] if unlock else []),
            ]
        )

        def open_repo() -> Repository:
            repo = source.open(app.engine, writable=True)
            app.call_from_thread(app.use_source, source)
            return repo

        def answered(start: bool | None) -> None:
            if start:
                self.app.push_screen(backup_job(app.engine, open_repo, name, devices, unlock))

        self.app.push_screen(
            QuestionModal("Start this backup?", summary, yes="Back up", no="Change"), answered
        )
