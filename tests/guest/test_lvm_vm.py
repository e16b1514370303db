"""LVM captured by its logical volumes and restored as LVM (issue 12), in one guest boot.

lvm_roundtrip.sh builds, in the rescue system, a disk with a plain ext4
partition next to an LVM PV (ext4 root LV with etc/os-release, xfs, swap, a
thin pool with a thin ext4 LV) and 1 GiB of files; captures it (this tree's
engine, --app) and, for the size before, with the engine as it was before
LVM support (the PV stored raw); restores onto a larger disk with --grow and
checks fsck, every file's checksum, the PV/VG/LV UUIDs, the swap's UUID and
label, and that the root LV and its filesystem grew. Then a volume group
over two disks (a partition and a whole disk), restored onto two others.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.guest import GuestResult, sparse_disk

pytestmark = [pytest.mark.slow, pytest.mark.root]

GIB = 1024**3
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The last commit whose capture stored an LVM PV raw (before engine/lvm.py).
BEFORE_LVM = "3326705"
CHECKS = (
    "refuses-mounted-lv",
    "capture-deactivates",
    "images-json-stack",
    "refuses-duplicate-pv",
    "plan-shows-stack",
    "restore-deactivates",
    "same-uuids",
    "fsck-clean",
    "grown-lv-and-fs",
    "swap-recreated",
    "checksums-equal",
    "spanning-vg",
)


def _old_app() -> str:
    """rescue_app as it was before LVM support, as base64 of a tar.gz."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar.gz", BEFORE_LVM, "rescue_app"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout  # fmt: skip
    return base64.b64encode(archive).decode()


def test_lvm_capture_restore_grow_and_span(guest: Callable[..., GuestResult], workdir: str) -> None:
    sizes = {"src": 4, "repo": 12, "dst": 6, "s1": 1, "s2": 1, "d1": 1, "d2": 2}
    disks = [sparse_disk(Path(workdir) / f"{name}.img", n * GIB) for name, n in sizes.items()]
    script = io.StringIO()
    script.write(f"OLD_APP='{_old_app()}'\n")
    script.write((HERE / "lvm_roundtrip.sh").read_text())
    result = guest(script.getvalue(), disks, app=True, timeout=2400, memory_mb=2048)
    assert result.exit_code == 0, result.output[-3000:]
    for name in CHECKS:
        assert f"CHECK {name} ok" in result.output, name
    measured = dict(re.findall(r"^MEASURE (\w+) (\d+)$", result.output, re.M))
    before, after = int(measured["before"]), int(measured["after"])
    print(
        f"\n4 GiB LVM disk, 1 GiB of files: image {before / 2**20:.0f} MiB before "
        f"(PV raw), {after / 2**20:.0f} MiB after (LVs by used blocks)"
    )
    assert after < before
