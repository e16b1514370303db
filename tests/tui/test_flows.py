"""Every flow of the UI against real loop devices: restores and backups really happen."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from textual.widgets import Input, Select, SelectionList

from rescue_app.engine import Engine
from rescue_app.engine.kernel import reread_partitions
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.backup import BackupScreen
from rescue_app.tui.screens.confirm import ConfirmEraseModal
from rescue_app.tui.screens.error import ErrorModal
from rescue_app.tui.screens.home import HomeScreen
from rescue_app.tui.screens.images import ImagesScreen
from rescue_app.tui.screens.progress import ProgressScreen
from rescue_app.tui.screens.question import QuestionModal
from rescue_app.tui.screens.source import SourceScreen
from rescue_app.tui.screens.target import TargetScreen
from tests.helpers.diskkit import (
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    make_fs,
    mounted,
    partition_disk,
    tree_checksums,
)
from tests.tui.conftest import DISK_SIZE, CapturedImage
from tests.tui.pilot_helpers import (
    confirm_restore,
    open_backup,
    run_async,
    screen_text,
    settle,
    type_source,
    wait_for_screen,
    wait_until,
)

pytestmark = pytest.mark.root


def only(*devices: str) -> Callable[[object], bool]:
    """The media scan may look at these test disks only, never at anyone else's."""
    return lambda disk: getattr(disk, "path", None) in devices


async def open_target_screen(pilot, repo: str) -> TargetScreen:
    await type_source(pilot, "r", repo)
    images = await wait_for_screen(pilot, ImagesScreen)
    await settle(pilot)
    assert "tuihost" in screen_text(pilot) or images.images
    await pilot.press("enter")
    target = await wait_for_screen(pilot, TargetScreen)
    await settle(pilot)
    return target


async def pick_target(pilot, screen: TargetScreen, device: str) -> None:
    select = screen.query_one("#target-0", Select)
    select.value = device
    await settle(pilot)
    assert screen.plan is not None, screen_text(pilot)
    assert screen.plan.disks[0].target.path == device


def offered(screen: TargetScreen) -> list[str]:
    return [d.path for d in screen.candidates]


@run_async
async def test_restore_really_happens(captured: CapturedImage, loopdisk) -> None:
    target = loopdisk(DISK_SIZE)
    app = LiferaftApp(Engine(), media_filter=only(captured.source, target))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_target_screen(pilot, captured.repo)
        await pick_target(pilot, screen, target)
        assert f"ERASES everything on {target}" in screen_text(pilot)
        text = await confirm_restore(pilot, target)
        assert "Done." in text, text
        assert "read back and matches the image" in text
        assert "reboot" in text
        await pilot.press("enter")
        await wait_for_screen(pilot, HomeScreen)
        await settle(pilot)
    parts = reread_partitions(target, 2)
    for n, part in enumerate(parts, 1):
        fsck_clean(part, "ext4")
        assert tree_checksums(part, "ext4") == captured.trees[n]


@run_async
async def test_wrong_typed_confirmation_writes_nothing(captured: CapturedImage, loopdisk) -> None:
    target = loopdisk(DISK_SIZE)
    before = disk_bytes_sha256(target, 0, DISK_SIZE)
    app = LiferaftApp(Engine(), media_filter=only(captured.source, target))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_target_screen(pilot, captured.repo)
        await pick_target(pilot, screen, target)
        await pilot.press("ctrl+n")
        modal = await wait_for_screen(pilot, ConfirmEraseModal)
        # A neighbour's name, a prefix and a button press: none may start the restore.
        await pilot.press(*(target + "0"))
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmEraseModal)
        assert "nothing was written" in screen_text(pilot)
        assert modal.query_one("#erase").disabled
        await pilot.click("#erase")
        assert isinstance(app.screen, ConfirmEraseModal)
        await pilot.press("escape")
        await wait_for_screen(pilot, TargetScreen)
        await settle(pilot)
        assert not any(isinstance(s, ProgressScreen) for s in app.screen_stack)
    assert disk_bytes_sha256(target, 0, DISK_SIZE) == before


