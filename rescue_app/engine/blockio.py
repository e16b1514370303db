"""Reading and writing block devices: the only place that does either.

Sources are opened O_RDONLY and nothing here can write to them. An I/O
error, a short read or a device that disappears becomes DeviceVanishedError
naming the device and offset.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from rescue_app.engine.extents import Extent
from rescue_app.errors import DeviceVanishedError, DiskError

BLKZEROOUT = 0x127F  # _IO(0x12, 127)
BLKFLSBUF = 0x1261  # _IO(0x12, 97)
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268

_GONE = (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.ENOMEDIUM)


def _vanished(path: str, offset: int, exc: OSError | None = None) -> DeviceVanishedError:
    why = exc.strerror if exc is not None else "end of device"
    return DeviceVanishedError(
        f"{path} failed or vanished at byte {offset} ({why})",
        hint="check the cable and the disk, then run the operation again",
    )


def _open_fd(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DiskError(
                f"{path} is in use by the system (mounted, swap, RAID or LVM)",
                hint="unmount it or stop what uses it, then try again",
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise DiskError(f"cannot open {path}: permission denied", hint="run as root") from None
        if exc.errno in _GONE:
            raise _vanished(path, 0, exc) from None
        raise DiskError(f"cannot open {path}: {exc.strerror}") from None


@contextmanager
def open_device(path: str, *, write: bool = False) -> Iterator[int]:
    # O_EXCL on writes: the kernel refuses if the disk is mounted or in use.
    fd = _open_fd(path, os.O_RDWR | os.O_EXCL if write else os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


class _Device:
    """A device opened twice: buffered, and O_DIRECT where the kernel allows."""

    def __init__(self, path: str, flags: int, exclusive: bool) -> None:
        self.path = path
        self._fds: list[int] = []
        self._local = threading.local()
        self.buffered = self._open(flags | (os.O_EXCL if exclusive else 0))
        try:
            self.direct: int | None = self._open(flags | os.O_DIRECT)
        except DiskError:
            self.direct = None
        buf = fcntl.ioctl(self.buffered, BLKSSZGET, b"\0" * 4)
        self.sector = max(512, int(struct.unpack("i", buf)[0]))

    def _open(self, flags: int) -> int:
        fd = _open_fd(self.path, flags)
        self._fds.append(fd)
        return fd

    def _aligned_buffer(self, size: int) -> mmap.mmap:
        """This thread's page-aligned buffer (O_DIRECT needs aligned memory)."""
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = mmap.mmap(-1, max(size, 1 << 20))
            self._local.buf = buf
        return buf

    def _fd_for(self, offset: int, length: int) -> int:
        if self.direct is not None and offset % self.sector == 0 and length % self.sector == 0:
            return self.direct
        return self.buffered

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def device_size(fd: int) -> int:
    buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    return int(struct.unpack("Q", buf)[0])


def read_exact(fd: int, path: str, offset: int, length: int) -> bytes:
    try:
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise _vanished(path, offset, exc) from None
    if len(data) != length:
        raise _vanished(path, offset + len(data))
    return data


