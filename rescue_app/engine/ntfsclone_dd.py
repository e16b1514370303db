"""Clonezilla's partition images that are not partclone's: ntfsclone and dd.

Owns reading ``<part>.ntfs-img*`` (``ocs-sr -q``: ntfsclone --save-image,
compressed, maybe split) and ``<part>.dd-img*`` (``ocs-sr -q1``: the
partition's bytes as dd read them, compressed, maybe split), handing out
their data the way ``partclone_image.PartcloneReader`` does (``header``,
``strips()``, ``byte_extents()``, ``close()``), so the Clonezilla folder model
needs no second path. Reads files only.

ntfsclone's image format 10.x (ntfs-3g's ntfsclone.c, checked against
``ntfsclone --restore-image`` of real images in tests/test_clonezilla_parts.py):
a packed little-endian header of 50 bytes: the magic ``\\0ntfsclone-image``,
major (10) and minor version bytes, the cluster size (u32), the device size,
its cluster count and the clusters in use (s64 each) and where the data
starts (u32, from the header's start). Then commands until the end: 0x00 and
an s64 count of clusters skipped (unused), or 0x01 and one cluster of data.
The last (partial) cluster, holding NTFS's backup boot sector, comes as data
too. Neither format has checksums of its own: damage shows as a compression
error (gzip's CRC, zstd's) or a stream that ends early or runs long.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from rescue_app.engine.extents import ExtentMap, normalize
from rescue_app.engine.partclone_image import (
    CSM_NONE,
    PIECE_BYTES,
    ClonezillaImageError,
    PartcloneHeader,
    Readable,
    Strip,
    read_exactly,
)

NTFSCLONE_MAGIC = b"\x00ntfsclone-image"
_NTFSCLONE_HEADER = struct.Struct("<16sBBIqqqI")  # 50 bytes
CMD_GAP, CMD_NEXT = 0x00, 0x01
DD_BLOCK = 512  # (a dd image has no blocks of its own: sectors stand for them)


def _unchecked(fs: str, tool: str, device: int, used: int, block: int) -> PartcloneHeader:
    """What a partclone header would say of an image without checksums."""
    return PartcloneHeader(
        fs=fs,
        partclone_version=tool,
        device_size=device,
        total_blocks=device // block,
        used_blocks=used,
        block_size=block,
        checksum_mode=CSM_NONE,
        checksum_size=0,
        blocks_per_checksum=0,
        reseed=False,
    )


class NtfscloneReader:
    """One ntfsclone image (format 10.x), read once from start to end. Its
    used clusters are known only as the data goes by: ``byte_extents()`` is
    complete after ``strips()`` has run to its end."""

    def __init__(self, stream: Readable, where: str, size: int) -> None:
        self.stream = stream
        self.where = where
        raw = self._read(_NTFSCLONE_HEADER.size, "header")
        magic, major, minor, cs, device, clusters, inuse, offset = _NTFSCLONE_HEADER.unpack(raw)
        if magic != NTFSCLONE_MAGIC:
            raise ClonezillaImageError(
                f"{where} is not an ntfsclone image (no ntfsclone-image signature)",
                hint="the image is damaged or not what its name says",
            )
        if major != 10:
            raise ClonezillaImageError(
                f"{where}: ntfsclone image format {major}.{minor} is not supported "
                "(liferaft reads 10.x, written by ntfsclone since 2007)",
                hint="restore it with ntfsclone --restore-image, or save it again",
            )
        if cs <= 0 or cs & (cs - 1) or device <= 0 or offset < _NTFSCLONE_HEADER.size:
            raise ClonezillaImageError(
                f"{where}: the ntfsclone header is damaged (cluster size {cs}, "
                f"device size {device}, data at {offset})",
                hint="the image cannot be used; copy it again from a good copy",
            )
        if device > size:
            raise ClonezillaImageError(
                f"{where}: the NTFS volume ({device} bytes) is larger than its partition "
                f"({size} bytes)",
                hint="the image is damaged or its partition table does not belong to it",
            )
        self._read(offset - _NTFSCLONE_HEADER.size, "header")
        self.clusters = clusters
        self.header = _unchecked("NTFS", f"ntfsclone {major}.{minor}", device, inuse, cs)
        self.runs: list[tuple[int, int]] = []

    def _read(self, n: int, what: str) -> bytes:
        return read_exactly(self.stream, n, self.where, what)

    def byte_extents(self) -> ExtentMap:
        cs, device = self.header.block_size, self.header.device_size
        return ExtentMap(normalize([(s * cs, min(n * cs, device - s * cs)) for s, n in self.runs]))

    def strips(self) -> Iterator[Strip]:
        """The used clusters in order, consecutive ones together (up to
        PIECE_BYTES); the last one cut at the device's end."""
        cs, device = self.header.block_size, self.header.device_size
        per = max(1, PIECE_BYTES // cs)
        cluster = 0
        first, data = -1, bytearray()

        def flush() -> Strip:
            strip = Strip([(first, len(data) // cs + bool(len(data) % cs))], memoryview(data))
            self.runs.append(strip.runs[0])
            return strip

        while True:
            cmd = read_exactly(self.stream, 1, self.where, "data", or_nothing=True)
            if not cmd:
                break
            if cmd[0] == CMD_GAP:
                (count,) = struct.unpack("<q", self._read(8, f"gap after cluster {cluster}"))
                if count < 0:
                    raise self._damaged(f"a negative gap after cluster {cluster}")
                cluster += count
                if data:
                    yield flush()
                    first, data = -1, bytearray()
                continue
            if cmd[0] != CMD_NEXT:
                raise self._damaged(f"an unknown command {cmd[0]:#x} after cluster {cluster}")
            if cluster * cs >= device:
                raise self._damaged(f"data after the volume's end (cluster {cluster})")
            block = self._read(cs, f"cluster {cluster}")
            if first < 0:
                first = cluster
            data += block[: device - cluster * cs]
            cluster += 1
            if len(data) >= per * cs:
                yield flush()
                first, data = -1, bytearray()
        if data:
            yield flush()
        if cluster < self.clusters:
            raise ClonezillaImageError(
                f"{self.where}: the image ends early, at cluster {cluster} of {self.clusters}",
                hint="the file is truncated or a split volume (.ab, .ac, ...) is missing",
            )

    def _damaged(self, what: str) -> ClonezillaImageError:
        return ClonezillaImageError(
            f"{self.where}: the ntfsclone data is damaged ({what})",
            hint="the image cannot be used; copy it again from a good copy",
        )

    def close(self) -> None:
        self.stream.close()


class DdReader:
    """One dd image: every byte of a partition of ``size`` bytes, in order."""

    def __init__(self, stream: Readable, where: str, size: int) -> None:
        self.stream = stream
        self.where = where
        self.size = size
        blocks = -(-size // DD_BLOCK)
        self.header = _unchecked("raw", "dd", size, blocks, DD_BLOCK)
        self.runs = [(0, blocks)] if size else []

    def byte_extents(self) -> ExtentMap:
        return ExtentMap([(0, self.size)] if self.size else [])

    def strips(self) -> Iterator[Strip]:
        done = 0
        while done < self.size:
            n = min(PIECE_BYTES, self.size - done)
            data = read_exactly(self.stream, n, self.where, f"data at byte {done}")
            yield Strip([(done // DD_BLOCK, -(-n // DD_BLOCK))], memoryview(data))
            done += n
        if read_exactly(self.stream, 1, self.where, "data", or_nothing=True):
            raise ClonezillaImageError(
                f"{self.where}: the dd image is longer than its partition ({self.size} bytes)",
                hint="the image does not belong to this partition table, or it is damaged",
            )

    def close(self) -> None:
        self.stream.close()
