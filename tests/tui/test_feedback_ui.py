"""The UI's rough edges of issue 10 (items 6, 15): the fake engine, nothing written."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input, Static

from rescue_app.engine.luks import KeySource
from rescue_app.engine.plan import RestorePlan
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.backup import BackupScreen
from rescue_app.tui.screens.confirm import ConfirmEraseModal
from rescue_app.tui.screens.error import ErrorModal
from rescue_app.tui.screens.home import HomeScreen
from rescue_app.tui.screens.images import short_date
from rescue_app.tui.screens.logview import LogScreen
from rescue_app.tui.screens.progress import ProgressScreen
from rescue_app.tui.screens.question import QuestionModal
from tests.tui.fake_engine import FakeEngine
from tests.tui.pilot_helpers import (
    open_target,
    run_async,
    screen_text,
    settle,
    wait_for_screen,
)


def test_image_times_have_seconds() -> None:
    assert short_date("2026-11-25T10:15:00Z") != short_date("2026-11-25T10:15:04Z")
    assert short_date("2026-11-25T10:15:04Z") == "2026-11-25 10:15:04"


class NoticingEngine(FakeEngine):
    """A restore during which the server is unreachable for a while."""

    go_on = False  # the test sets it: the server is back

    def restore(
        self,
        plan: RestorePlan,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        verify: bool = False,
        luks_key: KeySource | None = None,
    ) -> Any:
        notice = "server unreachable (connection refused), retrying (12 s of 60)"
        progress(Progress("notice", "http://nas/liferaft", 0, 0, notice=notice))
        self.seen = True
        for _ in range(100):
            if cancel is not None and cancel.cancelled:
                break
            if self.go_on:
                break
            import time

            time.sleep(0.05)
        progress(Progress("notice", "http://nas/liferaft", 0, 0, notice=""))
        return super().restore(plan, progress=progress, cancel=cancel, verify=verify)


@run_async
async def test_typed_repository_remembered_and_jobs_in_the_log() -> None:
    engine = NoticingEngine()
    app = LiferaftApp(engine, media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_target(pilot, "/mnt/usb/typed")
        await settle(pilot)
        await pilot.press("ctrl+n")
        modal = await wait_for_screen(pilot, ConfirmEraseModal)
        placeholder = modal.query_one("#confirm-0", Input).placeholder
        assert placeholder.startswith("(type "), placeholder  # never reads as typed text
        await pilot.press(*"sda", "enter")
        progress = await wait_for_screen(pilot, ProgressScreen)
        for _ in range(30):  # (not settle: it waits for the job's worker to end)
            notice = str(progress.query_one("#progress-notice", Static).render())
            if notice:
                break
            await pilot.pause(0.1)
        assert "server unreachable" in notice and "12 s of 60" in notice
        engine.go_on = True
        for _ in range(50):
            if progress.finished:
                break
            await pilot.pause(0.1)
        assert str(progress.query_one("#progress-notice", Static).render()).strip() == ""
        summary = str(progress.query_one("#summary").render())
        assert summary.count("Press Enter") == 1
        await pilot.press("enter")
        await wait_for_screen(pilot, HomeScreen)
        await settle(pilot)
        await pilot.press("b")
        backup = await wait_for_screen(pilot, BackupScreen)
        assert backup.query_one("#backup-path", Input).value == "/mnt/usb/typed"
        await pilot.press("escape")
        await wait_for_screen(pilot, HomeScreen)
        await pilot.press("l")
        log = await wait_for_screen(pilot, LogScreen)
        await settle(pilot)
        lines = "\n".join(str(line) for line in log.query_one("#log").lines)
        assert "Restoring" in lines and "started" in lines and ": done." in lines, lines


@run_async
async def test_cancelled_summary_says_press_enter_once() -> None:
    app = LiferaftApp(FakeEngine(block=True), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_target(pilot, "/mnt/usb/typed")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await wait_for_screen(pilot, ConfirmEraseModal)
        await pilot.press(*"sda", "enter")
        progress = await wait_for_screen(pilot, ProgressScreen)
        await pilot.press("escape")
        await wait_for_screen(pilot, QuestionModal)
        await pilot.press("y")
        await settle(pilot)
        summary = str(progress.query_one("#summary").render())
        assert "Cancelled." in summary and summary.count("Press Enter") == 1, summary


class TooSmallEngine(FakeEngine):
    def plan_restore(self, *args: Any, **kw: Any) -> RestorePlan:
        from rescue_app.errors import TargetRefusedError

        raise TargetRefusedError(
            "QEMU HARDDISK (/dev/sda) is too small: the image's "
            "partitions need 10.0 GiB (10737418240 bytes)"
        )


@run_async
async def test_next_on_a_target_that_cannot_take_the_image_says_why() -> None:
    app = LiferaftApp(TooSmallEngine(), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_target(pilot, "/mnt/usb/typed")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await wait_for_screen(pilot, ErrorModal)
        await settle(pilot)
        assert "too small" in screen_text(pilot)


def test_home_and_disks_name_an_interrupted_restore() -> None:
    import dataclasses

    from rescue_app.engine.diskmodel import format_disks_table
    from rescue_app.tui.screens.home import disk_state
    from tests.tui.fake_engine import DISKS

    text = "incomplete restore of web1@20261125T101500Z (started 2026-12-04 10:15:02 UTC)"
    disk = dataclasses.replace(DISKS[0], incomplete_restore=text)
    assert text in disk_state(disk)
    assert text in " ".join(format_disks_table([disk]).split())  # wrapped at 80 columns


@run_async
async def test_grow_checkbox_reads_without_colour() -> None:
    from rescue_app.tui.checklist import MarkedCheckbox

    app = LiferaftApp(FakeEngine(), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_target(pilot, "/mnt/usb/typed")
        await settle(pilot)
        grow = screen.query_one("#grow", MarkedCheckbox)
        assert str(grow.render()).startswith("[ ]"), str(grow.render())
        grow.value = True
        await settle(pilot)
        assert str(grow.render()).startswith("[x]"), str(grow.render())
