"""The image manifest: what one capture recorded, as typed values.

Owns the manifest's JSON form (docs/FORMAT.md, "Manifest") and its parsing:
a manifest that is truncated, not JSON, of another format or of a newer
version is a ManifestError naming the file. Pure: reads and writes no files.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import zstandard

from rescue_app.engine.diskmodel import DiskHardware
from rescue_app.engine.extents import ExtentMap, total
from rescue_app.engine.lvm import VolumeGroup
from rescue_app.errors import ManifestError

MANIFEST_FORMAT = "liferaft-manifest"
# The newest version this liferaft reads. A manifest is written with the
# lowest version that describes it: 1 unless it holds volume groups (a
# version-1 reader would restore their PVs as empty partitions), 3 when it
# holds md RAID arrays or unlocked LUKS volumes (a version-2 reader would do
# the same to their members).
# 4 when a partition was captured file by file (Method.FILES: a version-3
# reader would lay its tar stream onto the disk as blocks).
# 5 when it holds partitions only (``partitions_only``, a Clonezilla saveparts
# image: a version-4 reader would write its disks' tables with the other
# partitions gone).
MANIFEST_VERSION = 5


class Method(StrEnum):
    """How a partition's (or a logical volume's) bytes were captured."""

    USED = "used-blocks"  # only the filesystem's used blocks (partclone's map)
    RAW = "raw"  # every byte; all-zero chunks not stored
    SWAP = "swap"  # nothing stored; recreated with mkswap and the same label/UUID
    NONE = "none"  # nothing to copy (an MBR extended partition's container)
    LVM_PV = "lvm-pv"  # an LVM physical volume: its volume group is in volume_groups
    MD_MEMBER = "md-member"  # a member of an md RAID array: the array is in md_arrays
    LUKS = "luks"  # an unlocked LUKS volume: its header and contents are in luks_volumes
    FILES = "files"  # file by file from the mounted tree (online backup): a tar stream, ``tree``


@dataclass(frozen=True)
class Region:
    """Raw bytes at ``offset`` of the disk (the head before the first
    partition, or the GPT backup area), stored as chunks."""

    offset: int
    length: int
    chunks: tuple[str | None, ...]


@dataclass(frozen=True)
class Filesystem:
    type: str | None
    uuid: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class FileTree:
    """How a partition captured file by file (Method.FILES) is laid back:
    its chunks, in order, are one archive (docs/FORMAT.md, "File-level
    partitions"); the filesystem is made anew with these mkfs options and
    the partition's type, UUID and label."""

    format: str  # "tar-pax"
    length: int  # bytes of the archive
    files: int  # inodes in it
    options: tuple[str, ...]  # mkfs options repeating the source's features and sizes
    subvolumes: tuple[str, ...] = ()  # Btrfs: every subvolume's path, made before the files
    read_only: tuple[str, ...] = ()  # Btrfs: those flagged read-only after
    default_subvolume: str | None = None  # Btrfs: the default subvolume (None: the top)
    changing: tuple[str, ...] = ()  # files still changing after every re-read (paths)
    # vfat: the DOS attributes that are not a new entry's, "RHSA path" (engine/fatattrs.py)
    fat_attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionImage:
    number: int  # 0 for a disk without a partition table (the whole disk)
    start: int  # bytes from the disk start
    size: int  # bytes
    kind: str  # "primary", "extended", "logical" (MBR) or "gpt" or "whole-disk"
    type: str | None  # GPT type GUID or MBR type byte as hex ("83")
    uuid: str | None  # GPT partition GUID (PARTUUID)
    name: str | None  # GPT partition name
    attrs: str | None  # GPT attribute bits as sfdisk writes them
    bootable: bool  # MBR active flag
    filesystem: Filesystem
    method: str
    used_bytes: int  # bytes restore writes (used blocks or whole partition)
    used_map: ExtentMap  # for Method.USED: byte extents within the partition
    chunks: tuple[str | None, ...]  # chunk i covers [i*chunk_size, ...); None = all zeros
    note: str = ""  # why a fallback was taken, shown to the user
    tree: FileTree | None = None  # Method.FILES: its archive (chunks then are the archive's)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def label(self) -> str:
        fs = self.filesystem.type or "no filesystem"
        where = f"partition {self.number}" if self.number else "whole disk"
        return f"{where} ({fs})"


@dataclass(frozen=True)
class PartitionTable:
    type: str  # "gpt", "dos" or "none"
    id: str | None  # GPT disk GUID or MBR disk signature ("0x1234abcd")
    first_lba: int | None = None
    last_lba: int | None = None


@dataclass(frozen=True, kw_only=True)
class DiskImage(DiskHardware):
    """A captured disk: its hardware as it was, its table, and its partitions."""

    index: int
    transport: str | None
    table: PartitionTable
    head: Region
    gpt_backup: Region | None
    partitions: tuple[PartitionImage, ...]

    @property
    def required_size(self) -> int:
        """The smallest disk this image fits on unchanged."""
        end = max([p.end for p in self.partitions] + [self.head.length])
        if self.table.type == "gpt":
            end += 33 * self.logical_sector_size  # backup entries + header
        return end

    def describe(self) -> str:
        from rescue_app.engine.units import human_size

        model = self.model or "disk"
        serial = f", serial {self.serial}" if self.serial else ""
        return f"{model}{serial}, {human_size(self.size)}"


class _OnPartition(Protocol):
    @property
    def disk(self) -> int: ...
    @property
    def partition(self) -> int: ...


_OnPartitionT = TypeVar("_OnPartitionT", bound=_OnPartition)


def _on_partition(
    items: Iterable[_OnPartitionT], disk: int, partition: int
) -> _OnPartitionT | None:
    """The one of ``items`` on partition ``partition`` of captured disk ``disk``."""
    return next((i for i in items if (i.disk, i.partition) == (disk, partition)), None)


@dataclass(frozen=True)
class PhysicalVolumeImage:
    """Which captured partition a PV is, and the layout pvcreate must repeat."""

    uuid: str
    disk: int  # index into Manifest.disks
    partition: int  # its number (0: the whole disk)
    pe_start: int  # bytes from the partition start to the first extent
    size: int  # bytes of the PV as captured
    metadata_copies: int = 1
    luks: bool = False  # the PV is that partition's unlocked LUKS volume (luks_volumes)
    md: bool = False  # the PV is the md array whose first member is that partition


@dataclass(frozen=True)
class SegmentImage:
    """Where an LV restored by offset lies: ``extents`` extents from its
    logical extent ``le`` on the PV ``pv`` (UUID) from physical extent ``pe``."""

    pv: str
    le: int
    pe: int
    extents: int


@dataclass(frozen=True, kw_only=True)
class Contents:
    """What a volume inside a block layer (a logical volume, an md array)
    holds, captured like a partition: the same fields and chunk grid."""

    filesystem: Filesystem
    method: str
    used_bytes: int
    used_map: ExtentMap
    chunks: tuple[str | None, ...]
    note: str = ""


@dataclass(frozen=True)
class LogicalVolumeImage(Contents):
    name: str
    uuid: str
    size: int
    segtype: str  # linear, striped, thin, thin-pool, or the pool's hidden parts
    tags: tuple[str, ...]
    pool: str  # a thin LV's pool
    hidden: bool  # a pool's metadata or data LV: not shown, not mounted
    holds_root: bool  # an operating system's / (etc/os-release found at capture)
    # Set for LVs written back through the PVs (a thin pool's metadata: it
    # must be in place before the pool can be activated).
    segments: tuple[SegmentImage, ...] = ()
    # --thin-delta: the UUID of the snapshot this capture read, kept as
    # liferaft-base-NAME; the next backup reads only what changed since it
    thin_base: str = ""

    @property
    def label(self) -> str:
        return f"logical volume {self.name} ({self.filesystem.type or 'no filesystem'})"


@dataclass(frozen=True)
class VolumeGroupImage(VolumeGroup):
    """A volume group as LVM reported it at capture, with what recreates it."""

    metadata: str  # vgcfgbackup's text, for pvcreate --restorefile and vgcfgrestore
    pvs: tuple[PhysicalVolumeImage, ...]
    lvs: tuple[LogicalVolumeImage, ...]

    @property
    def has_thin_pool(self) -> bool:
        return any(lv.segtype == "thin-pool" for lv in self.lvs)

    def pv_of(self, disk: int, partition: int) -> PhysicalVolumeImage | None:
        return _on_partition(self.pvs, disk, partition)


@dataclass(frozen=True)
class MdMemberImage:
    """Which captured partition is which slot of an md array."""

    disk: int  # index into Manifest.disks
    partition: int  # its number (0: the whole disk)
    role: int  # its slot in the array (mdadm's RaidDevice)


@dataclass(frozen=True)
class MdArrayImage(Contents):
    """An md RAID array, captured once through the array device; restore
    recreates it on its members' new partitions (mdraid.create_argv)."""

    name: str  # mdadm's "host:name" ("" for metadata 0.90)
    uuid: str  # mdadm's spelling, xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx
    level: str  # raid1, raid5, ...
    metadata: str  # superblock version: 1.2, 1.0, 0.90
    raid_devices: int  # slots, the missing ones of a degraded array included
    chunk_size: int  # bytes (0: none)
    layout: str  # raid5/6/10 layout ("" when none)
    bitmap: bool  # an internal write-intent bitmap
    data_offset: int  # bytes from a member's start to the data (0: not recorded)
    size: int  # bytes of the array device
    members: tuple[MdMemberImage, ...]

    @property
    def label(self) -> str:
        return f"md array {self.name or self.uuid} ({self.filesystem.type or 'no filesystem'})"

    def describe(self) -> str:
        """One line: the array, its level and UUID, its members, what it holds."""
        members = ", ".join(
            f"disk {m.disk + 1} " + (f"partition {m.partition}" if m.partition else "(whole disk)")
            for m in sorted(self.members, key=lambda m: m.role)
        )
        missing = self.raid_devices - len(self.members)
        degraded = f", degraded: {missing} of {self.raid_devices} missing" if missing > 0 else ""
        return (
            f"md array {self.name or '-'} ({self.level}, metadata {self.metadata}, "
            f"UUID {self.uuid}{degraded}) on {members}: {self.filesystem.type or 'no filesystem'}"
        )

    def member_of(self, disk: int, partition: int) -> MdMemberImage | None:
        return _on_partition(self.members, disk, partition)


@dataclass(frozen=True)
class LuksVolumeImage(Contents):
    """An unlocked LUKS partition: its header area as it was (restored byte
    for byte, so the same passphrases open it) and the volume inside,
    captured like a partition through the opened device."""

    disk: int  # index into Manifest.disks
    partition: int  # its number (0: the whole disk)
    uuid: str  # the LUKS UUID
    version: int  # 1 or 2
    header: Region  # bytes [0, data offset) of the partition
    size: int  # bytes of the opened volume

    @property
    def label(self) -> str:
        return f"LUKS volume {self.uuid} ({self.filesystem.type or 'no filesystem'})"


@dataclass(frozen=True)
class SavedPartitionImage:
    """A partition of an image that holds partitions only (a Clonezilla
    saveparts image): restored onto an existing partition the user names,
    never with its disk's table."""

    disk: int  # index into disks
    partition: int  # its number there
    name: str  # its kernel name when saved (sda2): what --to SAVED=PARTITION names
    needed: int  # bytes its filesystem spans: the smallest partition it goes onto


@dataclass(frozen=True)
class ImageKey:
    """How an image is named: its ref ``name@id`` is what users type."""

    name: str
    id: str  # the capture's UTC time stamp, e.g. 20261125T101500Z

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.id}"


