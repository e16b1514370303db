"""liferaft schedule (issue 14): the settings, the timer drop-in and its
enablement written under a root the test makes (systemd is not PID 1 here:
``--root``, as ``systemctl --root`` does for a system being prepared), checked
with the real systemctl and systemd-analyze; refusals leave nothing written.
The installed package's units are verified in tests/test_deb.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rescue_app.engine import KeepPolicy, Schedule
from tests.enginekit import REPO_ROOT, assert_one_line_error, liferaft

UNITS = Path(REPO_ROOT) / "packaging" / "systemd"
WANTS = "etc/systemd/system/timers.target.wants"
DROPIN = "etc/systemd/system/liferaft-backup@{}.timer.d/schedule.conf"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A system root holding what the Debian package installs: the unit templates."""
    units = tmp_path / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in UNITS.iterdir():
        shutil.copyfile(unit, units / unit.name)
    return tmp_path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify with the root's unit folders ahead of the host's
    (where timers.target and the rest of systemd's own units are)."""
    path = f"{root}/etc/systemd/system:{root}/lib/systemd/system:/lib/systemd/system"
    return subprocess.run(
        ["systemd-analyze", "verify", *units],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_UNIT_PATH": path},
    )


def test_schedule_list_remove_round_trip(root: Path) -> None:
    before = files(root)
    out = liferaft(
        "schedule",
        "--root",
        str(root),
        "--repo",
        "backups",
        "--name",
        "web",
        "--every",
        "hourly",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
    ).stdout
    assert "liferaft-backup@web.timer is enabled under" in out
    liferaft(
        "schedule",
        "--root",
        str(root),
        "--repo",
        "s3://bucket/srv?endpoint=http://x:9000",
        "--name",
        "db",
        "--every",
        "Mon *-*-* 02:00",
    )
    settings = json.loads((root / "etc/liferaft/schedule/web.json").read_text())
    assert settings["repo"] == f"{REPO_ROOT}/backups"  # the service runs from /
    assert settings["keep"] == {"daily": 7, "weekly": 4}
    dropin = (root / DROPIN.format("web")).read_text()
    assert "OnCalendar=\nOnCalendar=hourly\n" in dropin
    link = root / WANTS / "liferaft-backup@web.timer"
    assert os.readlink(link) == "/lib/systemd/system/liferaft-backup@.timer"
    # the timers systemd would load pass its own check
    checked = verify(root, "liferaft-backup@web.timer", "liferaft-backup@db.timer")
    assert checked.returncode == 0, checked.stderr

    listed = liferaft("schedule", "--root", str(root), "--list").stdout.splitlines()
    assert len(listed) == 2
    assert listed[0].startswith("db ") and "every Mon *-*-* 02:00" in listed[0]
    assert "timer enabled" in listed[1] and "keep daily 7, weekly 4" in listed[1]

    out = liferaft("schedule", "--root", str(root), "--remove", "web").stdout
    assert "liferaft-backup@web.timer is disabled" in out
    liferaft("schedule", "--root", str(root), "--remove", "db")
    assert files(root) == before
    assert liferaft("schedule", "--root", str(root), "--list").stdout == "no scheduled backups\n"
    proc = liferaft("schedule", "--root", str(root), "--remove", "web", check=False)
    assert_one_line_error(proc, "no scheduled backup named 'web'")


def test_verify_catches_a_bad_timer(root: Path) -> None:
    """The check above can fail: a drop-in with a time systemd cannot read."""
    liferaft("schedule", "--root", str(root), "--repo", "/srv/b", "--name", "web")
    (root / DROPIN.format("web")).write_text("[Timer]\nOnCalendar=\nOnCalendar=bogus\n")
    checked = verify(root, "liferaft-backup@web.timer")
    assert checked.returncode != 0 and "bogus" in checked.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--repo", "sftp://backup:s3cret@nas/srv", "--name", "web"], "holds a password"),
        (["--repo", "/srv/b", "--name", "web", "--every", "bogus"], "not a time systemd"),
        (["--repo", "/srv/b", "--name", "../web"], "not an image name"),
        (["--repo", "/srv/b", "--name", "web", "--keep-daily", "-1"], "negative"),
        (["--name", "web"], "needs --repo and --name"),
        (["--list", "--repo", "/srv/b"], "take no --repo"),
        (["--run", "nothing"], "no scheduled backup named 'nothing'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(root: Path, args: list[str], needle: str) -> None:
    before = files(root)
    proc = liferaft("schedule", "--root", str(root), *args, check=False)
    line = assert_one_line_error(proc, needle)
    assert "s3cret" not in proc.stdout + proc.stderr
    assert line and files(root) == before


def test_without_the_package_units_nothing_is_written(tmp_path: Path) -> None:
    proc = liferaft(
        "schedule", "--root", str(tmp_path), "--repo", "/srv/b", "--name", "web", check=False
    )
    assert_one_line_error(proc, "liferaft-backup@.timer is not installed")
    assert files(tmp_path) == set()


def test_a_run_runs_the_online_backup(root: Path) -> None:
    """What the service runs: 'liferaft backup' of the schedule's repository
    and name. Here the repository cannot be made (its parent is a file), so
    the backup itself stops with its own one line, before any disk is read
    (this host's own disk is not ours to back up; tests/test_online_backup.py
    runs the backup on loop disks), and the run's exit status is nonzero."""
    repo = f"{REPO_ROOT}/pyproject.toml/backups"
    liferaft("schedule", "--root", str(root), "--repo", repo, "--name", "web")
    proc = liferaft("schedule", "--root", str(root), "--run", "web", check=False)
    assert proc.returncode == 1
    assert f"scheduled backup web: liferaft backup --repo {repo} --name web" in proc.stdout
    assert_one_line_error(proc, "cannot create the repository", "is a file")


def test_damaged_settings_are_one_line(root: Path) -> None:
    liferaft("schedule", "--root", str(root), "--repo", "/srv/b", "--name", "web")
    path = root / "etc/liferaft/schedule/web.json"
    path.write_text(path.read_text().replace('"keep"', '"kept"'))
    for args in (["--list"], ["--run", "web"]):
        proc = liferaft("schedule", "--root", str(root), *args, check=False)
        assert_one_line_error(proc, "web.json is damaged", "unknown key kept")


def test_a_run_backs_up_then_forgets_with_the_keep_rules() -> None:
    s = Schedule("web", "/srv/b", "daily", KeepPolicy(last=3, monthly=6))
    assert s.commands() == [
        ["backup", "--repo", "/srv/b", "--name", "web"],
        ["forget", "--repo", "/srv/b", "--name", "web", "--keep-last", "3",
         "--keep-monthly", "6", "--prune"],
    ]  # fmt: skip
    assert Schedule("web", "/srv/b", "daily").commands() == [
        ["backup", "--repo", "/srv/b", "--name", "web"]
    ]
    again = Schedule.from_json(s.to_json(), "test")
    assert again == s


def test_a_thin_delta_schedule_runs_the_backup_with_thin_delta() -> None:
    s = Schedule("web", "/srv/b", "daily", thin_delta=True)
    assert s.commands() == [["backup", "--repo", "/srv/b", "--name", "web", "--thin-delta"]]
    assert Schedule.from_json(s.to_json(), "test") == s
    assert "thin LVs by thin_delta" in s.describe()
    assert '"thin_delta"' not in Schedule("web", "/srv/b", "daily").to_json()


def test_a_network_repository_without_credentials_gets_a_note(root: Path) -> None:
    """The timer has nobody to type a password: say so when the credentials
    file has nothing for the repository (a note: it may need none)."""
    args = ["schedule", "--root", str(root), "--name", "web", "--repo"]
    proc = liferaft(*args, "sftp://backup@nas/srv/liferaft")
    assert "credentials.yaml does not exist" in proc.stderr
    creds = root / "etc/liferaft/credentials.yaml"
    creds.write_text("credentials:\n  - match: backup@files\n    password: s3cret\n")
    creds.chmod(0o600)
    proc = liferaft(*args, "sftp://backup@nas/srv/liferaft")
    assert "has no entry for sftp://backup@nas/srv/liferaft" in proc.stderr
    assert liferaft(*args, "sftp://backup@files/srv/liferaft").stderr == ""
    assert liferaft(*args, "/srv/liferaft").stderr == ""  # a folder needs none
    creds.chmod(0o644)
    assert "the timer cannot use" in liferaft(*args, "sftp://backup@files/srv").stderr
    assert "s3cret" not in proc.stdout + proc.stderr
