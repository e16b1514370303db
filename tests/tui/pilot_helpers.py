"""Driving the app in tests: wait until the workers and their follow-ups are done."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.pilot import Pilot
from textual.worker import WorkerState


async def settle(pilot: Pilot[Any], rounds: int = 400) -> None:
    """Let workers finish and the messages they post be handled (chains included)."""
    app = pilot.app
    quiet = 0
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()
        busy = any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in app.workers)
        quiet = 0 if busy else quiet + 1
        if quiet >= 3:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the app did not settle")


async def wait_until(pilot: Pilot[Any], condition: Any, what: str, timeout: float = 120) -> None:
    """Poll ``condition()`` while the app runs; a message posted by a worker
    that just finished may still be on its way when the workers are idle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await pilot.pause(0.05)


async def wait_for_screen(pilot: Pilot[Any], kind: type, timeout: float = 60) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not isinstance(pilot.app.screen, kind):
        if loop.time() > deadline:
            raise AssertionError(f"expected {kind.__name__}, the app shows {pilot.app.screen}")
        await pilot.pause(0.05)
    return pilot.app.screen


def screen_text(pilot: Pilot[Any]) -> str:
    """Everything the current screen's Static widgets say."""
    from rich.console import Console
    from textual.widgets import Static

    console = Console(width=200, record=True, no_color=True, file=open("/dev/null", "w"))
    for widget in pilot.app.screen.query(Static):
        content = widget.content
        console.print(content if not isinstance(content, str) else content, markup=False)
    return console.export_text()


def run_async(test: Any) -> Any:
    """Run an async test body with asyncio.run (no pytest async plugin needed)."""
    import functools

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def type_source(pilot: Pilot[Any], key: str, location: str) -> None:
    """From the home screen: the action ``key`` ("r" restore, "v" verify), its
    source typed as ``location`` and entered; the caller waits for what opens."""
    from textual.widgets import Input

    from rescue_app.tui.screens.source import SourceScreen

    await settle(pilot)
    await pilot.press(key)
    source = await wait_for_screen(pilot, SourceScreen)
    await settle(pilot)
    field = source.query_one("#source-path", Input)
    field.value = location
    field.focus()
    await pilot.press("enter")


async def open_target(pilot: Pilot[Any], repository: str) -> Any:
    """From the home screen: restore from the typed ``repository``, its first image:
    the target screen."""
    from rescue_app.tui.screens.target import TargetScreen

    await type_source(pilot, "r", repository)  # the repository: its images
    await settle(pilot)
    await pilot.press("enter")  # the first image
    screen = await wait_for_screen(pilot, TargetScreen)
    # its disks are listed by a worker: on a busy machine that takes a while
    await wait_until(pilot, lambda: screen.ready, "the target screen offers its disks")
    return screen


async def confirm_restore(pilot: Pilot[Any], typed: str) -> str:
    """From a target screen with a plan: start the restore, confirm it by
    typing ``typed`` (the disk's name), wait until it has finished; the
    summary's text."""
    from rescue_app.tui.screens.confirm import ConfirmEraseModal
    from rescue_app.tui.screens.progress import ProgressScreen

    await pilot.press("ctrl+n")
    await wait_for_screen(pilot, ConfirmEraseModal)
    await pilot.press(*typed, "enter")
    progress = await wait_for_screen(pilot, ProgressScreen)
    await settle(pilot)
    await wait_until(pilot, lambda: progress.finished, "the restore has finished")
    await settle(pilot)
    return str(progress.query_one("#summary").render())


async def open_backup(pilot: Pilot[Any]) -> Any:
    """From the home screen: the backup form, its lists filled."""
    from rescue_app.tui.screens.backup import BackupScreen

    await settle(pilot)
    await pilot.press("b")
    screen = await wait_for_screen(pilot, BackupScreen)
    await settle(pilot)
    return screen