def write_all(fd: int, path: str, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as exc:
            raise _vanished(path, offset, exc) from None
        if n <= 0:
            raise _vanished(path, offset)
        view = view[n:]
        offset += n


def zero_range(fd: int, path: str, offset: int, length: int) -> None:
    """Make ``[offset, offset+length)`` read as zeros, cheaply where the device can."""
    if length <= 0:
        return
    try:
        fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
        return
    except OSError as exc:
        if exc.errno in _GONE:
            raise _vanished(path, offset, exc) from None
    zeros = bytes(min(length, 1 << 20))
    end = offset + length
    while offset < end:
        n = min(len(zeros), end - offset)
        write_all(fd, path, zeros[:n], offset)
        offset += n


def flush(fd: int, path: str) -> None:
    """Everything written is on the disk when this returns."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _vanished(path, 0, exc) from None


def drop_cache(fd: int) -> None:
    """Forget cached pages so a read-back really reads the disk."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        fcntl.ioctl(fd, BLKFLSBUF, 0)
    except OSError:
        pass


class TargetWriter(_Device):
    """Writes a restore's data to a device, bypassing the page cache.

    O_DIRECT skips a copy into the page cache (and, on loop devices, a second
    one in the backing file's cache): several times faster, and the rescue
    system's memory is not filled with data it will never read. Writes whose
    offset or length is not a multiple of the logical sector size go through a
    buffered descriptor. Both are flushed by ``flush``.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, os.O_WRONLY, exclusive=True)

    def write_extents(self, data: bytes, base: int, extents: list[Extent]) -> None:
        """Write the parts of ``data`` (which covers ``[base, ...)``) named by ``extents``."""
        if self.direct is None:
            view = memoryview(data)
        else:
            buf = self._aligned_buffer(len(data))
            buf[: len(data)] = data
            view = memoryview(buf)
        for start, length in extents:
            rel = start - base
            write_all(self._fd_for(start, length), self.path, view[rel : rel + length], start)
        view.release()

    def zero(self, offset: int, length: int) -> None:
        zero_range(self.buffered, self.path, offset, length)

    def flush(self) -> None:
        for fd in self._fds:
            flush(fd, self.path)
        drop_cache(self.buffered)


class SourceReader(_Device):
    """Reads a source disk for capture, from several threads at once.

    Each thread fills its own page-aligned buffer, so reads go O_DIRECT where
    the offsets allow (the rescue system's page cache is not filled with a
    disk it reads once) and several reads are in flight. Unaligned extents
    are read through a buffered descriptor. Both descriptors are read-only.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, os.O_RDONLY, exclusive=False)

    def size(self) -> int:
        return device_size(self.buffered)

    def read(self, base: int, length: int, extents: list[Extent]) -> memoryview:
        """``[base, base+length)`` with only ``extents`` read and zeros elsewhere.

        Extents less than MERGE_GAP apart are read in one request. The view
        is this thread's buffer: valid until its next ``read``.
        """
        return self._read_runs(base, length, extents, _merged(extents, MERGE_GAP))

    def read_span(self, base: int, length: int, extents: list[Extent]) -> memoryview:
        """What ``read`` returns, read in one request for the whole span and
        zeroed outside ``extents`` afterwards: one large O_DIRECT read instead
        of one per extent, much faster where a filesystem's many small files
        make many small extents (a seed restore compares whole chunks)."""
        return self._read_runs(base, length, extents, [(base, length)])

    def _read_runs(
        self, base: int, length: int, extents: list[Extent], runs: list[Extent]
    ) -> memoryview:
        """Read ``runs`` (which cover ``extents``), then zero all but ``extents``."""
        view = memoryview(self._aligned_buffer(length))[:length]
        for start, n in runs:
            rel = start - base
            try:
                got = os.preadv(self._fd_for(start, n), [view[rel : rel + n]], start)
            except OSError as exc:
                raise _vanished(self.path, start, exc) from None
            if got != n:
                raise _vanished(self.path, start + got)
        cursor = base
        for start, n in extents:
            if start > cursor:
                view[cursor - base : start - base] = _ZEROS[: start - cursor]
            cursor = start + n
        if cursor < base + length:
            view[cursor - base :] = _ZEROS[: base + length - cursor]
        return view


def _merged(extents: list[Extent], gap: int) -> list[Extent]:
    """``extents`` with those less than ``gap`` bytes apart joined into one."""
    runs: list[Extent] = []
    for start, n in extents:
        if runs and start - (runs[-1][0] + runs[-1][1]) < gap:
            runs[-1] = (runs[-1][0], start + n - runs[-1][0])
        else:
            runs.append((start, n))
    return runs


# Extents closer than this are read in one request and the bytes between
# them zeroed afterwards: a filesystem of many small files gives a chunk
# hundreds of small extents, and one request of a few hundred KiB more
# costs less than many small ones (a syscall each, and on a loop device or
# a disk's queue a request each). Small, so a read stays within the used
# data's neighbourhood (free space of a failing disk is not read far).
MERGE_GAP = 128 * 1024

_ZEROS = bytes(8 << 20)
