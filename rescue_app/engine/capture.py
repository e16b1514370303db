"""Capture whole disks into a repository.

Reads the source disks only (opened O_RDONLY). For each disk: the partition
table, the raw head before the first partition, the GPT backup area, and
each partition by its method (used blocks, raw, swap). Chunks are stored as
they are read; the manifest is written last, so an interrupted capture
leaves no image behind and never touches earlier ones.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rescue_app.engine import blockio, filelevel, filetree, luks, lvm, mdraid, probe, thinpool
from rescue_app.engine.chunkio import WORKERS, pipeline
from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.diskscan import (
    disks_holding_path,
    find_disk,
    mounts_on_disk,
    read_mountinfo,
)
from rescue_app.engine.extents import Extent, ExtentMap, clip, total
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    FileTree,
    LogicalVolumeImage,
    LuksVolumeImage,
    Manifest,
    MdArrayImage,
    MdMemberImage,
    Method,
    PartitionImage,
    PartitionTable,
    PhysicalVolumeImage,
    Region,
    SegmentImage,
    VolumeGroupImage,
)
from rescue_app.engine.mounts import mounted
from rescue_app.engine.repository import (
    CHUNK_SIZE,
    COMPRESSION,
    Repository,
    host_name,
    liferaft_version,
    validate_name,
)
from rescue_app.engine.results import CaptureResult
from rescue_app.engine.table import TableEntry, placement, read_table, whole_disk_entry
from rescue_app.engine.usedmap import PARTCLONE_OF, MapUnavailable, used_map
from rescue_app.errors import (
    CancelledError,
    DiskError,
    ImageNotFoundError,
    LiferaftError,
    ToolMissingError,
)
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from rescue_app.run import run

log = logging.getLogger("liferaft.capture")

# Reads wait on the disk; one worker more than cores keeps both cores busy.
CAPTURE_WORKERS = WORKERS + 1
GPT_BACKUP_SECTORS = 33
LUKS_RAW_NOTE = (
    "LUKS (encrypted): stored as ciphertext, every byte; no used-blocks saving is "
    "possible without the key (--unlock, into an encrypted repository)"
)


@dataclass
class _Volume:
    """What capture reads of one partition or logical volume, and how."""

    fs: Filesystem
    method: str
    extents: list[Extent] | None  # None: every byte (raw)
    note: str = ""
    # the device read and its size, set by each kind from what it describes
    node: str = field(init=False)
    size: int = field(init=False)

    def how(self) -> tuple[Filesystem, str, list[Extent] | None, str]:
        """What it holds and how it is read: the fields another plan starts from."""
        return self.fs, self.method, self.extents, self.note

    @property
    def read_bytes(self) -> int:
        if self.method == Method.USED:
            assert self.extents is not None
            return total(self.extents)
        return self.size if self.method == Method.RAW else 0

    def contents(self, chunks: list[str | None]) -> dict[str, Any]:
        """Its fields in an image that partitions and logical volumes share
        (filesystem, method, used bytes and map, chunks, the fallback's note)."""
        used = self.extents if self.method == Method.USED and self.extents else ()
        return {
            "filesystem": self.fs,
            "method": self.method,
            "used_bytes": self.read_bytes,
            "used_map": ExtentMap(used),
            "chunks": tuple(chunks),
            "note": self.note,
        }


@dataclass
class _PartPlan(_Volume):
    entry: TableEntry = field(kw_only=True)
    mountpoint: str = field(default="", kw_only=True)  # Method.FILES: the tree read

    def __post_init__(self) -> None:
        self.node, self.size = self.entry.node, self.entry.size

    @property
    def read_bytes(self) -> int:
        if self.method == Method.FILES:  # an estimate: the filesystem's used bytes
            st = os.statvfs(self.mountpoint)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        return super().read_bytes


@dataclass
class ChunkTally:
    """What a new image's chunks cost: how many it refers to, how many of
    them were new to the repository, their stored bytes (the manifest's stats)."""

    chunks: int = 0
    new: int = 0
    stored: int = 0

    def count(self, digest: str | None, stored: int) -> None:
        """One chunk: ``digest`` None for zeros (not stored), ``stored`` 0 for a known one."""
        self.chunks += digest is not None
        self.new += stored > 0
        self.stored += stored

    def as_stats(self) -> dict[str, int]:
        return {"chunks": self.chunks, "new_chunks": self.new, "stored_bytes": self.stored}


@dataclass
class _Stats(ChunkTally):
    done: int = 0
    total: int = 0


def capture(
    repo: Repository,
    name: str,
    disks: Sequence[BlockDisk],
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    luks_key: luks.KeySource | None = None,
    online: bool = False,
    thin_delta: bool = False,
) -> CaptureResult:
    """``luks_key``: unlock the disks' LUKS volumes with it (``--unlock``) and
    capture what is inside; only into an encrypted repository. ``online``:
    the disks are in use (``liferaft backup``): a partition mounted
    read-write is captured file by file from its mounted tree
    (engine/filelevel.py, Btrfs from snapshots) instead of refused.
    ``thin_delta`` (online): each thin LV's snapshot is kept as the base of
    the next backup, and a thin LV whose base matches the last image of
    ``name`` is read only where thin_delta says it changed."""
    validate_name(name)
    if not disks:
        raise DiskError("no disk to capture")
    paths = [d.path for d in disks]
    if len(set(paths)) != len(paths):
        raise DiskError("the same disk is named twice")
    local = repo.local_path()
    for disk in disks:
        refusals = [r for r in capture_refusals(disk, local) if not _live(disk, r, online)]
        if refusals:
            first = refusals[0]
            hint = first.hint
            if online and first.kind is RefusalKind.MOUNTED_READ_WRITE:
                # (a volume stacked on the disk other than LVM)
                hint = (
                    f"{first.device} is an md or LUKS volume in use: the online backup "
                    "does not capture those yet; back it up from the rescue stick"
                )
            raise DiskError(str(first), hint=hint)
    keys = _luks_keys(repo, disks, luks_key) if luks_key is not None else {}
    repo.ensure_writable()
    started = time.monotonic()

    plans = [_plan_disk(disk, progress, online) for disk in disks]
    images = []
    notes = []
    with ExitStack() as active:
        # Unlocked LUKS volumes are open (read-only) until their contents are read.
        lukses = _plan_luks([parts for _, parts in plans], keys, active, progress)
        # Volume groups are active (read-only) from here to the last LV read,
        # and deactivated again whatever happens.
        # md arrays likewise: assembled read-only, stopped again after.
        arrays = _plan_md_arrays([parts for _, parts in plans], active, progress)
        previous = _last_image(repo, name) if thin_delta else None
        groups = _plan_volume_groups(
            [parts for _, parts in plans], active, progress, [*lukses, *arrays],
            online=online, thin_delta=thin_delta, previous=previous,
        )  # fmt: skip
        stats = _Stats(
            total=sum(p.read_bytes for parts in plans for p in parts[1])
            + sum(lv.read_bytes for g in groups for lv in g.lvs)
            + sum(a.read_bytes for a in arrays)
            + sum(v.read_bytes + v.header.data_offset for v in lukses)
        )
        for index, (disk, (table, parts)) in enumerate(zip(disks, plans, strict=True)):
            images.append(_capture_disk(repo, index, disk, table, parts, stats, progress, cancel))
            notes += [f"{disk.path} partition {p.entry.number}: {p.note}" for p in parts if p.note]
            notes += [
                f"{disk.path} partition {p.number}: {len(p.tree.changing)} file(s) kept "
                f"changing while read, kept as last read: {', '.join(p.tree.changing)}"
                for p in images[-1].partitions
                if p.tree is not None and p.tree.changing
            ]
        volume_groups = [_capture_volume_group(repo, g, stats, progress, cancel) for g in groups]
        md_arrays = [_capture_md_array(repo, a, stats, progress, cancel) for a in arrays]
        luks_volumes = [_capture_luks(repo, v, stats, progress, cancel) for v in lukses]
        notes += [f"md array {a.spec.name or a.spec.uuid}: {a.note}" for a in arrays if a.note]
        notes += [
            f"volume group {g.name} {lv.lv.name}: {lv.note}"
            for g in groups
            for lv in g.lvs
            if lv.note
        ]

    image_id, now = repo.new_image_id(name)
    manifest = Manifest(
        name=name,
        id=image_id,
        created=now.isoformat().replace("+00:00", "Z"),
        host=host_name(),
        liferaft_version=liferaft_version(),
        chunk_size=CHUNK_SIZE,
        chunk_hash=repo.envelope.chunk_hash,
        compression=COMPRESSION,
        disks=tuple(images),
        stats=stats.as_stats(),
        volume_groups=tuple(volume_groups),
        md_arrays=tuple(md_arrays),
        luks_volumes=tuple(luks_volumes),
    )
    return commit_image(repo, manifest, started, notes)


def commit_image(
    repo: Repository, manifest: Manifest, started: float, notes: Sequence[str] = ()
) -> CaptureResult:
    """Commit a new image, whose chunks are all stored, and report it (capture
    and the Clonezilla import end here). The manifest goes last, so an
    interrupted job leaves no image."""
    repo.commit_manifest(manifest)
    repo.clean_tmp()
    return CaptureResult(
        ref=manifest.ref,
        data_bytes=manifest.data_bytes,
        stored_bytes=manifest.stats["stored_bytes"],
        chunks_total=manifest.stats["chunks"],
        chunks_new=manifest.stats["new_chunks"],
        seconds=time.monotonic() - started,
        notes=tuple(notes),
    )


class RefusalKind(Enum):
    MOUNTED_READ_WRITE = "mounted read-write"
    HOLDS_REPOSITORY = "holds the repository"
    INCOMPLETE_RESTORE = "holds an incomplete restore"
    FIRMWARE_RAID = "a firmware RAID member"


# blkid's TYPE of a whole disk in a firmware ("fake") RAID set: Intel
# IMSM/RST and SNIA DDF keep the set's metadata in the disk's last sectors.
# A capture by partitions would drop it (the restored disks no longer form
# the set) and a raw copy puts it at the wrong place on a larger disk: refused.
FIRMWARE_RAID_TYPES = {"isw_raid_member": "Intel IMSM/RST", "ddf_raid_member": "DDF"}


@dataclass(frozen=True)
class CaptureRefusal:
    """Why a disk may not be captured now; text only when shown (``str``)."""

    kind: RefusalKind
    disk: str  # /dev path of the disk
    device: str  # the partition, the disk itself, or a device stacked on it
    where: str  # the mount point, or the repository's folder

    def __str__(self) -> str:
        if self.kind is RefusalKind.MOUNTED_READ_WRITE:
            return (
                f"{self.device} is mounted read-write on {self.where}: a backup of a "
                "filesystem in use would be inconsistent"
            )
        if self.kind is RefusalKind.INCOMPLETE_RESTORE:
            return (
                f"{self.disk} holds an {self.where}: its partitions are not whole, "
                "an image of it would not work"
            )
        if self.kind is RefusalKind.FIRMWARE_RAID:
            return (
                f"{self.disk} is a member of an {self.where} firmware RAID set: liferaft "
                "cannot recreate the set's metadata, a restore would not form the set"
            )
        return (
            f"the repository {self.where} is on {self.disk}, the disk being captured: "
            "the backup would copy itself"
        )

    @property
    def hint(self) -> str:
        if self.kind is RefusalKind.MOUNTED_READ_WRITE:
            return (
                f"unmount it (umount {self.where}), or make it read-only "
                f"(mount -o remount,ro {self.where}); a read-only filesystem is captured"
            )
        if self.kind is RefusalKind.INCOMPLETE_RESTORE:
            return "run the restore again to completion first"
        if self.kind is RefusalKind.FIRMWARE_RAID:
            return (
                "set the firmware (BIOS) RAID mode to AHCI and use Linux md RAID, "
                "or back up the machine from its running system"
            )
        return "choose a repository on another disk"


def capture_refusals(disk: BlockDisk, repository: str | None = None) -> list[CaptureRefusal]:
    """The one rule for what may be captured: nothing mounted read-write from
    the disk (whole-disk filesystem, partition, or a device stacked on it;
    read-only mounts are consistent and fine), and never the disk that holds
    ``repository`` (a local folder), however it is mounted."""
    name = disk.path.rsplit("/", 1)[-1]
    found = [
        CaptureRefusal(RefusalKind.MOUNTED_READ_WRITE, disk.path, m.source, m.mountpoint)
        for m in mounts_on_disk(name)
        if not m.read_only
    ]
    if disk.incomplete_restore:
        found.append(
            CaptureRefusal(
                RefusalKind.INCOMPLETE_RESTORE, disk.path, disk.path, disk.incomplete_restore
            )
        )
    firmware = FIRMWARE_RAID_TYPES.get(disk.fstype or "")
    if firmware:
        found.append(CaptureRefusal(RefusalKind.FIRMWARE_RAID, disk.path, disk.path, firmware))
    if repository is not None and name in disks_holding_path(repository):
        found.insert(
            0, CaptureRefusal(RefusalKind.HOLDS_REPOSITORY, disk.path, disk.path, repository)
        )
    return found


def _live(disk: BlockDisk, refusal: CaptureRefusal, online: bool) -> bool:
    """Whether an online backup takes what ``refusal`` refuses: a partition
    (or whole-disk filesystem) mounted read-write, read from its mounted
    tree, or an LVM logical volume, read from a snapshot. An md array or a
    LUKS volume on the disk mounted read-write is still refused."""
    if not online or refusal.kind is not RefusalKind.MOUNTED_READ_WRITE:
        return False
    direct = {os.path.realpath(p.path) for p in disk.partitions} | {disk.path}
    device = os.path.realpath(refusal.device)
    return device in direct or _is_logical_volume(device)


def _is_logical_volume(device: str) -> bool:
    """Whether ``device`` (a /dev path) is an LVM logical volume (its
    device-mapper UUID starts with LVM-)."""
    uuid = os.path.join("/sys/class/block", os.path.basename(device), "dm", "uuid")
    try:
        with open(uuid) as f:
            return f.read().startswith("LVM-")
    except OSError:
        return False


def _live_mounts(disk: BlockDisk) -> dict[str, str]:
    """realpath of each partition mounted read-write -> one of its mount points."""
    out: dict[str, str] = {}
    for m in mounts_on_disk(disk.path.rsplit("/", 1)[-1]):
        if not m.read_only and m.source.startswith("/dev/"):
            out.setdefault(os.path.realpath(m.source), m.mountpoint)
    return out


def _plan_disk(
    disk: BlockDisk, progress: ProgressCallback, online: bool = False
) -> tuple[PartitionTable, list[_PartPlan]]:
    table, entries = read_table(disk.path)
    if table.type != "none" and len(disk.partitions) < len(entries):
        # The kernel does not show every partition of the table (a loop device
        # attached without a scan, no udev to make the nodes): without them no
        # filesystem is recognised and everything would be stored raw. Make the
        # kernel read the table (it reads only) and wait for the nodes.
        log.info(
            "%s: the kernel shows %d of %d partitions; re-reading the table",
            disk.path,
            len(disk.partitions),
            len(entries),
        )
        reread_partitions(disk.path, len(entries))
        disk = find_disk(disk.path)
    if table.type == "none":
        entries = [whole_disk_entry(disk.size, disk.path)]
    by_number = {p.number: p for p in disk.partitions}
    live = _live_mounts(disk) if online else {}
    plans: list[_PartPlan] = []
    maps: list[tuple[Future[list[Extent]], _Volume]] = []
    # partclone takes at least two seconds a map, whatever the size: map
    # every partition of the disk at once.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="liferaft-map") as pool:
        for entry in entries:
            if entry.kind == "extended":
                plans.append(_PartPlan(Filesystem(None), Method.NONE, [], entry=entry))
                continue
            if entry.number == 0:
                fs = Filesystem(disk.fstype)
            else:
                bp = by_number.get(entry.number)
                fs = Filesystem(bp.fstype, bp.uuid, bp.label) if bp else Filesystem(None)
                if fs.type in (None, mdraid.MEMBER_TYPE):
                    # udev's database can lag behind the disk (an md array
                    # just stopped): what groups members must be on the disk
                    found = probe.identify(entry.node)
                    fs = Filesystem(found.get("TYPE"), found.get("UUID"), found.get("LABEL"))
            point = live.get(os.path.realpath(entry.node))
            if point is not None and fs.type in filetree.SUPPORTED:
                plans.append(_PartPlan(fs, Method.FILES, [], "", entry=entry, mountpoint=point))
                continue
            method, mapping, note = _choose_method(pool, entry.node, entry.node, fs, progress)
            if point is not None:
                note = (
                    f"mounted read-write on {point}; {fs.type or 'its filesystem'} cannot be "
                    "captured file by file, so it was read block by block while in use"
                )
            plans.append(
                _PartPlan(fs, method, [] if method == Method.SWAP else None, note, entry=entry)
            )
            if mapping:
                maps.append((mapping, plans[-1]))
        _await_maps(maps)
    return table, plans


def _choose_method(
    pool: ThreadPoolExecutor, node: str, shown: str, fs: Filesystem, progress: ProgressCallback
) -> tuple[str, Future[list[Extent]] | None, str]:
    """How a partition's or a logical volume's bytes are captured: swap is
    recreated, a filesystem partclone knows by its used blocks (the map is
    started on ``pool``), anything else raw, with the reason."""
    if fs.type == "swap":
        return Method.SWAP, None, ""
    if fs.type == luks.LUKS_TYPE:
        return Method.RAW, None, LUKS_RAW_NOTE
    if fs.type in PARTCLONE_OF:
        progress(
            Progress(
                "map", f"{shown} ({fs.type})", 0, 0, message="reading the filesystem's block map"
            )
        )
        return Method.USED, pool.submit(used_map, node, fs.type), ""
    why = f"{fs.type} has no used-block map" if fs.type else "no filesystem recognised"
    return Method.RAW, None, f"{why}; stored raw (every byte, zeros skipped)"


def _await_maps(maps: list[tuple[Future[list[Extent]], _Volume]]) -> None:
    """Each used-block map into its plan; a map partclone cannot make: raw."""
    for mapping, plan in maps:
        try:
            plan.extents = clip(mapping.result(), 0, plan.size)
        except MapUnavailable as exc:
            plan.method = Method.RAW
            plan.note = f"{exc}; copied raw instead"
            log.warning("%s: %s", plan.node, plan.note)


@dataclass
class _LvPlan(_Volume):
    lv: lvm.LogicalVolume = field(kw_only=True)
    holds_root: bool = False
    segments: tuple[SegmentImage, ...] = ()
    snapshot: bool = False  # read from its snapshot (online backup), at ``node``
    thin_base: str = ""  # --thin-delta: the UUID of its snapshot, kept as the next base
    reuse: dict[int, str | None] = field(default_factory=dict)  # chunk -> the previous digest

    def __post_init__(self) -> None:
        self.node, self.size = self.lv.dm_path, self.lv.size


@dataclass
class _VgPlan:
    name: str
    group: lvm.VolumeGroup
    metadata: str
    pvs: list[PhysicalVolumeImage]
    lvs: list[_LvPlan] = field(default_factory=list)
    thin: lvm.ThinState | None = None  # online, with a thin pool: as ``metadata`` records it


def _plan_volume_groups(
    disks: list[list[_PartPlan]],
    active: ExitStack,
    progress: ProgressCallback,
    inner: Sequence[_LuksPlan | _MdPlan] = (),
    *,
    online: bool = False,
    thin_delta: bool = False,
    previous: Manifest | None = None,
) -> list[_VgPlan]:
    """Partitions (and unlocked LUKS volumes, md arrays) that are LVM PVs:
    their volume groups, each captured by its LVs (activated read-only on
    ``active``). A PV whose volume group cannot be recreated from this
    capture stays raw, with the reason in its note. ``online``: an LV
    mounted read-write is read from a snapshot (lvm.snapshots, removed on
    ``active``'s exit; with ``thin_delta`` a thin LV's is kept as its base,
    and ``previous``, the last image of this name, gives the chunks of what
    did not change since that base)."""
    members: dict[str, tuple[int, _PartPlan | _LuksPlan | _MdPlan]] = {}
    for index, parts in enumerate(disks):
        for p in parts:
            if p.fs.type == lvm.PV_TYPE:
                members[os.path.realpath(p.entry.node)] = (index, p)
    for v in inner:
        if v.fs.type == lvm.PV_TYPE:
            members[os.path.realpath(v.node)] = (v.place[0], v)
    if not members:
        return []
    try:
        everywhere = lvm.physical_volumes()
    except ToolMissingError as exc:
        # (not on the rescue system, which has lvm2): as before LVM support
        for _, part in members.values():
            why = f"LVM is not read ({exc.message}; {exc.hint})"
            part.note = f"{why}; stored raw (every byte, zeros skipped)"
        return []
    by_vg: dict[str, list[lvm.PhysicalVolume]] = {}
    for pv in everywhere:
        by_vg.setdefault(pv.vg, []).append(pv)
    groups: list[_VgPlan] = []
    seen: set[str] = set()
    for path, (_, part) in members.items():
        found = [v for v in everywhere if os.path.realpath(v.device) == path]
        if not found or not found[0].vg:
            part.note = "an LVM physical volume in no volume group; stored raw"
            continue
        pv = found[0]
        if pv.vg in seen:
            continue
        seen.add(pv.vg)
        others = [v.device for v in by_vg[pv.vg] if os.path.realpath(v.device) not in members]
        ours = [
            (members[os.path.realpath(v.device)], v) for v in by_vg[pv.vg] if v.device not in others
        ]
        if online:
            lvm.remove_stale_snapshots(pv.vg)
        lvs = lvm.logical_volumes(pv.vg)
        odd = sorted(
            {lv.segtype for lv in lvs if lv.segtype not in lvm.SUPPORTED_SEGTYPES}
            | {"snapshot" for lv in lvs if lv.origin and not lvm.ours(lv)}
        )
        why = ""
        if others:
            why = f"volume group {pv.vg} also lies on {', '.join(others)}, which is not captured"
        elif odd:
            why = f"volume group {pv.vg} has {', '.join(odd)} volumes, which are not recreated"
        for (_, member), _v in ours:
            if why:
                member.note = f"{why}; stored raw (every byte, zeros skipped)"
            else:
                member.method = Method.LVM_PV
                member.extents = []
                member.note = ""  # (_plan_disk's "stored raw" no longer holds)
        if why:
            continue
        groups.append(
            _VgPlan(
                name=pv.vg,
                group=lvm.volume_group(pv.vg),
                metadata=lvm.backup_metadata(pv.vg),
                # (read with the text: the pools' metadata copies must match it)
                thin=lvm.thin_state(pv.vg)
                if online and any(lv.segtype == "thin-pool" for lv in lvs)
                else None,
                pvs=[
                    PhysicalVolumeImage(
                        uuid=v.uuid,
                        disk=disk_index,
                        partition=member.place[1]
                        if isinstance(member, _MdPlan)
                        else member.entry.number,
                        pe_start=v.pe_start,
                        size=v.size,
                        metadata_copies=v.metadata_copies,
                        luks=isinstance(member, _LuksPlan),
                        md=isinstance(member, _MdPlan),
                    )
                    for (disk_index, member), v in ours
                ],
            )
        )
    for g in groups:
        active.enter_context(lvm.activated(g.name, read_only=True))
        via = active.enter_context(_live_snapshots(g.name, thin_delta)) if online else {}
        changed: dict[str, list[tuple[int, int]]] = {}
        bases: dict[str, str] = {}
        if g.thin is not None:
            pairs, bases = _thin_bases(g, previous) if thin_delta else ({}, {})
            copies, changed = _pool_metadata_copies(g, active, pairs)
            via |= copies
        g.lvs = _plan_logical_volumes(g, progress, via, bases.keys())
        for plan in g.lvs:
            plan.thin_base = bases.get(plan.lv.name, "")
            if plan.lv.name in changed and previous is not None:
                _reuse_unchanged(plan, changed[plan.lv.name], previous)
    return groups


@contextlib.contextmanager
def _live_snapshots(vg: str, keep: bool = False) -> Iterator[dict[str, str]]:
    """Snapshots of the volume group's LVs mounted read-write, each made
    consistent (its journal replayed: the snapshot is writable, the origin
    untouched): {LV name: the snapshot's device}; removed after (``keep``:
    a thin LV's kept as its base, lvm.snapshots)."""
    rw = {os.path.realpath(m.source) for m in read_mountinfo() if not m.read_only}
    in_use = [
        lv
        for lv in lvm.logical_volumes(vg)
        if lv.active and not lv.hidden and os.path.realpath(lv.dm_path) in rw
    ]
    with lvm.snapshots(vg, in_use, keep) as snaps:
        out = {}
        for origin, snap in snaps.items():
            settle_journal(snap.dm_path, probe.identify(snap.dm_path).get("TYPE"))
            out[origin] = snap.dm_path
        yield out


def _pool_metadata_copies(
    g: _VgPlan, active: ExitStack, pairs: dict[str, tuple[str, int, int]]
) -> tuple[dict[str, str], dict[str, list[tuple[int, int]]]]:
    """({metadata LV name: a consistent copy of it}, {thin LV: byte extents
    changed since its base}) for each thin pool of the volume group, made
    after the backup's snapshots (engine/thinpool.py); ``pairs``: thin LV ->
    (its pool, its base's thin id, its new snapshot's)."""
    assert g.thin is not None
    sizes = {lv.name: lv.size for lv in lvm.logical_volumes(g.name)}
    copies: dict[str, str] = {}
    changed: dict[str, list[tuple[int, int]]] = {}
    for pool, transaction in g.thin.transactions.items():
        # (bases included: the volume group's text, taken before, lists them)
        keep = {thin_id for owner, thin_id in g.thin.devices.values() if owner == pool}
        meta = f"{pool}_tmeta"
        deltas = {lv: (base, new) for lv, (owner, base, new) in pairs.items() if owner == pool}
        copy = active.enter_context(
            thinpool.metadata_copy(
                g.name, pool, (sizes[meta], sizes[f"{pool}_tdata"]), keep, transaction, deltas
            )
        )
        copies[meta] = copy.device
        changed |= copy.changed
    return copies, changed


def _thin_bases(
    g: _VgPlan, previous: Manifest | None
) -> tuple[dict[str, tuple[str, int, int]], dict[str, str]]:
    """--thin-delta, after the snapshots: (thin LV -> (its pool, its base's
    thin id, its snapshot's) for each whose base is the one the last image
    recorded, with the same size; thin LV -> the UUID of its snapshot, the
    next base)."""
    now = {lv.name: lv for lv in lvm.logical_volumes(g.name)}
    devices = lvm.thin_state(g.name).devices
    last = {}
    if previous is not None:
        last = {lv.name: lv for vg in previous.volume_groups if vg.name == g.name for lv in vg.lvs}
    pairs: dict[str, tuple[str, int, int]] = {}
    bases: dict[str, str] = {}
    for name, lv in now.items():
        snap, base = now.get(lvm.snapshot_name(name)), now.get(lvm.base_name(name))
        if lv.segtype != "thin" or lvm.ours(lv) or snap is None:
            continue
        bases[name] = snap.uuid
        before = last.get(name)
        if base is None or before is None or before.thin_base != base.uuid:
            continue
        if before.size == lv.size and base.name in devices and snap.name in devices:
            pairs[name] = (devices[snap.name][0], devices[base.name][1], devices[snap.name][1])
    return pairs, bases


def _reuse_unchanged(p: _LvPlan, changed: list[tuple[int, int]], previous: Manifest) -> None:
    """The chunks of ``p`` that thin_delta says did not change since its base
    and whose used blocks are those of the last image: that image's digests."""
    before = next(
        lv
        for vg in previous.volume_groups
        if vg.name == p.lv.vg
        for lv in vg.lvs
        if lv.name == p.lv.name
    )
    if p.method != Method.USED or before.method != Method.USED or p.extents is None:
        return
    old = list(before.used_map)
    count = (p.lv.size + CHUNK_SIZE - 1) // CHUNK_SIZE
    read = 0
    for i in range(min(count, len(before.chunks))):
        start, end = i * CHUNK_SIZE, min((i + 1) * CHUNK_SIZE, p.lv.size)
        used = clip(p.extents, start, end)
        if clip(changed, start, end) or used != clip(old, start, end):
            read += bool(used)
            continue
        p.reuse[i] = before.chunks[i]
    why = f"thin_delta since {previous.ref}: {read} of {count} chunks read"
    p.note = f"{p.note}; {why}" if p.note else why


def _last_image(repo: Repository, name: str) -> Manifest | None:
    """The newest image of ``name`` (--thin-delta's reference), if any."""
    try:
        return repo.load_manifest(name)
    except ImageNotFoundError:
        return None


def settle_journal(node: str, fstype: str | None) -> None:
    """Replay the journal of a filesystem snapshotted while mounted, on the
    (writable) snapshot, so that it is clean as captured."""
    if fstype in ("ext3", "ext4"):
        run(["e2fsck", "-E", "journal_only", "-p", node], check=False)
    elif fstype == "xfs":
        # mounting replays the log; nouuid: the origin is mounted with the same UUID
        with mounted(node, fstype, writable=True, options=["nouuid"], prefix="liferaft-log-"):
            pass


def _plan_logical_volumes(
    g: _VgPlan,
    progress: ProgressCallback,
    via: dict[str, str] | None = None,
    kept: Collection[str] = (),
) -> list[_LvPlan]:
    """``via``: LVs read through another device (their snapshot), by name;
    ``kept``: those whose snapshot is kept as a base (--thin-delta)."""
    via = via or {}
    uuid_of = {os.path.realpath(lvm_pv.device): lvm_pv.uuid for lvm_pv in lvm.physical_volumes()}
    segments = lvm.segments(g.name)
    plans: list[_LvPlan] = []
    maps: list[tuple[Future[list[Extent]], _Volume]] = []
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="liferaft-map") as pool:
        for lv in lvm.logical_volumes(g.name):
            if lvm.ours(lv):
                continue  # ours, of an LV in use: read in its place (or a kept base)
            if lv.hidden and lv.name.endswith("_tmeta"):
                # A thin pool's metadata: written back through the PVs before
                # the pool is activated on restore, so kept whole, with where it lies.
                own = [s for s in segments if s.lv == lv.name]
                if any(s.pe < 0 for s in own):
                    raise DiskError(f"LVM: the thin pool metadata {g.name}/{lv.name} is not linear")
                placed = tuple(
                    SegmentImage(uuid_of[os.path.realpath(s.device)], s.le, s.pe, s.extents)
                    for s in own
                )
                plans.append(_LvPlan(Filesystem(None), Method.RAW, None, lv=lv, segments=placed))
                if lv.name in via:  # a pool in use: its metadata at one moment
                    plans[-1].node = via[lv.name]
                    plans[-1].note = "in use: read from a metadata snapshot of the pool"
                continue
            if lv.hidden or lv.segtype == "thin-pool":
                # the pool and its data: their contents are the thin LVs
                plans.append(_LvPlan(Filesystem(None), Method.NONE, [], lv=lv))
                continue
            node = via.get(lv.name, lv.dm_path)
            found = probe.identify(node)
            fs = Filesystem(found.get("TYPE"), found.get("UUID"), found.get("LABEL"))
            # (looked into before partclone maps it: partclone refuses a mounted filesystem)
            holds_root = _holds_root(lv, fs, node)
            shown = f"{g.name}/{lv.name}"
            method, mapping, note = _choose_method(pool, node, shown, fs, progress)
            extents: list[Extent] | None = [] if method == Method.SWAP else None
            plans.append(_LvPlan(fs, method, extents, note, lv=lv, holds_root=holds_root))
            if lv.name in via:
                plans[-1].node = node  # the snapshot: what is read
                plans[-1].snapshot = True
                after = (
                    f"kept as {lvm.base_name(lv.name)} for the next --thin-delta backup"
                    if lv.name in kept
                    else "removed after"
                )
                plans[-1].note = (
                    f"in use: read from the snapshot {lvm.snapshot_name(lv.name)} ({after})"
                    + (f"; {note}" if note else "")
                )
            if mapping:
                maps.append((mapping, plans[-1]))
        _await_maps(maps)
    return plans


