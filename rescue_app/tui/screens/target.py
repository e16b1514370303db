"""Target and plan: map each disk of the image to a target, see what is erased.

Only disks the engine considers free are listed (``matching.candidate_targets``):
the running system's disk, the boot medium and mounted disks never appear.
On a target smaller than the image's disk the last partition shrinks; the
other partitions that could shrink are listed as checkboxes, and the user
ticks those that may shrink too (the CLI's ``--shrink``).
Nothing is written here; the typed confirmation comes next (confirm.py).
"""

from __future__ import annotations

from itertools import zip_longest

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Checkbox, Footer, Header, Input, Select, Static

from rescue_app.engine import (
    BlockDisk,
    Manifest,
    Method,
    PartitionRestorePlan,
    Repository,
    RestoreChoices,
    RestorePlan,
    describe_contents,
    human_size,
    shrinkable,
)
from rescue_app.errors import LiferaftError, UsageError
from rescue_app.tui import keymap
from rescue_app.tui.checklist import MarkedCheckbox
from rescue_app.tui.matching import candidate_targets, suggest_targets
from rescue_app.tui.screens.base import ImageScreen


def plan_table(plan: RestorePlan) -> Table:
    """Old and new partitions side by side, one block per target disk."""
    outer = Table.grid(padding=(0, 0))
    for n, d in enumerate(plan.disks, 1):
        t = d.target
        outer.add_row(Text(f"Target {n}: {t.describe()}", style="bold"))
        outer.add_row(
            Text(f"ERASES everything on {t.path}: {describe_contents(t)}", style="bold reverse")
        )
        table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
        table.add_column("#", justify="right")
        table.add_column("now (erased)")
        table.add_column("new size", justify="right")
        table.add_column("filesystem")
        table.add_column("data", justify="right")
        old_parts = list(t.partitions)
        for old, step in zip_longest(old_parts, d.steps):
            now = "-"
            if old is not None:
                now = f"{old.path.rsplit('/', 1)[-1]} {old.fstype or '?'} {human_size(old.size)}"
            if step is None:
                table.add_row("", now, "", "", "")
                continue
            p = step.source
            fs = p.filesystem.type or ("extended" if p.kind == "extended" else "raw")
            if p.filesystem.label:
                fs += f" {p.filesystem.label}"
            size = human_size(step.new.size) + (" (grown)" if step.grown else "")
            if step.shrunk:
                size = f"{human_size(step.new.size)} (was {human_size(p.size)})"
            table.add_row(str(p.number), now, size, fs, human_size(p.used_bytes))
        outer.add_row(table)
        for step in d.steps:
            if step.why:  # a smaller disk: what shrinks or moves, and how
                outer.add_row(Text(f"Partition {step.source.number}: {step.why}"))
        for step in d.steps:
            # partition -> LUKS volume -> its contents, and what grows
            lines = plan.luks_lines(d.image.index, step)
            if lines:
                outer.add_row(Text(f"Partition {step.source.number}:\n" + "\n".join(lines)))
        for note in d.notes:
            outer.add_row(Text(f"Note: {note}"))
        if d.seeded:
            outer.add_row(Text(d.seed_line()))
    for a in plan.md_arrays:
        # partition -> md array -> its contents
        outer.add_row(Text("\n".join(a.render())))
    for g in plan.volume_groups:
        # the stack: partition -> PV -> volume group -> its LVs
        outer.add_row(Text("\n".join(g.render())))
    outer.add_row(Text(plan.data_line()))
    return outer


