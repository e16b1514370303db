"""Target partitions for a Clonezilla saveparts image.

The image holds partitions and no disk, so each saved partition goes onto an
existing partition the user picks (one may be left out); the partition
tables and the other partitions stay as they are (engine/partrestore.py, the
CLI's ``restore --to SAVED=PARTITION``). Only partitions
``matching.candidate_partitions`` allows are listed. Nothing is written
here; the typed confirmation (confirm.py) names each target partition and its
disk by model, serial and size.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Button, Checkbox, Header, Select, Static

from rescue_app.engine import (
    BlockDisk,
    PartitionRestorePlan,
    Repository,
    SavedPartition,
    human_size,
)
from rescue_app.errors import LiferaftError
from rescue_app.tui.checklist import MarkedCheckbox
from rescue_app.tui.matching import candidate_partitions
from rescue_app.tui.screens.target import RestoreTargetScreen


def saved_line(s: SavedPartition) -> str:
    fs = s.image.filesystem
    what = fs.type or "raw"
    if fs.label:
        what += f' "{fs.label}"'
    return f"Saved {s.name} ({what}, {human_size(s.needed)}) ->"


class PartitionTargetScreen(RestoreTargetScreen):
    missing = "choose a target partition for a saved partition first"
    another = "choose another partition"

    def __init__(self, repo: Repository, ref: str) -> None:
        super().__init__(repo, ref)
        self.saved: list[SavedPartition] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="target-selects")
        yield MarkedCheckbox("Grow each filesystem to fill its partition", id="grow")
        yield from self.compose_plan()

    def on_mount(self) -> None:
        self.sub_title = f"Restore {self.ref}: target partitions"
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load(self) -> None:
        engine = self.lapp.engine
        saved = engine.saved_partitions(self.repo, self.ref)
        disks = engine.list_disks()
        self.app.call_from_thread(self.show_choices, saved, disks)

    def show_choices(self, saved: list[SavedPartition], disks: list[BlockDisk]) -> None:
        self.saved = saved
        self.lapp.disks = disks
        offered = candidate_partitions(disks)
        if not offered:
            self.query_one("#plan-view", Static).update(
                "No partition can receive this image's partitions: every disk is in use or "
                "has no partitions. This image holds partitions only (Clonezilla saveparts): "
                "partition the target disk first, then go back and retry."
            )
            return
        options = [
            (
                f"{p.path.rsplit('/', 1)[-1]} {human_size(p.size)} {p.fstype or 'empty'}"
                f"{f' {p.label}' if p.label else ''} on {d.describe()}",
                p.path,
            )
            for d, p in offered
        ]
        box = self.query_one("#target-selects", VerticalScroll)
        for i, s in enumerate(saved):
            box.mount(Static(saved_line(s), markup=False))
            select: Select[str] = Select(
                options, prompt="leave it out", allow_blank=True, id=f"part-{i}"
            )
            box.mount(select)
        self.ready = True
        self.query_one(Select).focus()
        self.replan()

    def chosen(self) -> list[str]:
        """``SAVED=PARTITION`` for each saved partition given a target."""
        out = []
        for i, s in enumerate(self.saved):
            value = self.query_one(f"#part-{i}", Select).value
            if isinstance(value, str):
                out.append(f"{s.name}={value}")
        return out

    def replan(self) -> None:
        self.plan = None
        self.problem = ""
        self.query_one("#next", Button).disabled = True
        targets = self.chosen()
        view = self.query_one("#plan-view", Static)
        if not targets:
            view.update(
                "This image holds partitions only (Clonezilla saveparts): choose a target "
                "partition for each saved partition to restore."
            )
            return
        view.update("Planning...")
        self.make_plan(targets, self.query_one("#grow", Checkbox).value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def make_plan(self, targets: list[str], grow: bool) -> None:
        try:
            plan = self.lapp.engine.plan_partition_restore(self.repo, self.ref, targets, grow=grow)
        except LiferaftError as exc:
            self.app.call_from_thread(self.show_plan, None, str(exc))
            return
        self.app.call_from_thread(self.show_plan, plan, "")

    def show_plan(self, plan: PartitionRestorePlan | None, problem: str) -> None:
        self.plan = plan
        self.problem = problem
        view = self.query_one("#plan-view", Static)
        if plan is None:
            view.update(Text(f"Cannot restore there: {problem}"))
            return
        view.update(Text(plan.render()))
        self.query_one("#next", Button).disabled = False
