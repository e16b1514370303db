"""md RAID and LUKS captured, restored and checked as such (issue 12), in one guest boot.

md_luks_roundtrip.sh builds, in the rescue system: a RAID 1 over two disks
(ext4, 64 MiB of files) captured once through the array and restored onto
two larger disks with --grow (same array UUID and name, assembled by UUID,
members agree after the resync, fsck clean, checksums equal, the array and
its ext4 grown, each member alone whole); a degraded RAID 5 (one of three
members missing) captured and restored degraded; LVM on a RAID 1 captured
by its logical volume and restored onto larger members with --grow (same
UUIDs; the PV, LV root and its ext4 grown); a LUKS2 partition captured
locked (ciphertext, byte for byte, the passphrase opens the copy; with
--grow the partition grows and the volume keeps its size), refused
with --unlock into a plain repository, and captured with --unlock into an
encrypted repository (a wrong passphrase: one line, nothing written, at
capture and at restore) and restored onto a larger disk with --grow with its
header as it was (same LUKS UUID and passphrase; the opened volume and its
ext4 grown); then LVM inside LUKS, captured by its logical volume and restored
with --grow with the same UUIDs (partition -> LUKS -> PV -> LV root -> ext4 grown).
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.guest import GuestResult, sparse_disk

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1024**2
HERE = Path(__file__).resolve().parent
CHECKS = (
    "raid1-capture-stops-array",
    "raid1-images-stack",
    "raid1-refuses-duplicate",
    "raid1-plan-shows-stack",
    "raid1-restore-stops-array",
    "raid1-restore-complete",
    "raid1-same-uuid",
    "raid1-members-agree",
    "raid1-fsck-clean",
    "raid1-grown",
    "raid1-checksums-equal",
    "raid1-second-member-whole",
    "raid5-degraded-restored",
    "md-in-use-refused",
    "md-lvm-grown",
    "md-lvm-roundtrip",
    "luks-raw-grow-keeps-volume",
    "luks-raw-roundtrip",
    "luks-unlock-refused-plain",
    "luks-wrong-passphrase",
    "luks-unlocked-grown",
    "luks-unlocked-roundtrip",
    "luks-lvm-grown",
    "luks-lvm-roundtrip",
)
# Python packages an encrypted repository needs; an ISO built before they
# were added (python3-argon2, python3-cryptography) gets the test venv's
# copies (same Python, 3.11) on PYTHONPATH.
EXTRA = ("argon2", "_argon2_cffi_bindings", "cffi", "cryptography", "pycparser")


def _extra_python() -> str:
    import argon2

    site = Path(argon2.__path__[0]).resolve().parent
    names = [n for n in EXTRA if (site / n).exists()]
    names += [p.name for p in site.glob("_cffi_backend*.so")]
    archive = subprocess.run(
        ["tar", "czf", "-", "--exclude=__pycache__", "-C", str(site), *names],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return base64.b64encode(archive).decode()


def test_md_raid_and_luks_round_trips(guest: Callable[..., GuestResult], workdir: str) -> None:
    sizes = {"a": 128, "b": 128, "repo": 1024, "d": 192, "e": 192, "f": 96, "g": 96, "h": 64}
    disks = [sparse_disk(Path(workdir) / f"{name}.img", n * MIB) for name, n in sizes.items()]
    script = io.StringIO()
    script.write(f"EXTRA_PY='{_extra_python()}'\n")
    script.write((HERE / "md_luks_roundtrip.sh").read_text())
    result = guest(script.getvalue(), disks, app=True, timeout=1800, memory_mb=1536)
    assert result.exit_code == 0, result.output[-3000:]
    for name in CHECKS:
        assert f"CHECK {name} ok" in result.output, name
    times = dict(re.findall(r"^TIME ([\w-]+) (\d+)$", result.output, re.M))
    measured = dict(re.findall(r"^MEASURE (\w+) (\d+)", result.output, re.M))
    locked, unlocked = measured.get("locked"), measured.get("unlocked")
    print(
        f"\nboot {result.boot_seconds:.0f} s, script {result.seconds:.0f} s; steps (s): {times}; "
        f"chunks: plain repository {locked} B, encrypted {unlocked} B",
        file=sys.stderr,
    )
