"""Browse files (issue 13) in the UI at 80x24, keyboard only, with the real
Engine over a real captured loop-disk image: partitions, folders, marks, the
copy on the progress screen, and the mount released however the screen ends."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from textual.widgets import Input, OptionList

from rescue_app.engine import Engine, ImageMount
from rescue_app.engine.mounts import loops_backed_under
from rescue_app.errors import CommandError, LiferaftError, UsageError
from rescue_app.progress import CancelToken
from rescue_app.run import run
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.profile import ProfileInfo
from rescue_app.tui.screens.browse import BrowseScreen, CopyDestinationModal, why_no_files
from rescue_app.tui.screens.error import ErrorModal
from rescue_app.tui.screens.home import HomeScreen
from rescue_app.tui.screens.images import ImagesScreen
from rescue_app.tui.screens.progress import ProgressScreen
from rescue_app.tui.screens.question import QuestionModal
from rescue_app.tui.screens.source import SourceScreen
from tests.enginekit import liferaft
from tests.helpers.diskkit import MIB, PartSpec, make_fs, mounted, partition_disk
from tests.tui.conftest import CapturedImage
from tests.tui.fake_engine import MANIFEST
from tests.tui.pilot_helpers import (
    run_async,
    screen_text,
    settle,
    type_source,
    wait_for_screen,
    wait_until,
)


def fuse_mounts_under(point: str) -> list[str]:
    """Mount points at or below ``point`` in /proc/self/mountinfo (FUSE or not)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == point or p.startswith(point + "/")]


def assert_released(point: str) -> None:
    assert fuse_mounts_under(point) == []
    assert loops_backed_under(point) == []
    assert not os.path.exists(point)  # the temporary folder is gone too


async def open_browse(pilot: Any, repo: str) -> BrowseScreen:
    await type_source(pilot, "r", repo)
    await wait_for_screen(pilot, ImagesScreen)
    await settle(pilot)
    await pilot.press("f")
    screen = await wait_for_screen(pilot, BrowseScreen)
    await wait_until(pilot, lambda: screen.image_mount is not None, "the image is mounted")
    await settle(pilot)
    return screen


async def highlight(pilot: Any, screen: BrowseScreen, name: str) -> None:
    """Arrow keys down to the entry ``name`` of the folder shown."""
    names = [e.name for e in screen.entries]
    box = screen.query_one("#browse-list", OptionList)
    for _ in range(len(names) + 1):
        if box.highlighted is not None and names[box.highlighted] == name:
            return
        await pilot.press("down")
    raise AssertionError(f"{name} not in {names}")


async def open_entry(pilot: Any, screen: BrowseScreen, name: str, rel: str) -> None:
    await highlight(pilot, screen, name)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.rel == rel, f"{rel} is shown")
    await settle(pilot)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.mark.root
@run_async
async def test_browse_marks_two_files_and_copies_them(captured: CapturedImage, workdir) -> None:
    app = LiferaftApp(Engine(), scan_media=False)
    with mounted(captured.source + "p2", "ext4") as disk:  # a disk to copy onto
        await browse_and_copy(app, captured, workdir, disk)
        out = os.path.join(disk, "restored")
        assert sorted(os.listdir(out)) == ["big-random.bin", "file-002.bin"]
        for name in os.listdir(out):
            assert sha256(os.path.join(out, name)) == captured.trees[1][f"data/{name}"]