def _holds_root(lv: lvm.LogicalVolume, fs: Filesystem, node: str = "") -> bool:
    """An operating system's / (the LV a restore grows by default); ``node``:
    where it is read (its snapshot when in use)."""
    if fs.type not in ("ext2", "ext3", "ext4", "xfs", "btrfs"):
        return False
    node = node or lv.dm_path
    extra = ["nouuid"] if fs.type == "xfs" and node != lv.dm_path else []
    try:
        with mounted(node, fs.type, options=extra, prefix="liferaft-probe-") as point:
            return os.path.exists(os.path.join(point, "etc", "os-release")) or os.path.exists(
                os.path.join(point, "etc", "fstab")
            )
    except LiferaftError as exc:
        log.info("%s: not looked into (%s)", lv.dm_path, exc)
        return False


@dataclass
class _MdPlan(_Volume):
    spec: mdraid.MdArray = field(kw_only=True)
    device: str = field(kw_only=True)  # the assembled array's /dev path
    device_size: int = field(kw_only=True)
    members: tuple[MdMemberImage, ...] = field(kw_only=True)

    def __post_init__(self) -> None:
        self.node, self.size = self.device, self.device_size

    @property
    def place(self) -> tuple[int, int]:
        """Disk index and partition of its first member: where an LVM PV on
        the array is said to be (restore keeps that key for the array)."""
        return self.members[0].disk, self.members[0].partition


