"""Cancelling asks first and says what is left; a crash in UI code becomes a modal.

These drive the UI logic with the fake engine: nothing here writes a disk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual import events
from textual.widgets import Input

from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.home import HomeScreen
from rescue_app.tui.screens.progress import ProgressScreen
from rescue_app.tui.screens.question import QuestionModal
from tests.tui.fake_engine import FakeEngine
from tests.tui.pilot_helpers import open_target, run_async, settle, wait_for_screen


async def start_restore(pilot: Any) -> ProgressScreen:
    await open_target(pilot, "/somewhere")
    await settle(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot)
    await pilot.press(*"sda", "enter")
    return await wait_for_screen(pilot, ProgressScreen)


@run_async
async def test_cancel_asks_first_then_leaves_a_clear_state() -> None:
    app = LiferaftApp(FakeEngine(block=True), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        progress = await start_restore(pilot)
        await pilot.press("escape")
        await wait_for_screen(pilot, QuestionModal)
        await pilot.press("n")  # keep going
        await wait_for_screen(pilot, ProgressScreen)
        assert not progress.token.cancelled
        await pilot.press("escape")
        await wait_for_screen(pilot, QuestionModal)
        await pilot.press("y")
        await settle(pilot)
        assert progress.token.cancelled and progress.finished
        text = str(progress.query_one("#summary").render())
        assert "Cancelled." in text
        assert "/dev/sda is incomplete" in text and "Restore again" in text
        await pilot.press("enter")
        await wait_for_screen(pilot, HomeScreen)


class BuggyHome(HomeScreen):
    def action_disks(self) -> None:
        raise ValueError("a bug in a key handler")


@run_async
async def test_crash_in_ui_code_ends_with_one_line_not_a_traceback() -> None:
    app = LiferaftApp(FakeEngine(), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.switch_screen(BuggyHome())
        await settle(pilot)
        # Not pilot.press: it would wait for the screen whose message loop the bug killed.
        app.post_message(events.Key("d", "d"))
        for _ in range(100):
            if app.return_code is not None or not app.is_running:
                break
            await asyncio.sleep(0.05)
    assert app.return_code == 1
    saved = app.save_log()
    assert saved is not None
    assert "a bug in a key handler" in open(saved).read()


@run_async
async def test_malformed_typed_url_is_explained_not_fatal() -> None:
    from rescue_app.tui.screens.error import ErrorModal
    from rescue_app.tui.screens.source import SourceScreen

    app = LiferaftApp(FakeEngine(), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        field = pilot.app.screen.query_one("#source-path", Input)
        field.value = "ftp://"
        field.focus()
        await pilot.press("enter")
        modal = await wait_for_screen(pilot, ErrorModal)
        assert "is not a repository URL" in str(modal.error)
        await pilot.press("escape")
        await wait_for_screen(pilot, SourceScreen)
        assert app.is_running
