"""Scheduled backups (``liferaft schedule``): a systemd timer per image name.

Owns, under a root (``/``, or a folder holding a system being prepared):

- ``etc/liferaft/schedule/NAME.json``: what the run does (repository, image
  name, when, what to keep). Never a secret: a repository URL with a password
  is refused; the service reads secrets from the credentials file.
- ``etc/systemd/system/liferaft-backup@NAME.timer.d/schedule.conf``: when
  (``OnCalendar=``, ``RandomizedDelaySec=``), over the package's template timer.
- the timer's enablement (``systemctl enable``; ``--now`` where systemd runs).

The unit templates ``liferaft-backup@.service`` and ``liferaft-backup@.timer``
come with the Debian package (packaging/systemd, builder/deb.py); the service
runs ``liferaft schedule --run NAME``, which runs the commands
``Schedule.commands()`` lists. Settings are planned purely (``Schedule``) and
written in one place (``install``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rescue_app.engine import credentials as _credentials
from rescue_app.engine.repository import NAME_RE
from rescue_app.engine.retention import KeepPolicy, KeepRule
from rescue_app.engine.stores import is_remote
from rescue_app.errors import CommandError, LiferaftError, UsageError
from rescue_app.run import run

SETTINGS_DIR = Path("etc/liferaft/schedule")
UNIT_DIR = Path("etc/systemd/system")
TEMPLATE_DIRS = (Path("etc/systemd/system"), Path("lib/systemd/system"),
                 Path("usr/lib/systemd/system"))  # fmt: skip
TEMPLATE = "liferaft-backup@.timer"
FORMAT = "liferaft-schedule"
CREDENTIALS_FILE = "/etc/liferaft/credentials.yaml"

# Spread machines sharing a repository; a frequent schedule gets a short spread.
_DELAY = {"hourly": "5min", "daily": "30min", "weekly": "30min", "monthly": "30min"}
_DELAY_OTHER = "5min"


class ScheduleError(LiferaftError):
    """A schedule cannot be read, written or enabled."""


def timer_unit(name: str) -> str:
    return f"liferaft-backup@{name}.timer"


@dataclass(frozen=True)
class Schedule:
    """One scheduled backup: ``liferaft backup`` of ``name`` into ``repo``
    ``every`` (an OnCalendar value), then ``forget --prune`` with ``keep``;
    ``thin_delta``: the backup runs with --thin-delta."""

    name: str
    repo: str
    every: str
    keep: KeepPolicy | None = None
    thin_delta: bool = False

    def commands(self) -> list[list[str]]:
        """The liferaft command lines a run executes, in order; each runs only
        if the one before succeeded."""
        out = [["backup", "--repo", self.repo, "--name", self.name]]
        if self.thin_delta:
            out[0].append("--thin-delta")
        if self.keep is not None:
            rules = [
                arg
                for rule in KeepRule
                if self.keep.count(rule)
                for arg in (f"--keep-{rule.value}", str(self.keep.count(rule)))
            ]
            out.append(["forget", "--repo", self.repo, "--name", self.name, *rules, "--prune"])
        return out

    def timer_dropin(self) -> str:
        delay = _DELAY.get(self.every, _DELAY_OTHER)
        return (
            f"# Written by liferaft schedule; what runs: /{SETTINGS_DIR}/{self.name}.json\n"
            "[Timer]\n"
            "OnCalendar=\n"  # an empty value drops the template's default first
            f"OnCalendar={self.every}\n"
            f"RandomizedDelaySec={delay}\n"
        )

    def to_json(self) -> str:
        keep = {r.value: self.keep.count(r) for r in KeepRule if self.keep and self.keep.count(r)}
        doc = {"format": FORMAT, "version": 1, "name": self.name, "repo": self.repo,
               "every": self.every, "keep": keep}  # fmt: skip
        if self.thin_delta:  # (absent otherwise: files as before it existed)
            doc["thin_delta"] = True
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Schedule:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT or doc.get("version") != 1:
                raise ValueError("not a liferaft schedule")
            unknown = set(doc) - {"format", "version", "name", "repo", "every", "keep",
                                  "thin_delta"}  # fmt: skip
            if unknown:
                raise ValueError(f"unknown key {sorted(unknown)[0]}")
            keep = {str(k): int(v) for k, v in dict(doc["keep"]).items()}
            return cls(
                name=str(doc["name"]),
                repo=str(doc["repo"]),
                every=str(doc["every"]),
                keep=KeepPolicy(**keep) if keep else None,
                thin_delta=bool(doc.get("thin_delta", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ScheduleError(
                f"{source} is damaged ({exc})",
                hint="write it again with 'liferaft schedule --repo ... --name ...'",
            ) from None

    def describe(self) -> str:
        keep = self.keep.describe() if self.keep else "all"
        delta = ", thin LVs by thin_delta" if self.thin_delta else ""
        return f"{self.name}: every {self.every} into {self.repo}, keep {keep}{delta}"


def make_schedule(
    name: str, repo: str, every: str, keep: KeepPolicy | None, thin_delta: bool = False
) -> Schedule:
    """Check what ``liferaft schedule`` was given; nothing is written."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"--name {name!r} is not an image name",
            hint="use letters, digits, '.', '_' and '-', e.g. the host name",
        )
    if "://" in repo:
        if urlsplit(repo).password is not None:
            raise UsageError(
                "--repo holds a password; a schedule never keeps one (its settings file "
                "and the service's command line are readable)",
                hint=f"leave it out of the URL and put it in {CREDENTIALS_FILE}",
            )
    else:
        repo = os.path.abspath(repo)  # the service runs from /
    return Schedule(name, repo, check_calendar(every), keep, thin_delta)


