"""The one way tests run the builder (`python -m builder.cli`): the guest,
boot, drill and TUI fixtures and tests/prebuild.py all come here, so a build
is started, logged and reported alike everywhere (it was written four ways)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROFILE = "default"


class BuildFailed(RuntimeError):
    """liferaft-build exited nonzero; the message ends with its stderr."""


def run_builder(*args: str) -> None:
    """`liferaft-build ARGS` of this tree; its stderr is passed on, a failure
    raises BuildFailed carrying the end of it."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "builder.cli", *args],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )  # fmt: skip
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise BuildFailed(f"liferaft-build {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    print(f"liferaft-build {args[0]}: {time.monotonic() - started:.0f} s")


def build_iso(profile: str = PROFILE) -> Path:
    """The rescue ISO of ``profile``, built or found up to date in the builder's cache."""
    run_builder("iso", "--profile", profile)
    return REPO / "dist" / f"liferaft-{profile}.iso"
