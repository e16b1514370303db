"""The online backup's pure parts, on the host without root or device-mapper:
LVM snapshot sizing and command lines, the system disks refusal, the file
stream's chunking, the rate limit."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from rescue_app.engine import fatattrs, lvm, online
from rescue_app.engine.browse import select_partition
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.filelevel import _Stream
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    FileTree,
    Manifest,
    Method,
    PartitionImage,
    PartitionTable,
    Region,
    parse_manifest,
)
from rescue_app.errors import DiskError
from rescue_app.progress import Progress

MIB = 1024 * 1024


def _lv(name: str, segtype: str = "linear", size: int = 0) -> lvm.LogicalVolume:
    return lvm.LogicalVolume(
        "vg0", name, "u", size, segtype, (), "pool" if segtype == "thin" else "", "", False, True, 0
    )


def test_classic_snapshots_share_half_the_free_extents_never_more_than_the_origin() -> None:
    assert lvm.snapshot_extents(100, [1000, 1000]) == [25, 25]
    assert lvm.snapshot_extents(100, [10, 1000]) == [10, 25]
    assert lvm.snapshot_extents(7, []) == []
    with pytest.raises(DiskError, match="too few for 2 snapshot"):
        lvm.snapshot_extents(3, [10, 10])


def test_snapshot_command_lines() -> None:
    assert lvm.snapshot_argv(_lv("root"), 25) == [
        "lvcreate", "--snapshot", "--name", "liferaft-snap-root", "--extents", "25", "vg0/root",
    ]  # fmt: skip
    assert lvm.snapshot_argv(_lv("home", "thin"), 0) == [
        "lvcreate", "--snapshot", "--name", "liferaft-snap-home", "--setactivationskip", "n",
        "vg0/home",
    ]  # fmt: skip
    lvs = [_lv("root"), _lv("liferaft-snap-root"), _lv("swap")]
    assert [lv.name for lv in lvm.stale_snapshots(lvs)] == ["liferaft-snap-root"]


def test_no_system_disk_is_one_clear_refusal() -> None:
    with pytest.raises(DiskError, match="no disk holding the running system") as err:
        online.system_disks(paths=("/proc",))
    assert "liferaft backup --repo REPO --name NAME /dev/sdX" in err.value.hint


def test_an_unchanged_file_list_cuts_the_same_chunks_and_a_change_stays_local() -> None:
    def cut(members: list[bytes]) -> list[str]:
        s = _Stream(lambda data: hashlib.sha256(data).hexdigest())
        for m in members:
            s.add(m, boundary_key=m[:4])
        s.cut()
        return s.chunks

    members = [i.to_bytes(4, "big") * 2008 for i in range(1200)]
    first = cut(members)
    assert cut(members) == first and len(first) > 20
    changed = list(members)
    changed[200] = b"x" * 8032
    second = cut(changed)
    assert len(set(second) - set(first)) <= 2


def test_the_rate_limit_holds_the_capture_back() -> None:
    seen: list[int] = []
    limit = online.RateLimit(10_000_000, lambda p: seen.append(p.done))
    started = time.monotonic()
    limit(Progress("capture", "x", 3_000_000, 10_000_000))
    assert time.monotonic() - started >= 0.25
    assert seen == [3_000_000]


def _manifest(method: Method, tree: FileTree | None) -> Manifest:
    part = PartitionImage(
        1, MIB, 64 * MIB, "gpt", None, None, None, None, False,
        Filesystem("ext4", "u-1", "root"), method, 5000, ExtentMap(()), ("ab" * 32,), "", tree,
    )  # fmt: skip
    disk = DiskImage(
        index=0, model=None, serial=None, wwn=None, size=128 * MIB, logical_sector_size=512,
        physical_sector_size=512, transport=None, table=PartitionTable("gpt", "g"),
        head=Region(0, MIB, (None,)), gpt_backup=None, partitions=(part,),
    )  # fmt: skip
    return Manifest("w", "20261204T000000Z", "c", "h", "v", 4 * MIB, "sha256", "zstd", (disk,))


def test_a_file_level_partition_makes_a_version_4_manifest_that_reads_back() -> None:
    tree = FileTree("tar-pax", 5000, 3, ("-O", "none,has_journal"), ("@h",), ("@h",), "@h", ("x",))
    text = _manifest(Method.FILES, tree).to_json()
    assert json.loads(text)["version"] == 4
    back = parse_manifest(text, "m")
    assert back.disks[0].partitions[0].tree == tree
    # without one: the version and the JSON as before (no "tree" key)
    plain = _manifest(Method.USED, None).to_json()
    assert json.loads(plain)["version"] == 1 and '"tree"' not in plain
    assert parse_manifest(plain, "m").disks[0].partitions[0].tree is None


def test_a_file_level_partition_is_browsed_by_its_files_without_an_image_file() -> None:
    m = _manifest(Method.FILES, FileTree("tar-pax", 5000, 3, ()))
    for spec in (None, "1", "disk1/p1"):
        part = select_partition(m, spec)
        assert (part.folder, part.files, part.image, part.volume) == (
            "disk1/p1", "disk1/p1/files", "", None,
        )  # fmt: skip
        assert part.archive is m.disks[0].partitions[0]


def test_fat_attributes_have_a_text_form_in_the_manifest() -> None:
    attributes = {"EFI/Boot/BCD": fatattrs.HIDDEN | fatattrs.SYSTEM | fatattrs.ARCHIVE,
                  "docs/Grüße.txt": fatattrs.READ_ONLY, "EFI": fatattrs.HIDDEN}  # fmt: skip
    text = fatattrs.to_text(attributes)
    assert text == ("-H-- EFI", "-HSA EFI/Boot/BCD", "R--- docs/Grüße.txt")
    assert fatattrs.from_text(text) == attributes
    tree = FileTree("tar-pax", 5000, 3, ("-F", "32"), fat_attributes=text)
    back = parse_manifest(_manifest(Method.FILES, tree).to_json(), "m")
    assert back.disks[0].partitions[0].tree == tree
    # none: no key, the manifest as before
    assert (
        '"fat_attributes"' not in _manifest(Method.FILES, FileTree("tar-pax", 1, 1, ())).to_json()
    )
    for bad in ("HS EFI", "-H-X EFI", "-H--"):
        with pytest.raises(DiskError, match="is not 'RHSA path'"):
            fatattrs.from_text([bad])
