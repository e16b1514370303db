"""Snapshots of the main screens at 80x24 (fake engine: deterministic, writes nothing).

Update after an intended change: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from textual.widgets import Input

from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.profile import ProfileInfo
from rescue_app.tui.screens.images import ImagesScreen
from rescue_app.tui.screens.progress import ProgressScreen
from tests.tui.fake_engine import FakeEngine
from tests.tui.pilot_helpers import settle

SIZE = (80, 24)
PROFILE = ProfileInfo(title="Example Corp. rescue", repository="/media/backups/liferaft")


def make_app(block: bool = False) -> LiferaftApp:
    return LiferaftApp(FakeEngine(block=block), profile=PROFILE, media_filter=lambda d: False)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProgressScreen, "clock", staticmethod(lambda: 1000.0))
    # the image list's "Last good backup": web1's newest image is 3 h old
    monkeypatch.setattr(
        ImagesScreen, "clock", staticmethod(lambda: datetime(2026, 11, 25, 13, 20, tzinfo=UTC))
    )


async def to_targets(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("r")
    await settle(pilot)
    await pilot.press("enter")  # the profile's default repository
    await settle(pilot)
    await pilot.press("enter")  # the newest image
    await settle(pilot)


def test_home(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle)


def test_source(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_network(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_image_list(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_plan(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=to_targets)


def test_confirm(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await to_targets(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.press(*"sd")

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_progress(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await to_targets(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        pilot.app.screen.query_one(Input).value = "/dev/sda"
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(make_app(block=True), terminal_size=SIZE, run_before=before)


def test_summary(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await to_targets(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        pilot.app.screen.query_one(Input).value = "sda"
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def browse_app() -> LiferaftApp:
    from tests.tui.fake_engine import FakeBrowseEngine

    return LiferaftApp(FakeBrowseEngine(), profile=PROFILE, media_filter=lambda d: False)


async def to_browse(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("r")
    await settle(pilot)
    await pilot.press("enter")  # the profile's default repository
    await settle(pilot)
    await pilot.press("f")  # Browse files of the newest image
    await settle(pilot)


def test_browse_partitions(snap_compare: Any) -> None:
    assert snap_compare(browse_app(), terminal_size=SIZE, run_before=to_browse)


def test_browse_folder_with_marks(snap_compare: Any) -> None:
    async def before(pilot: Any) -> None:
        await to_browse(pilot)
        await pilot.press("down", "enter")  # partition 2 (ext4)
        await settle(pilot)
        await pilot.press("enter")  # etc/
        await settle(pilot)
        await pilot.press("space", "down", "space")  # fstab and passwd
        await settle(pilot)

    assert snap_compare(browse_app(), terminal_size=SIZE, run_before=before)
