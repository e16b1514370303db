"""Image list and detail: what each image holds, before anything is chosen."""

from __future__ import annotations

from datetime import UTC, datetime

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from rescue_app.engine import (
    ImageSummary,
    Manifest,
    Method,
    Repository,
    human_age,
    human_size,
    last_good_backups,
)
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import LiferaftScreen


def short_date(created: str) -> str:
    """ISO 8601 UTC -> "2026-11-25 10:15:04": with seconds, two images taken a few
    seconds apart read apart."""
    return created.replace("T", " ").removesuffix("Z")[:19]


def describe_manifest(m: Manifest) -> str:
    lines = [f"{m.ref}  host {m.host}  captured {short_date(m.created)} UTC"]
    for disk in m.disks:
        lines.append(
            f"Disk {disk.index + 1}: {disk.describe()}, "
            f"{ {'gpt': 'GPT', 'dos': 'MBR'}.get(disk.table.type, disk.table.type) }"
        )
        lines.append(f"  {'#':>2} {'size':>10}  {'filesystem':<12} {'label':<14} {'used':>10}")
        for p in disk.partitions:
            fs = p.filesystem.type or ("extended" if p.kind == "extended" else "-")
            lines.append(
                f"  {p.number:>2} {human_size(p.size):>10}  {fs[:12]:<12} "
                f"{(p.filesystem.label or '-')[:14]:<14} {human_size(p.used_bytes):>10}"
            )
            if p.method == Method.RAW:
                lines.append(f"     stored raw: {p.note or 'every byte'}")
            vg = m.volume_group_of(disk.index, p.number)
            if vg is not None:
                lines.append(f"     LVM physical volume of volume group {vg.name}")
            array = m.md_array_of(disk.index, p.number)
            if array is not None:
                lines.append(f"     md RAID member of array {array.name or array.uuid}")
            volume = m.luks_volume_of(disk.index, p.number)
            if volume is not None:
                lines.append(f"     unlocked {volume.label}")
    for a in m.md_arrays:
        lines.append(a.describe())
    for vg in m.volume_groups:
        lines.append(f"Volume group {vg.name} (LVM)")
        for lv in vg.lvs:
            if lv.hidden:
                continue
            fs = lv.filesystem.type or ("thin pool" if lv.segtype == "thin-pool" else "-")
            lines.append(
                f"  {lv.name[:14]:<14} {human_size(lv.size):>10}  {fs[:12]:<12} "
                f"{human_size(lv.used_bytes):>10}"
            )
    return "\n".join(lines)


class ImagesScreen(LiferaftScreen):
    BINDINGS = keymap.IMAGES

    def __init__(self, repo: Repository, purpose: str = "restore") -> None:
        super().__init__()
        self.repo = repo
        self.purpose = purpose
        self.images: list[ImageSummary] = []

    @staticmethod
    def clock() -> datetime:
        """Now, for the last good backup's age (snapshots freeze it)."""
        return datetime.now(UTC)

    def compose(self) -> ComposeResult:
        yield Header()
        fmt = self.repo.format_name  # a Clonezilla folder says so
        title = "Images" if fmt == "liferaft" else f"{fmt.capitalize()} images"
        yield Static(
            f"{title} in {self.repo.location} (Enter to choose)", classes="section", markup=False
        )
        yield Static("", id="last-good", markup=False)
        table: DataTable[str] = DataTable(id="images-table", cursor_type="row")
        yield table
        with VerticalScroll(id="image-detail-box"):
            yield Static("", id="image-detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Restore: image" if self.purpose == "restore" else "Verify: image"
        table = self.query_one("#images-table", DataTable)
        table.add_columns("Image", "Host", "Captured", "Data", "Disks")
        table.focus()
        self.load_images()

    @work(thread=True, exclusive=True, exit_on_error=False, group="images")
    def load_images(self) -> None:
        images = self.lapp.engine.list_images(self.repo)
        self.app.call_from_thread(self.show_images, images)

    def show_images(self, images: list[ImageSummary]) -> None:
        self.images = list(reversed(images))  # newest first
        good = last_good_backups(images, self.clock())
        self.query_one("#last-good", Static).update(
            "Last good backup: " + ", ".join(f"{g.name} {human_age(g.age)}" for g in good.values())
            if good
            else ""
        )
        table = self.query_one("#images-table", DataTable)
        table.clear()
        for image in self.images:
            table.add_row(
                image.name,
                image.host[:14],
                short_date(image.created),
                human_size(image.data_bytes),
                "; ".join(image.disks)[:24],
                key=image.ref,
            )
        detail = self.query_one("#image-detail", Static)
        if not self.images:
            detail.update("This repository holds no images yet.")
        else:
            table.move_cursor(row=0)
            self.load_detail(self.images[0].ref)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value:
            self.load_detail(event.row_key.value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail")
    def load_detail(self, ref: str) -> None:
        manifest = self.lapp.engine.load_manifest(self.repo, ref)
        self.app.call_from_thread(
            self.query_one("#image-detail", Static).update, describe_manifest(manifest)
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_choose()

    def selected_ref(self) -> str | None:
        table = self.query_one("#images-table", DataTable)
        if not self.images or table.cursor_row < 0 or table.cursor_row >= len(self.images):
            return None
        return self.images[table.cursor_row].ref

    def action_choose(self) -> None:
        ref = self.selected_ref()
        if ref is None:
            return
        if self.purpose == "verify":
            from rescue_app.tui.screens.progress import verify_job

            self.app.push_screen(verify_job(self.lapp.engine, self.repo, ref))
        else:
            from rescue_app.tui.screens.target import TargetScreen

            self.app.push_screen(TargetScreen(self.repo, ref))

    def action_browse(self) -> None:
        ref = self.selected_ref()
        if ref is None:
            return
        from rescue_app.tui.screens.browse import BrowseScreen

        self.app.push_screen(BrowseScreen(self.repo, ref))