@dataclass(frozen=True)
class Manifest(ImageKey):
    created: str  # ISO 8601 UTC
    host: str
    liferaft_version: str
    chunk_size: int
    chunk_hash: str
    compression: str
    disks: tuple[DiskImage, ...]
    stats: dict[str, int] = field(default_factory=dict)
    volume_groups: tuple[VolumeGroupImage, ...] = ()
    md_arrays: tuple[MdArrayImage, ...] = ()
    luks_volumes: tuple[LuksVolumeImage, ...] = ()
    # Not empty: the image holds these partitions only, no disk (docs/FORMAT.md)
    partitions_only: tuple[SavedPartitionImage, ...] = ()

    @property
    def data_bytes(self) -> int:
        lvs = sum(lv.used_bytes for vg in self.volume_groups for lv in vg.lvs)
        arrays = sum(a.used_bytes for a in self.md_arrays)
        lukses = sum(v.header.length + v.used_bytes for v in self.luks_volumes)
        parts = sum(p.used_bytes for d in self.disks for p in d.partitions)
        return lvs + arrays + lukses + parts

    def volume_group_of(self, disk: int, partition: int) -> VolumeGroupImage | None:
        """The volume group a captured partition is a PV of."""
        for vg in self.volume_groups:
            if vg.pv_of(disk, partition) is not None:
                return vg
        return None

    def md_array_of(self, disk: int, partition: int) -> MdArrayImage | None:
        """The md array a captured partition is a member of."""
        for array in self.md_arrays:
            if array.member_of(disk, partition) is not None:
                return array
        return None

    def chunk_refs(self) -> list[tuple[str, str, int]]:
        """(hash, where, offset) for every stored chunk, in disk order."""
        out: list[tuple[str, str, int]] = []
        for disk in self.disks:
            regions: list[tuple[str, int, tuple[str | None, ...]]] = [
                (f"disk {disk.index + 1} head", disk.head.offset, disk.head.chunks)
            ]
            if disk.gpt_backup:
                regions.append(
                    (
                        f"disk {disk.index + 1} GPT backup",
                        disk.gpt_backup.offset,
                        disk.gpt_backup.chunks,
                    )
                )
            for part in disk.partitions:
                regions.append((f"disk {disk.index + 1} {part.label}", 0, part.chunks))
            for where, base, chunks in regions:
                for i, digest in enumerate(chunks):
                    if digest is not None:
                        out.append((digest, where, base + i * self.chunk_size))
        for vg in self.volume_groups:
            for lv in vg.lvs:
                for i, digest in enumerate(lv.chunks):
                    if digest is not None:
                        out.append(
                            (digest, f"volume group {vg.name} {lv.label}", i * self.chunk_size)
                        )
        for array in self.md_arrays:
            for i, digest in enumerate(array.chunks):
                if digest is not None:
                    out.append((digest, array.label, i * self.chunk_size))
        for v in self.luks_volumes:
            for where, chunks in ((f"{v.label} header", v.header.chunks), (v.label, v.chunks)):
                out += [
                    (digest, where, i * self.chunk_size)
                    for i, digest in enumerate(chunks)
                    if digest is not None
                ]
        return out

    def luks_volume_of(self, disk: int, partition: int) -> LuksVolumeImage | None:
        """The unlocked LUKS volume a captured partition is."""
        for v in self.luks_volumes:
            if (v.disk, v.partition) == (disk, partition):
                return v
        return None

    def to_json(self) -> str:
        files = any(p.method == Method.FILES for d in self.disks for p in d.partitions)
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": 5
            if self.partitions_only
            else 4
            if files
            else 3
            if self.md_arrays or self.luks_volumes
            else 2
            if self.volume_groups
            else 1,
        }
        doc.update(asdict(self))
        # A disk's index comes first, as written before its hardware fields
        # came from a base class (asdict puts those first): same bytes.
        doc["disks"] = [{"index": disk["index"], **disk} for disk in doc["disks"]]
        for disk in doc["disks"]:
            for part in disk["partitions"]:
                if part["tree"] is None:
                    del part["tree"]
                elif not part["tree"]["fat_attributes"]:  # (as before it was recorded)
                    del part["tree"]["fat_attributes"]
        for vg in doc["volume_groups"]:
            for lv in vg["lvs"]:
                if not lv["thin_base"]:  # (as before it was recorded)
                    del lv["thin_base"]
        if not self.volume_groups:
            del doc["volume_groups"]
        for key in ("md_arrays", "luks_volumes", "partitions_only"):
            if not doc[key]:
                del doc[key]
        return json.dumps(doc, indent=1, default=_encode) + "\n"


