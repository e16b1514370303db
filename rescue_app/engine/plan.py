"""Restore plans: what a restore will do, computed without touching a disk.

``make_restore_plan`` checks the targets (free, not the system's, large
enough, same sector size) and lays out each new table; ``RestorePlan.render``
shows a person what will be erased and what the disk will hold. Applying a
plan is ``restore.apply_plan``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rescue_app.engine.diskmodel import BlockDisk, ensure_restorable
from rescue_app.engine.manifest import (
    DiskImage,
    LogicalVolumeImage,
    Manifest,
    Method,
    PartitionImage,
    PartitionTable,
    VolumeGroupImage,
)
from rescue_app.engine.repository import Repository
from rescue_app.engine.table import NewPartition
from rescue_app.engine.units import human_size
from rescue_app.errors import TargetRefusedError, UsageError

GROWABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "swap"}
# LVs a restore can extend into a grown PV's new extents (a thin LV would
# need its pool grown first; not done)
GROWABLE_LV_SEGTYPES = {"linear", "striped"}
GPT_RESERVED_TAIL_SECTORS = 34  # backup header + entries, and one for rounding


@dataclass(frozen=True)
class PartitionStep:
    source: PartitionImage
    new: NewPartition
    grow_fs: bool  # the filesystem is enlarged to the new partition size

    @property
    def grown(self) -> bool:
        return self.new.size != self.source.size


@dataclass(frozen=True)
class DiskPlan:
    image: DiskImage
    target: BlockDisk
    table: PartitionTable
    steps: tuple[PartitionStep, ...]
    notes: tuple[str, ...]

    @property
    def write_bytes(self) -> int:
        return self.image.head.length + sum(s.source.used_bytes for s in self.steps)


@dataclass(frozen=True)
class VolumeGroupPlan:
    """A volume group recreated on the new partitions (its PVs are steps of
    the disk plans), and the LV that takes the new space, if any."""

    image: VolumeGroupImage
    grown_pvs: tuple[str, ...]  # UUIDs of PVs whose partition grows (pvresize)
    grow_lv: str | None  # the LV extended over every free extent, and its filesystem
    notes: tuple[str, ...] = ()

    @property
    def write_bytes(self) -> int:
        return sum(lv.used_bytes for lv in self.image.lvs)

    def render(self) -> list[str]:
        g = self
        vg = g.image
        where = ", ".join(
            f"disk {pv.disk + 1} partition {pv.partition}"
            if pv.partition
            else f"disk {pv.disk + 1}"
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
class RestorePlan:
    repo: Repository
    manifest: Manifest
    disks: tuple[DiskPlan, ...]
    grow: bool
    volume_groups: tuple[VolumeGroupPlan, ...] = ()
    grow_lv: str | None = None  # what was asked (``VG/LV``); None: the default choice

    @property
    def write_bytes(self) -> int:
        return sum(d.write_bytes for d in self.disks) + sum(
            g.write_bytes for g in self.volume_groups
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
                lines.append(
                    f"    {p.number:>2}  {human_size(s.new.start):>10}  "
                    f"{human_size(s.new.size):>10}  {fs[:18]:<18} "
                    f"{human_size(p.used_bytes):>10}{extra}"
                )
                vg = m.volume_group_of(d.image.index, p.number)
                if p.method == Method.LVM_PV and vg is not None:
                    lines.append(f"        LVM physical volume of volume group {vg.name}")
            for note in d.notes:
                lines.append(f"  Note: {note}")
        for g in self.volume_groups:
            lines.append("")
            lines += g.render()
        lines.append("")
        lines.append(f"Data to write: {human_size(self.write_bytes)}")
        return "\n".join(lines)


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
    *,
    grow: bool = False,
    grow_lv: str | None = None,
) -> RestorePlan:
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
    for image, target in zip(manifest.disks, targets, strict=True):
        ensure_restorable(target)
        plans.append(plan_disk(image, target, grow=grow))
    groups = plan_volume_groups(manifest, plans, grow_lv)
    return RestorePlan(
        repo=repo,
        manifest=manifest,
        disks=tuple(plans),
        grow=grow,
        volume_groups=groups,
        grow_lv=grow_lv,
    )


def plan_volume_groups(
    manifest: Manifest, disks: Sequence[DiskPlan], grow_lv: str | None
) -> tuple[VolumeGroupPlan, ...]:
    """Which PVs grow with their partitions, and which LV then takes the new
    extents: ``grow_lv`` (``VG/LV`` or ``LV``), else the LV holding an
    operating system's /, else the last one created; linear or striped, with
    a filesystem liferaft can grow."""
    grown = {
        (d.image.index, s.source.number)
        for d in disks
        for s in d.steps
        if s.grown and s.source.method == Method.LVM_PV
    }
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


def plan_disk(image: DiskImage, target: BlockDisk, *, grow: bool) -> DiskPlan:
    ss = image.logical_sector_size
    if target.logical_sector_size != ss:
        raise TargetRefusedError(
            f"{target.describe()} has {target.logical_sector_size}-byte sectors but the "
            f"image was taken from a disk with {ss}-byte sectors",
            hint="choose a target with the same logical sector size",
        )
    need = image.required_size
    if target.size < need:
        raise TargetRefusedError(
            f"{target.describe()} is too small: the image's partitions need "
            f"{human_size(need)} ({need} bytes), the disk has {human_size(target.size)} "
            f"({target.size} bytes)",
            hint=f"choose a disk of at least {human_size(need)} ({need} bytes)",
        )
    steps = [
        PartitionStep(
            p,
            NewPartition(
                p.number, p.start, p.size, p.kind, p.type, p.uuid, p.name, p.attrs, p.bootable
            ),
            False,
        )
        for p in image.partitions
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
    if last.source.method == Method.LVM_PV:
        pass  # the PV grows (pvresize), then an LV of its volume group
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
            s = PartitionStep(s.source, n, s is last and s.source.method != Method.LVM_PV)
        out.append(s)
    return out, ""


__all__ = [
    "DiskPlan",
    "PartitionStep",
    "RestorePlan",
    "make_restore_plan",
    "plan_disk",
]
