"""Browse files: an image's partitions and folders, marked files copied out.

The image is mounted read-only (``Engine.mount_image``) on a temporary folder
in a worker when the screen opens and released by the app in a worker when
it closes (``LiferaftApp.release_image_mount``). Listing a folder and the copy
(``Engine.copy_from_image``, a job on the progress screen) read through that
one mount. Keys: Enter opens, Backspace goes up, Space marks, c copies.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from rescue_app.engine import BlockDisk, Engine, Repository, Role, human_duration, human_size
from rescue_app.errors import LiferaftError
from rescue_app.progress import CancelToken, ProgressCallback
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import ImageScreen
from rescue_app.tui.screens.progress import Job, ProgressScreen, Summary

if TYPE_CHECKING:  # the browse code is imported when an image is first browsed
    from rescue_app.engine import BrowsePartition, DirEntry, ExtractResult, ImageMount


def why_no_files(part: BrowsePartition, mount: ImageMount | None) -> str:
    """Why a partition's files cannot be shown ("" when they can)."""
    fs = part.fstype or "no filesystem"
    if part.swap:
        return "swap: no files"
    if part.files is None:
        return f"{fs}: liferaft cannot show its files" if part.fstype else "no filesystem"
    if mount is not None and part.folder not in mount.mounted:
        return f"{fs}: cannot be opened on this machine"
    return ""


def partition_line(part: BrowsePartition, mount: ImageMount | None) -> str:
    name = part.lv or part.folder
    fs = (part.fstype or "-")[:6]
    # Why there are no files, else the label: the line fits 80 columns.
    said = why_no_files(part, mount) or (f"'{part.label}'" if part.label else "")
    return f"{name[:14]:<14} {fs:<6} {human_size(part.size):>9}  {said}".rstrip()


def entry_line(entry: DirEntry, marked: bool) -> str:
    box = "[x]" if marked else "[ ]"
    name = entry.name + ("/" if entry.kind == "dir" else "@" if entry.kind == "symlink" else "")
    size = "" if entry.kind == "dir" else human_size(entry.size)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.mtime))
    if len(name) > 38:  # the line fits 80 columns
        name = name[:37] + "~"
    return f"{box} {name:<38} {size:>10}  {when}"


def join_rel(rel: str, name: str) -> str:
    return f"{rel.rstrip('/')}/{name}"


def mounted_folders(disks: list[BlockDisk], below: str) -> list[tuple[str, str]]:
    """(folder, description) of every mounted filesystem a copy could go to:
    not the boot medium, not swap, not the browse mount's own."""
    out = []
    for disk in disks:
        if Role.BOOT_MEDIUM in disk.roles:
            continue
        for p in disk.partitions:
            for point in p.mountpoints:
                if not point or point == "[SWAP]" or point.startswith(below):
                    continue
                label = f" '{p.label}'" if p.label else ""
                out.append((point, f"{p.path}, {p.fstype or '?'}{label}, {human_size(p.size)}"))
    return out


@dataclass(frozen=True)
class Marked:
    path: str  # inside the partition, "/docs/readme.txt"
    entry: DirEntry


