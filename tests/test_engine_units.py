"""Pure parts of the engine, without root or disks: extents, maps, manifests, plans."""

from __future__ import annotations

import json
import struct

import pytest

from rescue_app.engine.diskmodel import BlockPartition
from rescue_app.engine.extents import ExtentMap, chunks_touched, clip, normalize, total
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    Manifest,
    PartitionImage,
    PartitionTable,
    Region,
    parse_manifest,
)
from rescue_app.engine.plan import plan_disk
from rescue_app.engine.restore import _head_ranges
from rescue_app.engine.table import parse_sfdisk_json
from rescue_app.engine.usedmap import ntfs_backup_boot_sector, parse_domain_map
from rescue_app.errors import ManifestError, TargetRefusedError
from tests.enginekit import block_disk

MIB = 1 << 20
H = "ab" * 32


def test_normalize_merges_and_sorts():
    assert normalize([(10, 5), (0, 5), (5, 5), (30, 0), (12, 10)]) == [(0, 22)]
    assert total([(0, 3), (10, 4)]) == 7


def test_clip_and_chunks_touched():
    ext = [(0, 10), (20, 10), (100, 50)]
    assert clip(ext, 5, 25) == [(5, 5), (20, 5)]
    assert clip(ext, 30, 100) == []
    assert chunks_touched(ext, 160, 32) == [0, 3, 4]


DOMAIN = """# Domain logfile created by unset_name v0.3.23
# Source: /dev/loop0p1
# Offset: 0x00000000
# current_pos  current_status
0x0C700000     ?
#      pos        size  status
0x00000000  0x007C5000  +
0x007C5000  0x0003B400  ?
0x00800000  0x00001000  +
"""


def test_extent_map_is_compact_and_round_trips():
    m = ExtentMap((i * 8192, 4096) for i in range(100_000))
    assert len(m) == 100_000 and m[5] == (40960, 4096) and m[-1] == (99_999 * 8192, 4096)
    assert ExtentMap.decode(m.encode()) == m
    assert len(m.encode()) < 16 * 100_000 // 8  # packed and compressed, not JSON pairs
    assert clip(m, 8192, 8192 * 3) == [(8192, 4096), (16384, 4096)]


def test_parse_domain_map():
    assert parse_domain_map(DOMAIN) == [(0, 0x7C5000), (0x800000, 0x1000)]
    with pytest.raises(ValueError):
        parse_domain_map(DOMAIN + "garbage line here and more\n")


def test_ntfs_backup_boot_sector():
    boot = bytearray(512)
    boot[3:11] = b"NTFS    "
    boot[0x0B:0x0D] = (512).to_bytes(2, "little")
    boot[0x28:0x30] = (204799).to_bytes(8, "little")
    assert ntfs_backup_boot_sector(bytes(boot)) == (204799 * 512, 512)
    assert ntfs_backup_boot_sector(bytes(512)) is None


SFDISK_DOS = json.dumps(
    {
        "partitiontable": {
            "label": "dos",
            "id": "0x12345678",
            "device": "/dev/sdb",
            "unit": "sectors",
            "sectorsize": 512,
            "partitions": [
                {
                    "node": "/dev/sdb1",
                    "start": 2048,
                    "size": 100352,
                    "type": "83",
                    "bootable": True,
                },
                {"node": "/dev/sdb2", "start": 102400, "size": 286720, "type": "f"},
                {"node": "/dev/sdb5", "start": 104448, "size": 100352, "type": "7"},
            ],
        }
    }
)


def test_parse_sfdisk_dos_kinds():
    table, entries = parse_sfdisk_json(SFDISK_DOS)
    assert table.type == "dos" and table.id == "0x12345678"
    assert [(e.number, e.kind, e.type, e.bootable) for e in entries] == [
        (1, "primary", "83", True),
        (2, "extended", "f", False),
        (5, "logical", "7", False),
    ]
    assert entries[0].start == 2048 * 512


