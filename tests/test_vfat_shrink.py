"""An EFI system partition (vfat) onto a smaller disk, for real: ESP +
ext4 captured block-level, restored onto a disk that only fits when the ESP
shrinks too (--shrink 1). The FAT is made anew with mkfs.fat (same volume
ID, label, FAT32 with smaller clusters) and its files copied from the image
with mtools, never mounted (the host kernel has no vfat driver). Checks:
the plan says so before anything is written, fsck clean, identities kept,
every file's sha256 equal; too little room refused in one line, the target
untouched."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from rescue_app.engine.filetree import fat_options
from rescue_app.engine.kernel import reread_partitions
from rescue_app.errors import DiskError
from rescue_app.run import run
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.diskkit import (
    MIB,
    MTOOLS_ENV,
    PartSpec,
    disk_bytes_sha256,
    fat_attribute_listing,
    fsck_clean,
    make_fs,
    partition_disk,
    populate,
    tree_checksums,
)
from tests.test_shrink_restore import _identity


@pytest.mark.parametrize(
    ("made", "mib", "clusters"),
    [
        (["-F", "32", "-s", "8"], 290, "8"),  # still enough 4 KiB clusters
        (["-F", "32", "-s", "8"], 100, "2"),
        (["-F", "32", "-s", "8"], 33, "1"),
        (["-F", "16", "-s", "16"], 20, "8"),
        (["-F", "12", "-s", "4"], 4, "4"),
    ],
)
def test_a_smaller_fat_keeps_its_type_with_smaller_clusters(
    workdir: str, made: list[str], mib: int, clusters: str
) -> None:
    source = os.path.join(workdir, "source.img")
    with open(source, "wb") as f:
        f.truncate(300 * MIB if made[1] != "12" else 8 * MIB)
    run(["mkfs.fat", *made, source])
    with open(source, "rb") as f:
        options = fat_options(f.read(512), mib * MIB)
    assert options[options.index("-s") + 1] == clusters
    smaller = os.path.join(workdir, "smaller.img")
    with open(smaller, "wb") as f:
        f.truncate(mib * MIB)
    run(["mkfs.fat", *options, smaller])  # mkfs.fat takes them
    with open(smaller, "rb") as f:
        assert fat_options(f.read(512)) == options  # the same type, as asked
    fsck_clean(smaller, "vfat")


def test_a_fat32_too_small_for_its_type_is_one_clear_error(workdir: str) -> None:
    source = os.path.join(workdir, "source.img")
    with open(source, "wb") as f:
        f.truncate(64 * MIB)
    run(["mkfs.fat", "-F", "32", source])
    with open(source, "rb") as f, pytest.raises(DiskError, match="a FAT32 cannot be made in"):
        fat_options(f.read(512), 32 * MIB)


@pytest.mark.root
def test_esp_shrinks_file_level_keeping_volume_id_label_and_fat32(
    loopdisk: Callable[[int], str], workdir: str
) -> None:
    dev = loopdisk(600 * MIB)
    nodes = partition_disk(
        dev, "gpt", [PartSpec(300, "vfat", "EFI"), PartSpec(None, "ext4", "root")]
    )
    # FAT32 with 4 KiB clusters: on 33-64 MiB it keeps FAT32 only with smaller ones
    run(["mkfs.fat", "-F", "32", "-s", "8", "-i", "0BADF00D", "-n", "ESP", nodes[0]])
    written = populate(nodes[0], "vfat", seed=3, n_files=10, big_mib=2)
    run(["mmd", "-i", nodes[0], "::/EFI", "::/EFI/BOOT"], env=MTOOLS_ENV)
    boot = os.path.join(workdir, "BOOTX64.EFI")
    with open(boot, "wb") as f:
        f.write(os.urandom(300_000))
    run(["mcopy", "-m", "-i", nodes[0], boot, "::/EFI/BOOT/"], env=MTOOLS_ENV)
    esp = tree_checksums(nodes[0], "vfat")
    assert "EFI/BOOT/BOOTX64.EFI" in esp and len(esp) == len(written) + 1
    # DOS attributes a folder would drop: kept by the shrink (set again with mattrib)
    data = sorted(p for p in esp if p.startswith("data/"))[0]
    for flags, path in [(["+h", "+s", "+r"], "EFI/BOOT/BOOTX64.EFI"), (["+h"], "EFI"),
                        (["-a"], data)]:  # fmt: skip
        run(["mattrib", "-i", nodes[0], *flags, f"::/{path}"], env=MTOOLS_ENV)
    attributes = fat_attribute_listing(nodes[0])
    assert "  A  SHR     ::/EFI/BOOT/BOOTX64.EFI" in attributes, attributes
    make_fs(nodes[1], "ext4", label="rootfs")
    root = populate(nodes[1], "ext4", seed=5, n_files=20, big_mib=8)
    identity = _identity(dev, nodes)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "esp", dev)
    restore = ["restore", "--repo", repo, "--image", "esp"]

    # The ESP keeps its size unless ticked: refused, naming --shrink 1.
    small = loopdisk(200 * MIB)
    with open(small, "r+b") as f:
        f.write(os.urandom(MIB))
    before = disk_bytes_sha256(small, 0, 200 * MIB)
    proc = liferaft(*restore, "--to", small, "--dry-run", check=False)
    assert_one_line_error(proc, "partition 2 (ext4) does not fit")
    assert "--shrink 1" in proc.stderr
    # Too small even with the ESP shrunk: one line, nothing written.
    tiny = loopdisk(96 * MIB)
    proc = liferaft(*restore, "--to", tiny, "--yes", "--shrink", "1", check=False)
    assert_one_line_error(proc, "does not fit", "of data", "is left for it")
    assert disk_bytes_sha256(small, 0, 200 * MIB) == before

    plan = " ".join(liferaft(*restore, "--to", small, "--dry-run", "--shrink", "1").stdout.split())
    assert "vfat p1: made anew at" in plan and "(was 300.0 MiB)" in plan, plan
    assert "files are copied from the image with mtools" in plan
    assert disk_bytes_sha256(small, 0, 200 * MIB) == before

    liferaft(*restore, "--to", small, "--yes", "--verify", "--shrink", "1")
    got = reread_partitions(small, 2)
    fsck_clean(got[0], "vfat")
    fsck_clean(got[1], "ext4")
    assert _identity(small, got) == identity  # PARTUUIDs, volume ID, label, ext4 UUID
    size = int(run(["blockdev", "--getsize64", got[0]]).stdout)
    assert size < 100 * MIB
    with open(got[0], "rb") as f:
        options = fat_options(f.read(512))
    assert options[:2] == ("-F", "32") and options[options.index("-s") + 1] != "8"
    assert tree_checksums(got[0], "vfat") == esp
    assert fat_attribute_listing(got[0]) == attributes
    assert tree_checksums(got[1], "ext4") == root