def _encode(value: object) -> object:
    if isinstance(value, ExtentMap):
        return {"extents": len(value), "bytes": total(value), "zstd_u64le": value.encode()}
    raise TypeError(f"cannot put {type(value).__name__} in a manifest")


def _extent_map(d: dict[str, Any]) -> ExtentMap:
    m = ExtentMap.decode(str(d["zstd_u64le"]))
    if len(m) != int(d["extents"]):
        raise ValueError("used_map")
    return m


@dataclass(frozen=True)
class ImageSummary(ImageKey):
    created: str
    host: str
    disks: tuple[str, ...]  # describe() of each captured disk
    data_bytes: int
    disk_bytes: int
    # "disk 1 partition 3: no filesystem recognised; stored raw ...": every
    # partition kept byte for byte, and why (a fallback the user should know of)
    raw: tuple[str, ...] = ()
    # the block layers: which partitions are PVs of which volume group, its LVs
    volume_groups: tuple[VolumeGroupSummary, ...] = ()
    # md arrays: "md array NAME (raid1, UUID) on disk 1 partition 1, ...: ext4"
    md_arrays: tuple[str, ...] = ()
    luks_volumes: tuple[str, ...] = ()  # "disk 1 partition 2: LUKS volume U (ext4), unlocked"

    @classmethod
    def of(cls, manifest: Manifest) -> ImageSummary:
        return cls(
            name=manifest.name,
            id=manifest.id,
            created=manifest.created,
            host=manifest.host,
            disks=tuple(
                partitions_only_line(
                    [p.name for p in manifest.partitions_only if p.disk == d.index],
                    d.model or f"disk {d.index + 1}",
                )
                if manifest.partitions_only
                else d.describe()
                for d in manifest.disks
            ),
            data_bytes=manifest.data_bytes,
            disk_bytes=sum(d.size for d in manifest.disks),
            raw=tuple(
                f"disk {d.index + 1} {p.label}: {p.note or 'stored raw'}"
                for d in manifest.disks
                for p in d.partitions
                if p.method == Method.RAW
            )
            + tuple(
                f"volume group {vg.name} {lv.label}: {lv.note or 'stored raw'}"
                for vg in manifest.volume_groups
                for lv in vg.lvs
                if lv.method == Method.RAW and not lv.hidden
            )
            + tuple(
                f"{a.label}: {a.note or 'stored raw'}"
                for a in manifest.md_arrays
                if a.method == Method.RAW
            ),
            volume_groups=tuple(VolumeGroupSummary.of(vg) for vg in manifest.volume_groups),
            md_arrays=tuple(a.describe() for a in manifest.md_arrays),
            luks_volumes=tuple(
                f"disk {v.disk + 1} partition {v.partition}: {v.label}, unlocked"
                for v in manifest.luks_volumes
            ),
        )