@run_async
async def test_mounted_and_system_disks_never_offered(captured: CapturedImage, loopdisk) -> None:
    free = loopdisk(DISK_SIZE)
    busy = loopdisk(DISK_SIZE)
    (busy_part,) = partition_disk(busy, "gpt", [PartSpec(None, "ext4")])
    make_fs(busy_part, "ext4")
    app = LiferaftApp(Engine(), media_filter=only())
    with mounted(busy_part, "ext4"):
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_target_screen(pilot, captured.repo)
            paths = offered(screen)
            assert free in paths
            assert busy not in paths
            for disk in app.disks:
                if disk.in_use:  # the VM's own disk, boot media, mounted disks
                    assert disk.path not in paths
            options = [str(v) for _, v in screen.query_one("#target-0", Select)._options]
            assert busy not in options
            assert "/dev/vda" not in options


@run_async
async def test_backup_really_happens(loopdisk, workdir: str) -> None:
    from tests.tui.conftest import make_source_disk

    source, _trees = make_source_disk(loopdisk)
    repo_dir = os.path.join(workdir, "backups")
    app = LiferaftApp(Engine(), media_filter=only(source))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_backup(pilot)
        picker = screen.query_one("#backup-disks", SelectionList)
        picker.select(source)
        await settle(pilot)
        # Ticked and unticked read apart without colour (NO_COLOR, serial consoles).
        for y in range(picker.option_count):
            line = picker.render_line(y).text
            mark = "[x] " if picker.get_option_at_index(y).value == source else "[ ] "
            assert line.startswith(mark), line
        screen.query_one("#backup-path", Input).value = repo_dir
        screen.query_one("#backup-name", Input).value = "tuibackup"
        await pilot.press("ctrl+n")
        # A summary to confirm first: the disk by model, serial and size, where, what name.
        question = await wait_for_screen(pilot, QuestionModal)
        await settle(pilot)
        summary = screen_text(pilot)
        disk = Engine().find_disk(source)
        assert disk.describe() in summary and repo_dir in summary and "tuibackup" in summary
        await pilot.press("n")  # "Change": back to the form, nothing started
        await wait_for_screen(pilot, BackupScreen)
        assert not os.path.exists(repo_dir)
        await pilot.press("ctrl+n")
        question = await wait_for_screen(pilot, QuestionModal)
        assert question is not None
        await pilot.press("y")
        progress = await wait_for_screen(pilot, ProgressScreen)
        await settle(pilot)
        await wait_until(pilot, lambda: progress.finished, "the job has finished")
        await settle(pilot)
        text = str(progress.query_one("#summary").render())
        assert "Done." in text, text
        assert "Verification: OK" in text
    engine = Engine()
    repo = engine.open_repository(repo_dir)
    images = engine.list_images(repo)
    assert [i.name for i in images] == ["tuibackup"]
    assert engine.verify(repo, "tuibackup").ok


@run_async
async def test_media_scan_finds_repository_read_only_and_unmounts(loopdisk, workdir: str) -> None:
    disk = loopdisk(64 * 1024 * 1024)
    (part,) = partition_disk(disk, "gpt", [PartSpec(None, "ext4")])
    make_fs(part, "ext4", label="STICK")
    with mounted(part, "ext4") as point:
        Engine().open_repository(os.path.join(point, "liferaft"), create=True).create_now()
    before = disk_bytes_sha256(disk, 0, 64 * 1024 * 1024)
    app = LiferaftApp(Engine(), media_filter=only(disk))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert f"{part}:/liferaft" in screen_text(pilot)
        assert part not in open("/proc/self/mounts").read()
        await pilot.press("r")
        await wait_for_screen(pilot, SourceScreen)
        await settle(pilot)
        await pilot.press("enter")  # the first (only) source
        await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        assert part in open("/proc/self/mounts").read()  # mounted while in use
        assert "no images" in screen_text(pilot)
        await pilot.press("escape", "escape")
        await wait_for_screen(pilot, HomeScreen)
        await settle(pilot)
        assert part not in open("/proc/self/mounts").read()
    # Read-only all along: not one byte changed (no journal replay, no atime).
    assert disk_bytes_sha256(disk, 0, 64 * 1024 * 1024) == before


