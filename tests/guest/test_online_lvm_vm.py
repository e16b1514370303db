"""The online backup of an LVM root in use (issue 14), in one guest boot.

online_lvm.sh builds, in the rescue system, a disk with an LVM root (ext4)
mounted read-write while a writer keeps replacing files (each carrying its own
sha256), leaves a stale liferaft-snap-root as a crashed run would, runs
`liferaft backup` (this tree's engine, --app), and checks that the root was
read from a snapshot that is gone afterwards (the stale one too), then
restores onto another disk: fsck clean, the static files equal, every
writer file whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.guest import GuestResult, sparse_disk

pytestmark = [pytest.mark.slow, pytest.mark.root]

GIB = 1024**3
HERE = Path(__file__).resolve().parent
CHECKS = (
    "names-snapshot",
    "snapshots-removed",
    "origin-untouched",
    "fsck-clean",
    "static-equal",
    "no-torn-file",
)


def test_online_backup_of_an_lvm_root_in_use(
    guest: Callable[..., GuestResult], workdir: str
) -> None:
    disks = [sparse_disk(Path(workdir) / f"{name}.img", GIB) for name in ("src", "dst")]
    script = (HERE / "online_lvm.sh").read_text()
    result = guest(script, disks, app=True, timeout=1500, memory_mb=1536)
    assert result.exit_code == 0, result.output[-3000:]
    for name in CHECKS:
        assert f"CHECK {name} ok" in result.output, name
