"""A file-level partition's archive (``Method.FILES``) as a tree of files.

Owns reading the archive's member headers into an index (names, metadata,
where each file's bytes are in which chunks) so that a browse mount
(engine/imagefs.py) can show the partition's files and read one file's
bytes without reading the rest of the archive. Never writes.

The index is built by reading the headers in order. A file's data that
starts a chunk of its own is a large file of engine/filelevel.py's layout
(its header ends a chunk, its data follows in chunks of ``CHUNK_SIZE``, the
last one padded to 512 bytes): those chunks are counted, not fetched. The
next header checks that guess (a tar header carries a checksum) and the
archive must end in its last chunk; if either fails (an archive whose file
shrank while it was read has shorter data chunks), the index is built again
reading every chunk. A data chunk whose length differs from the index's is
an error for that read, never wrong bytes.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rescue_app.engine.repository import CHUNK_SIZE
from rescue_app.errors import ChunkError, DiskError

BLOCK = tarfile.BLOCKSIZE
XATTR = "SCHILY.xattr."

# (chunk index) -> the chunk's bytes (fetched, hash-checked)
GetChunk = Callable[[int], bytes]


@dataclass(frozen=True)
class Extent:
    chunk: int  # index in the partition's chunk list
    start: int  # first byte of the file's data in that chunk
    length: int


@dataclass(eq=False)
class Entry:
    """One inode of the archive (hard links share one Entry)."""

    mode: int  # type and permission bits, as st_mode
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    target: str = ""  # a symlink's target
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    extents: tuple[Extent, ...] = ()
    nlink: int = 1
    ino: int = 0


@dataclass
class ArchiveTree:
    """The files of one archive: ``entries`` by path ("" is the top,
    "etc/fstab"), ``children`` by folder path."""

    entries: dict[str, Entry] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    fetched: int = 0  # chunks read to build the index

    def lookup(self, rel: str) -> Entry | None:
        return self.entries.get(rel.strip("/"))

    def read(self, entry: Entry, offset: int, size: int, get: GetChunk, where: str) -> bytes:
        """Bytes ``[offset, offset+size)`` of a regular file (cut at its end)."""
        end = min(offset + size, entry.size)
        out = bytearray()
        pos = 0
        for e in entry.extents:
            if pos >= end:
                break
            lo, hi = max(offset, pos), min(end, pos + e.length)
            if lo < hi:
                data = get(e.chunk)
                if len(data) < e.start + e.length:
                    raise ChunkError(
                        f"{where}: chunk {e.chunk} holds {len(data)} bytes, "
                        f"the archive's index expects {e.start + e.length}"
                    )
                out += data[e.start + lo - pos : e.start + hi - pos]
            pos += e.length
        return bytes(out)


class _Misread(Exception):
    """The guess of a large file's chunks was wrong: read every chunk."""


