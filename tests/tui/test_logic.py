"""Pure parts of the UI: target suggestion, progress maths, profile reading, typed names."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import pytest

from rescue_app.progress import Progress
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.matching import candidate_targets, suggest_targets
from rescue_app.tui.profile import DEFAULT_TITLE, load_profile_info
from rescue_app.tui.screens.confirm import matches_device
from rescue_app.tui.screens.home import HomeScreen
from rescue_app.tui.screens.source import SourceScreen
from rescue_app.tui.tracking import ProgressTracker
from tests.tui.fake_engine import DISKS, GIB, MANIFEST, FakeEngine
from tests.tui.pilot_helpers import run_async, settle, wait_for_screen


def test_in_use_disks_are_never_candidates() -> None:
    paths = [d.path for d in candidate_targets(DISKS)]
    assert "/dev/sdb" not in paths  # the boot medium
    assert paths == ["/dev/sda", "/dev/sdc"]


def test_suggestion_prefers_serial_then_closest_size() -> None:
    assert [d.path if d else None for d in suggest_targets(MANIFEST.disks, DISKS)] == ["/dev/sda"]
    image = dataclasses.replace(MANIFEST.disks[0], serial="OTHER")
    suggested = suggest_targets([image], DISKS)[0]
    assert suggested is not None and suggested.path == "/dev/sda"  # 250 GiB beats 1 TiB
    huge = dataclasses.replace(image.partitions[1], size=2048 * GIB)
    too_big = dataclasses.replace(image, size=2049 * GIB, partitions=(huge,))
    assert suggest_targets([too_big], DISKS) == [None]


def test_suggestion_never_offers_an_in_use_disk_even_with_matching_serial() -> None:
    image = dataclasses.replace(MANIFEST.disks[0], serial="4C530001", size=8 * GIB, partitions=())
    pick = suggest_targets([image], DISKS)[0]
    assert pick is not None and pick.path != "/dev/sdb"


def test_tracker_rate_and_eta() -> None:
    t = ProgressTracker(started=0.0)
    t.update(Progress("restore", "p1", 0, 100_000_000, 0, 50_000_000), now=0.0)
    view = t.update(
        Progress("restore", "p1", 50_000_000, 100_000_000, 50_000_000, 50_000_000), now=5.0
    )
    assert view.rate_text == "9.5 MiB/s"  # 10 MB/s in the binary units of every size shown
    assert view.eta_text == "0:05"
    assert view.elapsed_text == "0:05"
    assert view.overall == pytest.approx(0.5)
    assert view.item_fraction == pytest.approx(1.0)


def test_profile_defaults_and_tolerance(tmp_path: Any, caplog: Any) -> None:
    assert load_profile_info(None).title == DEFAULT_TITLE or os.path.exists(
        "/etc/liferaft/profile.yaml"
    )
    missing = load_profile_info(str(tmp_path / "nope.yaml"))
    assert (missing.title, missing.repository) == (DEFAULT_TITLE, None)
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: [unclosed\n")
    with caplog.at_level(logging.WARNING):
        assert load_profile_info(str(broken)).title == DEFAULT_TITLE
    parent = tmp_path / "default.yaml"
    parent.write_text(
        "label: RESCUE\ntitle: liferaft rescue\nsuite: bookworm\n"
        "mirror: http://deb.debian.org/debian\nrepository: /srv/images\n"
    )
    child = tmp_path / "site.yaml"
    child.write_text("extends: default\ntitle: Site rescue\n")
    info = load_profile_info(str(child))
    assert (info.title, info.repository) == ("Site rescue", "/srv/images")
    # The builder's schema: a wrong key is logged naming file, key and line.
    child.write_text("extends: default\ntitle: Site rescue\ntitel: typo\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_profile_info(str(child)).title == DEFAULT_TITLE
    assert f"{child}:3: unknown key 'titel'" in caplog.text


def test_profile_files_of_this_repository_are_readable() -> None:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(here, "profiles", "example-site.yaml")
    if not os.path.exists(path):
        pytest.skip("no profiles/ in this tree")
    assert load_profile_info(path).title != ""


def test_typed_confirmation_must_be_exact() -> None:
    assert matches_device("/dev/sdb", "/dev/sdb")
    assert matches_device(" sdb ", "/dev/sdb")
    for wrong in ("", "sd", "sdb1", "/dev/sdc", "/dev/sdb ", "yes", "SDB"):
        if wrong.strip() in ("/dev/sdb", "sdb"):
            continue
        assert not matches_device(wrong, "/dev/sdb"), wrong


@run_async
async def test_runs_with_no_color_on_a_vt100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "vt100")
    app = LiferaftApp(FakeEngine(), media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_screen(pilot, HomeScreen)
        await settle(pilot)
        assert app.title == DEFAULT_TITLE
        await pilot.press("r")
        await wait_for_screen(pilot, SourceScreen)
        await pilot.press("l")  # the log is one key away even here
        await pilot.press("escape", "escape")
        await wait_for_screen(pilot, HomeScreen)


def test_typed_user_goes_into_the_url_and_never_a_password() -> None:
    from rescue_app.tui.sources import NetworkSource, url_with_user

    assert (
        url_with_user("http://nas:8080/liferaft?ca=/ca.pem", "ann")
        == "http://ann@nas:8080/liferaft?ca=/ca.pem"
    )
    assert url_with_user("sftp://bob@nas/srv", "ann") == "sftp://ann@nas/srv"
    assert url_with_user(" smb://nas/share ", "") == "smb://nas/share"
    source = NetworkSource(url_with_user("https://nas/repo", "ann"), "s3cret")
    assert source.who == "ann@nas" and "s3cret" not in source.label + source.detail


def test_interface_rows_say_no_cable_and_configuring() -> None:
    from rescue_app.tui.screens.network import interface_row
    from tests.tui.fake_engine import NETWORK

    up, down = NETWORK.interfaces
    assert interface_row(up) == (
        "enp3s0",
        "up",
        "52:54:00:12:34:56",
        "192.168.10.57/24",
        "192.168.10.1",
    )
    assert interface_row(down)[1:] == ("down", "52:54:00:12:34:57", "-", "-")
    no_cable = dataclasses.replace(down, state="up")
    assert interface_row(no_cable)[1] == "no cable"


def test_no_screen_binds_a_key_twice() -> None:
    """tui/keymap.py holds every screen's keys; on one screen a key bound
    twice would hide the later binding."""
    from textual.binding import Binding

    from rescue_app.tui import keymap

    tables = {n: v for n, v in vars(keymap).items() if n.isupper() and isinstance(v, list)}
    assert {"APP", "HOME", "SOURCE", "BROWSE", "TARGET"} <= set(tables)
    for name, table in tables.items():
        assert all(isinstance(b, Binding) for b in table), name
        keys = [k for b in table if isinstance(b, Binding) for k in b.key.split(",")]
        assert len(set(keys)) == len(keys), f"{name} binds a key twice: {sorted(keys)}"