class RestoreTargetScreen(ImageScreen):
    """What the target screens share (this one's disks, parttarget.py's
    partitions): the plan made from the choices, and the key that takes it
    to the typed confirmation and then the restore."""

    BINDINGS = keymap.TARGET
    missing = "choose a target disk for each disk of the image first"
    another = "choose another target disk"

    def __init__(self, repo: Repository, ref: str) -> None:
        super().__init__(repo, ref)
        self.plan: RestorePlan | PartitionRestorePlan | None = None
        self.problem = ""  # why there is no plan, for the next key
        self.ready = False

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if self.ready:
            self.replan()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if self.ready:
            self.replan()

    def replan(self) -> None:
        """Plan again from the choices as they are now (in a worker)."""
        raise NotImplementedError

    def compose_plan(self) -> ComposeResult:
        """Under the choices: the plan, the button that goes on, the footer."""
        with VerticalScroll(id="plan-box"):
            yield Static("Reading the image and the disks...", id="plan-view")
        with Horizontal(classes="buttons"):
            yield Button("Erase and restore... (ctrl+n)", id="next", variant="error", disabled=True)
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "next":
            self.action_next()

    def action_next(self) -> None:
        if self.plan is None:
            # Say why nothing happens: no target yet, too small, in use...
            self.lapp.show_error(
                UsageError(
                    f"cannot restore there: {self.problem}" if self.problem else self.missing,
                    hint=self.another,
                )
            )
            return
        from rescue_app.tui.screens.confirm import ConfirmEraseModal

        plan = self.plan

        def confirmed(ok: bool | None) -> None:
            if ok:
                from rescue_app.tui.screens.progress import restore_job

                self.app.push_screen(restore_job(self.lapp.engine, plan))

        self.app.push_screen(ConfirmEraseModal(plan), callback=confirmed)