def _plan_md_arrays(
    disks: list[list[_PartPlan]], active: ExitStack, progress: ProgressCallback
) -> list[_MdPlan]:
    """Partitions that are md RAID members: their arrays, each assembled
    read-only on ``active`` and captured once through the array device (its
    filesystem by used blocks). An array that cannot be assembled here, or
    with a member on a disk not captured, leaves its members raw, with why."""
    by_uuid: dict[str, list[tuple[int, _PartPlan]]] = {}
    for index, parts in enumerate(disks):
        for p in parts:
            if p.fs.type == mdraid.MEMBER_TYPE:
                by_uuid.setdefault(mdraid.uuid_hex(p.fs.uuid or ""), []).append((index, p))
    plans: list[_MdPlan] = []
    for uuid, ours in by_uuid.items():
        nodes = [p.entry.node for _, p in ours]
        try:
            node = active.enter_context(mdraid.assembled(uuid, nodes))
            spec = mdraid.detail(node)
        except LiferaftError as exc:
            _leave_raw(ours, f"its md array is not assembled here ({exc.message})")
            continue
        slot = {os.path.realpath(m.device): m.role for m in spec.members}
        taken = {os.path.realpath(n) for n in nodes}
        others = [m.device for m in spec.members if os.path.realpath(m.device) not in taken]
        why = ""
        if others:
            why = f"md array {spec.name} also lies on {', '.join(others)}, which is not captured"
        elif spec.level not in mdraid.SUPPORTED_LEVELS:
            why = f"md array {spec.name} is {spec.level}, which is not recreated"
        if why:
            _leave_raw(ours, why)
            continue
        v = _inside(node, f"md array {spec.name or spec.uuid}", progress)
        if v.fs.type == luks.LUKS_TYPE:
            v.note = "LUKS inside an md array is stored raw (ciphertext, zeros skipped)"
        plan = _MdPlan(
            *v.how(),
            spec=spec,
            device=node,
            device_size=v.size,
            members=tuple(
                MdMemberImage(index, p.entry.number, slot.get(os.path.realpath(n), -1))
                for (index, p), n in zip(ours, nodes, strict=True)
            ),
        )
        for _, p in ours:
            p.method, p.extents, p.note = Method.MD_MEMBER, [], ""
        plans.append(plan)
    return plans


