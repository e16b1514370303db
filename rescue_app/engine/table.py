"""Partition tables: read them (sfdisk --json), write them (sfdisk, pyparted).

Reading never writes. Writing creates a fresh label at exact sector
positions with the source's identifiers (disk and partition GUIDs, GPT type
GUIDs and attribute bits, MBR type bytes), so that PARTUUID= and
disk-signature references keep working after a restore. A GPT is one sfdisk
script (the same bytes libparted writes, in one command: a restore's fixed
cost); an MBR is made with pyparted, whose placement of logical partitions
sfdisk does not reproduce, and its identifiers set with sfdisk after.
``table_in_place`` tells a restore that the target holds the table already.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from rescue_app.engine.manifest import PartitionTable
from rescue_app.errors import CommandError, DiskError
from rescue_app.run import library_children, run

EXTENDED_TYPES = {"5", "f", "85"}
# A GPT's partition entry array as libparted and sfdisk make it (128 entries
# of 128 bytes): it fixes the first usable sector.
GPT_ENTRIES_BYTES = 128 * 128


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


def whole_disk_entry(size: int, node: str) -> TableEntry:
    """The one entry of a disk without a partition table: the whole disk
    (a filesystem or an LVM PV on it)."""
    return TableEntry(
        number=0,
        start=0,
        size=size,
        kind="whole-disk",
        type=None,
        uuid=None,
        name=None,
        attrs=None,
        bootable=False,
        node=node,
    )


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
    script = _gpt_script(table, parts, sector_size)
    if script is not None:
        try:
            run(["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", path], input=script)
        except CommandError as exc:
            raise DiskError(f"cannot write the partition table on {path}: {exc}") from None
    else:
        _write_parted(path, table, parts, sector_size)
        _set_identities(path, table, parts)


def _write_parted(
    path: str, table: PartitionTable, parts: list[NewPartition], sector_size: int
) -> None:
    """A fresh label holding ``parts`` at their places, written by libparted."""
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


def _gpt_first_lba(sector_size: int) -> int:
    """The first usable sector of a new GPT: after the protective MBR, the
    header and the entry array (34 with 512-byte sectors)."""
    return 2 + -(-GPT_ENTRIES_BYTES // sector_size)


def _gpt_script(table: PartitionTable, parts: list[NewPartition], sector_size: int) -> bytes | None:
    """The sfdisk script of a GPT holding exactly ``parts`` with their
    identifiers; None for an MBR, or a name a script cannot quote."""
    if table.type != "gpt" or any(p.name and re.search(r'["\\\n]', p.name) for p in parts):
        return None
    # first-lba as libparted sets it (sfdisk's own default is 2048): a
    # restore leaves the bytes a full restore always left.
    lines = ["label: gpt", "unit: sectors", f"first-lba: {_gpt_first_lba(sector_size)}"]
    if table.id:
        lines.append(f"label-id: {table.id}")
    lines.append("")
    for p in sorted(parts, key=lambda p: p.number):
        fields = [f"start={p.start // sector_size}", f"size={p.size // sector_size}"]
        fields += [f"type={p.type}"] if p.type else []
        fields += [f"uuid={p.uuid}"] if p.uuid else []
        fields += [f'name="{p.name}"'] if p.name else []
        fields += [f'attrs="{" ".join(p.attrs.split())}"'] if p.attrs else []
        # sfdisk takes the partition's number from the name's last digits
        lines.append(f"p{p.number} : " + ", ".join(fields))
    return ("\n".join(lines) + "\n").encode()


def table_in_place(
    path: str, table: PartitionTable, parts: list[NewPartition], sector_size: int
) -> bool:
    """Whether ``path`` holds ``table`` with exactly ``parts`` already, and
    sfdisk reads it without a complaint (a GPT's backup header sound, the
    protective MBR the disk's size): the same label, disk identifier and
    first usable sector, each partition's number, place, kind, type,
    identifier, name, attribute bits and boot flag. Writing it again would
    change nothing; a restore leaves it (see restore.py)."""
    proc = run(["sfdisk", "--json", path], check=False)
    if proc.returncode != 0 or proc.stderr.strip():
        return False
    try:
        now, entries = parse_sfdisk_json(proc.stdout)
    except DiskError:  # a kind of table a restore does not write
        return False
    if now.type == "gpt" and now.first_lba != _gpt_first_lba(sector_size):
        return False
    return _identity(now, entries) == _identity(table, parts)


def _identity(table: PartitionTable, parts: Sequence[NewPartition]) -> tuple[object, ...]:
    """What ``table_in_place`` compares, in one spelling (case, attribute order)."""

    def low(text: str | None) -> str | None:
        return text.lower() if text else None

    return (
        table.type,
        low(table.id),
        sorted(
            (
                p.number,
                p.start,
                p.size,
                p.kind,
                low(p.type),
                low(p.uuid),
                p.name or None,
                tuple(sorted((p.attrs or "").replace(",", " ").split())),
                p.bootable,
            )
            for p in parts
        ),
    )


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
