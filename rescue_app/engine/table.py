"""Partition tables: read them (sfdisk --json), write them (pyparted).

Reading never writes. Writing creates a fresh GPT or MBR label with pyparted
at exact sector positions, then sets what libparted cannot (disk and
partition GUIDs, GPT type GUIDs and attribute bits, MBR type bytes) with
sfdisk, so that PARTUUID= and disk-signature references keep working after a
restore.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

from rescue_app.engine.manifest import PartitionTable
from rescue_app.errors import CommandError, DiskError
from rescue_app.run import library_children, run

EXTENDED_TYPES = {"5", "f", "85"}


@dataclass(frozen=True)
class NewPartition:
    """A partition's place and identity in a table, as a restore creates it (bytes)."""

    number: int
    start: int  # bytes
    size: int  # bytes
    kind: str
    type: str | None
    uuid: str | None
    name: str | None
    attrs: str | None
    bootable: bool


def placement(entry: NewPartition) -> dict[str, Any]:
    """A partition's table fields (number, place, type, names, flags), as
    an image's PartitionImage takes them."""
    return {f.name: getattr(entry, f.name) for f in fields(NewPartition)}


@dataclass(frozen=True)
class TableEntry(NewPartition):
    """One partition as the table describes it (no filesystem knowledge)."""

    node: str


def read_table(path: str) -> tuple[PartitionTable, list[TableEntry]]:
    proc = run(["sfdisk", "--json", path], check=False)
    if proc.returncode != 0:
        if "does not contain a recognized partition table" in proc.stderr:
            return PartitionTable(type="none", id=None), []
        raise DiskError(f"cannot read the partition table of {path}: {proc.stderr.strip()}")
    return parse_sfdisk_json(proc.stdout)


def parse_sfdisk_json(text: str) -> tuple[PartitionTable, list[TableEntry]]:
    pt = json.loads(text)["partitiontable"]
    label = pt["label"]
    if label not in ("gpt", "dos"):
        raise DiskError(f"partition table type {label!r} is not supported (only GPT and MBR)")
    ss = int(pt.get("sectorsize", 512))
    table = PartitionTable(
        type=label, id=pt.get("id"), first_lba=pt.get("firstlba"), last_lba=pt.get("lastlba")
    )
    entries = []
    for p in pt.get("partitions", []):
        match = re.search(r"(\d+)$", p["node"])
        if not match:
            raise DiskError(f"cannot tell the number of partition {p['node']}")
        number = int(match.group(1))
        ptype = str(p.get("type", "")).lower() if label == "dos" else p.get("type")
        if label == "gpt":
            kind = "gpt"
        elif ptype in EXTENDED_TYPES:
            kind = "extended"
        elif number >= 5:
            kind = "logical"
        else:
            kind = "primary"
        entries.append(
            TableEntry(
                number=number,
                start=int(p["start"]) * ss,
                size=int(p["size"]) * ss,
                kind=kind,
                type=ptype,
                uuid=p.get("uuid"),
                name=p.get("name"),
                attrs=p.get("attrs"),
                bootable=bool(p.get("bootable", False)),
                node=p["node"],
            )
        )
    return table, entries


def write_table(
    path: str, table: PartitionTable, parts: list[NewPartition], sector_size: int
) -> None:
    """Write a fresh label holding exactly ``parts``; the disk is erased of its old table."""
    # Debian's python3-parted; imported here so pure code needs no libparted.
    import _ped
    import parted

    # libparted caches devices by path for the life of the process: a device
    # probed earlier (another loop file, a replaced disk) keeps its old size,
    # and the GPT backup header would be written past the real end. Drop any
    # cached entry before probing and after writing.
    device = None
    with library_children("libparted"):
        try:
            parted.getDevice(path).removeFromCache()
            device = parted.getDevice(path)
            disk = parted.freshDisk(device, "gpt" if table.type == "gpt" else "msdos")
            kinds = {
                "gpt": parted.PARTITION_NORMAL,
                "primary": parted.PARTITION_NORMAL,
                "extended": parted.PARTITION_EXTENDED,
                "logical": parted.PARTITION_LOGICAL,
            }
            # Numbers follow the order partitions are added in: primaries and
            # GPT entries by number, the extended container, then logicals.
            order = sorted(parts, key=lambda p: (p.kind == "logical", p.number))
            for p in order:
                geom = parted.Geometry(
                    device=device, start=p.start // sector_size, length=p.size // sector_size
                )
                part = parted.Partition(disk=disk, type=kinds[p.kind], geometry=geom)
                disk.addPartition(part, constraint=parted.Constraint(exactGeom=geom))
                if table.type == "gpt" and p.name:
                    part.set_name(p.name)
                if table.type == "dos" and p.bootable:
                    part.setFlag(parted.PARTITION_BOOT)
            disk.commit()
        except (
            _ped.PartedException,
            _ped.DiskException,
            _ped.PartitionException,
            _ped.GeometryException,
            _ped.ConstraintException,
            _ped.IOException,
            _ped.DeviceException,
        ) as exc:
            raise DiskError(f"cannot write the partition table on {path}: {exc}") from None
        finally:
            if device is not None:
                device.removeFromCache()
    _set_identities(path, table, parts)


def _set_identities(path: str, table: PartitionTable, parts: list[NewPartition]) -> None:
    """Give the new table the source's identifiers (libparted cannot set them)."""

    def sfdisk(*args: str) -> None:
        # --no-tell-kernel: otherwise each call sleeps 250 ms, runs a global
        # sync() and asks for a re-read; the caller makes the kernel read the
        # finished table once (reread_partitions).
        try:
            run(["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", *args])
        except CommandError as exc:
            raise DiskError(f"cannot set partition identifiers on {path}: {exc}") from None

    if table.id:
        sfdisk("--disk-id", path, table.id)
    for p in parts:
        if p.type:
            sfdisk("--part-type", path, str(p.number), p.type)
        if table.type == "gpt":
            if p.uuid:
                sfdisk("--part-uuid", path, str(p.number), p.uuid)
            if p.attrs:
                sfdisk("--part-attrs", path, str(p.number), ",".join(p.attrs.split()))
