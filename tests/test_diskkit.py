"""The disk kit itself, on real loop devices: every filesystem round-trips and checks clean."""

from __future__ import annotations

import subprocess

import pytest

from rescue_app.engine import diskmodel, diskscan
from rescue_app.errors import TargetRefusedError
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    make_fs,
    mounted,
    partition_disk,
    populate,
    tree_checksums,
)

pytestmark = pytest.mark.root


@pytest.mark.parametrize(
    "fstype", ["ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "ntfs", "exfat"]
)
def test_fs_round_trip(loopdisk, fstype):
    dev = loopdisk(400 * MIB)
    (part,) = partition_disk(dev, "gpt", [PartSpec(None, fstype, "data")])
    make_fs(part, fstype, label="KIT")
    expected = populate(part, fstype, seed=7)
    assert "name with spaces.txt" in expected and "empty.txt" in expected
    assert "deep/a/b/c/file-003.txt" in expected
    assert tree_checksums(part, fstype) == expected
    fsck_clean(part, fstype)


def test_swap_and_msdos_logical(loopdisk):
    dev = loopdisk(300 * MIB)
    parts = partition_disk(
        dev,
        "msdos",
        [
            PartSpec(64, "ext4"),
            PartSpec(None, kind="extended"),
            PartSpec(64, "swap", kind="logical"),
            PartSpec(None, "vfat", kind="logical"),
        ],
    )
    assert parts == [f"{dev}p1", f"{dev}p2", f"{dev}p5", f"{dev}p6"]
    make_fs(parts[2], "swap")
    fsck_clean(parts[2], "swap")
    make_fs(parts[3], "vfat")
    expected = populate(parts[3], "vfat", seed=3, big_mib=1)
    assert tree_checksums(parts[3], "vfat") == expected
    disk = diskscan.find_disk(dev)
    assert disk.pttype == "dos"
    assert [p.number for p in disk.partitions] == [1, 2, 5, 6]
    assert disk.partitions[2].fstype == "swap"


def test_same_seed_same_tree_and_raw_hash(loopdisk):
    a, b = loopdisk(64 * MIB), loopdisk(64 * MIB)
    assert disk_bytes_sha256(a, 0, 8 * MIB) == disk_bytes_sha256(b, 0, 8 * MIB)
    (pa,) = partition_disk(a, "gpt", [PartSpec(None)])
    (pb,) = partition_disk(b, "gpt", [PartSpec(None)])
    make_fs(pa, "ext4")
    make_fs(pb, "ext4")
    assert populate(pa, "ext4", seed=1, big_mib=1) == populate(pb, "ext4", seed=1, big_mib=1)
    assert populate(pa, "ext4", seed=2, big_mib=1) != tree_checksums(pb, "ext4")


def test_list_disks_sees_loop_and_in_use_while_mounted(loopdisk):
    dev = loopdisk(128 * MIB)
    p1, p2 = partition_disk(dev, "gpt", [PartSpec(32, name="boot"), PartSpec(None, name="root")])
    make_fs(p2, "ext4", label="ROOT")
    disk = diskscan.find_disk(dev)
    assert disk.transport == "loop" and disk.backing_file
    assert [p.path for p in disk.partitions] == [p1, p2]
    assert disk.partitions[1].fstype == "ext4" and disk.partitions[1].label == "ROOT"
    assert disk.partitions[1].partlabel == "root"
    assert disk.partitions[0].start == 1 * MIB
    assert disk.restorable
    with mounted(p2, "ext4") as point:
        busy = diskscan.find_disk(dev)
        assert f"{p2} is mounted on {point}" in busy.in_use
        with pytest.raises(TargetRefusedError, match="is mounted on"):
            diskmodel.ensure_restorable(busy)
    assert diskscan.find_disk(dev).restorable


def test_loop_disk_detaches(loopdisk, workdir):
    from tests.helpers.diskkit import loop_disk

    with loop_disk(32 * MIB, workdir) as dev:
        (part,) = partition_disk(dev, "gpt", [PartSpec(None)])
        make_fs(part, "ext4")
        with pytest.raises(RuntimeError), mounted(part, "ext4"):
            raise RuntimeError("boom")
    listed = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert f"{dev}:" not in listed


def test_fsck_clean_notices_damage(loopdisk):
    dev = loopdisk(64 * MIB)
    (part,) = partition_disk(dev, "gpt", [PartSpec(None)])
    make_fs(part, "ext4")
    populate(part, "ext4", seed=5, big_mib=1)
    with open(part, "r+b") as f:  # scribble over the inode table of group 0
        f.seek(1024 + 0x14)
        first_data_block = int.from_bytes(f.read(4), "little")
        log_block = int.from_bytes(f.read(4), "little")
        block = 1024 << log_block
        f.seek((first_data_block + 1) * block + 8)  # bg_inode_table_lo of descriptor 0
        inode_table = int.from_bytes(f.read(4), "little")
        f.seek(inode_table * block)
        f.write(b"\xff" * block * 4)
    with pytest.raises(AssertionError, match="not clean"):
        fsck_clean(part, "ext4")