def _inside(node: str, shown: str, progress: ProgressCallback) -> _Volume:
    """What a volume read through its own device holds (an assembled md
    array, an opened LUKS volume): its filesystem, size and method, the
    used-block map already made."""
    found = probe.identify(node)
    fs = Filesystem(found.get("TYPE"), found.get("UUID"), found.get("LABEL"))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="liferaft-map") as pool:
        method, mapping, note = _choose_method(pool, node, shown, fs, progress)
        v = _Volume(fs, method, [] if method == Method.SWAP else None, note)
        with blockio.SourceReader(node) as reader:
            v.node, v.size = node, reader.size()
        if mapping:
            _await_maps([(mapping, v)])
    return v


def _leave_raw(members: list[tuple[int, _PartPlan]], why: str) -> None:
    for _, p in members:
        p.note = f"{why}; stored raw (every byte, zeros skipped)"


def _luks_keys(
    repo: Repository, disks: Sequence[BlockDisk], luks_key: luks.KeySource
) -> dict[str, bytes]:
    """Each LUKS partition's key, checked before anything is written; an
    unlocked volume's contents only go into an encrypted repository."""
    volumes = [p for d in disks for p in d.partitions if p.fstype == luks.LUKS_TYPE]
    if not volumes:
        raise DiskError(
            "--unlock: there is no LUKS volume on " + ", ".join(d.path for d in disks),
            hint="capture without --unlock",
        )
    if not repo.encrypted:
        raise DiskError(
            f"--unlock: the contents of an unlocked LUKS volume may only go into an "
            f"encrypted repository, and {repo.location} is not encrypted; nothing was written",
            hint="capture without --unlock (the volume is stored as ciphertext), or into "
            "a repository made with 'liferaft init --encrypt'",
        )
    keys = {}
    for p in volumes:
        key = luks_key(p.path, p.uuid or "")
        luks.check_key(p.path, key)
        keys[os.path.realpath(p.path)] = key
    return keys