class BrowseScreen(ImageScreen):
    BINDINGS = keymap.BROWSE

    def __init__(self, repo: Repository, ref: str) -> None:
        super().__init__(repo, ref)
        self.image_mount: ImageMount | None = None
        self.closing = False
        self.part: BrowsePartition | None = None  # None: the partition list
        self.rel = ""
        self.entries: list[DirEntry] = []
        self.marks: dict[str, Marked] = {}
        self.marks_part: BrowsePartition | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Files of {self.ref}", id="browse-where", classes="section", markup=False)
        yield OptionList(id="browse-list")
        yield Static("", id="browse-marked", markup=False)
        yield Static("", id="browse-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Browse files"
        self.query_one("#browse-list", OptionList).focus()
        self.set_status(f"Mounting {self.ref} read-only...")
        self.show_marked()
        self.lapp.guard_signals()  # before libfuse looks at them
        self.mount_worker()

    # ------------------------------------------------------------ the mount

    @work(thread=True, exclusive=True, exit_on_error=False, group="browse-mount")
    def mount_worker(self) -> None:
        point = tempfile.mkdtemp(prefix="liferaft-browse-")
        try:
            mount = self.lapp.engine.mount_image(self.repo, self.ref, point)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(point)
            raise
        try:
            self.app.call_from_thread(self.mounted, mount)
        except Exception:  # the app has ended meanwhile: nobody else will release it
            mount.close()
            with contextlib.suppress(OSError):
                os.rmdir(point)

    def mounted(self, mount: ImageMount) -> None:
        self.lapp.adopt_image_mount(mount)
        if self.closing:  # left while it was mounting
            self.lapp.release_image_mount(mount)
            return
        self.image_mount = mount
        self.set_status("")
        self.show_partitions()

    def worker_failed(self, worker: object, error: BaseException) -> None:
        if not self.lapp.image_mounts:  # the mount failed: signals as they were
            self.lapp.restore_signals()
        if not self.closing:
            self.set_status("")
            self.lapp.show_error(error)

    def on_unmount(self) -> None:
        self.closing = True
        mount, self.image_mount = self.image_mount, None
        if mount is not None:
            self.lapp.release_image_mount(mount)

    def action_leave(self) -> None:
        self.app.pop_screen()  # on_unmount releases the mount

    # ------------------------------------------------------------ drawing

    def set_status(self, text: str) -> None:
        self.query_one("#browse-status", Static).update(text)

    def show_partitions(self) -> None:
        self.part, self.rel, self.entries = None, "", []
        box = self.query_one("#browse-list", OptionList)
        box.clear_options()
        for i, part in enumerate(self.image_mount.partitions if self.image_mount else []):
            box.add_option(Option(Text(partition_line(part, self.image_mount)), id=f"part-{i}"))
        if box.option_count:
            box.highlighted = 0
        self.query_one("#browse-where", Static).update(f"{self.ref}: partitions (Enter opens one)")

    def show_entries(
        self, part: BrowsePartition, rel: str, entries: list[DirEntry], focus: str = ""
    ) -> None:
        self.part, self.rel, self.entries = part, rel, entries
        box = self.query_one("#browse-list", OptionList)
        box.clear_options()
        for i, entry in enumerate(entries):
            marked = self.is_marked(part, join_rel(rel, entry.name))
            box.add_option(Option(Text(entry_line(entry, marked)), id=f"entry-{i}"))
        if not entries:
            box.add_option(Option("(empty folder; Backspace goes up)", disabled=True))
        names = [e.name for e in entries]
        box.highlighted = names.index(focus) if focus in names else 0
        self.query_one("#browse-where", Static).update(
            f"{part.folder} ({part.fstype}) {rel or '/'}"
        )
        self.set_status("")

    def is_marked(self, part: BrowsePartition, path: str) -> bool:
        return self.marks_part == part and path in self.marks

    def show_marked(self) -> None:
        files = [m for m in self.marks.values() if m.entry.kind != "dir"]
        folders = len(self.marks) - len(files)
        size = sum(m.entry.size for m in files)
        text = f"Marked: {len(files)} file(s), {human_size(size)}"
        if folders:
            text += f", and {folders} folder(s)"
        if self.marks_part is not None:
            text += f" on {self.marks_part.folder}"
        if self.marks:
            text += "  (c copies them)"
        self.query_one("#browse-marked", Static).update(text)

    # ------------------------------------------------------------ moving

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        option_id = event.option.id or ""
        if option_id.startswith("part-") and self.image_mount is not None:
            part = self.image_mount.partitions[int(option_id[5:])]
            why = why_no_files(part, self.image_mount)
            if why:
                self.set_status(f"{part.folder}: {why}")
                return
            self.open_folder(part, "")
        elif option_id.startswith("entry-") and self.part is not None:
            entry = self.entries[int(option_id[6:])]
            if entry.kind == "file":
                self.set_status(f"{entry.name} is a file: Space marks it, c copies the marked")
                return
            self.open_folder(self.part, join_rel(self.rel, entry.name))

    def open_folder(self, part: BrowsePartition, rel: str, focus: str = "") -> None:
        if self.image_mount is None:
            return
        self.set_status(f"Reading {rel or '/'}...")
        self.list_worker(self.image_mount, part, rel, focus)

    @work(thread=True, exclusive=True, exit_on_error=False, group="browse-list")
    def list_worker(self, mount: ImageMount, part: BrowsePartition, rel: str, focus: str) -> None:
        try:
            entries = mount.list_dir(part, rel)
        except LiferaftError as exc:  # a symlink out of the partition, a damaged chunk
            self.app.call_from_thread(self.set_status, str(exc))
            return
        self.app.call_from_thread(self.show_entries, part, rel, entries, focus)

    def action_up(self) -> None:
        if self.part is None:
            return
        if not self.rel.strip("/"):
            self.show_partitions()
            return
        parent, name = os.path.split(self.rel.rstrip("/"))
        self.open_folder(self.part, "" if parent == "/" else parent, focus=name)

    def action_mark(self) -> None:
        box = self.query_one("#browse-list", OptionList)
        if self.part is None or box.highlighted is None or not self.entries:
            return
        index = box.highlighted
        entry = self.entries[index]
        if self.marks_part is not None and self.marks_part != self.part:
            self.set_status(
                f"the marked files are on {self.marks_part.folder}: copy them first, "
                "or unmark them there"
            )
            return
        path = join_rel(self.rel, entry.name)
        if path in self.marks:
            del self.marks[path]
        else:
            self.marks[path] = Marked(path, entry)
        self.marks_part = self.part if self.marks else None
        box.replace_option_prompt_at_index(index, Text(entry_line(entry, path in self.marks)))
        if index + 1 < len(self.entries):
            box.highlighted = index + 1
        self.show_marked()

    # ------------------------------------------------------------ copying

    def action_copy(self) -> None:
        if not self.marks or self.marks_part is None or self.image_mount is None:
            self.set_status("nothing is marked: Space marks a file or folder")
            return
        mount, part, paths = self.image_mount, self.marks_part, sorted(self.marks)

        def chosen(dest: str | None) -> None:
            if dest:
                self.app.push_screen(copy_job(self.lapp.engine, mount, part, paths, dest))

        self.app.push_screen(CopyDestinationModal(mount.point), chosen)


class CopyDestinationModal(ModalScreen[str | None]):
    """Where the marked files go: a mounted disk's folder or a typed path."""

    BINDINGS = keymap.COPY_TO

    def __init__(self, browse_point: str) -> None:
        super().__init__()
        self.browse_point = browse_point
        self.folders: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="copy-box"):
            yield Static("Copy marked files to", classes="modal-title")
            yield Static("Mounted disks (Tab, arrows, Enter takes one):", markup=False)
            yield OptionList(id="copy-folders")
            yield Static("Folder (made if missing; Enter copies):", markup=False)
            yield Input(placeholder="/mnt/usb/restored", id="copy-path", select_on_focus=False)
            yield Static("", id="copy-error", markup=False)

    def on_mount(self) -> None:
        self.query_one("#copy-path", Input).focus()
        self.load_folders()

    @work(thread=True, exclusive=True, exit_on_error=False, group="copy-folders")
    def load_folders(self) -> None:
        app = self.app
        engine: Engine = app.engine  # type: ignore[attr-defined]
        try:
            folders = mounted_folders(engine.list_disks(), self.browse_point)
        except LiferaftError:
            folders = []
        app.call_from_thread(self.show_folders, folders)

    def show_folders(self, folders: list[tuple[str, str]]) -> None:
        self.folders = [f for f, _ in folders]
        box = self.query_one("#copy-folders", OptionList)
        box.clear_options()
        for folder, what in folders:
            box.add_option(Option(Text(f"{folder}  ({what})")))
        if not folders:
            box.add_option(Option("(no mounted disk; type a folder below)", disabled=True))
        else:
            box.highlighted = 0
            box.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if 0 <= event.option_index < len(self.folders):
            path = self.query_one("#copy-path", Input)
            path.value = self.folders[event.option_index].rstrip("/") + "/"
            path.cursor_position = len(path.value)
            path.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.check(event.value.strip())

    @work(thread=True, exclusive=True, exit_on_error=False, group="copy-check")
    def check(self, typed: str) -> None:
        engine: Engine = self.app.engine  # type: ignore[attr-defined]
        try:
            dest = engine.check_copy_destination(typed)
        except LiferaftError as exc:
            self.app.call_from_thread(self.refuse, str(exc))
            return
        self.app.call_from_thread(self.dismiss, dest)

    def refuse(self, text: str) -> None:
        self.query_one("#copy-error", Static).update(text)

    def action_cancel(self) -> None:
        self.dismiss(None)


