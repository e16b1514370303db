"""partclone's image format, read by our own code (Clonezilla's partition images).

Owns: opening ``<part>.<fs>-ptcl-img.<comp>`` files (split volumes ``.aa``,
``.ab``... read as one stream; gzip, zstd, xz/lzma, bzip2, lz4 or none, told
by the bytes, not the name), parsing partclone's format 0002 (header, bitmap,
data blocks with a checksum after every N blocks: CRC32 or XXH64, reseeded or
running) and handing out the used blocks as byte runs, every checksum
checked. A damaged or unsupported piece is one ClonezillaImageError naming
the image, the partition and, for data, the block. Reads files only.

Format facts (partclone's IMAGE_FORMATS.md and src/checksum.c):
- header 0002: 110 bytes, little-endian; its last 4 bytes are a CRC32 of the
  106 before; the bitmap (1 bit per block, LSB first) and a CRC32 of it follow;
- partclone's CRC32 is the reflected 0xEDB88320 polynomial seeded with
  0xFFFFFFFF and *not* inverted at the end: zlib.crc32(data) ^ 0xFFFFFFFF, and
  a running value continues as zlib.crc32(more, previous ^ 0xFFFFFFFF);
- XXH64 is seeded with 0 and stored as a little-endian 64-bit number; XXH128
  (partclone 0.3.4x, mode 0x31) is XXH3's 128-bit hash stored as its low and
  high 64-bit halves, little-endian: the 128-bit value little-endian;
- the data section holds the used blocks in order; after every
  ``blocks_per_checksum`` blocks, and after the last partial strip, comes the
  checksum of that strip (of everything so far when reseeding is off).
Format 0001 (partclone < 0.3.0, before 2017) is refused with a clear line
naming the file and the format read (0002): Debian's partclone 0.3 writes
0002 only, so a reader of 0001 could not be tested against real images.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

import zstandard

from rescue_app.engine.extents import Extent, ExtentMap
from rescue_app.errors import RepositoryError

MAGIC = b"partclone-image"
HEADER_V2 = 110
CSM_NONE, CSM_CRC32, CSM_XXH64, CSM_XXH128 = 0x00, 0x20, 0x30, 0x31
_CHECKSUM_SIZE = {CSM_NONE: 0, CSM_CRC32: 4, CSM_XXH64: 8, CSM_XXH128: 16}
BM_BIT = 1
# blocks read at once when the image has no checksums
_BATCH_BLOCKS = 1024
# the most of a strip held in memory at once
PIECE_BYTES = 16 * 1024 * 1024


class ClonezillaImageError(RepositoryError):
    """A Clonezilla image (or one of its partclone files) is damaged,
    incomplete or of a kind liferaft cannot read."""


# -- volumes and compression -------------------------------------------------

_VOLUME_RE = re.compile(r"^(?P<base>.+-ptcl-img\.[a-z0-9]+)(?:\.(?P<vol>[a-z]{2,}))?$")


def volume_names(names: list[str], base: str) -> list[str]:
    """The files of one partclone image ``base`` among ``names``, in order: the
    file itself, or its split volumes ``base.aa``, ``base.ab``, ...;
    ClonezillaImageError when a volume in the middle is missing."""
    if base in names:
        return [base]
    vols = sorted(n[len(base) + 1 :] for n in names if n.startswith(base + "."))
    vols = [v for v in vols if v.isalpha() and v.islower()]
    if not vols:
        raise FileNotFoundError(base)
    expected = [_volume_suffix(i, len(vols[0])) for i in range(len(vols))]
    for want, got in zip(expected, vols, strict=True):
        if want != got:
            raise ClonezillaImageError(
                f"{base}: split volume {base}.{want} is missing (found {', '.join(vols)})",
                hint="copy the whole image folder again; every .aa, .ab, ... volume is needed",
            )
    return [f"{base}.{v}" for v in vols]


def _volume_suffix(index: int, width: int) -> str:
    letters = []
    for _ in range(width):
        index, r = divmod(index, 26)
        letters.append(chr(ord("a") + r))
    return "".join(reversed(letters))


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


# A file's name -> the file as a stream read from its start (a local path, or a
# file of a store: engine/stores, Store.open_read).
Opener = Callable[[str], Readable]


def _open_local(path: str) -> Readable:
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


class VolumeReader(io.RawIOBase):
    """Several files read as one stream (split volumes)."""

    def __init__(self, paths: list[str], opener: Opener | None = None) -> None:
        super().__init__()
        self.paths = paths
        self.opener = opener or _open_local
        self._index = 0
        self._file: Readable | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1, /) -> bytes:
        while self._index < len(self.paths):
            if self._file is None:
                self._file = self.opener(self.paths[self._index])
            data = self._file.read(n if n >= 0 else 1 << 30)
            if data:
                return data
            self._file.close()
            self._file = None
            self._index += 1
        return b""

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index = len(self.paths)
        super().close()


COMPRESSIONS = ("gzip", "zstd", "xz", "lzma", "bzip2", "lz4", "none")


def sniff_compression(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(MAGIC) or head.startswith(b"\x00ntfsclone-image"):
        return "none"
    if head[:1] == b"\x5d" and head[1:3] == b"\x00\x00":
        return "lzma"
    return None


def open_decompressed(
    paths: list[str], where: str, opener: Opener | None = None, *, plain_ok: bool = False
) -> tuple[Readable, str]:
    """The decompressed stream of a partclone image's volumes, and the
    compression found (by the first bytes; Clonezilla's suffix can lie).
    ``plain_ok``: bytes of no known kind are the data itself (a dd image)."""
    first = (opener or _open_local)(paths[0])
    try:
        head = first.read(16)
    finally:
        first.close()
    kind = sniff_compression(head) or ("none" if plain_ok else None)
    if kind is None:
        raise ClonezillaImageError(
            f"{where}: unsupported compression (the file starts with {head[:6].hex()}); "
            f"liferaft reads {', '.join(COMPRESSIONS)}",
            hint="convert the image with Clonezilla's ocs-cvtimg-comp to gzip or zstd",
        )
    raw = VolumeReader(paths, opener)
    stream: Readable
    if kind == "gzip":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif kind == "zstd":
        stream = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], raw), read_across_frames=True
        )
    elif kind in ("xz", "lzma"):
        stream = lzma.LZMAFile(cast(IO[bytes], raw))  # noqa: SIM115 (the caller closes it)
    elif kind == "bzip2":
        stream = bz2.BZ2File(raw)  # noqa: SIM115
    elif kind == "lz4":
        import lz4.frame

        stream = lz4.frame.LZ4FrameFile(raw)
    else:
        stream = raw
    return stream, kind


# -- the partclone format ----------------------------------------------------


@dataclass(frozen=True)
class PartcloneHeader:
    fs: str  # partclone's name of the filesystem: EXTFS, XFS, FAT, NTFS, raw...
    partclone_version: str
    device_size: int  # bytes
    total_blocks: int
    used_blocks: int  # per the bitmap
    block_size: int
    checksum_mode: int
    checksum_size: int
    blocks_per_checksum: int
    reseed: bool

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.block_size

    @property
    def checksum_name(self) -> str:
        return {CSM_NONE: "none", CSM_CRC32: "CRC32", CSM_XXH64: "XXH64", CSM_XXH128: "XXH128"}.get(
            self.checksum_mode, f"mode {self.checksum_mode:#x}"
        )


def pc_crc32(data: bytes | memoryview, running: int = 0) -> int:
    """partclone's CRC32 of ``data``; ``running`` is zlib's value so far (0 at
    the seed). Returns zlib's value: partclone's is ``value ^ 0xFFFFFFFF``."""
    return zlib.crc32(data, running)


def parse_header(raw: bytes, where: str) -> PartcloneHeader:
    if not raw.startswith(MAGIC):
        raise ClonezillaImageError(
            f"{where} is not a partclone image (no partclone-image signature)",
            hint="the file is damaged or of another tool",
        )
    version = raw[30:34]
    if version == b"0001":
        raise ClonezillaImageError(
            f"{where} is in partclone's old image format 0001 (partclone before 0.3.0, "
            "Clonezilla before 2017); liferaft reads format 0002 only",
            hint="convert it with a newer Clonezilla (restore, then save again)",
        )
    if version != b"0002" or len(raw) < HEADER_V2:
        raise ClonezillaImageError(
            f"{where}: partclone image format {version!r} is not known to liferaft",
            hint="use a newer liferaft",
        )
    (endian,) = struct.unpack_from("<H", raw, 34)
    if endian != 0xC0DE:
        raise ClonezillaImageError(f"{where}: a big-endian partclone image is not supported")
    (stored,) = struct.unpack_from("<I", raw, 106)
    if stored != pc_crc32(raw[:106]) ^ 0xFFFFFFFF:
        raise ClonezillaImageError(
            f"{where}: the partclone header is damaged (its CRC32 does not match)",
            hint="the image cannot be used; copy it again from a good copy",
        )
    fs = raw[36:52].split(b"\0", 1)[0].decode("ascii", "replace")
    device_size, total, _used_sb, used_bm, block_size = struct.unpack_from("<QQQQI", raw, 52)
    _feature, _ver, _bits, mode, cs_size, per_cs, reseed, bitmap_mode = struct.unpack_from(
        "<IHHHHIBB", raw, 88
    )
    if bitmap_mode != BM_BIT:
        raise ClonezillaImageError(f"{where}: partclone bitmap mode {bitmap_mode} is not supported")
    expected_size = _CHECKSUM_SIZE.get(mode)
    if expected_size is None or expected_size != cs_size:
        raise ClonezillaImageError(
            f"{where}: partclone checksum mode {mode:#x} (size {cs_size}) is not supported",
            hint="liferaft reads CRC32, XXH64, XXH128 and no checksum",
        )
    if not block_size or block_size > 1 << 24 or used_bm > total:
        raise ClonezillaImageError(f"{where}: the partclone header is inconsistent")
    return PartcloneHeader(
        fs=fs,
        partclone_version=raw[16:30].split(b"\0", 1)[0].decode("ascii", "replace"),
        device_size=device_size,
        total_blocks=total,
        used_blocks=used_bm,
        block_size=block_size,
        checksum_mode=mode,
        checksum_size=cs_size,
        blocks_per_checksum=per_cs if mode != CSM_NONE else 0,
        reseed=bool(reseed),
    )


def bitmap_runs(bitmap: bytes, total: int) -> list[Extent]:
    """Runs of set bits as (first block, count); partclone's bit order is LSB
    first. Whole 0xFF bytes are found by a regular expression (in C), so a
    large, mostly contiguous bitmap costs little Python."""
    runs: list[Extent] = []
    cur_start = cur_end = -1

    def add(s: int, e: int) -> None:
        nonlocal cur_start, cur_end
        if s == cur_end:
            cur_end = e
            return
        if cur_start >= 0:
            runs.append((cur_start, cur_end - cur_start))
        cur_start, cur_end = s, e

    for m in re.finditer(rb"\xff+|[^\x00\xff]", bitmap):
        i = m.start()
        byte = bitmap[i]
        if byte == 0xFF:
            add(i * 8, m.end() * 8)
            continue
        for bit in range(8):
            if byte >> bit & 1:
                add(i * 8 + bit, i * 8 + bit + 1)
    if cur_start >= 0:
        runs.append((cur_start, cur_end - cur_start))
    # bits past the last block (the last byte's padding) are not blocks
    return [(s, min(n, total - s)) for s, n in runs if s < total]


class _RunCursor:
    """Walks the used-block runs: which filesystem blocks the next n are."""

    def __init__(self, runs: list[Extent]) -> None:
        self.runs = runs
        self.index = 0
        self.offset = 0

    def take(self, n: int) -> list[Extent]:
        out: list[Extent] = []
        while n:
            start, count = self.runs[self.index]
            step = min(count - self.offset, n)
            out.append((start + self.offset, step))
            n -= step
            self.offset += step
            if self.offset == count:
                self.index, self.offset = self.index + 1, 0
        return out


@dataclass
class Strip:
    """Used blocks as they come: ``data`` holds the blocks listed in ``runs``
    ((first block, count) in the filesystem), in order."""

    runs: list[Extent]
    data: memoryview


class BlockImage(Protocol):
    """What a reader of one partition image hands out (partclone's here,
    ntfsclone's and dd's in engine/ntfsclone_dd.py): the used blocks in order."""

    header: PartcloneHeader
    where: str

    def byte_extents(self) -> ExtentMap: ...
    def strips(self) -> Iterator[Strip]: ...
    def close(self) -> None: ...


class PartcloneReader:
    """One partclone image, read once from start to end.

    ``header`` and ``runs`` (the used blocks) are there after opening;
    ``strips()`` then yields the data, each strip's checksum checked."""

    def __init__(self, stream: Readable, where: str) -> None:
        self.stream = stream
        self.where = where
        self.header = parse_header(self._read(HEADER_V2, "header"), where)
        h = self.header
        nbytes = (h.total_blocks + 7) // 8
        bitmap = self._read(nbytes + 4, "bitmap")
        (stored,) = struct.unpack_from("<I", bitmap, nbytes)
        if stored != pc_crc32(bitmap[:nbytes]) ^ 0xFFFFFFFF:
            raise ClonezillaImageError(
                f"{where}: the partclone bitmap is damaged (its CRC32 does not match)",
                hint="the image cannot be used; copy it again from a good copy",
            )
        self.runs = bitmap_runs(bitmap[:nbytes], h.total_blocks)
        used = sum(n for _, n in self.runs)
        if used != h.used_blocks:
            raise ClonezillaImageError(
                f"{where}: the partclone bitmap holds {used} blocks, the header says "
                f"{h.used_blocks}",
                hint="the image is damaged",
            )

    def _read(self, n: int, what: str) -> bytes:
        return read_exactly(self.stream, n, self.where, what)

    def byte_extents(self) -> ExtentMap:
        bs = self.header.block_size
        return ExtentMap((s * bs, n * bs) for s, n in self.runs)

    def strips(self) -> Iterator[Strip]:
        """The used blocks in order, every strip's checksum checked.

        A strip of at most PIECE_BYTES is handed out after its checksum
        matched. A larger one (a big -k) is handed out in pieces of that size
        before its checksum, which follows it, is read: a mismatch then raises
        after them. Callers read an image through before trusting any of it,
        so memory stays bounded whatever the image's strip size."""
        h = self.header
        bs = h.block_size
        per = h.blocks_per_checksum or _BATCH_BLOCKS
        piece_blocks = max(1, PIECE_BYTES // bs)
        xxh: Any = None
        if h.checksum_mode in (CSM_XXH64, CSM_XXH128):
            import xxhash

            xxh = xxhash.xxh64(seed=0) if h.checksum_mode == CSM_XXH64 else xxhash.xxh3_128()
        running = 0  # zlib's CRC32 value; partclone's is this ^ 0xFFFFFFFF
        cursor = _RunCursor(self.runs)
        done = 0
        while done < h.used_blocks:
            k = min(per, h.used_blocks - done)
            if h.reseed:
                running = 0
                if xxh is not None:
                    xxh.reset()
            held: list[Strip] = []
            first = last = -1
            got = 0
            while got < k:
                m = min(piece_blocks, k - got)
                data = memoryview(self._read(m * bs, f"data at block {done + got}"))
                if h.checksum_mode == CSM_CRC32:
                    running = pc_crc32(data, running)
                elif xxh is not None:
                    xxh.update(data)
                piece = Strip(cursor.take(m), data)
                first = piece.runs[0][0] if first < 0 else first
                last = piece.runs[-1][0] + piece.runs[-1][1] - 1
                if k <= piece_blocks:
                    held.append(piece)
                else:
                    yield piece
                got += m
            if h.checksum_size:
                stored = self._read(h.checksum_size, f"checksum after block {done + k - 1}")
                value = running ^ 0xFFFFFFFF if xxh is None else xxh.intdigest()
                # XXH128 is stored as its (low, high) 64-bit halves: little-endian
                if stored != value.to_bytes(h.checksum_size, "little"):
                    raise ClonezillaImageError(
                        f"{self.where}: {h.checksum_name} checksum mismatch in blocks "
                        f"{first}-{last} (block size {bs}, used blocks "
                        f"{done}-{done + k - 1} of the image)",
                        hint="the image is damaged; nothing of this partition can be trusted; "
                        "use another copy of the image",
                    )
            done += k
            yield from held

    def close(self) -> None:
        self.stream.close()


def read_exactly(
    stream: Readable, n: int, where: str, what: str, *, or_nothing: bool = False
) -> bytes:
    """``n`` bytes of ``stream``; a short read or a decompression error is one
    ClonezillaImageError naming ``where`` and ``what``. ``or_nothing``: the
    stream may also be at its end (b"")."""
    try:
        data = stream.read(n)
        while len(data) < n:
            more = stream.read(n - len(data))
            if not more:
                break
            data += more
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ClonezillaImageError(
            f"{where}: cannot read the {what}: {_reason(exc)}",
            hint="the image is damaged or incomplete (a truncated file or a missing volume)",
        ) from None
    except RuntimeError as exc:  # lz4 reports damage as RuntimeError
        raise ClonezillaImageError(
            f"{where}: cannot read the {what}: {exc}",
            hint="the image is damaged or incomplete",
        ) from None
    if len(data) < n and not (or_nothing and not data):
        raise ClonezillaImageError(
            f"{where}: the image ends early, in the {what}",
            hint="the file is truncated or a split volume (.ab, .ac, ...) is missing",
        )
    return data


def _reason(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0]


def open_image(
    names: list[str], base: str, where: str, opener: Opener
) -> tuple[PartcloneReader, str]:
    """Open image ``base`` (e.g. ``sda1.ext4-ptcl-img.gz``) of a folder holding
    ``names``, its files opened by ``opener``; returns the reader and the
    compression found."""
    stream, kind = open_decompressed(volume_names(sorted(names), base), where, opener)
    try:
        return PartcloneReader(stream, where), kind
    except BaseException:
        stream.close()
        raise
