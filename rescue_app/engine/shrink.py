"""Restore onto a smaller disk: which partitions shrink, by how much, and how
each is laid back. Pure: computes a layout, touches no disk.

The last partition shrinks first, then the ones the user chose (``--shrink
N``), each no further than what its data needs. A partition that keeps its
size is laid back block-level (partclone's used blocks need the whole old
filesystem); one that shrinks is laid back file-level: a new filesystem with
the same type, UUID, label and features, its files copied from the image
(engine/filetree.py). NTFS shrinks with ntfsresize instead, in a scratch
copy in the temporary folder (engine/ntfsshrink.py). Partitions after a
shrunk one move towards the start by as much, keeping the gaps between them
(an MBR logical partition's EBR).

A vfat (an EFI system partition) is made anew with mkfs.fat, keeping its
volume ID, label and FAT type (a smaller cluster size where needed: an ESP
stays FAT32, which every UEFI firmware reads), and filled with mtools, never
mounted (the host kernel may have no vfat driver).

What cannot shrink, and why:
- anything stored raw (no filesystem liferaft knows), an LVM physical volume,
  an MBR extended partition's container (it follows its logical partitions).
A shrink that cannot fit is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence

from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.extents import clip, total
from rescue_app.engine.manifest import DiskImage, Method, PartitionImage
from rescue_app.engine.table import NewPartition
from rescue_app.engine.units import human_size
from rescue_app.errors import TargetRefusedError, UsageError

MIB = 1 << 20
# Filesystems engine/filetree.py can make anew and fill with a file tree.
FILE_LEVEL = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"})
# Filesystems shrunk by their own resizer in a scratch copy (ntfsshrink.py).
RESIZED = frozenset({"ntfs"})
# The smallest filesystem mkfs makes (mkfs.xfs refuses below 300 MiB).
# A FAT32 needs 65525 clusters: of 512 bytes, 33 MiB with its FATs (of
# 4096-byte sectors eight times that: minimum_size scales it).
_FLOOR = {"xfs": 300 * MIB, "btrfs": 256 * MIB, "vfat": 33 * MIB}
_DEFAULT_FLOOR = 16 * MIB
SWAP_MINIMUM = 16 * MIB
# Room above the data a new filesystem needs: its own metadata (journal,
# inode tables, log, trees) and some free space for the system to start.
_HEADROOM = 64 * MIB
# A FAT has no journal or inode tables: its FATs are in the used blocks.
_FAT_HEADROOM = 4 * MIB


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def minimum_size(p: PartitionImage, sector_size: int = 512) -> int | None:
    """The smallest size ``p`` can be laid back into; None: it cannot shrink.
    ``sector_size``: the disk's logical sectors (a FAT's are the same)."""
    if p.method == Method.SWAP:
        return min(p.size, SWAP_MINIMUM)
    if p.method != Method.USED or p.filesystem.type not in FILE_LEVEL | RESIZED:
        return None
    headroom = _FAT_HEADROOM if p.filesystem.type == "vfat" else _HEADROOM
    need = p.used_bytes + p.used_bytes // 10 + headroom
    floor = _FLOOR.get(p.filesystem.type, _DEFAULT_FLOOR)
    if p.filesystem.type == "vfat":
        floor = floor * max(sector_size, 512) // 512
    need = max(need, floor)
    return min(p.size, _round_up(need, MIB))


def why_fixed(p: PartitionImage) -> str:
    """Why ``p`` keeps its size on a smaller disk (for minimum_size None)."""
    fs = p.filesystem.type
    if p.method == Method.LVM_PV:
        return "an LVM physical volume is laid back as it is"
    if p.method == Method.MD_MEMBER:
        return "an md RAID member is laid back as it is"
    if fs == "ntfs":
        return "an NTFS stored raw cannot be shrunk (ntfsresize needs its used blocks)"
    if p.method == Method.RAW:
        return f"{fs or 'no filesystem'} is stored raw and cannot be copied file by file"
    return f"{fs or 'its content'} cannot be copied file by file"


# What a scratch copy needs beyond the data: ntfsresize's own writes (the
# bitmap, the MFT records it changes) and the filesystem's block rounding.
SCRATCH_MARGIN = 64 * MIB


def scratch_need(p: PartitionImage, new_size: int) -> int:
    """Bytes the sparse scratch copy of NTFS ``p`` takes when shrunk to
    ``new_size``: its used blocks, plus those beyond ``new_size`` a second
    time (ntfsresize copies them below it; the old ones stay in the file)."""
    beyond = total(clip(p.used_map, new_size, p.size))
    return p.used_bytes + beyond + SCRATCH_MARGIN


def name_of(p: PartitionImage) -> str:
    return f"partition {p.number} ({p.filesystem.type or 'no filesystem'})"


def usable_end(image: DiskImage, target: BlockDisk) -> int:
    """The byte after the last one a partition may use on ``target``."""
    ss = image.logical_sector_size
    if image.table.type == "gpt":
        return (target.size // ss - 33) * ss  # backup entries + header
    return target.size // ss * ss


def parse_choice(specs: Sequence[str], disks: int) -> dict[int, list[int]]:
    """``--shrink`` values (``N`` on a one-disk image, or ``diskD/pN``) as
    {disk index: [partition numbers in the order given]}."""
    out: dict[int, list[int]] = {}
    for spec in specs:
        text = spec.strip().strip("/")
        disk, _, part = text.rpartition("/")
        part = part.removeprefix("p")
        if disk:
            index = int(disk.removeprefix("disk")) - 1 if disk.startswith("disk") else -1
            number = int(part) if part.isdigit() else 0
        else:
            index = 0 if disks == 1 else -1
            number = int(part) if part.isdigit() else 0
        if not (0 <= index < disks) or number <= 0:
            hint = "give N" if disks == 1 else "give diskD/pN (the image has several disks)"
            raise UsageError(f"--shrink {spec}: not a partition of the image", hint=hint)
        out.setdefault(index, []).append(number)
    return out


def check_choice(image: DiskImage, chosen: Sequence[int]) -> None:
    """Every ``--shrink`` partition is a data partition of ``image``."""
    numbers = [p.number for p in image.partitions if p.kind != "extended"]
    unknown = [n for n in chosen if n not in numbers]
    if unknown:
        raise UsageError(
            f"--shrink {unknown[0]}: disk {image.index + 1} of the image has no such partition",
            hint="choose from: " + ", ".join(str(n) for n in numbers),
        )


def shrinkable(image: DiskImage) -> list[PartitionImage]:
    """The partitions a user may let shrink besides the last one (which
    shrinks first anyway): those with at least a MiB to give."""
    data = [p for p in image.partitions if p.kind != "extended"]
    if not data:
        return []
    last = max(data, key=lambda p: p.end)
    ss = image.logical_sector_size
    return [p for p in data if p is not last and _room(p, ss) >= MIB]


def shrink_layout(
    image: DiskImage,
    target: BlockDisk,
    parts: Sequence[NewPartition],
    chosen: Sequence[int] = (),
) -> tuple[list[NewPartition], dict[int, int], str]:
    """The image's partitions ``parts`` on the smaller ``target``: the new
    partitions, {number: bytes taken off} for every one that shrinks, and a
    note for the plan. TargetRefusedError, naming what does not fit, when it
    cannot be done."""
    sources = {p.number: p for p in image.partitions}
    check_choice(image, chosen)
    limit = usable_end(image, target)
    data = [p for p in parts if p.kind != "extended"]
    last = max(data, key=lambda p: p.start + p.size)
    deficit = max(p.start + p.size for p in parts) - limit
    taken: dict[int, int] = {}
    order = [last.number] + [n for n in dict.fromkeys(chosen) if n != last.number]
    for number in order:
        if deficit <= 0:
            break
        src = sources[number]
        least = minimum_size(src, image.logical_sector_size)
        if least is None:
            continue
        room = src.size - least
        if number == last.number:
            cut = _round_up(min(deficit, room), image.logical_sector_size)
            cut = min(cut, room)
        else:
            # Whole MiB: what comes after it moves by as much and stays aligned.
            cut = min(_round_up(deficit, MIB), room // MIB * MIB)
        if cut > 0:
            taken[number] = cut
            deficit -= cut
    if deficit > 0:
        raise _refusal(image, target, sources, last, order, taken, deficit, limit)
    new = [_moved(p, parts, taken) for p in parts]
    shrunk = ", ".join(f"{n} by {human_size(c)}" for n, c in sorted(taken.items()))
    note = f"the disk is smaller than the original: partition(s) {shrunk} shrink"
    return new, taken, note


def _moved(p: NewPartition, parts: Sequence[NewPartition], taken: dict[int, int]) -> NewPartition:
    """``p`` moved left by what every data partition before it gave up, and
    made smaller by its own cut (an extended container: by its logicals')."""
    before = sum(
        taken.get(q.number, 0)
        for q in parts
        if q.kind != "extended" and q.start + q.size <= p.start
    )
    if p.kind == "extended":
        inside = sum(
            taken.get(q.number, 0)
            for q in parts
            if q.kind == "logical" and p.start <= q.start < p.start + p.size
        )
        size = p.size - inside
    else:
        size = p.size - taken.get(p.number, 0)
    return NewPartition(
        p.number, p.start - before, size, p.kind, p.type, p.uuid, p.name, p.attrs, p.bootable
    )


def _refusal(
    image: DiskImage,
    target: BlockDisk,
    sources: dict[int, PartitionImage],
    last: NewPartition,
    order: list[int],
    taken: dict[int, int],
    deficit: int,
    limit: int,
) -> TargetRefusedError:
    """One line: which partition does not fit, its data, the room it has;
    the hint: the smallest disk that would do, and who else could shrink."""
    src = sources[last.number]
    smallest = _round_up(target.size + deficit, MIB)
    ss = image.logical_sector_size
    # the one that can give the most first (an ESP gives little)
    others = [
        p.number
        for p in sorted(image.partitions, key=lambda p: _room(p, ss), reverse=True)
        if p.number not in order and p.kind != "extended" and _room(p, ss) >= MIB
    ]
    more = f", or let partition {others[0]} shrink too (--shrink {others[0]})" if others else ""
    hint = f"choose a disk of at least {human_size(smallest)} ({smallest} bytes){more}"
    least = minimum_size(src, ss)
    if least is None:
        return TargetRefusedError(
            f"{target.describe()} is too small: the image's partitions need "
            f"{human_size(image.required_size)}, the disk has {human_size(target.size)}, and "
            f"{name_of(src)} cannot be made smaller ({why_fixed(src)})",
            hint=hint,
        )
    before = sum(taken.get(n, 0) for n in taken if n != last.number)
    room = limit - (last.start - before)
    return TargetRefusedError(
        f"{name_of(src)} does not fit on {target.describe()}: it holds "
        f"{human_size(src.used_bytes)} of data and needs {human_size(least)}, "
        f"only {human_size(max(room, 0))} is left for it",
        hint=hint,
    )


def _room(p: PartitionImage, sector_size: int) -> int:
    least = minimum_size(p, sector_size)
    return 0 if least is None else p.size - least


__all__ = [
    "FILE_LEVEL",
    "RESIZED",
    "check_choice",
    "minimum_size",
    "parse_choice",
    "scratch_need",
    "shrinkable",
    "shrink_layout",
    "usable_end",
    "why_fixed",
]
