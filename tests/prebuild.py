"""Build what the slow tests boot, ahead of them: `python -m tests.prebuild`.

`make test` starts this in the background while the fast tests run, so the
QEMU tests find the rescue ISO and the drill's root file systems in the
builder's and the drill's caches instead of both slow workers waiting about
ten minutes for them. Each step is what the slow fixtures would do first
(they still do it, and find it up to date); a failure here is printed and
left for those fixtures to report.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.drill import lvmkit, machinekit
from tests.helpers.builds import build_iso


def _step(what: str, build: Callable[[], object]) -> bool:
    started = time.monotonic()
    try:
        build()
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        print(f"prebuild: {what} failed ({exc}); the slow tests will build it again", flush=True)
        return False
    print(f"prebuild: {what} ready in {time.monotonic() - started:.0f} s", flush=True)
    return True


def _lvm_root() -> None:
    with tempfile.TemporaryDirectory(prefix="liferaft-prebuild-", dir="/var/tmp") as d:
        lvmkit.rootfs_tarball(lvmkit.build_deb(Path(d)))


def main() -> int:
    ok = _step("the rescue ISO", build_iso)
    ok &= _step("the drill machine's root", machinekit.rootfs_tarball)
    ok &= _step("the LVM drill machine's root", _lvm_root)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