class _Reader:
    """The archive's bytes in order, chunk by chunk (the ``fileobj`` that
    ``tarfile.TarInfo.fromtarfile`` reads headers from)."""

    def __init__(self, count: int, get: GetChunk, exact: bool) -> None:
        self.count = count
        self.get = get
        self.exact = exact
        self.index = -1  # the current chunk
        self.data = b""
        self.off = 0  # in the current chunk
        self.pos = 0  # in the archive
        self.fetched = 0
        self.guessed = False  # the current chunk's start was counted, not read

    def _next(self) -> bool:
        if self.index + 1 >= self.count:
            return False
        self.index += 1
        self.data, self.off = self.get(self.index), 0
        self.fetched += 1
        return True

    def tell(self) -> int:
        return self.pos

    def read(self, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            if self.off >= len(self.data) and not self._next():
                break
            take = min(n, len(self.data) - self.off)
            out += self.data[self.off : self.off + take]
            self.off += take
            self.pos += take
            n -= take
        return bytes(out)

    def skip(self, size: int) -> tuple[Extent, ...]:
        """Pass a member's data (``size`` bytes and its padding): where it is."""
        padded = size + (-size % BLOCK)
        if size and self.off >= len(self.data) and not self.exact:
            # A large file (see the module's docstring): its chunks counted.
            count = -(-size // CHUNK_SIZE)
            if self.index + count >= self.count:
                raise _Misread
            first = self.index + 1
            extents = tuple(
                Extent(first + j, 0, min(CHUNK_SIZE, size - j * CHUNK_SIZE)) for j in range(count)
            )
            self.index += count
            self.data, self.off = b"", 0  # the next read starts the next chunk
            self.pos += padded
            self.guessed = True
            return extents
        found: list[Extent] = []
        left, data_left = padded, size
        while left > 0:
            if self.off >= len(self.data) and not self._next():
                raise DiskError("the archive ends inside a file's data")
            take = min(left, len(self.data) - self.off)
            used = min(take, data_left)
            if used:
                if found and found[-1].chunk == self.index:
                    last = found[-1]
                    found[-1] = Extent(last.chunk, last.start, last.length + used)
                else:
                    found.append(Extent(self.index, self.off, used))
            self.off += take
            self.pos += take
            left -= take
            data_left -= used
        return tuple(found)


class _Headers:
    """What ``TarInfo.fromtarfile`` needs of a TarFile."""

    def __init__(self, reader: _Reader) -> None:
        self.fileobj = reader
        self.encoding = "utf-8"
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}
        self.offset = 0


def _path(name: str) -> str:
    """ "./etc/fstab" -> "etc/fstab"; "." -> ""."""
    rel = posixpath.normpath("/" + name).lstrip("/")
    return "" if rel == "." else rel


def _mtime_ns(info: tarfile.TarInfo) -> int:
    text = info.pax_headers.get("mtime")
    if text:
        sec, _, frac = text.partition(".")
        sign = -1 if sec.startswith("-") else 1
        return int(sec) * 1_000_000_000 + sign * int((frac + "000000000")[:9] or 0)
    return int(info.mtime) * 1_000_000_000


_TYPES = {
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}


def _entry(info: tarfile.TarInfo, extents: tuple[Extent, ...]) -> Entry:
    kind = _TYPES.get(info.type, stat.S_IFREG)
    xattrs = {
        key[len(XATTR) :]: value.encode("utf-8", "surrogateescape")
        for key, value in info.pax_headers.items()
        if key.startswith(XATTR)
    }
    return Entry(
        mode=kind | (info.mode & 0o7777),
        uid=info.uid,
        gid=info.gid,
        mtime_ns=_mtime_ns(info),
        size=info.size if kind == stat.S_IFREG else 0,
        target=info.linkname if kind == stat.S_IFLNK else "",
        rdev=os.makedev(info.devmajor, info.devminor)
        if kind in (stat.S_IFCHR, stat.S_IFBLK)
        else 0,
        xattrs=xattrs,
        extents=extents,
    )


def _scan(count: int, get: GetChunk, exact: bool) -> ArchiveTree:
    reader = _Reader(count, get, exact)
    headers = _Headers(reader)
    tree = ArchiveTree()
    while True:
        guessed, reader.guessed = reader.guessed, False
        try:
            info = tarfile.TarInfo.fromtarfile(headers)  # type: ignore[arg-type]
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # (not in typeshed)
            if reader.index != count - 1 and not exact:
                raise _Misread from None  # ours ends in its last chunk, or we miscounted
            break
        except tarfile.HeaderError as exc:
            if guessed:
                raise _Misread from None
            raise DiskError(f"the archive is damaged at byte {reader.pos}: {exc}") from None
        extents = reader.skip(info.size) if info.isreg() else ()
        path = _path(info.name)
        if info.islnk():
            first = tree.entries.get(_path(info.linkname))
            if first is None:
                raise DiskError(f"the archive links {path} to {info.linkname}, which it lacks")
            first.nlink += 1
            tree.entries[path] = first
        else:
            tree.entries[path] = _entry(info, extents)
        if path:
            parent = posixpath.dirname(path)
            tree.children.setdefault(parent, []).append(posixpath.basename(path))
        if info.isdir():
            tree.children.setdefault(path, [])
    if "" not in tree.entries:
        raise DiskError("the archive holds no top folder")
    for n, entry in enumerate(dict.fromkeys(tree.entries.values()), start=1):
        entry.ino = n
    tree.fetched = reader.fetched
    return tree


def index_archive(chunks: Sequence[str | None], get: GetChunk) -> ArchiveTree:
    """The files of a file-level partition whose archive is ``chunks``,
    reading the chunks that hold headers (every chunk if the layout is not
    filelevel.py's)."""
    count = len(chunks)
    try:
        return _scan(count, get, exact=False)
    except _Misread:
        return _scan(count, get, exact=True)


__all__ = ["ArchiveTree", "Entry", "Extent", "index_archive"]
