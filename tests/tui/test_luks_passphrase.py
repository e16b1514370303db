"""Restoring an image with an unlocked LUKS volume from the UI (issue 12): the
passphrase is asked in the password dialog (masked) through the engine's
credentials chain, and reaches the engine's restore; the UI only calls the
engine. (The LUKS restore itself runs in QEMU: tests/guest/test_md_luks_vm.py.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from textual.widgets import Input

from rescue_app.engine import LUKS_TYPE, BlockDisk
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.luks import KeySource
from rescue_app.engine.manifest import Filesystem, LuksVolumeImage, Method, Region
from rescue_app.engine.plan import RestorePlan
from rescue_app.engine.results import CaptureResult, RestoreResult
from rescue_app.errors import UsageError
from rescue_app.progress import CancelToken, ProgressCallback, no_progress
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.backup import BackupScreen
from rescue_app.tui.screens.home import HomeScreen
from rescue_app.tui.screens.password import PasswordModal
from rescue_app.tui.screens.progress import backup_job, restore_job
from tests.tui.fake_engine import FakeEngine, FakeRepo
from tests.tui.pilot_helpers import run_async, screen_text, settle, wait_for_screen, wait_until

LUKS_UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
VOLUME = LuksVolumeImage(
    filesystem=Filesystem("ext4", "inner-fs"), method=Method.USED, used_bytes=0,
    used_map=ExtentMap(), chunks=(), disk=0, partition=2, uuid=LUKS_UUID, version=2,
    header=Region(0, 0, ()), size=0,
)  # fmt: skip


class LuksEngine(FakeEngine):
    """Restores by asking for the key as apply_plan does, and keeps what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[bytes] = []

    def restore(
        self,
        plan: RestorePlan,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        verify: bool = False,
        luks_key: KeySource | None = None,
    ) -> RestoreResult:
        assert luks_key is not None, "the UI gave the engine no way to the passphrase"
        for v in plan.manifest.luks_volumes:
            self.keys.append(luks_key(f"{v.uuid} (disk 1 partition 2 of the image)", v.uuid))
        return super().restore(plan, progress=progress, cancel=cancel, verify=verify)


def _luks_plan(engine: FakeEngine) -> RestorePlan:
    plan = engine.plan_restore(FakeRepo(), "x", ["/dev/sda"])
    return replace(plan, manifest=replace(plan.manifest, luks_volumes=(VOLUME,)))


@run_async
async def test_restore_asks_the_luks_passphrase_in_a_dialog() -> None:
    engine = LuksEngine()
    app = LiferaftApp(engine, media_filter=lambda disk: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_screen(pilot, HomeScreen)
        await settle(pilot)
        app.push_screen(restore_job(engine, _luks_plan(engine)))
        modal: Any = await wait_for_screen(pilot, PasswordModal)
        await pilot.pause(0.2)
        text = screen_text(pilot)
        assert "Passphrase" in text and f"LUKS volume {LUKS_UUID}" in text, text
        assert modal.query_one("#password-input", Input).password  # masked
        await pilot.press(*"luks-Secret-7")
        await pilot.press("enter")
        await wait_until(pilot, lambda: engine.keys, "the restore got its key")
    assert engine.keys == [b"luks-Secret-7"]


class LuksCaptureEngine(FakeEngine):
    """A disk with a LUKS partition; capture asks for the key as the engine's
    does (before anything is written), keeps it and stops there."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[bytes] = []

    def list_disks(self) -> list[BlockDisk]:
        first, *rest = super().list_disks()
        luks = replace(first.partitions[-1], fstype=LUKS_TYPE, uuid=LUKS_UUID)
        return [replace(first, partitions=(*first.partitions[:-1], luks)), *rest]

    def capture(self, repo: Any, name: str, devices: Sequence[str], **kw: Any) -> CaptureResult:
        luks_key = kw.get("luks_key")
        assert luks_key is not None, "the UI gave the engine no way to the passphrase"
        self.keys.append(luks_key(f"{devices[0]}2", LUKS_UUID))
        raise UsageError("stopped by the test after the key")


@run_async
async def test_backup_with_unlock_asks_the_luks_passphrase() -> None:
    """The backup screen offers 'Open LUKS volumes' (capture --unlock) when a
    disk holds one; ticked, the passphrase is asked in the dialog and reaches
    the engine's capture."""
    engine = LuksCaptureEngine()
    app = LiferaftApp(engine, media_filter=lambda disk: False)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for_screen(pilot, HomeScreen)
        await settle(pilot)
        app.push_screen(BackupScreen())
        screen: Any = await wait_for_screen(pilot, BackupScreen)
        await settle(pilot)
        await wait_until(
            pilot, lambda: screen.query_one("#backup-unlock").display, "the unlock box shown"
        )
        app.push_screen(
            backup_job(engine, lambda: cast(Any, FakeRepo()), "lap", ["/dev/sda"], unlock=True)
        )
        await wait_for_screen(pilot, PasswordModal)
        await pilot.pause(0.2)
        assert f"LUKS volume {LUKS_UUID}" in screen_text(pilot)
        await pilot.press(*"luks-Secret-8")
        await pilot.press("enter")
        await wait_until(pilot, lambda: engine.keys, "the capture got its key")
    assert engine.keys == [b"luks-Secret-8"]
