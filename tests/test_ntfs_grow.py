"""NTFS restored onto a larger partition, for real (ntfs-3g, ntfsprogs, loop
devices): a Windows-like disk's NTFS saved by Debian's ocs-sr saveparts and
restored onto a larger named partition, with --grow (ntfsresize fills the
partition) and without (the volume keeps its size); and a liferaft image of
the disk restored with --grow onto a larger disk. Each time ntfsfix -n and
ntfsresize --info find the volume clean and every file's sha256 through
ntfs-3g is equal.

Why it failed before: NTFS keeps its backup boot sector just after the
volume's last sector, and ntfsfix looks for it in the device's last sector.
In a larger partition the image's copy sits further in ("alternate boot
sector BAD"); ntfsresize, growing the volume, writes one at the new end, and a
volume that keeps its size now gets a copy of its boot sector there
(restore.place_ntfs_backup_boot_sector).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest

from tests.enginekit import liferaft
from tests.helpers.diskkit import MIB, PartSpec, partition_disk, tree_checksums
from tests.test_clonezilla_parts import ocs_save
from tests.test_ntfs_shrink import ntfs_checks_clean, windows_disk

pytestmark = pytest.mark.root


def _sizes(info: str) -> tuple[int, int]:
    """ntfsresize --info's volume and device size, in bytes."""
    volume = re.search(r"Current volume size: (\d+) bytes", info)
    device = re.search(r"Current device size: (\d+) bytes", info)
    assert volume and device, info
    return int(volume.group(1)), int(device.group(1))


def test_ntfs_onto_a_larger_partition(loopdisk: Callable[[int], str], workdir: str) -> None:
    dev = loopdisk(400 * MIB)
    _, _, files = windows_disk(dev, big_mib=40)
    disk = os.path.basename(dev)
    root = os.path.join(workdir, "partimag")
    os.makedirs(root)
    ocs_save(root, dev, "saveparts", "win-parts", f"{disk}p3", "-q2", "-z1p")
    saved_volume, _ = _sizes(ntfs_checks_clean(f"{dev}p3"))

    target = loopdisk(700 * MIB)
    _, part = partition_disk(target, "gpt", [PartSpec(32, None), PartSpec(None, None)])
    restore = ["restore", "--repo", root, "--image", "win-parts", "--to", part, "--yes"]

    # Without --grow the volume keeps its size; the plan and a note say so.
    out = liferaft(*restore, "--verify")
    assert "was not grown" in out.stderr and "--grow grows it" in out.stderr, out.stderr
    volume, device = _sizes(ntfs_checks_clean(part))
    assert volume == saved_volume and device > volume + 300 * MIB
    assert tree_checksums(part, "ntfs") == files

    # With --grow: ntfsresize fills the partition.
    plan = liferaft(*restore[:-1], "--grow", "--dry-run").stdout
    assert "the filesystem grows by" in plan, plan
    out = liferaft(*restore, "--grow", "--verify")
    assert "was not grown" not in out.stderr, out.stderr
    volume, device = _sizes(ntfs_checks_clean(part))
    assert device - 4096 <= volume < device, (volume, device)
    assert tree_checksums(part, "ntfs") == files

    # A liferaft image of the whole disk with --grow onto a larger disk: the
    # last partition and its NTFS fill it.
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "win", dev)
    bigger = loopdisk(700 * MIB)
    liferaft("restore", "--repo", repo, "--image", "win", "--to", bigger, "--grow", "--yes")
    volume, device = _sizes(ntfs_checks_clean(f"{bigger}p3"))
    assert device > 600 * MIB and device - 4096 <= volume < device, (volume, device)
    assert tree_checksums(f"{bigger}p3", "ntfs") == files
