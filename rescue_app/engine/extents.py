"""Pure arithmetic on byte extents: the used-block maps of partitions.

An extent is ``(start, length)`` in bytes, relative to the partition start.
A map is a sorted list of non-overlapping, non-adjacent extents.
Nothing here touches a disk.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import zstandard

Extent = tuple[int, int]


class ExtentMap(Sequence[Extent]):
    """An immutable extent list held as packed 64-bit integers.

    A used-block map of a large, fragmented filesystem has millions of
    extents; as Python tuples they would cost ~100 bytes each, here 16.
    Serialised as zstd-compressed little-endian (start, length) pairs.
    """

    __slots__ = ("_a",)

    def __init__(self, extents: Iterable[Extent] = ()) -> None:
        a = array("Q")
        for start, length in extents:
            a.append(start)
            a.append(length)
        self._a = a

    @classmethod
    def _of(cls, a: array[int]) -> ExtentMap:
        m = cls()
        m._a = a
        return m

    def __len__(self) -> int:
        return len(self._a) // 2

    @overload
    def __getitem__(self, i: int) -> Extent: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Extent]: ...
    def __getitem__(self, i: int | slice) -> Extent | Sequence[Extent]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._a[2 * i], self._a[2 * i + 1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExtentMap):
            return self._a == other._a
        if isinstance(other, Sequence):
            return list(self) == [tuple(e) for e in other]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._a.tobytes())

    def __repr__(self) -> str:
        return f"ExtentMap({len(self)} extents, {total(self)} bytes)"

    def encode(self) -> str:
        a = self._a
        if sys.byteorder != "little":
            a = array("Q", a)
            a.byteswap()
        return base64.b64encode(zstandard.ZstdCompressor(level=9).compress(a.tobytes())).decode()

    @classmethod
    def decode(cls, text: str) -> ExtentMap:
        raw = zstandard.ZstdDecompressor().decompress(base64.b64decode(text, validate=True))
        if len(raw) % 16:
            raise ValueError("extent map length is not a whole number of pairs")
        a = array("Q")
        a.frombytes(raw)
        if sys.byteorder != "little":
            a.byteswap()
        return cls._of(a)


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
