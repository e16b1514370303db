"""A Clonezilla image of an LVM disk restored by liferaft (issue 16), in one
guest boot: the real ocs-sr (Debian's clonezilla and drbl packages, put on
the runner's medium and installed into the rescue system's RAM root; the ISO
stays as it is) saves a disk holding a plain ext4 partition and an LVM PV
(vg0: ext4 root in two segments, swap, ext4 data); the disk is wiped and
liferaft restores the image onto a larger disk with --grow (this tree's
engine, --app): the plan shows disk -> partition -> PV -> VG -> LVs, the same
PV/VG/LV and filesystem UUIDs and labels, fsck clean, every file's checksum
equal, the data LV and its ext4 grown, nothing left active. A damaged LV
image stops the restore with a line naming the LV before anything is
written; `liferaft import` of the image, then `liferaft verify`, pass
(clonezilla_lvm.sh).

Then, in the same boot, LUKS: ocs-sr -luks yes saves a disk holding ext4,
ext4 inside LUKS2 and an LVM PV inside LUKS1 (a root LV and a swap LV), its
headers and what was inside the opened volumes; liferaft lists it, plans it
(header as it was, then what is inside), refuses a wrong passphrase in one
line before writing, restores it (same LUKS, PV and filesystem UUIDs, the
old passphrase opens it, fsck clean, checksums equal) and imports it only
into an encrypted repository, where verify passes. Last, an LVM PV on a
whole disk (no partition table) saved by ocs-sr and restored onto the larger
disk: same UUIDs, fsck clean, checksums equal, the PV grown, no table. And
a thin pool (ocs-sr saves its thin LVs, not its metadata): the pool
activates on the restored disk, same UUIDs, fsck clean, checksums equal
(while the source's volume group is still active, the restore is refused in
one line and nothing written);
the same partitions saved with ocs-sr saveparts and restored onto two
partitions named with --to: the volume group recreated on the larger PV
partition (grown), same UUIDs, fsck clean, checksums equal.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]

# ocs-sr and what it runs that the rescue system lacks (perl, partclone,
# lvm2, gdisk, e2fsprogs are in it)
PACKAGES = ("clonezilla", "drbl", "file", "libmagic1", "libmagic-mgc", "pigz", "bc", "dialog",
            "ipcalc", "wakeonlan")  # fmt: skip
CHECKS = (
    "ocs-sr-saved-lvm",
    "plan-shows-stack",
    "restore-deactivates",
    "same-uuids",
    "fsck-clean",
    "checksums-equal",
    "grown",
    "damaged-lv-image",
    "import-verify",
    "ocs-sr-saved-luks",
    "luks-plan",
    "luks-wrong-passphrase",
    "luks-restored",
    "luks-import-verify",
    "ocs-sr-saved-whole-disk-pv",
    "whole-disk-pv-restored",
    "ocs-sr-saved-thin",
    "active-vg-refused",
    "thin-restored",
    "saveparts-lvm-restored",
)


@pytest.fixture(scope="session")
def clonezilla_debs() -> list[Path]:
    """The .debs of PACKAGES from this host's apt sources (the builder fetches
    the ISO's packages from the same), kept in cache/guest-debs/."""
    where = REPO / "cache" / "guest-debs"
    where.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0] for p in where.glob("*.deb")}
    wanted = [p for p in PACKAGES if p not in have]
    if wanted:
        proc = subprocess.run(
            ["apt-get", "download", *wanted], cwd=where, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    debs = sorted(p for p in where.glob("*.deb") if p.name.split("_")[0] in PACKAGES)
    assert len(debs) == len(PACKAGES), debs
    return debs


def test_clonezilla_lvm_image_restores_with_same_uuids(
    guest_checks: Callable[..., str], clonezilla_debs: list[Path]
) -> None:
    out = guest_checks("clonezilla_lvm.sh", [256, 512, 384], CHECKS, files=clonezilla_debs,
                       timeout=2700, memory_mb=2048)  # fmt: skip
    measured = dict(re.findall(r"^MEASURE (\w+) (\d+)$", out, re.M))
    print(f"\nocs-sr savedisk {measured['savedisk']} s, liferaft restore {measured['restore']} s,"
          f" LUKS image {measured['luks_restore']} s")  # fmt: skip