def check_calendar(every: str) -> str:
    """``every`` as systemd reads OnCalendar= (daily, hourly, '*-*-* 02:30')."""
    proc = run(["systemd-analyze", "calendar", every], check=False, timeout=30)
    if proc.returncode != 0 or not every.strip() or "\n" in every:
        raise UsageError(
            f"--every {every!r} is not a time systemd understands",
            hint="use daily, hourly, weekly or an OnCalendar value such as "
            "'*-*-* 02:30'; 'systemd-analyze calendar WHEN' checks one",
        )
    return every


@dataclass(frozen=True)
class ScheduledBackup:
    schedule: Schedule
    enabled: bool


class ScheduleHost:
    """Where schedules are written: ``/`` (systemd started or enabled there
    when it runs), or another root being prepared (``systemctl --root``)."""

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root).resolve()
        self.live = self.root == Path("/") and Path("/run/systemd/system").is_dir()

    def settings(self, name: str) -> Path:
        return self.root / SETTINGS_DIR / f"{name}.json"

    def dropin(self, name: str) -> Path:
        return self.root / UNIT_DIR / f"{timer_unit(name)}.d" / "schedule.conf"

    def _systemctl(self, *args: str, check: bool = True) -> str:
        where = [] if self.live else [f"--root={self.root}"]
        try:
            return run(["systemctl", *where, *args], check=check, timeout=120).stdout
        except CommandError as exc:
            raise ScheduleError(str(exc)) from None

    def _check_templates(self) -> None:
        if not any((self.root / d / TEMPLATE).exists() for d in TEMPLATE_DIRS):
            raise ScheduleError(
                f"the systemd unit {TEMPLATE} is not installed under {self.root}",
                hint="schedules need the units of the liferaft Debian package "
                "(make deb; apt install ./liferaft_*.deb)",
            )

    def install(self, schedule: Schedule) -> str:
        """Write the settings and the timer drop-in, enable the timer. What
        happened, in one sentence."""
        self._check_templates()
        for path, text in ((self.settings(schedule.name), schedule.to_json()),
                           (self.dropin(schedule.name), schedule.timer_dropin())):  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
        timer = timer_unit(schedule.name)
        if self.live:
            self._systemctl("daemon-reload")
            self._systemctl("enable", "--now", timer)
            return f"{timer} is enabled and started"
        self._systemctl("enable", timer)
        if self.root == Path("/"):
            return f"{timer} is enabled; systemd is not running here, so it starts at the next boot"
        return f"{timer} is enabled under {self.root}; it starts when that system boots"

    def credentials_note(self, schedule: Schedule) -> str | None:
        """Why the timer's run may find no secret for a network repository
        (nobody is there to type one), or None."""
        if not is_remote(schedule.repo):
            return None
        path = self.root / CREDENTIALS_FILE.lstrip("/")
        if not path.exists():
            return (
                f"{path} does not exist: if {schedule.repo} needs a password or key, "
                "the timer cannot ask for it; put it there"
            )
        try:
            found = _credentials.load(str(path)).find(schedule.repo)
        except _credentials.CredentialsError as exc:
            return f"the timer cannot use {path}: {exc}"
        if found is None:
            return (
                f"{path} has no entry for {schedule.repo}: if it needs a password or key, "
                "the timer cannot ask for it"
            )
        return None

    def load(self, name: str) -> Schedule:
        path = self.settings(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ScheduleError(
                f"no scheduled backup named {name!r} ({path} is missing)",
                hint="'liferaft schedule --list' shows them",
            ) from None
        return Schedule.from_json(text, str(path))

    def list(self) -> list[ScheduledBackup]:
        folder = self.root / SETTINGS_DIR
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        out = []
        for name in names:
            state = self._systemctl("is-enabled", timer_unit(name), check=False).strip()
            out.append(ScheduledBackup(self.load(name), state == "enabled"))
        return out

    def remove(self, name: str) -> str:
        self.load(name)  # one line if there is no such schedule
        timer = timer_unit(name)
        if self.live:
            self._systemctl("disable", "--now", timer)
        else:
            self._systemctl("disable", timer)
        dropin = self.dropin(name)
        dropin.unlink(missing_ok=True)
        try:
            dropin.parent.rmdir()
        except OSError:
            pass  # an administrator's own drop-ins stay
        self.settings(name).unlink()
        if self.live:
            self._systemctl("daemon-reload")
        return f"{timer} is disabled and its settings removed"
