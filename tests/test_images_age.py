"""Each machine's last good backup and its age (issue 14): `liferaft images`,
its --json, and the TUI's image list, over a real repository of dated images."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rescue_app.engine import Engine, human_age
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.profile import ProfileInfo
from rescue_app.tui.screens.images import ImagesScreen
from tests.enginekit import liferaft
from tests.stores.test_retention import _open, make_image
from tests.tui.pilot_helpers import run_async, screen_text, settle, wait_for_screen

NOW = datetime.now(UTC).replace(microsecond=0)


def dated_repo(path: Path) -> dict[str, str]:
    """web: 3 h old; db: 2 and 5 days old; a newer web image whose manifest
    is damaged (not a good backup: it is not listed)."""
    repo = _open(str(path), create=True)
    refs = {
        "web": make_image(repo, "web", NOW - timedelta(hours=3, minutes=5), [1, 2]),
        "db-old": make_image(repo, "db", NOW - timedelta(days=5), [3]),
        "db": make_image(repo, "db", NOW - timedelta(days=2, hours=1), [3, 4]),
    }
    broken = make_image(repo, "web", NOW - timedelta(minutes=10), [5])
    name, image_id = broken.split("@")
    (path / "images" / name / f"{image_id}.json").write_bytes(b"{ damaged")
    repo.close()
    return refs


def test_images_shows_the_last_good_backup_age(tmp_path: Path) -> None:
    refs = dated_repo(tmp_path / "repo")
    proc = liferaft("images", "--repo", str(tmp_path / "repo"))
    lines = proc.stdout.splitlines()
    assert f"db: last good: 2 d ago ({refs['db']})" in lines
    assert f"web: last good: 3 h ago ({refs['web']})" in lines
    assert "skipped a damaged image" in proc.stderr

    entries = json.loads(liferaft("images", "--repo", str(tmp_path / "repo"), "--json").stdout)
    good = {e["ref"] for e in entries if e["last_good"]}
    assert good == {refs["web"], refs["db"]}
    ages = {e["ref"]: e["age_seconds"] for e in entries}
    since = (datetime.now(UTC) - NOW).total_seconds()  # NOW was taken at import
    assert abs(ages[refs["web"]] - (3 * 3600 + 300 + since)) < 120
    assert abs(ages[refs["db-old"]] - (5 * 86400 + since)) < 120


def test_human_age() -> None:
    assert human_age(timedelta(seconds=20)) == "just now"
    assert human_age(timedelta(minutes=90)) == "90 min ago"
    assert human_age(timedelta(hours=47)) == "47 h ago"
    assert human_age(timedelta(days=3, hours=23)) == "3 d ago"
    assert "clock" in human_age(timedelta(hours=-2))


@run_async
async def test_tui_image_list_shows_the_last_good_backup_age(tmp_path: Path) -> None:
    dated_repo(tmp_path / "repo")
    app = LiferaftApp(
        Engine(), scan_media=False, profile=ProfileInfo(repository=str(tmp_path / "repo"))
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("enter")  # the profile's repository
        await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        assert "Last good backup: db 2 d ago, web 3 h ago" in screen_text(pilot)