def partitions_only_line(names: Iterable[str], disk: str) -> str:
    """What ``images`` shows of a disk an image holds some partitions of."""
    return f"partitions {', '.join(names)} of {disk} (saveparts)"


@dataclass(frozen=True)
class LogicalVolumeSummary:
    name: str
    size: int
    segtype: str
    filesystem: str | None
    method: str
    data_bytes: int
    holds_root: bool


@dataclass(frozen=True)
class VolumeGroupSummary:
    """disk -> partition -> PV -> this VG -> its LVs, for `images` and the UI."""

    name: str
    uuid: str
    pvs: tuple[str, ...]  # "disk 1 partition 2"
    lvs: tuple[LogicalVolumeSummary, ...]

    @classmethod
    def of(cls, vg: VolumeGroupImage) -> VolumeGroupSummary:
        return cls(
            name=vg.name,
            uuid=vg.uuid,
            pvs=tuple(
                f"disk {pv.disk + 1} partition {pv.partition}"
                if pv.partition
                else f"disk {pv.disk + 1} (whole disk)"
                for pv in vg.pvs
            ),
            lvs=tuple(
                LogicalVolumeSummary(
                    name=lv.name,
                    size=lv.size,
                    segtype=lv.segtype,
                    filesystem=lv.filesystem.type,
                    method=lv.method,
                    data_bytes=lv.used_bytes,
                    holds_root=lv.holds_root,
                )
                for lv in vg.lvs
                if not lv.hidden
            ),
        )


