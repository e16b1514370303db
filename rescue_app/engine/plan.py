"""Restore plans: what a restore will do, computed without touching a disk.

``make_restore_plan`` checks the targets (free, not the system's, large
enough, same sector size) and lays out each new table; ``RestorePlan.render``
shows a person what will be erased and what the disk will hold. Applying a
plan is ``restore.apply_plan``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rescue_app.engine.diskmodel import BlockDisk, ensure_restorable
from rescue_app.engine.luks import LUKS_TYPE
from rescue_app.engine.manifest import (
    DiskImage,
    LogicalVolumeImage,
    LuksVolumeImage,
    Manifest,
    MdArrayImage,
    Method,
    PartitionImage,
    PartitionTable,
    VolumeGroupImage,
)
from rescue_app.engine.repository import Repository
from rescue_app.engine.shrink import (
    RESIZED,
    check_choice,
    parse_choice,
    scratch_need,
    shrink_layout,
)
from rescue_app.engine.table import NewPartition
from rescue_app.engine.units import human_size
from rescue_app.errors import TargetRefusedError, UsageError

GROWABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "swap"}
# LVs a restore can extend into a grown PV's new extents (a thin LV would
# need its pool grown first; not done)
GROWABLE_LV_SEGTYPES = {"linear", "striped"}
GPT_RESERVED_TAIL_SECTORS = 34  # backup header + entries, and one for rounding
SEEDABLE = (Method.USED, Method.RAW)  # what is laid back chunk by chunk
# Partitions whose grown space is used by what lies on them (a PV, an md
# array, a LUKS volume) or that are made anew already (file-level): no
# filesystem of their own to grow
INSIDE_GROWS = (Method.LVM_PV, Method.MD_MEMBER, Method.LUKS, Method.FILES)


@dataclass(frozen=True)
class PartitionStep:
    source: PartitionImage
    new: NewPartition
    grow_fs: bool  # the filesystem is enlarged to the new partition size
    # Laid back file-level: a new filesystem, the files copied in (shrink.py)
    files: bool = False
    why: str = ""  # why it shrinks or moves, for the plan
    # Shrunk by ntfsresize in a scratch copy, then copied (ntfsshrink.py)
    resize: bool = False

    @property
    def grown(self) -> bool:
        return self.new.size > self.source.size

    @property
    def shrunk(self) -> bool:
        return self.new.size < self.source.size


@dataclass(frozen=True)
class DiskPlan:
    """One captured disk onto one target disk: the table it gets and a step
    per partition (what is laid where, grown, shrunk or copied file-level)."""

    image: DiskImage
    target: BlockDisk
    table: PartitionTable
    steps: tuple[PartitionStep, ...]
    notes: tuple[str, ...]
    # Partitions whose place the target's table already gives them: their
    # chunks are compared with what the target holds there and only those
    # that differ are fetched and written (a seed restore, see restore.py).
    seeded: tuple[int, ...] = ()

    @property
    def write_bytes(self) -> int:
        return self.image.head.length + sum(s.source.used_bytes for s in self.steps)

    def seed_line(self) -> str:
        """What the plan says about seeding this disk; "" when it is not seeded."""
        if not self.seeded:
            return ""
        data = [s.source.number for s in self.steps if s.source.method in SEEDABLE]
        if self.table.type == "none":
            which = "the filesystem is in place"
        elif list(self.seeded) == data:
            which = "every partition is in place"
        else:
            numbers = ", ".join(map(str, self.seeded))
            which = f"partition{'s' if len(self.seeded) > 1 else ''} {numbers} in place"
        return f"Seeding from the target: only changed data will be downloaded ({which})"


@dataclass(frozen=True)
class VolumeGroupPlan:
    """A volume group recreated on the new partitions (its PVs are steps of
    the disk plans), and the LV that takes the new space, if any."""

    image: VolumeGroupImage
    grown_pvs: tuple[str, ...]  # UUIDs of PVs whose partition grows (pvresize)
    grow_lv: str | None  # the LV extended over the new space, and its filesystem
    notes: tuple[str, ...] = ()

    @property
    def write_bytes(self) -> int:
        return sum(lv.used_bytes for lv in self.image.lvs)

    def render(self) -> list[str]:
        g = self
        vg = g.image
        where = ", ".join(
            ("LUKS on " if pv.luks else "md array on " if pv.md else "")
            + (
                f"disk {pv.disk + 1} partition {pv.partition}"
                if pv.partition
                else f"disk {pv.disk + 1}"
            )
            for pv in vg.pvs
        )
        lines = [
            f"Volume group {vg.name} (LVM, on {where}), same UUIDs:",
            f"    {'logical volume':<16}  {'size':>10}  {'filesystem':<18} {'data':>10}",
        ]
        for lv in vg.lvs:
            if lv.hidden:
                continue
            fs = lv.filesystem.type or ("thin pool" if lv.segtype == "thin-pool" else "raw")
            if lv.filesystem.label:
                fs += f' "{lv.filesystem.label}"'
            extra = "  grows into the new space" if lv.name == g.grow_lv else ""
            if lv.segtype == "thin":
                extra += f"  thin, in pool {lv.pool}"
            lines.append(
                f"    {lv.name[:16]:<16}  {human_size(lv.size):>10}  {fs[:18]:<18} "
                f"{human_size(lv.used_bytes):>10}{extra}"
            )
        for note in g.notes:
            lines.append(f"  Note: {note}")
        return lines


@dataclass(frozen=True)
class MdArrayPlan:
    """An md array recreated on its members' new partitions (steps of the
    disk plans) with the same UUID and name, and whether its filesystem
    grows (every member's partition grew, so the array does)."""

    image: MdArrayImage
    grow_fs: bool

    @property
    def write_bytes(self) -> int:
        return self.image.used_bytes

    def render(self) -> list[str]:
        a = self.image
        fs = a.filesystem.type or "raw"
        if a.filesystem.label:
            fs += f' "{a.filesystem.label}"'
        missing = a.raid_devices - len(a.members)
        lines = [
            f"md RAID array {a.name or a.uuid} ({a.level}, metadata {a.metadata}), "
            f"same UUID {a.uuid}:",
            f"    {human_size(a.size):>10}  {fs[:18]:<18} {human_size(a.used_bytes):>10}"
            + ("  grows with its members" if self.grow_fs else ""),
            "  md resyncs the members in the background after the restore (the mirror",
            "  or parity of the blocks not written); the array works meanwhile",
        ]
        if missing > 0:
            lines.append(
                f"  Note: degraded as captured: {missing} of {a.raid_devices} members "
                "missing; add a disk later (mdadm --add)"
            )
        return lines


@dataclass(frozen=True)
class LuksVolumePlan:
    """An unlocked LUKS volume laid back on its new partition: the header as
    it was, then the contents through the opened volume. When the partition
    grows, the opened volume spans the new size (LUKS1 and LUKS2 data
    segments reach the partition's end), and what is inside grows with it."""

    image: LuksVolumeImage
    grows: bool  # its partition grows, and with it the opened volume
    grow_fs: bool  # the filesystem inside is grown to the opened volume's size

    def grow_line(self) -> str:
        """What grows, for the plan; "" when the partition keeps its size."""
        v = self.image
        if not self.grows:
            return ""
        if v.method == Method.LVM_PV:
            inside = "LVM physical volume (pvresize; the volume group below says which LV grows)"
        elif self.grow_fs or v.method == Method.SWAP:
            inside = f"{v.filesystem.type}"
        else:
            fs = v.filesystem.type
            inside = f"{fs}, which keeps its size" if fs else "raw contents, which keep their size"
        return f"        grows: partition → LUKS volume → {inside}"


@dataclass(frozen=True)
class RestoreChoices:
    """What the user chose for a restore; a plan keeps it, so that it can be
    made again the same way from the disks as they are when it is applied."""

    grow: bool = False  # ``--grow``: extend the last partition into a larger disk
    grow_lv: str | None = None  # ``--grow-lv VG/LV``; None: the default choice
    shrink: tuple[str, ...] = ()  # partitions the user let shrink (``--shrink``)
    # where an NTFS that shrinks gets its scratch copy (``--scratch``); None: TMPDIR
    scratch: str | None = None
    seed: bool = True  # compare with what the targets hold (False: ``--no-seed``)
    # read and check every chunk before the first write (False: ``--no-check-first``)
    check_first: bool = True


@dataclass(frozen=True)
class RestorePlan:
    repo: Repository
    manifest: Manifest
    disks: tuple[DiskPlan, ...]
    choices: RestoreChoices = RestoreChoices()
    volume_groups: tuple[VolumeGroupPlan, ...] = ()
    md_arrays: tuple[MdArrayPlan, ...] = ()
    luks_volumes: tuple[LuksVolumePlan, ...] = ()

    @property
    def write_bytes(self) -> int:
        return (
            sum(d.write_bytes for d in self.disks)
            + sum(g.write_bytes for g in self.volume_groups)
            + sum(a.write_bytes for a in self.md_arrays)
            + sum(v.header.length + v.used_bytes for v in self.manifest.luks_volumes)
        )

    def render(self) -> str:
        m = self.manifest
        lines = [f"Restore image {m.ref} (host {m.host}, captured {m.created})"]
        for n, d in enumerate(self.disks, 1):
            t = d.target
            lines.append("")
            lines.append(f"Target {n}: {t.describe()}")
            lines.append(f"  ERASES everything on {t.path}: {describe_contents(t)}")
            lines.append(f"  New layout ({_table_name(d.table.type)}):")
            lines.append(
                f"    {'#':>2}  {'start':>10}  {'size':>10}  {'filesystem':<18} {'data':>10}"
            )
            for s in d.steps:
                p = s.source
                fs = p.filesystem.type or ("extended" if p.method == Method.NONE else "raw")
                if p.filesystem.label:
                    fs += f' "{p.filesystem.label}"'
                extra = f"  grown from {human_size(p.size)}" if s.grown else ""
                if s.shrunk:
                    extra = f"  shrunk from {human_size(p.size)}"
                lines.append(
                    f"    {p.number:>2}  {human_size(s.new.start):>10}  "
                    f"{human_size(s.new.size):>10}  {fs[:18]:<18} "
                    f"{human_size(p.used_bytes):>10}{extra}"
                )
                vg = m.volume_group_of(d.image.index, p.number)
                if p.method == Method.LVM_PV and vg is not None:
                    lines.append(f"        LVM physical volume of volume group {vg.name}")
                array = m.md_array_of(d.image.index, p.number)
                if p.method == Method.MD_MEMBER and array is not None:
                    member = array.member_of(d.image.index, p.number)
                    role = member.role if member is not None else -1
                    name = array.name or array.uuid
                    if role < 0:
                        # mdadm --create takes the array's slots only
                        lines.append(
                            f"        md RAID spare of array {name}: left empty, not added "
                            "back (mdadm --add it after the restore)"
                        )
                    else:
                        lines.append(f"        md RAID member (device {role}) of array {name}")
                lines += self.luks_lines(d.image.index, s)
                if s.why:
                    lines.append(f"        {s.why}")
            for note in d.notes:
                lines.append(f"  Note: {note}")
            if d.seeded:
                lines.append(f"  {d.seed_line()}")
        for a in self.md_arrays:
            lines.append("")
            lines += a.render()
        for g in self.volume_groups:
            lines.append("")
            lines += g.render()
        lines.append("")
        lines.append(self.data_line())
        lines.append(self.check_line())
        return "\n".join(lines)

    def luks_lines(self, disk: int, s: PartitionStep) -> list[str]:
        """What a restore does with a LUKS partition, under its row (the
        dry run's and the TUI's plan)."""
        p = s.source
        if p.filesystem.type != LUKS_TYPE:
            return []
        v = next(
            (v for v in self.luks_volumes if (v.image.disk, v.image.partition) == (disk, p.number)),
            None,
        )
        if p.method == Method.LUKS and v is not None:
            inside = v.image
            lines = [
                f"        LUKS{inside.version}, unlocked: header as it was (same passphrases), "
                "then",
                f"        {inside.filesystem.type or 'raw'} inside, "
                f"{human_size(inside.used_bytes)} of data",
            ]
            return lines + ([v.grow_line()] if v.grows else [])
        lines = [
            "        LUKS (encrypted): laid back byte for byte as ciphertext; no",
            ("        used-blocks saving is possible without the key"),
        ]
        if s.grown:
            lines.append(
                "        the partition grows; the LUKS volume and its contents keep their size"
            )
        return lines

    def check_line(self) -> str:
        """What the plan says about checking the chunks before writing."""
        if not self.choices.check_first:
            return (
                "Not checking the chunks before writing (--no-check-first): a damaged "
                "chunk stops the restore with the disk partly written"
            )
        regions = restore_regions(self.manifest)
        n = len({d for *_place, chunks in regions for d in chunks if d is not None})
        size = human_size(n * self.manifest.chunk_size)
        if any(d.seeded for d in self.disks):
            return f"Checking every chunk before writing: at most {n} chunks, {size}"
        return f"Checking every chunk before writing: {n} chunks, {size}"

    def data_line(self) -> str:
        size = human_size(self.write_bytes)
        if any(d.seeded for d in self.disks):
            return f"Data to write: at most {size} (only what differs from the target)"
        return f"Data to write: {size}"


# A region whose chunks a restore fetches: where (in messages), the image's
# disk index and partition number it belongs to (None, None: inside a LUKS
# volume, md array or volume group; index, None: a disk's head), chunk ids.
RestoreRegion = tuple[str, int | None, int | None, tuple[str | None, ...]]


def restore_regions(m: Manifest) -> list[RestoreRegion]:
    """Every region whose chunks a restore fetches. A disk's GPT backup is
    not among them (the new table is written anew)."""
    out: list[RestoreRegion] = []
    for disk in m.disks:
        out.append((f"{m.ref} disk {disk.index + 1} head", disk.index, None, disk.head.chunks))
        for p in disk.partitions:
            out.append((f"{m.ref} disk {disk.index + 1} {p.label}", disk.index, p.number, p.chunks))
    for v in m.luks_volumes:
        out.append((f"{m.ref} {v.label} header", None, None, v.header.chunks))
        out.append((f"{m.ref} {v.label}", None, None, v.chunks))
    for a in m.md_arrays:
        out.append((f"{m.ref} {a.label}", None, None, a.chunks))
    for vg in m.volume_groups:
        for lv in vg.lvs:
            out.append((f"{m.ref} volume group {vg.name} {lv.label}", None, None, lv.chunks))
    return out


def _table_name(kind: str) -> str:
    return {"gpt": "GPT", "dos": "MBR", "none": "no partition table"}.get(kind, kind)


def describe_contents(disk: BlockDisk) -> str:
    if not disk.partitions:
        what = f"a {disk.fstype} filesystem" if disk.fstype else "no partitions found"
        return f"{_table_name(disk.pttype) if disk.pttype else 'no table'}, {what}"
    parts = []
    for p in disk.partitions:
        fs = p.fstype or "unknown"
        label = f' "{p.label}"' if p.label else ""
        parts.append(f"{p.path.rsplit('/', 1)[-1]} {fs}{label} {human_size(p.size)}")
    table = _table_name(disk.pttype) if disk.pttype else "table"
    return f"{table}, {len(disk.partitions)} partition(s): " + "; ".join(parts)


def make_restore_plan(
    repo: Repository,
    manifest: Manifest,
    targets: Sequence[BlockDisk],
    choices: RestoreChoices = RestoreChoices(),
) -> RestorePlan:
    """``choices.seed``: partitions the targets already hold at their place
    are compared chunk by chunk and only what differs is written."""
    grow, grow_lv, seed = choices.grow, choices.grow_lv, choices.seed
    if len(targets) != len(manifest.disks):
        raise UsageError(
            f"image {manifest.ref} holds {len(manifest.disks)} disk(s) but "
            f"{len(targets)} target(s) were given",
            hint="give one --to per disk of the image, in the image's order",
        )
    if len({t.path for t in targets}) != len(targets):
        raise UsageError("the same target disk is given twice")
    if grow_lv is not None and not grow:
        raise UsageError("--grow-lv says which logical volume grows: it needs --grow")
    plans = []
    chosen = parse_choice(choices.shrink, len(manifest.disks))
    for image, target in zip(manifest.disks, targets, strict=True):
        ensure_restorable(target)
        check_choice(image, chosen.get(image.index, ()))
        planned = plan_disk(image, target, grow=grow, shrink=chosen.get(image.index, ()))
        if seed:
            planned = replace(planned, seeded=seeded_partitions(planned))
        plans.append(planned)
    groups = plan_volume_groups(manifest, plans, grow_lv)
    arrays = plan_md_arrays(manifest, plans)
    volumes = plan_luks_volumes(manifest, plans)
    return RestorePlan(
        repo=repo,
        manifest=manifest,
        disks=tuple(plans),
        choices=choices,
        volume_groups=groups,
        md_arrays=arrays,
        luks_volumes=volumes,
    )


def seeded_partitions(d: DiskPlan) -> tuple[int, ...]:
    """The partitions a restore may seed from the target: those the target's
    table, as it is now, already places where the new one does (same number,
    start and size, the same kind of table). Each chunk is still compared
    with the target's bytes before it is skipped; this only decides where
    comparing is worth a read. A whole-disk filesystem is seeded when the
    target holds no table and the same kind of filesystem (or the mark of an
    interrupted restore)."""
    t = d.target
    steps = [s for s in d.steps if s.source.method in SEEDABLE and not s.files and not s.resize]
    if d.table.type == "none":
        whole = not t.pttype and not t.partitions
        same = bool(steps) and t.fstype == steps[0].source.filesystem.type
        return (
            tuple(s.source.number for s in steps)
            if whole and (same or bool(t.incomplete_restore))
            else ()
        )
    if t.pttype != d.table.type:
        return ()
    now = {(p.number, p.start, p.size) for p in t.partitions}
    return tuple(s.source.number for s in steps if (s.new.number, s.new.start, s.new.size) in now)


def _grown_places(disks: Sequence[DiskPlan], method: Method) -> set[tuple[int, int]]:
    """(image disk, partition number) of each partition with ``method`` that grows."""
    return {
        (d.image.index, s.source.number)
        for d in disks
        for s in d.steps
        if s.grown and s.source.method == method
    }


def plan_md_arrays(manifest: Manifest, disks: Sequence[DiskPlan]) -> tuple[MdArrayPlan, ...]:
    """Each md array of the image; its filesystem grows when every member's
    partition grows (the array takes its smallest member's size)."""
    grown = _grown_places(disks, Method.MD_MEMBER)
    return tuple(
        MdArrayPlan(
            a,
            bool(a.members)
            and all((m.disk, m.partition) in grown for m in a.members)
            and a.filesystem.type in GROWABLE - {"swap", "ntfs"}
            and a.method == Method.USED,
        )
        for a in manifest.md_arrays
    )


def plan_luks_volumes(manifest: Manifest, disks: Sequence[DiskPlan]) -> tuple[LuksVolumePlan, ...]:
    """Each unlocked LUKS volume of the image; it grows with its partition,
    and so does a filesystem inside that liferaft can grow (a PV inside is
    in its volume group's grown PVs, see plan_volume_groups)."""
    grown = _grown_places(disks, Method.LUKS)
    out = []
    for v in manifest.luks_volumes:
        grows = (v.disk, v.partition) in grown
        fs = grows and v.method == Method.USED and v.filesystem.type in GROWABLE - {"swap"}
        out.append(LuksVolumePlan(v, grows, fs))
    return tuple(out)


def plan_volume_groups(
    manifest: Manifest, disks: Sequence[DiskPlan], grow_lv: str | None
) -> tuple[VolumeGroupPlan, ...]:
    """Which PVs grow with their partitions, and which LV then takes the new
    extents: ``grow_lv`` (``VG/LV`` or ``LV``), else the LV holding an
    operating system's /, else the last one created; linear or striped, with
    a filesystem liferaft can grow. A PV on an md array grows when every
    member's partition grows (the array is created anew at its smallest
    member's size, so only pvresize is needed); so does a PV inside an
    unlocked LUKS volume whose partition grows (the opened volume spans it)."""
    grown = _grown_places(disks, Method.LVM_PV) | _grown_places(disks, Method.LUKS)
    members = _grown_places(disks, Method.MD_MEMBER)
    for a in manifest.md_arrays:
        places = {(m.disk, m.partition) for m in a.members}
        if places and places <= members:
            grown |= places  # a PV on the array names its first member's place
    out = []
    chosen_somewhere = grow_lv is None
    for vg in manifest.volume_groups:
        pvs = tuple(pv.uuid for pv in vg.pvs if (pv.disk, pv.partition) in grown)
        lv: str | None = None
        notes: list[str] = []
        wanted = _wanted_lv(vg, grow_lv)
        if wanted is not None:
            chosen_somewhere = True
            if not pvs:
                notes.append(f"{wanted.name} keeps its size: no PV of {vg.name} grows")
            else:
                lv = wanted.name
        elif pvs:
            pick = _default_grow_lv(vg)
            if pick is None:
                notes.append(
                    f"no logical volume of {vg.name} can be grown; its new extents are left free"
                )
            else:
                lv = pick.name
        out.append(VolumeGroupPlan(vg, pvs, lv, tuple(notes)))
    if not chosen_somewhere:
        names = ", ".join(
            f"{vg.name}/{lv.name}" for vg in manifest.volume_groups for lv in _growable(vg)
        )
        raise UsageError(
            f"--grow-lv {grow_lv}: no such logical volume that can grow in the image",
            hint=f"choose one of: {names}" if names else "the image has none that can grow",
        )
    return tuple(out)


def _growable(vg: VolumeGroupImage) -> list[LogicalVolumeImage]:
    return [
        lv
        for lv in vg.lvs
        if not lv.hidden
        and lv.segtype in GROWABLE_LV_SEGTYPES
        and lv.filesystem.type in GROWABLE - {"swap", "ntfs"}
    ]


def _wanted_lv(vg: VolumeGroupImage, spec: str | None) -> LogicalVolumeImage | None:
    if spec is None:
        return None
    group, _, name = spec.rpartition("/")
    if group and group != vg.name:
        return None
    return next((lv for lv in _growable(vg) if lv.name == name), None)


def _default_grow_lv(vg: VolumeGroupImage) -> LogicalVolumeImage | None:
    candidates = _growable(vg)
    for lv in candidates:
        if lv.holds_root:
            return lv
    # "the last one": the last LV the metadata lists (creation order)
    return max(candidates, key=lambda lv: _position(vg.metadata, lv.name), default=None)


def _position(metadata: str, lv: str) -> int:
    found = metadata.find(f"\n\t\t{lv} {{")
    return found if found >= 0 else -1


def plan_disk(
    image: DiskImage, target: BlockDisk, *, grow: bool, shrink: Sequence[int] = ()
) -> DiskPlan:
    ss = image.logical_sector_size
    if target.logical_sector_size != ss:
        raise TargetRefusedError(
            f"{target.describe()} has {target.logical_sector_size}-byte sectors but the "
            f"image was taken from a disk with {ss}-byte sectors",
            hint="choose a target with the same logical sector size",
        )
    need = image.required_size
    if target.size < need and image.table.type != "none":
        return _shrunk_plan(image, target, shrink)
    if target.size < need:
        raise TargetRefusedError(
            f"{target.describe()} is too small: the image's partitions need "
            f"{human_size(need)} ({need} bytes), the disk has {human_size(target.size)} "
            f"({target.size} bytes)",
            hint=f"choose a disk of at least {human_size(need)} ({need} bytes)",
        )
    steps = [
        PartitionStep(p, _as_placed(p), False, p.method == Method.FILES) for p in image.partitions
    ]
    notes: list[str] = []
    if grow and target.size > image.size and steps:
        steps, note = _grow_last(image, target, steps)
        if note:
            notes.append(note)
    elif target.size > image.size:
        notes.append(
            f"the disk is {human_size(target.size - image.size)} larger than the original; "
            "the extra space is left free (use --grow to extend the last partition)"
        )
    return DiskPlan(
        image=image, target=target, table=image.table, steps=tuple(steps), notes=tuple(notes)
    )


def _as_placed(p: PartitionImage) -> NewPartition:
    """The partition where and as the image has it."""
    return NewPartition(
        p.number, p.start, p.size, p.kind, p.type, p.uuid, p.name, p.attrs, p.bootable
    )


# btrfs send/receive would keep snapshots' sharing, but it needs the source
# mounted read-write (read-only snapshots made) and gives the subvolumes new
# UUIDs all the same; the copy is cp -a per subvolume.
BTRFS_FILE_LEVEL = (
    "; its subvolumes get new subvolume UUIDs and each snapshot is copied in full "
    "(shared extents are not kept)"
)


def _shrunk_plan(image: DiskImage, target: BlockDisk, chosen: Sequence[int]) -> DiskPlan:
    """The image on a disk smaller than it needs: see shrink.py."""
    parts = [_as_placed(p) for p in image.partitions]
    new, taken, note = shrink_layout(image, target, parts, chosen)
    steps = []
    for p, n in zip(image.partitions, new, strict=True):
        why = ""
        files = p.number in taken and p.method != Method.SWAP
        resize = files and p.filesystem.type in RESIZED
        if p.method == Method.FILES:
            files = True
        elif resize:
            files = False
            why = (
                f"NTFS p{p.number}: shrink with ntfsresize {human_size(p.size)} → "
                f"{human_size(n.size)}, in a sparse scratch copy that takes up to "
                f"{human_size(scratch_need(p, n.size))} in the scratch folder (--scratch, "
                "else TMPDIR)"
            )
        elif files and p.filesystem.type == "vfat":
            why = (
                f"vfat p{p.number}: made anew at {human_size(n.size)} (was "
                f"{human_size(p.size)}) with the same volume ID, label and FAT type; its "
                "files are copied from the image with mtools"
            )
        elif files:
            why = (
                f"shrunk from {human_size(p.size)} to {human_size(n.size)}: a new "
                f"{p.filesystem.type} with the same UUID, label and features; its files "
                "are copied from the image"
            )
            if p.filesystem.type == "btrfs":
                why += BTRFS_FILE_LEVEL
        elif p.number in taken:
            why = f"swap made anew at {human_size(n.size)} (same UUID and label)"
        elif n.start != p.start:
            why = f"moved by {human_size(p.start - n.start)} towards the start; laid back as it is"
        steps.append(PartitionStep(p, n, False, files, why, resize))
    return DiskPlan(
        image=image, target=target, table=image.table, steps=tuple(steps), notes=(note,)
    )


def _grow_last(
    image: DiskImage, target: BlockDisk, steps: list[PartitionStep]
) -> tuple[list[PartitionStep], str]:
    ss = image.logical_sector_size
    if image.table.type == "gpt":
        limit = (target.size // ss - GPT_RESERVED_TAIL_SECTORS + 1) * ss
    else:
        limit = target.size // ss * ss
    data_steps = [s for s in steps if s.source.kind != "extended"]
    last = max(data_steps, key=lambda s: s.source.end)
    fs = last.source.filesystem.type
    if last.source.method in (Method.LVM_PV, Method.MD_MEMBER, Method.LUKS):
        # the PV grows (pvresize), then an LV; an md member: its array's
        # filesystem; an unlocked LUKS volume: what is inside (plan_luks_volumes)
        pass
    elif fs == LUKS_TYPE:
        pass  # ciphertext: the partition grows, the volume keeps its size (the plan says so)
    elif fs not in GROWABLE or last.source.method not in (Method.USED, Method.RAW, Method.SWAP):
        return steps, (
            f"the last partition ({fs or 'no filesystem'}) cannot be grown; "
            "the extra space is left free"
        )
    out = []
    for s in steps:
        n = s.new
        if s is last or (s.source.kind == "extended" and last.source.kind == "logical"):
            n = NewPartition(
                n.number,
                n.start,
                limit - n.start,
                n.kind,
                n.type,
                n.uuid,
                n.name,
                n.attrs,
                n.bootable,
            )
            s = PartitionStep(
                s.source,
                n,
                s is last and s.source.method not in INSIDE_GROWS and fs != LUKS_TYPE,
                s.files,  # (a file-level partition's new filesystem fills it already)
            )
        out.append(s)
    return out, ""


__all__ = [
    "DiskPlan",
    "PartitionStep",
    "RestorePlan",
    "make_restore_plan",
    "plan_disk",
]
