"""Pure arithmetic on byte extents: the used-block maps of partitions.

An extent is ``(start, length)`` in bytes, relative to the partition start.
A map is a sorted list of non-overlapping, non-adjacent extents.
Nothing here touches a disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

Extent = tuple[int, int]


def normalize(extents: Iterable[Extent]) -> list[Extent]:
    """Sort, drop empty extents and merge overlapping or touching ones."""
    out: list[Extent] = []
    for start, length in sorted(e for e in extents if e[1] > 0):
        if out and start <= out[-1][0] + out[-1][1]:
            prev_start, prev_len = out[-1]
            out[-1] = (prev_start, max(prev_start + prev_len, start + length) - prev_start)
        else:
            out.append((start, length))
    return out


def total(extents: Iterable[Extent]) -> int:
    return sum(length for _, length in extents)


def clip(extents: Sequence[Extent], start: int, end: int) -> list[Extent]:
    """The parts of ``extents`` inside ``[start, end)``, in absolute offsets."""
    out: list[Extent] = []
    for index in range(_first_index_ending_after(extents, start), len(extents)):
        s, length = extents[index]
        if s >= end:
            break
        a, b = max(s, start), min(s + length, end)
        if b > a:
            out.append((a, b - a))
    return out


def _first_index_ending_after(extents: Sequence[Extent], offset: int) -> int:
    lo, hi = 0, len(extents)
    while lo < hi:
        mid = (lo + hi) // 2
        if extents[mid][0] + extents[mid][1] <= offset:
            lo = mid + 1
        else:
            hi = mid
    return lo


def chunk_ranges(size: int, chunk_size: int) -> Iterator[Extent]:
    """The fixed chunk grid over a region of ``size`` bytes."""
    for start in range(0, size, chunk_size):
        yield start, min(chunk_size, size - start)


def chunks_touched(extents: list[Extent], size: int, chunk_size: int) -> list[int]:
    """Indexes of the chunks that hold at least one byte of ``extents``."""
    seen: list[int] = []
    for start, length in extents:
        first = start // chunk_size
        last = min(start + length - 1, size - 1) // chunk_size
        for index in range(first, last + 1):
            if not seen or seen[-1] != index:
                seen.append(index)
    return seen