def parse_manifest(text: str | bytes, source: str) -> Manifest:
    """Parse and check a manifest; ``source`` names it in errors."""
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"manifest {source} is corrupt or truncated ({exc.__class__.__name__}: {exc})",
            hint="this image cannot be used; restore an earlier one",
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{source} is not a liferaft manifest")
    version = doc.get("version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise ManifestError(
            f"manifest {source} has format version {version!r}; this liferaft reads "
            f"version {MANIFEST_VERSION}",
            hint="use a newer liferaft",
        )
    try:
        return _manifest_from_dict(doc)
    except (KeyError, TypeError, ValueError, zstandard.ZstdError) as exc:
        raise ManifestError(
            f"manifest {source} is damaged: missing or wrong field {exc}",
            hint="this image cannot be used; restore an earlier one",
        ) from None


# How a JSON value becomes a field of a plain type (_plain_fields)
_PLAIN: dict[object, Callable[[Any], object]] = {
    str: str,
    int: int,
    bool: bool,
    str | None: lambda v: None if v is None else str(v),
    int | None: lambda v: None if v is None else int(v),
    tuple[str, ...]: lambda v: tuple(str(s) for s in v),
}


@functools.cache
def _plain_types(cls: type) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if hints[f.name] in _PLAIN}


def _plain_fields(cls: type, d: dict[str, Any], **missing: object) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` that are plain JSON values (str,
    int, bool, an optional str or int, a tuple of str), read from ``d`` by
    name and converted to their type. A key ``d`` lacks takes ``missing``'s
    value (what older manifests did not record), else the field's default,
    else None for an optional type; otherwise it is a KeyError. The other
    fields are the caller's."""
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    out: dict[str, Any] = {}
    for name, kind in _plain_types(cls).items():
        if name in d:
            out[name] = _PLAIN[kind](d[name])
        elif name in missing or name in defaults:
            out[name] = missing.get(name, defaults.get(name))
        elif kind in (str | None, int | None):
            out[name] = None
        else:
            raise KeyError(name)
    return out


def _region(d: dict[str, Any] | None) -> Region | None:
    if d is None:
        return None
    return Region(**_plain_fields(Region, d), chunks=_chunks(d["chunks"]))


def _chunks(items: list[Any]) -> tuple[str | None, ...]:
    out: list[str | None] = []
    for item in items:
        if item is not None and not (isinstance(item, str) and len(item) == 64):
            raise ValueError(f"chunk hash {item!r}")
        out.append(item)
    return tuple(out)


def _contents(d: dict[str, Any]) -> dict[str, Any]:
    """What partitions and logical volumes share beyond plain fields: the
    filesystem and the captured bytes' map and chunks."""
    return {
        "filesystem": Filesystem(**_plain_fields(Filesystem, d["filesystem"])),
        "used_map": _extent_map(d["used_map"]),
        "chunks": _chunks(d["chunks"]),
    }


def _partition(d: dict[str, Any]) -> PartitionImage:
    return PartitionImage(
        **_plain_fields(PartitionImage, d, bootable=False),
        **_contents(d),
        tree=FileTree(**_plain_fields(FileTree, d["tree"])) if d.get("tree") is not None else None,
    )


def _volume_group(d: dict[str, Any]) -> VolumeGroupImage:
    return VolumeGroupImage(
        **_plain_fields(VolumeGroupImage, d, tags=()),
        pvs=tuple(PhysicalVolumeImage(**_plain_fields(PhysicalVolumeImage, p)) for p in d["pvs"]),
        lvs=tuple(_logical_volume(lv) for lv in d["lvs"]),
    )


def _logical_volume(d: dict[str, Any]) -> LogicalVolumeImage:
    return LogicalVolumeImage(
        **_plain_fields(LogicalVolumeImage, d, tags=(), pool="", hidden=False, holds_root=False),
        **_contents(d),
        segments=tuple(
            SegmentImage(**_plain_fields(SegmentImage, s)) for s in d.get("segments", ())
        ),
    )


def _disk(d: dict[str, Any]) -> DiskImage:
    head = _region(d["head"])
    assert head is not None
    return DiskImage(
        **_plain_fields(DiskImage, d),
        table=PartitionTable(**_plain_fields(PartitionTable, d["table"])),
        head=head,
        gpt_backup=_region(d.get("gpt_backup")),
        partitions=tuple(_partition(p) for p in d["partitions"]),
    )


def _manifest_from_dict(doc: dict[str, Any]) -> Manifest:
    return Manifest(
        **_plain_fields(Manifest, doc),
        disks=tuple(_disk(d) for d in doc["disks"]),
        stats={str(k): int(v) for k, v in doc.get("stats", {}).items()},
        volume_groups=tuple(_volume_group(vg) for vg in doc.get("volume_groups", ())),
        md_arrays=tuple(_md_array(a) for a in doc.get("md_arrays", ())),
        luks_volumes=tuple(_luks_volume(v) for v in doc.get("luks_volumes", ())),
        partitions_only=tuple(
            SavedPartitionImage(**_plain_fields(SavedPartitionImage, p))
            for p in doc.get("partitions_only", ())
        ),
    )


def _luks_volume(d: dict[str, Any]) -> LuksVolumeImage:
    header = _region(d["header"])
    assert header is not None
    return LuksVolumeImage(**_plain_fields(LuksVolumeImage, d), header=header, **_contents(d))


def _md_array(d: dict[str, Any]) -> MdArrayImage:
    members = tuple(MdMemberImage(**_plain_fields(MdMemberImage, m)) for m in d["members"])
    return MdArrayImage(
        **_plain_fields(MdArrayImage, d, chunk_size=0, layout="", bitmap=False, data_offset=0),
        members=members,
        **_contents(d),
    )