class TargetScreen(RestoreTargetScreen):
    def __init__(self, repo: Repository, ref: str) -> None:
        super().__init__(repo, ref)
        self.manifest: Manifest | None = None
        self.candidates: list[BlockDisk] = []
        # The partitions offered to shrink, as (image disk index, number)
        self.shrink_offer: tuple[tuple[int, int], ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="target-selects")
        yield MarkedCheckbox("Grow the last partition to fill a larger disk", id="grow")
        with Vertical(id="shrink-choices"):
            # an NTFS that shrinks needs a scratch copy of its data (ntfsshrink.py)
            yield Input(
                placeholder="scratch folder for the NTFS shrink, Enter (default: /tmp)",
                id="scratch",
            )
        yield from self.compose_plan()

    def on_mount(self) -> None:
        self.sub_title = f"Restore {self.ref}: target"
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load(self) -> None:
        engine = self.lapp.engine
        manifest = engine.load_manifest(self.repo, self.ref)
        if manifest.partitions_only:
            # a Clonezilla saveparts image: onto partitions, not disks
            from rescue_app.tui.screens.parttarget import PartitionTargetScreen

            self.app.call_from_thread(
                self.app.switch_screen, PartitionTargetScreen(self.repo, self.ref)
            )
            return
        disks = engine.list_disks()
        self.app.call_from_thread(self.show_choices, manifest, disks)

    def show_choices(self, manifest: Manifest, disks: list[BlockDisk]) -> None:
        self.manifest = manifest
        self.lapp.disks = disks
        self.candidates = candidate_targets(disks)
        suggested = suggest_targets(manifest.disks, disks)
        box = self.query_one("#target-selects", VerticalScroll)
        if not self.candidates:
            self.query_one("#plan-view", Static).update(
                "No disk can receive this image: every disk is in use (system disk, boot "
                "medium or mounted). Attach the disk to restore to, then go back and retry."
            )
            return
        for image, pick in zip(manifest.disks, suggested, strict=True):
            box.mount(Static(f"Image disk {image.index + 1}: {image.describe()}  ->", markup=False))
            options = [
                (
                    d.describe() + (f" - {d.incomplete_restore}" if d.incomplete_restore else ""),
                    d.path,
                )
                for d in self.candidates
            ]
            select: Select[str] = Select(
                options,
                prompt="choose the target disk",
                allow_blank=True,
                value=pick.path if pick is not None else Select.NULL,
                id=f"target-{image.index}",
            )
            box.mount(select)
        self.query_one("#shrink-choices", Vertical).mount_all(
            self.shrink_boxes(manifest), before=self.query_one("#scratch", Input)
        )
        self.ready = True
        self.query_one(Select).focus()
        self.replan()

    def chosen_targets(self) -> list[str] | None:
        if self.manifest is None:
            return None
        out = []
        for image in self.manifest.disks:
            value = self.query_one(f"#target-{image.index}", Select).value
            if not isinstance(value, str):
                return None
            out.append(value)
        return out

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.ready and event.input.id == "scratch":
            self.replan()

    def replan(self) -> None:
        self.plan = None
        self.problem = ""
        self.query_one("#next", Button).disabled = True
        targets = self.chosen_targets()
        view = self.query_one("#plan-view", Static)
        if not targets:
            view.update("Choose a target disk for each disk of the image.")
            return
        view.update("Planning...")
        self.offer_shrink(targets)
        shrink = tuple(
            f"disk{disk + 1}/p{number}"
            for disk, number in self.shrink_offer
            if self.query_one(f"#shrink-{disk}-{number}", Checkbox).value
        )
        scratch = self.query_one("#scratch", Input)
        folder = scratch.value.strip() if scratch.display else ""
        self.make_plan(targets, self.query_one("#grow", Checkbox).value, shrink, folder or None)

    def offer_shrink(self, targets: list[str]) -> None:
        """Show the checkbox of each partition that may shrink besides the
        last one, on the image disks whose target is smaller (a tick stays
        while another smaller target is chosen)."""
        assert self.manifest is not None
        sizes = {d.path: d.size for d in self.candidates}
        smaller = {
            image.index
            for image, target in zip(self.manifest.disks, targets, strict=True)
            if sizes.get(target, image.required_size) < image.required_size
        }
        ntfs = any(
            p.filesystem.type == "ntfs" and p.method == Method.USED
            for image in self.manifest.disks
            if image.index in smaller
            for p in image.partitions
        )
        self.query_one("#scratch", Input).display = ntfs
        offer = []
        for box in self.query(".shrink").results(Checkbox):
            disk = int(str(box.id).split("-")[1])
            box.display = disk in smaller
            if box.display:
                offer.append((disk, int(str(box.id).split("-")[2])))
        self.shrink_offer = tuple(offer)
        self.query_one("#shrink-choices", Vertical).display = bool(offer) or ntfs

    def shrink_boxes(self, manifest: Manifest) -> list[Checkbox]:
        """A hidden checkbox per partition a user may let shrink (see offer_shrink)."""
        several = len(manifest.disks) > 1
        boxes: list[Checkbox] = []
        for image in manifest.disks:
            for p in shrinkable(image):
                where = f"disk {image.index + 1} partition" if several else "partition"
                box = MarkedCheckbox(
                    f"Let {where} {p.number} shrink too ({p.filesystem.type or 'raw'}, "
                    f"{human_size(p.used_bytes)} of data in {human_size(p.size)})",
                    id=f"shrink-{image.index}-{p.number}",
                    classes="shrink",
                )
                box.display = False
                boxes.append(box)
        return boxes

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def make_plan(
        self,
        targets: list[str],
        grow: bool,
        shrink: tuple[str, ...] = (),
        scratch: str | None = None,
    ) -> None:
        try:
            choices = RestoreChoices(grow=grow, shrink=shrink, scratch=scratch)
            plan = self.lapp.engine.plan_restore(self.repo, self.ref, targets, choices)
        except LiferaftError as exc:
            self.app.call_from_thread(self.show_plan, None, str(exc))
            return
        self.app.call_from_thread(self.show_plan, plan, "")

    def show_plan(self, plan: RestorePlan | None, problem: str) -> None:
        view = self.query_one("#plan-view", Static)
        self.plan = plan
        self.problem = problem
        if plan is None:
            text = f"Cannot restore there: {problem}"
            if self.shrink_offer:
                text += "\nTick a partition above to let it shrink too."
            view.update(Text(text))
            return
        view.update(plan_table(plan))
        self.query_one("#next", Button).disabled = False