class CrashingEngine(Engine):
    """A real engine whose image listing has a bug: the UI must not die of it."""

    def list_images(self, repo):
        raise RuntimeError("boom in a worker")


@run_async
async def test_worker_crash_becomes_error_modal(captured: CapturedImage) -> None:
    app = LiferaftApp(CrashingEngine(), media_filter=only())
    async with app.run_test(size=(80, 24)) as pilot:
        await type_source(pilot, "r", captured.repo)
        await wait_for_screen(pilot, ErrorModal)
        assert "boom in a worker" in screen_text(pilot)
        assert "What to do" in screen_text(pilot)
        await pilot.press("enter")
        assert app.is_running
        await pilot.press("escape", "escape")
        await wait_for_screen(pilot, HomeScreen)
        await pilot.press("l")
        assert "boom in a worker" in "\n".join(app.log_handler.lines())


@run_async
async def test_verify_flow(captured: CapturedImage) -> None:
    app = LiferaftApp(Engine(), media_filter=only(captured.source))
    async with app.run_test(size=(80, 24)) as pilot:
        await type_source(pilot, "v", captured.repo)
        await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        await pilot.press("enter")
        progress = await wait_for_screen(pilot, ProgressScreen)
        await settle(pilot)
        await wait_until(pilot, lambda: progress.finished, "the job has finished")
        await settle(pilot)
        text = str(progress.query_one("#summary").render())
        assert f"Verified {captured.ref}: OK" in text, text
        assert "can be restored" in text


@run_async
async def test_restore_from_a_repository_found_on_attached_media(loopdisk, workdir: str) -> None:
    from tests.tui.conftest import make_source_disk

    source, trees = make_source_disk(loopdisk)
    stick = loopdisk(160 * 1024 * 1024)
    (stick_part,) = partition_disk(stick, "gpt", [PartSpec(None, "ext4")])
    make_fs(stick_part, "ext4", label="BACKUPS")
    with mounted(stick_part, "ext4") as point:
        engine = Engine()
        repo = engine.open_repository(os.path.join(point, "liferaft"), create=True)
        engine.capture(repo, "tuihost", [source])
    target = loopdisk(DISK_SIZE)
    app = LiferaftApp(Engine(), media_filter=only(source, stick, target))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await wait_for_screen(pilot, SourceScreen)
        await settle(pilot)
        assert [s.label for s in app.sources] == [f"{stick_part}:/liferaft"]
        await pilot.press("enter")
        await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        await pilot.press("enter")
        screen = await wait_for_screen(pilot, TargetScreen)
        await settle(pilot)
        # The stick is mounted while it is read: it cannot be a target.
        assert stick not in offered(screen)
        await pick_target(pilot, screen, target)
        assert "Done." in await confirm_restore(pilot, os.path.basename(target))
        # Unmounted before the summary tells the user to remove the stick.
        assert stick_part not in open("/proc/self/mounts").read()
    for n, part in enumerate(reread_partitions(target, 2), 1):
        fsck_clean(part, "ext4")
        assert tree_checksums(part, "ext4") == trees[n]


@run_async
async def test_backup_screen_refuses_a_disk_mounted_read_write(loopdisk) -> None:
    disk = loopdisk(64 * 1024 * 1024)
    make_fs(disk, "ext4", label="LIVE")
    with mounted(disk, "ext4") as point:
        app = LiferaftApp(Engine(), media_filter=only(disk))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_backup(pilot)
            await wait_until(pilot, lambda: bool(screen.disks), "the disks are listed")
            picker = screen.query_one("#backup-disks", SelectionList)
            index = next(
                y for y in range(picker.option_count) if picker.get_option_at_index(y).value == disk
            )
            option = picker.get_option_at_index(index)
            assert option.disabled, "a disk mounted read-write can be ticked"
            assert "cannot back up" in str(option.prompt) and point in str(option.prompt)