def _part(number, start, size, fs="ext4", kind="gpt", method="used-blocks"):
    return PartitionImage(
        number=number,
        start=start,
        size=size,
        kind=kind,
        type=None,
        uuid=None,
        name=None,
        attrs=None,
        bootable=False,
        filesystem=Filesystem(fs),
        method=method,
        used_bytes=size // 2,
        used_map=ExtentMap([(0, size // 2)]),
        chunks=(H,),
    )


def _image(parts, size=1000 * MIB, table="gpt"):
    return DiskImage(
        index=0,
        model="M",
        serial="S1",
        wwn=None,
        size=size,
        logical_sector_size=512,
        physical_sector_size=512,
        transport="sata",
        table=PartitionTable(table, "id"),
        head=Region(0, MIB, (H,)),
        gpt_backup=None,
        partitions=tuple(parts),
    )


def _target(size, sector=512, partitions=()):
    return block_disk(
        "/dev/sdz",
        size,
        model="Blank",
        serial="T1",
        logical_sector_size=sector,
        physical_sector_size=sector,
        pttype="dos",
        partitions=tuple(partitions),
    )


def test_plan_equal_disk_keeps_layout_and_renders_what_is_erased():
    from rescue_app.engine.plan import RestorePlan

    image = _image([_part(1, MIB, 100 * MIB, "vfat"), _part(2, 101 * MIB, 800 * MIB)])
    old = BlockPartition(
        path="/dev/sdz1",
        number=1,
        start=MIB,
        size=500 * MIB,
        fstype="ntfs",
        label="Windows",
        uuid=None,
        partuuid=None,
        parttype=None,
        partlabel=None,
        mountpoints=(),
    )
    d = plan_disk(image, _target(1000 * MIB, partitions=[old]), grow=False)
    assert [(s.new.start, s.new.size) for s in d.steps] == [
        (MIB, 100 * MIB),
        (101 * MIB, 800 * MIB),
    ]
    manifest = Manifest(
        "web",
        "20260101T000000Z",
        "2026-01-01T00:00:00Z",
        "web1",
        "0.1",
        4 * MIB,
        "sha256",
        "zstd",
        (image,),
    )
    text = RestorePlan(None, manifest, (d,)).render()  # type: ignore[arg-type]
    assert "ERASES everything on /dev/sdz" in text and 'ntfs "Windows"' in text
    assert "Blank, serial T1" in text


def test_plan_refuses_small_disk_and_other_sector_size():
    # (a partition stored raw cannot shrink; filesystems that can: test_shrink.py)
    image = _image([_part(1, MIB, 900 * MIB, "vfat", method="raw")])
    with pytest.raises(TargetRefusedError, match="too small"):
        plan_disk(image, _target(900 * MIB), grow=False)
    with pytest.raises(TargetRefusedError, match="4096-byte sectors"):
        plan_disk(image, _target(2000 * MIB, sector=4096), grow=False)


def test_plan_grow_gpt_keeps_room_for_backup_table():
    image = _image([_part(1, MIB, 100 * MIB, "vfat"), _part(2, 101 * MIB, 800 * MIB)])
    d = plan_disk(image, _target(2000 * MIB), grow=True)
    last = d.steps[-1]
    assert last.grow_fs and last.grown
    assert last.new.start + last.new.size == 2000 * MIB - 33 * 512
    assert not d.steps[0].grown


def test_plan_grow_mbr_logical_grows_extended_too():
    image = _image(
        [
            _part(1, MIB, 100 * MIB, kind="primary"),
            _part(2, 101 * MIB, 800 * MIB, None, kind="extended", method="none"),
            _part(5, 102 * MIB, 799 * MIB, "ext4", kind="logical"),
        ],
        table="dos",
    )
    d = plan_disk(image, _target(2000 * MIB), grow=True)
    ends = {s.source.number: s.new.start + s.new.size for s in d.steps}
    assert ends == {1: 101 * MIB, 2: 2000 * MIB, 5: 2000 * MIB}


def test_plan_grow_of_ungrowable_last_partition_leaves_space_free():
    image = _image([_part(1, MIB, 800 * MIB, "vfat")])
    d = plan_disk(image, _target(2000 * MIB), grow=True)
    assert not d.steps[0].grown and "cannot be grown" in d.notes[0]


def test_head_ranges_skip_the_partition_tables():
    head = bytearray(MIB)
    head[512:520] = b"EFI PART"
    struct.pack_into("<QII", head, 512 + 72, 2, 128, 128)
    gpt = _image([_part(1, MIB, 10 * MIB)])
    assert _head_ranges(gpt, bytes(head)) == [(0, 440), (34 * 512, MIB - 34 * 512)]
    dos = _image([_part(1, MIB, 10 * MIB)], table="dos")
    assert _head_ranges(dos, bytes(MIB)) == [(0, 440), (512, MIB - 512)]


def _manifest() -> Manifest:
    return Manifest(
        "web",
        "20260101T000000Z",
        "2026-01-01T00:00:00Z",
        "web1",
        "0.1.0",
        4 * MIB,
        "sha256",
        "zstd",
        (_image([_part(1, MIB, 100 * MIB)]),),
        {"chunks": 1},
    )


def test_manifest_round_trip():
    m = _manifest()
    assert parse_manifest(m.to_json(), "x") == m
    assert m.chunk_refs() == [(H, "disk 1 head", 0), (H, "disk 1 partition 1 (ext4)", 0)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "corrupt or truncated"),
        ('{"format": "liferaft-manifest", "version": 1, "name"', "corrupt or truncated"),
        ('{"format": "something-else"}', "not a liferaft manifest"),
        ('{"format": "liferaft-manifest", "version": 99}', "newer liferaft"),
        ('{"format": "liferaft-manifest", "version": 1}', "damaged"),
    ],
)
def test_bad_manifests_are_clear_errors(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text, "web@x")


def test_manifest_with_bad_chunk_hash_is_damaged():
    doc = json.loads(_manifest().to_json())
    doc["disks"][0]["partitions"][0]["chunks"] = ["../../etc/passwd"]
    with pytest.raises(ManifestError, match="damaged"):
        parse_manifest(json.dumps(doc), "web@x")


DUMPE2FS = (
    """Block count:              1048576
Block size:               4096
Free blocks:              1011634

Group 0: (Blocks 0-32767) csum 0x1234 [ITABLE_ZEROED]
  Free blocks: 8743-32767
Group 1: (Blocks 32768-65535) csum 0x1234 [INODE_UNINIT, BLOCK_UNINIT]
  Free blocks: 33281-65535
Group 2: (Blocks 65536-98303)
  Free blocks: 65536-70000, 70002, 70004-98303
Group 3: (Blocks 98304-131071)
"""
    + "  Free blocks: \n"
)  # a full group: dumpe2fs leaves the list empty


def test_parse_dumpe2fs_is_the_complement_of_free_blocks():
    from rescue_app.engine.usedmap import parse_dumpe2fs

    used = parse_dumpe2fs(DUMPE2FS)
    b = 4096
    assert used[:4] == [(0, 8743 * b), (32768 * b, 513 * b), (70001 * b, b), (70003 * b, b)]
    assert used[4] == (98304 * b, (1048576 - 98304) * b)