async def browse_and_copy(
    app: LiferaftApp, captured: CapturedImage, workdir: str, disk: str
) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_browse(pilot, captured.repo)
        assert screen.image_mount is not None
        point = screen.image_mount.point
        assert fuse_mounts_under(point)  # served while the screen is open
        text = screen_text(pilot)
        assert "partitions" in text
        options = screen.query_one("#browse-list", OptionList)
        lines = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert [ln.split()[:2] for ln in lines] == [["disk1/p1", "ext4"], ["disk1/p2", "ext4"]]
        await pilot.press("enter")  # partition 1
        await wait_until(pilot, lambda: screen.part is not None, "partition 1 is listed")
        await settle(pilot)
        await open_entry(pilot, screen, "data", "/data")
        await highlight(pilot, screen, "big-random.bin")
        await pilot.press("space")
        await highlight(pilot, screen, "file-002.bin")
        await pilot.press("space")
        assert sorted(screen.marks) == ["/data/big-random.bin", "/data/file-002.bin"]
        marked = str(screen.query_one("#browse-marked").render())
        assert "Marked: 2 file(s)" in marked and "disk1/p1" in marked
        # Backspace goes up and comes back to the folder it left.
        await pilot.press("backspace")
        await wait_until(pilot, lambda: screen.rel == "", "the root is shown")
        await settle(pilot)
        assert (
            screen.entries[screen.query_one("#browse-list", OptionList).highlighted or 0].name
            == "data"
        )

        # A bad destination: one line in the dialog, nothing started.
        await pilot.press("c")
        modal = await wait_for_screen(pilot, CopyDestinationModal)
        await settle(pilot)
        a_file = os.path.join(workdir, "a-file")
        open(a_file, "w").close()
        modal.query_one("#copy-path", Input).value = a_file
        modal.query_one("#copy-path", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        error = str(modal.query_one("#copy-error").render())
        assert error == f"destination {a_file} is not a folder (give a folder to copy into)"
        assert isinstance(app.screen, CopyDestinationModal)
        assert not isinstance(app.screen, ErrorModal)

        # The mounted disk is offered: arrows to it, Enter takes its folder,
        # a sub-folder typed after it, Enter copies.
        folders = modal.query_one("#copy-folders", OptionList)
        folders.focus()
        for _ in range(len(modal.folders)):
            if modal.folders[folders.highlighted or 0] == disk:
                break
            await pilot.press("down")
        await pilot.press("enter")
        assert modal.query_one("#copy-path", Input).value == disk + "/"
        await pilot.press(*"restored")
        await pilot.press("enter")
        out = os.path.join(disk, "restored")
        progress = await wait_for_screen(pilot, ProgressScreen)
        await wait_until(pilot, lambda: progress.finished, "the copy has finished")
        await settle(pilot)
        summary = str(progress.query_one("#summary").render())
        assert "Done." in summary, summary
        assert f"Copied 2 item(s) of {captured.ref}, disk1/p1, into {out}" in summary
        assert fuse_mounts_under(point)  # the browse screen below still has it
        await pilot.press("enter")  # home: the browse screen closes
        await wait_for_screen(pilot, HomeScreen)
        await wait_until(pilot, lambda: not app.image_mounts, "the mount is released")
        await settle(pilot)
        assert_released(point)


@pytest.mark.root
@run_async
async def test_escape_from_browse_releases_the_mount(captured: CapturedImage, tmp_path) -> None:
    workdir = str(tmp_path)
    app = LiferaftApp(Engine(), scan_media=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_browse(pilot, captured.repo)
        assert screen.image_mount is not None
        point = screen.image_mount.point
        assert len(loops_backed_under(point)) == 2
        # Two marked paths that would land on one name: refused before any copy.
        part = screen.image_mount.partitions[0]
        with pytest.raises(UsageError, match="would both be copied as data"):
            app.engine.copy_from_image(screen.image_mount, part, ["/data", "/data/"], workdir)
        assert os.listdir(workdir) == []
        await pilot.press("escape")
        await wait_for_screen(pilot, ImagesScreen)
        await wait_until(pilot, lambda: not app.image_mounts, "the mount is released")
        await settle(pilot)
        assert_released(point)
        # The signals are back as they were before the mount.
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.root
@run_async
async def test_sigterm_while_browsing_ends_the_app_and_releases(captured: CapturedImage) -> None:
    """libfuse would take a SIGTERM left at its default and only stop its own
    loop; the UI takes it first and leaves in order."""
    app = LiferaftApp(Engine(), scan_media=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_browse(pilot, captured.repo)
        assert screen.image_mount is not None
        point = screen.image_mount.point
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), handler  # ours: else this test would end pytest
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(pilot, lambda: not app.is_running or app._exit, "the app leaves")
    assert app.return_code == 128 + signal.SIGTERM
    assert_released(point)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_partitions_without_files_say_why() -> None:
    parts = Engine().image_partitions(MANIFEST)  # vfat, ext4, swap
    live = cast(ImageMount, SimpleNamespace(mounted={"disk1/p2": "/x/disk1/p2/files"}))
    assert [why_no_files(p, live) for p in parts] == [
        "vfat: cannot be opened on this machine",
        "",
        "swap: no files",
    ]


def test_a_cancelled_command_is_killed_at_once() -> None:
    """The copy's cp stops when the UI cancels, not when it has copied all."""
    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(CommandError):
        run(["sleep", "30"], cancel=token)
    assert time.monotonic() - started < 3


@run_async
async def test_a_mount_that_fails_is_one_error_and_gives_the_signals_back() -> None:
    from tests.tui.fake_engine import FakeEngine

    class NoFuse(FakeEngine):
        def mount_image(self, repo: Any, ref: str, point: str, **_: Any) -> Any:
            raise LiferaftError("could not mount the image through FUSE", hint="modprobe fuse")

    app = LiferaftApp(NoFuse(), scan_media=False, profile=ProfileInfo(repository="/fake"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await wait_for_screen(pilot, SourceScreen)
        await settle(pilot)
        await pilot.press("enter")  # the profile's repository
        await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        await pilot.press("f")
        modal = await wait_for_screen(pilot, ErrorModal)
        assert "could not mount the image through FUSE" in screen_text(pilot)
        assert modal is app.screen
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert not app.image_mounts


@pytest.mark.root
@run_async
async def test_cancel_stops_a_slow_copy_and_says_so(captured: CapturedImage, workdir) -> None:
    """From a slow server (nginx, 1 MiB/s) the copy of 3.5 MiB takes seconds:
    Cancel, Yes: the copy stops (cp is killed), the summary says so."""
    from tests.stores.serverkit import Nginx

    out = os.path.join(workdir, "out")
    app = LiferaftApp(Engine(), scan_media=False)
    with Nginx(captured.repo, os.path.join(workdir, "nginx"), limit_rate="1m") as nginx:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_browse(pilot, f"http://127.0.0.1:{nginx.port}/")
            assert screen.image_mount is not None
            point = screen.image_mount.point
            await pilot.press("enter")  # partition 1
            await wait_until(pilot, lambda: screen.part is not None, "partition 1 is listed")
            await settle(pilot)
            await open_entry(pilot, screen, "data", "/data")
            await highlight(pilot, screen, "big-random.bin")
            await pilot.press("space", "space")  # and big-zeros-then-random.bin
            assert len(screen.marks) == 2
            await pilot.press("c")
            modal = await wait_for_screen(pilot, CopyDestinationModal)
            await settle(pilot)
            modal.query_one("#copy-path", Input).value = out
            modal.query_one("#copy-path", Input).focus()
            await pilot.press("enter")
            progress = await wait_for_screen(pilot, ProgressScreen)
            await wait_until(pilot, lambda: os.path.exists(out), "the copy has begun")
            started = time.monotonic()
            await pilot.press("c")
            await wait_for_screen(pilot, QuestionModal)
            await pilot.press("y")
            await wait_until(pilot, lambda: progress.finished, "the copy has stopped", 30)
            assert time.monotonic() - started < 10
            await settle(pilot)
            summary = str(progress.query_one("#summary").render())
            assert "Cancelled." in summary and "Copying was stopped" in summary, summary
            await pilot.press("enter")
            await wait_for_screen(pilot, HomeScreen)
            await wait_until(pilot, lambda: not app.image_mounts, "the mount is released")
            await settle(pilot)
            assert_released(point)
    copied = os.listdir(out)
    assert sum(os.path.getsize(os.path.join(out, n)) for n in copied) < 3 * 1024 * 1024 + 512 * 1024


def test_a_clonezilla_image_is_not_browsed(tmp_path) -> None:
    """Its chunks are served in order only: one line instead of a mount that
    would read the image through for every random read."""
    folder = tmp_path / "2026-01-01-img"
    folder.mkdir()
    (folder / "disk").write_text("sda\n")
    (folder / "clonezilla-img").write_text("")
    engine = Engine()
    repo = engine.open_repository(str(folder))
    for call in (
        lambda: engine.mount_image(repo, "2026-01-01-img", str(tmp_path)),
        lambda: engine.extract(repo, "2026-01-01-img", ["/etc"], str(tmp_path / "out")),
    ):
        with pytest.raises(UsageError, match="cannot be browsed or extracted directly"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["2026-01-01-img"]


@pytest.mark.root
@run_async
async def test_browse_shows_a_partition_backed_up_file_by_file(loopdisk, workdir) -> None:
    """An image of the online backup (its partition stored file by file, no
    image file): the partition is listed with its files, a folder opens, a
    marked file copies out equal, and the mount is released."""
    dev = loopdisk(128 * MIB)
    (part,) = partition_disk(dev, "gpt", [PartSpec(None, "ext4", "root")])
    make_fs(part, "ext4", "rootfs")
    data = os.urandom(5 * MIB + 123)
    with mounted(part, "ext4") as point:
        os.makedirs(f"{point}/etc/conf")
        Path(point, "etc/conf/big.bin").write_bytes(data)
        Path(point, "etc/hosts").write_text("127.0.0.1 localhost\n")
        repo = os.path.join(workdir, "repo")
        liferaft("backup", "--repo", repo, "--name", "web", dev)
    app = LiferaftApp(Engine(), scan_media=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_browse(pilot, repo)
        assert screen.image_mount is not None
        point = screen.image_mount.point
        options = screen.query_one("#browse-list", OptionList)
        lines = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert [ln.split()[:2] for ln in lines] == [["disk1/p1", "ext4"]]
        assert "cannot" not in lines[0]
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.part is not None, "partition 1 is listed")
        await settle(pilot)
        await open_entry(pilot, screen, "etc", "/etc")
        assert [e.name for e in screen.entries] == ["conf", "hosts"]
        await open_entry(pilot, screen, "conf", "/etc/conf")
        await highlight(pilot, screen, "big.bin")
        await pilot.press("space")
        await pilot.press("c")
        modal = await wait_for_screen(pilot, CopyDestinationModal)
        await settle(pilot)
        out = os.path.join(workdir, "out")
        modal.query_one("#copy-path", Input).value = out
        modal.query_one("#copy-path", Input).focus()
        await pilot.press("enter")
        progress = await wait_for_screen(pilot, ProgressScreen)
        await wait_until(pilot, lambda: progress.finished, "the copy has finished")
        await settle(pilot)
        assert "Done." in str(progress.query_one("#summary").render())
        await pilot.press("enter")
        await wait_for_screen(pilot, HomeScreen)
        await wait_until(pilot, lambda: not app.image_mounts, "the mount is released")
        await settle(pilot)
        assert_released(point)
    assert Path(out, "big.bin").read_bytes() == data