def copy_job(
    engine: Engine, mount: ImageMount, part: BrowsePartition, paths: list[str], dest: str
) -> ProgressScreen:
    ref = mount.manifest.ref

    def run(progress: ProgressCallback, cancel: CancelToken) -> ExtractResult:
        return engine.copy_from_image(mount, part, paths, dest, progress=progress, cancel=cancel)

    def summarize(r: ExtractResult) -> Summary:
        shown = [f"  {p}" for p in r.copied[:8]]
        if len(r.copied) > 8:
            shown.append(f"  and {len(r.copied) - 8} more")
        lines = (
            f"Copied {len(r.copied)} item(s) of {ref}, {r.partition}, into {r.to}:",
            *shown,
            f"Data: {human_size(r.bytes)}   Time: {human_duration(r.seconds)}",
        )
        return Summary(True, lines, "The copies keep their owners, modes and times.")

    return ProgressScreen(
        Job(
            kind="copy",
            title=f"Copying {len(paths)} item(s) of {ref} {part.folder} to {dest}",
            run=run,
            summarize=summarize,
            cancel_question=f"Stop copying? What is already in {dest} stays there.",
            cancelled_state=f"Copying was stopped; {dest} may hold part of the files.",
            failed_state=f"Copying did not finish; {dest} may hold part of the files.",
            releases_source=False,  # the browse screen below still reads the image
        )
    )