@dataclass
class _LuksPlan(_Volume):
    disk: int = field(kw_only=True)
    part: _PartPlan = field(kw_only=True)
    header: luks.LuksHeader = field(kw_only=True)
    device: str = field(kw_only=True)  # the opened volume's /dev/mapper path
    device_size: int = field(kw_only=True)

    def __post_init__(self) -> None:
        self.node, self.size = self.device, self.device_size

    @property
    def entry(self) -> TableEntry:
        """The partition the volume is (an LVM PV inside is placed by it)."""
        return self.part.entry

    @property
    def place(self) -> tuple[int, int]:
        return self.disk, self.part.entry.number


def _plan_luks(
    disks: list[list[_PartPlan]],
    keys: dict[str, bytes],
    active: ExitStack,
    progress: ProgressCallback,
) -> list[_LuksPlan]:
    """Each LUKS partition with a key: opened read-only on ``active``, its
    filesystem inside captured like a partition, its header area kept."""
    plans = []
    for index, parts in enumerate(disks):
        for p in parts:
            key = keys.get(os.path.realpath(p.entry.node))
            if key is None:
                continue
            header = luks.header(p.entry.node)
            node = active.enter_context(luks.opened(p.entry.node, key, read_only=True))
            v = _inside(node, f"LUKS volume {header.uuid}", progress)
            plan = _LuksPlan(
                *v.how(), disk=index, part=p, header=header, device=node, device_size=v.size
            )
            p.method, p.extents, p.note = Method.LUKS, [], ""
            plans.append(plan)
    return plans


