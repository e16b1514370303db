"""The target screen on a smaller disk: the user chooses which partitions may
shrink besides the last one (the CLI's --shrink), and sees the plan change.
Fake engine (no disk is touched): the real planner over a made-up image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.widgets import Checkbox, Input, Select

from rescue_app.engine import BlockDisk, Manifest
from rescue_app.engine.manifest import DiskImage, PartitionTable, Region
from rescue_app.engine.ntfsshrink import check_scratch_space
from rescue_app.engine.plan import RestoreChoices, RestorePlan, make_restore_plan
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.target import TargetScreen
from tests.tui.fake_engine import DISKS, GIB, MANIFEST, MIB, FakeEngine, _disk, _pimg
from tests.tui.pilot_helpers import run_async, screen_text, settle, wait_for_screen
from tests.tui.test_snapshots import PROFILE, to_targets

# ESP, Linux data, Windows data, a last ext4: on 150 GiB the last one cannot
# give enough, partition 2 or 3 must shrink too.
IMAGE = Manifest(
    **{
        **MANIFEST.__dict__,
        "disks": (
            DiskImage(
                **{
                    **MANIFEST.disks[0].__dict__,
                    "partitions": (
                        _pimg(1, MIB, 512 * MIB, "vfat", "EFI", 31 * MIB),
                        _pimg(2, 513 * MIB, 100 * GIB, "ext4", "data", 10 * GIB),
                        _pimg(3, 513 * MIB + 100 * GIB, 100 * GIB, "ntfs", "Windows", 100 * MIB),
                        _pimg(4, 513 * MIB + 200 * GIB, 40 * GIB, "ext4", "root", 5 * GIB),
                    ),
                    "table": PartitionTable("gpt", "8F3A"),
                    "head": Region(0, MIB, ()),
                }
            ),
        ),
    }
)
SMALL = _disk("/dev/sdd", "Crucial BX500", "2301E6", 150 * GIB, ())


class ShrinkEngine(FakeEngine):
    def list_disks(self) -> list[BlockDisk]:
        return [*DISKS, SMALL]

    def find_disk(self, spec: str) -> BlockDisk:
        return next(d for d in self.list_disks() if d.path == spec)

    def load_manifest(
        self, repo: Any, ref: str, progress: Any = None, cancel: Any = None
    ) -> Manifest:
        return IMAGE

    def plan_restore(
        self,
        repo: Any,
        ref: str,
        targets: Sequence[str],
        choices: RestoreChoices | None = None,
    ) -> RestorePlan:
        disks = [self.find_disk(t) for t in targets]
        plan = make_restore_plan(repo, IMAGE, disks, choices or RestoreChoices())
        check_scratch_space(plan)  # as Engine.plan_restore does
        return plan


def _shown(screen: TargetScreen) -> list[str]:
    return [str(b.id) for b in screen.query(".shrink").results(Checkbox) if b.display]


async def _tick(pilot: Any, screen: TargetScreen, box_id: str) -> None:
    """Tab to the checkbox, then Space: keys only."""
    for _ in range(12):
        if screen.focused is not None and screen.focused.id == box_id:
            break
        await pilot.press("tab")
        await settle(pilot)
    assert screen.focused is not None and screen.focused.id == box_id
    await pilot.press("space")
    await settle(pilot)


@run_async
async def test_user_chooses_which_partitions_shrink_on_a_smaller_disk(tmp_path: Any) -> None:
    app = LiferaftApp(ShrinkEngine(), profile=PROFILE, media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_targets(pilot)
        screen = await wait_for_screen(pilot, TargetScreen)
        await settle(pilot)
        # The image's own disk (250 GiB): nothing shrinks, nothing offered.
        assert screen.plan is not None and screen.plan.disks[0].target.path == "/dev/sda"
        assert _shown(screen) == [] and not screen.query_one("#shrink-choices").display
        assert not screen.query_one("#scratch").display

        screen.query_one("#target-0", Select).value = "/dev/sdd"
        await settle(pilot)
        # The last partition alone cannot give 90 GiB: refused, and the three
        # that could shrink too are offered (the ESP too, not the last one).
        assert screen.plan is None
        assert "partition 4 (ext4) does not fit" in screen.problem
        assert _shown(screen) == ["shrink-0-1", "shrink-0-2", "shrink-0-3"]
        label = str(screen.query_one("#shrink-0-1", Checkbox).label)
        assert label == "Let partition 1 shrink too (vfat, 31.0 MiB of data in 512.0 MiB)"
        label = str(screen.query_one("#shrink-0-2", Checkbox).label)
        assert label == "Let partition 2 shrink too (ext4, 10.0 GiB of data in 100.0 GiB)"
        text = screen_text(pilot)
        assert "Tick a partition above to let it shrink too." in " ".join(text.split())

        await _tick(pilot, screen, "shrink-0-2")
        assert screen.plan is not None, screen.problem
        assert screen.plan.choices.shrink == ("disk1/p2",)
        steps = {s.source.number: s for s in screen.plan.disks[0].steps}
        assert steps[2].shrunk and steps[2].files and steps[4].shrunk
        assert not steps[1].shrunk and not steps[3].shrunk
        text = " ".join(screen_text(pilot).split())
        assert "(was 100.0 GiB)" in text and "Partition 2: shrunk from 100.0 GiB" in text

        # Partition 3 (NTFS) instead: ntfsresize, said in the plan.
        await pilot.press("space")  # unticks 2 (still focused)
        await settle(pilot)
        assert screen.plan is None
        await _tick(pilot, screen, "shrink-0-3")
        assert screen.plan is not None and screen.plan.choices.shrink == ("disk1/p3",)
        steps = {s.source.number: s for s in screen.plan.disks[0].steps}
        assert steps[3].resize and not steps[2].shrunk
        text = " ".join(screen_text(pilot).split())
        assert "NTFS p3: shrink with ntfsresize 100.0 GiB →" in text
        assert screen.plan.choices.scratch is None

        # Its scratch folder: typed, Enter; a bad one is one line, a good one planned.
        scratch = screen.query_one("#scratch", Input)
        assert scratch.display
        scratch.focus()
        await pilot.press(*"/nonexistent", "enter")
        await settle(pilot)
        assert screen.plan is None
        assert "cannot use /nonexistent for the NTFS scratch copy" in screen.problem
        scratch.value = ""
        await pilot.press(*str(tmp_path), "enter")
        await settle(pilot)
        assert screen.plan is not None, screen.problem
        assert screen.plan.choices.scratch == str(tmp_path)

        # Back to a disk large enough: the offer goes away, nothing shrinks.
        screen.query_one("#target-0", Select).value = "/dev/sda"
        await settle(pilot)
        assert _shown(screen) == [] and not screen.query_one("#shrink-choices").display
        assert screen.plan is not None and screen.plan.choices.shrink == ()
        assert screen.plan.choices.scratch is None
        assert not any(s.shrunk for s in screen.plan.disks[0].steps)
