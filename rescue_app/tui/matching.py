"""Which disks may receive an image disk, and which one to suggest. Pure.

Disks the engine marks in use (the running system's, the boot medium, any
with a mounted or active partition) are never candidates: the UI does not
even list them, so they cannot be picked by a slip of the finger.
"""

from __future__ import annotations

from collections.abc import Sequence

from rescue_app.engine import BlockDisk, BlockPartition, DiskImage


def candidate_targets(disks: Sequence[BlockDisk]) -> list[BlockDisk]:
    return [d for d in disks if not d.in_use and not d.read_only]


def candidate_partitions(
    disks: Sequence[BlockDisk],
) -> list[tuple[BlockDisk, BlockPartition]]:
    """Partitions that may receive a saved partition (a Clonezilla saveparts
    image): none of the running system's disk, the boot medium or a
    read-only disk, none mounted or active swap. Other partitions of their
    disk may be in use: only the chosen one is written (the engine checks
    it again, holders included)."""
    return [
        (d, p)
        for d in disks
        if not d.ours and not d.read_only
        for p in d.partitions
        if not p.mountpoints
    ]


def suggest_targets(
    images: Sequence[DiskImage], disks: Sequence[BlockDisk]
) -> list[BlockDisk | None]:
    """One suggestion per image disk: same serial first, then the closest size that fits."""
    free = candidate_targets(disks)
    chosen: list[BlockDisk | None] = [None] * len(images)
    taken: set[str] = set()
    for i, image in enumerate(images):
        if not image.serial:
            continue
        for disk in free:
            if disk.path not in taken and disk.serial and disk.serial == image.serial:
                chosen[i] = disk
                taken.add(disk.path)
                break
    for i, image in enumerate(images):
        if chosen[i] is not None:
            continue
        need = image.required_size
        fitting = [
            d
            for d in free
            if d.path not in taken
            and d.size >= need
            and d.logical_sector_size == image.logical_sector_size
        ]
        if fitting:
            best = min(fitting, key=lambda d: (abs(d.size - image.size), d.path))
            chosen[i] = best
            taken.add(best.path)
    return chosen
