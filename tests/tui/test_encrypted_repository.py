"""The UI asks for an encrypted repository's passphrase in its password
dialog, lists and verifies its images; Escape gives one error, nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from textual.widgets import Input

from rescue_app.engine import CredentialChain, Engine
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.error import ErrorModal
from rescue_app.tui.screens.images import ImagesScreen
from rescue_app.tui.screens.password import PasswordModal
from rescue_app.tui.screens.progress import ProgressScreen
from tests.tui.conftest import make_source_disk
from tests.tui.pilot_helpers import (
    run_async,
    screen_text,
    settle,
    type_source,
    wait_for_screen,
    wait_until,
)

pytestmark = pytest.mark.root

PASSPHRASE = "ui-Passphrase-93"


def _blind_engine() -> Engine:
    """Knows no passphrase: only the dialog can give it."""
    return Engine(credentials=CredentialChain.standard(environ={}))


@pytest.fixture
def encrypted(loopdisk: Callable[[int], str], workdir: str) -> str:
    source, _trees = make_source_disk(loopdisk)
    engine = Engine(credentials=CredentialChain.standard(environ={}))
    repo_dir = os.path.join(workdir, "enc")
    repo = engine.init_repository(repo_dir, passphrase=PASSPHRASE)
    engine.capture(repo, "tuisecret", [source])
    return repo_dir


async def _open(pilot, repo: str) -> None:
    await type_source(pilot, "v", repo)
    await wait_for_screen(pilot, PasswordModal)
    await pilot.pause(0.2)  # not settle(): the opening worker waits for the dialog


@run_async
async def test_passphrase_dialog_then_verify(encrypted: str) -> None:
    app = LiferaftApp(_blind_engine(), media_filter=lambda disk: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot, encrypted)
        text = screen_text(pilot)
        assert "Passphrase" in text and "is encrypted" in text, text
        modal = app.screen
        assert isinstance(modal, PasswordModal)
        modal.query_one("#password-input", Input).value = PASSPHRASE
        await pilot.press("enter")
        images = await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        assert [i.name for i in images.images] == ["tuisecret"]
        await pilot.press("enter")
        progress = await wait_for_screen(pilot, ProgressScreen)
        await wait_until(pilot, lambda: progress.finished, "the job has finished")
        await settle(pilot)
        assert ": OK" in str(progress.query_one("#summary").render())
        assert PASSPHRASE not in "\n".join(app.log_handler.lines())


@run_async
async def test_no_passphrase_is_one_error(encrypted: str) -> None:
    app = LiferaftApp(_blind_engine(), media_filter=lambda disk: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot, encrypted)
        await pilot.press("escape")
        await wait_for_screen(pilot, ErrorModal)
        await settle(pilot)
        assert "no passphrase" in screen_text(pilot)