def _capture_luks(
    repo: Repository,
    v: _LuksPlan,
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> LuksVolumeImage:
    with blockio.SourceReader(v.part.entry.node) as reader:
        shown = f"{v.part.node} (LUKS header)"
        size = v.header.data_offset
        header = _store_region(
            repo, reader, 0, size, None, stats, progress, cancel, shown, count_progress=True
        )
    return LuksVolumeImage(
        disk=v.disk,
        partition=v.part.entry.number,
        uuid=v.header.uuid,
        version=v.header.version,
        header=Region(0, size, tuple(header)),
        size=v.size,
        **v.contents(
            _store_volume(repo, v, stats, progress, cancel, f"LUKS volume {v.header.uuid}")
        ),
    )


def _store_volume(
    repo: Repository,
    v: _Volume,
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    shown: str,
) -> list[str | None]:
    """The chunks of a volume read through its own device (an md array, an
    opened LUKS volume): its used blocks, or every byte."""
    if v.method not in (Method.USED, Method.RAW):
        return []
    with blockio.SourceReader(v.node) as reader:
        item = f"{shown} ({v.fs.type or 'raw'})"
        return _store_region(
            repo, reader, 0, v.size, v.extents, stats, progress, cancel, item, count_progress=True
        )


def _capture_md_array(
    repo: Repository,
    a: _MdPlan,
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> MdArrayImage:
    chunks = _store_volume(
        repo, a, stats, progress, cancel, f"md array {a.spec.name or a.spec.uuid}"
    )
    return MdArrayImage(
        **mdraid.spec_fields(a.spec), size=a.size, members=a.members, **a.contents(chunks)
    )


def _capture_volume_group(
    repo: Repository,
    g: _VgPlan,
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> VolumeGroupImage:
    images = []
    for p in g.lvs:
        chunks: list[str | None] = []
        if p.method in (Method.USED, Method.RAW):
            with blockio.SourceReader(p.node) as reader:
                chunks = _store_region(
                    repo,
                    reader,
                    0,
                    p.lv.size,
                    p.extents,
                    stats,
                    progress,
                    cancel,
                    f"{g.name}/{p.lv.name} ({p.fs.type or 'raw'})",
                    count_progress=True,
                    reuse=p.reuse,
                )
        images.append(
            LogicalVolumeImage(
                name=p.lv.name,
                uuid=p.lv.uuid,
                size=p.lv.size,
                segtype=p.lv.segtype,
                tags=p.lv.tags,
                pool=p.lv.pool,
                hidden=p.lv.hidden,
                holds_root=p.holds_root,
                **p.contents(chunks),
                segments=p.segments,
                thin_base=p.thin_base,
            )
        )
    return VolumeGroupImage(
        name=g.name,
        uuid=g.group.uuid,
        extent_size=g.group.extent_size,
        tags=g.group.tags,
        metadata=g.metadata,
        pvs=tuple(g.pvs),
        lvs=tuple(images),
    )


def _capture_disk(
    repo: Repository,
    index: int,
    disk: BlockDisk,
    table: PartitionTable,
    parts: list[_PartPlan],
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> DiskImage:
    ss = disk.logical_sector_size
    first = min((p.entry.start for p in parts if p.entry.kind != "whole-disk"), default=0)
    with blockio.SourceReader(disk.path) as reader:
        size = reader.size()
        head = Region(
            0,
            first,
            tuple(_store_region(repo, reader, 0, first, None, stats, progress, cancel, "head")),
        )
        backup = None
        if table.type == "gpt":
            off = size - GPT_BACKUP_SECTORS * ss
            backup = Region(
                off,
                GPT_BACKUP_SECTORS * ss,
                tuple(
                    _store_region(
                        repo,
                        reader,
                        off,
                        GPT_BACKUP_SECTORS * ss,
                        None,
                        stats,
                        progress,
                        cancel,
                        "GPT backup",
                    )
                ),
            )
        images = []
        for p in parts:
            e = p.entry
            item = (
                f"{disk.path} partition {e.number} ({p.fs.type or 'raw'})"
                if e.number
                else f"{disk.path} ({p.fs.type or 'raw'})"
            )
            chunks: list[str | None] = []
            tree = None
            if p.method in (Method.USED, Method.RAW):
                chunks = _store_region(
                    repo,
                    reader,
                    e.start,
                    e.size,
                    p.extents,
                    stats,
                    progress,
                    cancel,
                    item,
                    count_progress=True,
                )
            elif p.method == Method.FILES:
                chunks, tree = _store_tree(repo, p, stats, progress, cancel, item)
            contents = p.contents(chunks)
            if tree is not None:
                contents["used_bytes"] = tree.length
            images.append(PartitionImage(**placement(e), **contents, tree=tree))
    return DiskImage(
        index=index,
        model=disk.model,
        serial=disk.serial,
        wwn=disk.wwn,
        size=size,
        logical_sector_size=ss,
        physical_sector_size=disk.physical_sector_size,
        transport=disk.transport,
        table=table,
        head=head,
        gpt_backup=backup,
        partitions=tuple(images),
    )


def _store_tree(
    repo: Repository,
    p: _PartPlan,
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    item: str,
) -> tuple[list[str | None], FileTree]:
    """A partition mounted read-write, file by file (engine/filelevel.py)."""
    item = f"{item}, files of {p.mountpoint}" + (" (snapshots)" if p.fs.type == "btrfs" else "")
    item_done = 0

    def store(data: bytes) -> str:
        digest = repo.chunk_id(data)
        stats.count(digest, repo.put_chunk(data, digest).stored_bytes)
        return digest

    def advance(n: int, _path: str) -> None:
        nonlocal item_done
        stats.done += n
        item_done += n
        progress(Progress("capture", item, stats.done, stats.total, item_done, p.read_bytes))

    progress(Progress("capture", item, stats.done, stats.total, 0, p.read_bytes))
    digests, tree = filelevel.capture_tree(p.mountpoint, p.entry.node, p.fs, store, advance, cancel)
    return list(digests), tree


@functools.lru_cache(maxsize=8)
def _zero_digest(repo: Repository, length: int) -> str:
    return repo.chunk_id(bytes(length))


def _store_region(
    repo: Repository,
    reader: blockio.SourceReader,
    base: int,
    size: int,
    extents: list[Extent] | None,
    stats: _Stats,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    item: str,
    *,
    count_progress: bool = False,
    reuse: Mapping[int, str | None] | None = None,
) -> list[str | None]:
    """Store ``[base, base+size)`` of the device as chunks.

    ``extents`` (relative to ``base``) limits what is read; bytes outside them
    are stored as zeros. None means every byte. Returns one digest per chunk
    of the grid, None for a chunk that is all zeros. ``reuse``: chunks known
    unchanged (--thin-delta), taken as they are without reading.
    """
    n_chunks = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
    digests: list[str | None] = [None] * n_chunks
    item_total = size if extents is None else total(extents)
    item_done = 0

    def job(i: int) -> tuple[int, int, str | None, int]:
        start = i * CHUNK_SIZE
        length = min(CHUNK_SIZE, size - start)
        inside = [(start, length)] if extents is None else clip(extents, start, start + length)
        view = reader.read(base + start, length, [(base + s, n) for s, n in inside])
        nbytes = total(inside)
        digest = repo.chunk_id(view)
        if digest == _zero_digest(repo, length):
            return i, nbytes, None, 0
        result = repo.put_chunk(view, digest)
        return i, nbytes, digest, result.stored_bytes

    def collect(done: list[tuple[int, int, str | None, int]]) -> None:
        nonlocal item_done
        for i, nbytes, digest, stored in done:
            digests[i] = digest
            stats.count(digest, stored)
            if count_progress:
                stats.done += nbytes
                item_done += nbytes
                progress(Progress("capture", item, stats.done, stats.total, item_done, item_total))

    # Each worker reads its own chunk, so reads overlap each other and the
    # hashing and compressing of other chunks.
    with pipeline(tuple, workers=CAPTURE_WORKERS) as pipe:
        for i in range(n_chunks):
            if cancel is not None and cancel.cancelled:
                raise CancelledError("capture cancelled; no image was written")
            if extents is not None:
                start = i * CHUNK_SIZE
                inside = clip(extents, start, min(start + CHUNK_SIZE, size))
                if not inside:
                    continue
                if reuse is not None and i in reuse:
                    collect([(i, total(inside), reuse[i], 0)])
                    continue
            collect(pipe.submit(job, i))
        collect(pipe.drain())
    return digests
