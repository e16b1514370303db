"""Reboot and power off: the one place liferaft asks systemd to end the system.

Only on the rescue system itself (live-boot's medium is mounted) unless the
caller says a person asked for it: a developer running unattended mode on a
workstation must never see it switch off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rescue_app.run import run

log = logging.getLogger("liferaft.power")

LIVE_MEDIUM = Path("/run/live/medium")
ACTIONS = ("poweroff", "reboot")


def on_rescue_system() -> bool:
    return LIVE_MEDIUM.exists() or bool(os.environ.get("LIFERAFT_ALLOW_POWEROFF"))


def switch(action: str, *, asked_by_person: bool) -> bool:
    """``poweroff`` or ``reboot``; False (and nothing done) when not allowed here.

    Data is synced first. Without a person asking, the request does not wait
    for systemd (``--no-block``), so the caller can finish its log lines.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown power action {action!r}")
    if not asked_by_person and not on_rescue_system():
        log.info("not on the rescue system; not doing %s", action)
        return False
    log.info("%s", action)
    os.sync()
    argv = ["systemctl", action] if asked_by_person else ["systemctl", "--no-block", action]
    run(argv, timeout=30, check=asked_by_person)
    return True
