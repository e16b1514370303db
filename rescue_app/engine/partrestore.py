"""Restoring partitions only: a Clonezilla ``saveparts`` image onto partitions
the user names.

Owns the partition-level plan (which saved partition goes onto which existing
partition, refused when the target is too small, in use, on the running
system's disk or named twice) and its application. The disks' partition
tables, boot code and other partitions are never touched: only the named
partitions are written, through restore.py's writer (used blocks only, every
chunk's hash checked, the first MiB last). Before writing, the old
signatures of the target partition are wiped, so a restore stopped midway
leaves a partition no tool takes for a filesystem (the partition-level
counterpart of the whole disk's incomplete-restore mark); the filesystem's
first MiB, written last, makes it one again. With ``grow`` a filesystem in
a larger partition is grown to fill it afterwards (restore.grow_filesystem,
as a whole disk's last partition with --grow); else it keeps its size, and an
NTFS gets a copy of its boot sector in the partition's last sector, where
ntfsfix looks for the backup.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rescue_app.engine.diskmodel import BlockDisk, BlockPartition, Role
from rescue_app.engine.diskparse import parse_swaps
from rescue_app.engine.diskscan import SYS_BLOCK, list_disks, read_text
from rescue_app.engine.extents import Extent
from rescue_app.engine.manifest import Manifest, Method, PartitionImage
from rescue_app.engine.plan import GROWABLE, VolumeGroupPlan
from rescue_app.engine.repository import Repository
from rescue_app.engine.restore import (
    Counter,
    Region,
    grow_filesystem,
    place_ntfs_backup_boot_sector,
    refuse_lvm_twins,
    restore_volume_group,
    verify_volume,
    write_volume,
)
from rescue_app.engine.results import RestoreResult
from rescue_app.engine.units import human_size
from rescue_app.errors import ManifestError, TargetRefusedError
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from rescue_app.run import run


@dataclass(frozen=True)
class SavedPartition:
    """A partition of the image: its name when saved (sda1), what the image
    holds of it, and the bytes its filesystem spans (what a target needs)."""

    name: str
    image: PartitionImage
    needed: int
    disk: int = 0  # index into Manifest.disks


def saved_partitions(manifest: Manifest) -> list[SavedPartition] | None:
    """The partitions of an image that holds partitions only (its
    ``partitions_only``), in order; None for an image of whole disks."""
    if not manifest.partitions_only:
        return None
    out = []
    for s in manifest.partitions_only:
        disk = next((d for d in manifest.disks if d.index == s.disk), None)
        part = next((p for p in disk.partitions if p.number == s.partition), None) if disk else None
        if part is None:
            raise ManifestError(
                f"manifest {manifest.ref} is damaged: its saved partition {s.name} "
                f"(disk {s.disk + 1} partition {s.partition}) is not among its partitions",
                hint="this image cannot be used; restore an earlier one",
            )
        out.append(SavedPartition(s.name, part, s.needed, s.disk))
    return out


@dataclass(frozen=True)
class PartitionTarget:
    disk: BlockDisk
    partition: BlockPartition

    @property
    def path(self) -> str:
        return self.partition.path

    def describe(self) -> str:
        p = self.partition
        held = p.fstype or "no filesystem"
        if p.label:
            held += f' "{p.label}"'
        return (
            f"partition {p.number} ({p.path}, {human_size(p.size)}, {held}) "
            f"of {self.disk.describe()}"
        )


@dataclass(frozen=True)
class PartitionStep:
    saved: SavedPartition
    target: PartitionTarget

    @property
    def spare(self) -> int:
        """The bytes of the target partition after the saved filesystem."""
        return self.target.partition.size - self.saved.needed


@dataclass(frozen=True)
class PartitionRestorePlan:
    """Saved partitions onto existing partitions; nothing else is written."""

    repo: Repository
    manifest: Manifest
    steps: tuple[PartitionStep, ...]
    grow: bool = False  # filesystems grow to fill larger partitions
    # Volume groups whose PVs are all among the steps' partitions: recreated
    # on the targets with their LVs (a PV grows with --grow: pvresize)
    volume_groups: tuple[VolumeGroupPlan, ...] = ()

    def grows(self, step: PartitionStep) -> bool:
        fs = step.saved.image.filesystem.type
        return self.grow and step.spare > 0 and fs in GROWABLE - {"swap"}

    @property
    def disks(self) -> tuple[PartitionStep, ...]:
        """What a confirmation names, one by one (each step's ``target``)."""
        return self.steps

    def render(self) -> str:
        lines = [
            f"Restore {self.manifest.ref} onto partitions (Clonezilla saveparts image: "
            "partition tables and other partitions are left as they are)"
        ]
        for s in self.steps:
            fs = s.saved.image.filesystem
            what = fs.type or "raw"
            if fs.label:
                what += f' "{fs.label}"'
            lines.append(
                f"  {s.saved.name} ({what}, {human_size(s.saved.needed)}, "
                f"{human_size(s.saved.image.used_bytes)} used) -> {s.target.describe()}"
            )
            if s.saved.image.method == Method.LVM_PV:
                grown = self.grow and s.spare > 0
                lines.append(
                    "    an LVM physical volume: its volume group below is recreated on it"
                    + (f", grown by {human_size(s.spare)}" if grown else "")
                )
            elif self.grows(s):
                lines.append(f"    the filesystem grows by {human_size(s.spare)} to fill it")
            elif s.spare > 0 and s.saved.image.method != Method.SWAP:
                lines.append(
                    f"    the filesystem stays {human_size(s.saved.needed)}: "
                    f"{human_size(s.spare)} of the partition after it is left unused"
                )
        for g in self.volume_groups:
            lines += ["", *g.render()]
        lines.append("  ERASES: " + ", ".join(s.target.path for s in self.steps))
        return "\n".join(lines)


def plan_partition_restore(
    repo: Repository,
    manifest: Manifest,
    saved: Sequence[SavedPartition],
    targets: Sequence[str],
    disks: list[BlockDisk] | None = None,
    *,
    grow: bool = False,
) -> PartitionRestorePlan:
    """``targets``: one partition per saved partition, in order, or
    ``SAVED=PARTITION`` (e.g. ``sda2=/dev/sdb3``) for those to restore;
    ``grow``: filesystems grow to fill larger partitions."""
    disks = list_disks() if disks is None else disks
    by_name = {s.name: s for s in saved}
    names = ", ".join(by_name)
    hint = (
        f"give --to PARTITION once per saved partition ({names}), in that order, "
        f"or --to SAVED=PARTITION (e.g. --to {next(iter(by_name), 'sda1')}=/dev/sdb2)"
    )
    for t in targets:  # (a disk named where a partition is wanted: said first)
        find_partition(t.rpartition("=")[2], disks)
    pairs: list[tuple[SavedPartition, str]] = []
    if all("=" in t for t in targets):
        for t in targets:
            name, _, dev = t.partition("=")
            name = name.removeprefix("/dev/")
            if name not in by_name:
                raise TargetRefusedError(
                    f"{manifest.ref} has no saved partition {name} (it holds {names})", hint=hint
                )
            pairs.append((by_name[name], dev))
    elif any("=" in t for t in targets) or len(targets) != len(saved):
        raise TargetRefusedError(
            f"{manifest.ref} holds {len(saved)} saved partition(s) ({names}) and no disk: "
            f"{len(targets)} target(s) given",
            hint=hint,
        )
    else:
        pairs = list(zip(saved, targets, strict=True))
    steps = []
    for s, dev in pairs:
        target = find_partition(dev, disks)
        ensure_partition_restorable(target)
        if target.partition.size < s.needed:
            raise TargetRefusedError(
                f"{target.describe()} is smaller than the filesystem of {s.name} "
                f"({human_size(s.needed)}, {s.needed} bytes); nothing was written",
                hint=f"choose a partition of at least {s.needed} bytes, or enlarge this one",
            )
        if s.image.method == Method.NONE:
            raise TargetRefusedError(
                f"{manifest.ref}: Clonezilla saved no data of {s.name}", hint=hint
            )
        if s.image.method == Method.LUKS:
            raise TargetRefusedError(
                f"{manifest.ref}: {s.name} is a LUKS volume; liferaft restores LUKS from "
                "whole-disk images (ocs-sr savedisk) only",
                hint="restore this partition with ocs-sr restoreparts",
            )
        steps.append(PartitionStep(s, target))
    paths = [st.target.path for st in steps]
    if len(set(paths)) != len(paths):
        raise TargetRefusedError(
            "the same partition is named twice as a target", hint="name each target once"
        )
    groups = _volume_groups(manifest, steps, grow)
    return PartitionRestorePlan(repo, manifest, tuple(steps), grow, groups)


def _volume_groups(
    manifest: Manifest, steps: Sequence[PartitionStep], grow: bool
) -> tuple[VolumeGroupPlan, ...]:
    """The volume groups whose PVs are restored: all of a group's PVs or
    none (a group cannot be recreated on some of its PVs)."""
    step_of = {(s.saved.disk, s.saved.image.number): s for s in steps}
    out = []
    for vg in manifest.volume_groups:
        mine = [step_of.get((pv.disk, pv.partition)) for pv in vg.pvs]
        if not any(mine):
            continue
        if not all(mine):
            given = ", ".join(s.saved.name for s in mine if s is not None)
            raise TargetRefusedError(
                f"{manifest.ref}: volume group {vg.name} lies on more saved partitions than "
                f"the targets given ({given})",
                hint="give a target for each of its physical volumes",
            )
        grown = tuple(
            pv.uuid for pv, s in zip(vg.pvs, mine, strict=True) if grow and s and s.spare > 0
        )
        out.append(VolumeGroupPlan(vg, grown_pvs=grown, grow_lv=None))
    return tuple(out)


def find_partition(spec: str, disks: list[BlockDisk]) -> PartitionTarget:
    path = os.path.realpath(spec)
    for disk in disks:
        for part in disk.partitions:
            if path == os.path.realpath(part.path):
                return PartitionTarget(disk, part)
        if path in (disk.path, os.path.realpath(disk.path)):
            first = disk.partitions[0].path if disk.partitions else f"{disk.path}1"
            raise TargetRefusedError(
                f"{spec} is a whole disk; this image holds partitions only (Clonezilla "
                "saveparts) and is restored onto existing partitions",
                hint=f"name a partition of it, e.g. --to {first}",
            )
    raise TargetRefusedError(
        f"no partition {spec}", hint="run `liferaft disks` to see the disks and their partitions"
    )


def partition_in_use(part: BlockPartition) -> list[str]:
    """Why the partition itself is busy: mounted, active swap, held by a
    device stacked on it (dm, md, LVM)."""
    reasons = [f"{part.path} is mounted on {m}" for m in part.mountpoints if m != "[SWAP]"]
    swaps = {os.path.realpath(s) for s in parse_swaps(read_text("/proc/swaps") or "")}
    if "[SWAP]" in part.mountpoints or os.path.realpath(part.path) in swaps:
        reasons.append(f"swap {part.path} is active")
    name = os.path.basename(os.path.realpath(part.path))
    try:
        holders = sorted(os.listdir(os.path.join(SYS_BLOCK, name, "holders")))
    except OSError:
        holders = []
    if holders:
        reasons.append(f"{part.path} is held by {', '.join(holders)}")
    return reasons


def ensure_partition_restorable(target: PartitionTarget) -> None:
    roles = target.disk.roles & {Role.RUNNING_SYSTEM, Role.BOOT_MEDIUM, Role.READ_ONLY}
    reasons = [r.value for r in sorted(roles, key=lambda r: r.value)]
    reasons += partition_in_use(target.partition)
    if reasons:
        raise TargetRefusedError(
            f"refusing to write to {target.describe()}: {'; '.join(reasons)}",
            hint="choose another partition, or unmount and stop what uses it",
        )


def _recheck(plan: PartitionRestorePlan) -> None:
    """The targets are still what was confirmed: the same disk (model,
    serial, size), the partition at the same place with the same size."""
    disks = list_disks()
    for step in plan.steps:
        was = step.target
        now = find_partition(was.path, disks)
        same_disk = (now.disk.path, now.disk.model, now.disk.serial, now.disk.size) == (
            was.disk.path,
            was.disk.model,
            was.disk.serial,
            was.disk.size,
        )
        p, q = now.partition, was.partition
        if not same_disk or (p.number, p.start, p.size) != (q.number, q.start, q.size):
            raise TargetRefusedError(
                f"{was.path} changed since the plan was made (now {now.describe()}); "
                "nothing was written",
                hint="plan the restore again",
            )
        ensure_partition_restorable(now)


def apply_partition_plan(
    plan: PartitionRestorePlan,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    verify: bool = False,
) -> RestoreResult:
    """Write each saved partition onto its target partition (a LUKS volume
    is refused when planned: no keys are needed), read it back if asked,
    then grow its filesystem if planned; then recreate the volume groups
    whose PVs these were, with their LVs."""
    started = time.monotonic()
    _recheck(plan)
    plan.repo.check_chunks_present(plan.manifest)
    refuse_lvm_twins(
        [g.image for g in plan.volume_groups],
        {os.path.realpath(s.target.path) for s in plan.steps},
    )
    m = plan.manifest
    used = sum(s.saved.image.used_bytes for s in plan.steps)
    used += sum(g.write_bytes for g in plan.volume_groups)
    counter = Counter(used, progress, "restore")
    checker = Counter(used, progress, "verify")
    notes = []
    for step in plan.steps:
        p, node = step.saved.image, step.target.path
        region = Region(plan.repo, m, f"{m.ref} {step.saved.name}", p, node, counter, cancel)
        if p.method == Method.SWAP:
            write_volume(region)
            continue
        # Old signatures out first: until the first MiB (written last) is
        # there, the partition holds no filesystem any tool recognises.
        run(["wipefs", "--all", "--quiet", node])
        if p.method == Method.LVM_PV:
            continue  # (its volume group, below)
        write_volume(region)
        if verify:
            # (before growing: growing rewrites metadata the image holds)
            verify_volume(replace(region, counter=checker))
        fs = p.filesystem.type
        if plan.grows(step):
            progress(Progress("grow", node, 0, 0, message=f"growing {fs}"))
            notes.append(grow_filesystem(node, fs))
        elif step.spare > 0:
            if fs == "ntfs":
                place_ntfs_backup_boot_sector(node)
            notes.append(
                f"{node}: the filesystem of {step.saved.name} was not grown into the "
                f"partition's other {human_size(step.spare)} (--grow grows it)"
            )
    node_of = {(s.saved.disk, s.saved.image.number): s.target.path for s in plan.steps}
    for g in plan.volume_groups:
        devices = {pv.uuid: node_of[(pv.disk, pv.partition)] for pv in g.image.pvs}
        notes += restore_volume_group(plan.repo, m, g, devices, counter, progress, cancel, verify)
    return RestoreResult(
        m.ref,
        targets=tuple(s.target.path for s in plan.steps),
        written_bytes=counter.written,
        verified=verify,
        fetched_bytes=counter.fetched,
        seconds=time.monotonic() - started,
        notes=tuple(n for n in notes if n),
    )


def used_end(extents: Sequence[Extent]) -> int:
    """Where the last used byte ends."""
    return max((s + n for s, n in extents), default=0)
