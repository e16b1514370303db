"""Writing partition tables (engine/table.py): a GPT is one sfdisk script
that leaves the bytes libparted left (issue 17: a restore's fixed cost), and
``table_in_place`` recognises a target that holds the table already. Real
loop disks, the real sfdisk and libparted."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from rescue_app.engine.manifest import PartitionTable
from rescue_app.engine.table import (
    NewPartition,
    _set_identities,
    _write_parted,
    read_table,
    table_in_place,
    write_table,
)
from tests.helpers.diskkit import MIB

DISK = 64 * MIB
SECTOR = 512
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
TABLE = PartitionTable(type="gpt", id="1C53D516-0925-4C41-8A4F-2B7C66B3B155")
# Names, attribute bits, a swap type, and room before partition 3.
PARTS = [
    NewPartition(1, 1 * MIB, 8 * MIB, "gpt", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                 "1064427C-6DC0-4EE7-A9A9-B89F7AB98E44", "EFI system", "RequiredPartition "
                 "LegacyBIOSBootable", False),
    NewPartition(2, 9 * MIB, 16 * MIB, "gpt", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
                 "B26FBF7C-88BA-479D-9947-610C0E07D1C6", "swap", None, False),
    NewPartition(3, 32 * MIB, 24 * MIB, "gpt", LINUX,
                 "517E518D-A616-485C-B5F1-D6CA26FE0A6B", "root", "GUID:60", False),
]  # fmt: skip


def _ends(dev: str) -> tuple[bytes, bytes]:
    """The disk's first and last MiB: the protective MBR, both GPT headers and entry arrays."""
    with open(dev, "rb") as f:
        first = f.read(MIB)
        f.seek(DISK - MIB)
        return first, f.read()


def _dump(dev: str) -> dict[str, object]:
    pt = json.loads(subprocess.run(["sfdisk", "--json", dev], capture_output=True,
                                   text=True, check=True).stdout)["partitiontable"]  # fmt: skip
    for p in pt["partitions"]:
        p["node"] = p["node"].removeprefix(dev)
    del pt["device"]
    return dict(pt)


@pytest.mark.root
def test_gpt_in_one_command_is_what_libparted_wrote(loopdisk):
    ours, parted = loopdisk(DISK), loopdisk(DISK)
    write_table(ours, TABLE, PARTS, SECTOR)
    _write_parted(parted, TABLE, PARTS, SECTOR)
    _set_identities(parted, TABLE, PARTS)
    assert _dump(ours) == _dump(parted)
    assert _ends(ours) == _ends(parted)
    table, entries = read_table(ours)
    assert table.id == TABLE.id
    assert [dataclasses.replace(e, node="") for e in entries] == [
        dataclasses.replace(e, node="") for e in read_table(parted)[1]
    ]
    assert [(e.number, e.start, e.size, e.uuid, e.name) for e in entries] == [
        (p.number, p.start, p.size, p.uuid, p.name) for p in PARTS
    ]


@pytest.mark.root
def test_gpt_keeps_partition_numbers_with_a_gap(loopdisk):
    """Partitions 1, 2 and 4 stay 1, 2 and 4 (libparted numbered them 1, 2, 3,
    and setting partition 4's identifiers then failed)."""
    dev = loopdisk(DISK)
    gap = [*PARTS[:2], dataclasses.replace(PARTS[2], number=4)]
    write_table(dev, TABLE, gap, SECTOR)
    assert [(e.number, e.start, e.uuid) for e in read_table(dev)[1]] == [
        (p.number, p.start, p.uuid) for p in gap
    ]
    assert table_in_place(dev, TABLE, gap, SECTOR)


@pytest.mark.root
def test_table_in_place_only_when_everything_is_the_same(loopdisk):
    dev = loopdisk(DISK)
    assert not table_in_place(dev, TABLE, PARTS, SECTOR)  # no table at all
    write_table(dev, TABLE, PARTS, SECTOR)
    assert table_in_place(dev, TABLE, PARTS, SECTOR)
    lower = [dataclasses.replace(p, type=p.type.lower() if p.type else None) for p in PARTS]
    assert TABLE.id is not None
    assert table_in_place(dev, dataclasses.replace(TABLE, id=TABLE.id.lower()), lower, SECTOR)
    other_uuid = dataclasses.replace(PARTS[1], uuid="B26FBF7C-88BA-479D-9947-610C0E07D1C7")
    moved = dataclasses.replace(PARTS[2], size=PARTS[2].size - MIB)
    no_attrs = dataclasses.replace(PARTS[0], attrs=None)
    for changed in (
        [PARTS[0], other_uuid, PARTS[2]],
        [PARTS[0], PARTS[1], moved],
        [no_attrs, PARTS[1], PARTS[2]],
        PARTS[:2],
    ):
        assert not table_in_place(dev, TABLE, changed, SECTOR)
    assert not table_in_place(dev, dataclasses.replace(TABLE, id=PARTS[0].uuid), PARTS, SECTOR)
    # a damaged backup header: sfdisk complains, the table is written again
    with open(dev, "r+b") as f:
        f.seek(DISK - SECTOR)
        f.write(bytes(SECTOR))
    assert not table_in_place(dev, TABLE, PARTS, SECTOR)
