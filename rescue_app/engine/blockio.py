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


@contextmanager
def open_device(path: str, *, write: bool = False) -> Iterator[int]:
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC
    if write:
        flags |= os.O_EXCL  # the kernel refuses if the disk is mounted or in use
    try:
        fd = os.open(path, flags)
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
    try:
        yield fd
    finally:
        os.close(fd)


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


def read_extents_into(
    fd: int, path: str, buf: bytearray, base: int, extents: list[Extent]
) -> None:
    """Fill ``buf`` (which covers ``[base, base+len(buf))``) from ``extents``;
    bytes outside them are left as they are (zeros)."""
    view = memoryview(buf)
    for start, length in extents:
        rel = start - base
        try:
            got = os.preadv(fd, [view[rel : rel + length]], start)
        except OSError as exc:
            raise _vanished(path, start, exc) from None
        if got != length:
            raise _vanished(path, start + got)


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


class TargetWriter:
    """Writes a restore's data to a device, bypassing the page cache.

    O_DIRECT skips a copy into the page cache (and, on loop devices, a second
    one in the backing file's cache): several times faster, and the rescue
    system's memory is not filled with data it will never read. Writes whose
    offset or length is not a multiple of the logical sector size go through a
    second, buffered descriptor. Both are flushed by ``flush``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stack: list[int] = []
        self._local = threading.local()
        self.buffered = self._open(os.O_WRONLY | os.O_EXCL)
        try:
            self.direct: int | None = self._open(os.O_WRONLY | os.O_DIRECT)
        except DiskError:
            self.direct = None
        buf = fcntl.ioctl(self.buffered, BLKSSZGET, b"\0" * 4)
        self.sector = max(512, int(struct.unpack("i", buf)[0]))

    def _open(self, flags: int) -> int:
        try:
            fd = os.open(self.path, flags | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DiskError(
                    f"{self.path} is in use by the system (mounted, swap, RAID or LVM)",
                    hint="unmount it or stop what uses it, then try again",
                ) from None
            if exc.errno in _GONE:
                raise _vanished(self.path, 0, exc) from None
            raise DiskError(f"cannot open {self.path}: {exc.strerror}") from None
        self._stack.append(fd)
        return fd

    def _aligned_buffer(self, size: int) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = mmap.mmap(-1, max(size, 1 << 20))  # page-aligned
            self._local.buf = buf
        return buf

    def write_extents(self, data: bytes, base: int, extents: list[Extent]) -> None:
        """Write the parts of ``data`` (which covers ``[base, ...)``) named by ``extents``."""
        if self.direct is None:
            view = memoryview(data)
            for start, length in extents:
                write_all(self.buffered, self.path, view[start - base:start - base + length],
                          start)
            return
        buf = self._aligned_buffer(len(data))
        buf[: len(data)] = data
        view = memoryview(buf)
        sector = self.sector
        for start, length in extents:
            rel = start - base
            aligned = start % sector == 0 and length % sector == 0
            fd = self.direct if aligned else self.buffered
            write_all(fd, self.path, view[rel:rel + length], start)
        view.release()

    def zero(self, offset: int, length: int) -> None:
        zero_range(self.buffered, self.path, offset, length)

    def flush(self) -> None:
        for fd in self._stack:
            flush(fd, self.path)
        drop_cache(self.buffered)

    def close(self) -> None:
        while self._stack:
            os.close(self._stack.pop())

    def __enter__(self) -> TargetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceReader:
    """Reads a source disk for capture, from several threads at once.

    Each thread fills its own page-aligned buffer, so reads go O_DIRECT where
    the offsets allow (the rescue system's page cache is not filled with a
    disk it reads once) and several reads are in flight. Unaligned extents
    are read through a buffered descriptor. Both descriptors are read-only.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fds: list[int] = []
        self._local = threading.local()
        self.buffered = self._open(os.O_RDONLY)
        try:
            self.direct: int | None = self._open(os.O_RDONLY | os.O_DIRECT)
        except DiskError:
            self.direct = None
        buf = fcntl.ioctl(self.buffered, BLKSSZGET, b"\0" * 4)
        self.sector = max(512, int(struct.unpack("i", buf)[0]))

    def _open(self, flags: int) -> int:
        try:
            fd = os.open(self.path, flags | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise DiskError(f"cannot open {self.path}: permission denied",
                                hint="run as root") from None
            if exc.errno in _GONE:
                raise _vanished(self.path, 0, exc) from None
            raise DiskError(f"cannot open {self.path}: {exc.strerror}") from None
        self._fds.append(fd)
        return fd

    def size(self) -> int:
        return device_size(self.buffered)

    def read(self, base: int, length: int, extents: list[Extent]) -> memoryview:
        """``[base, base+length)`` with only ``extents`` read and zeros elsewhere.

        The view is this thread's buffer: valid until its next ``read``.
        """
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < length:
            buf = mmap.mmap(-1, max(length, 1 << 20))
            self._local.buf = buf
        view = memoryview(buf)[:length]
        cursor = base
        for start, n in extents:
            if start > cursor:
                view[cursor - base:start - base] = _ZEROS[: start - cursor]
            rel = start - base
            aligned = self.direct is not None and start % self.sector == 0 \
                and n % self.sector == 0
            fd = self.direct if aligned and self.direct is not None else self.buffered
            try:
                got = os.preadv(fd, [view[rel:rel + n]], start)
            except OSError as exc:
                raise _vanished(self.path, start, exc) from None
            if got != n:
                raise _vanished(self.path, start + got)
            cursor = start + n
        if cursor < base + length:
            view[cursor - base:] = _ZEROS[: base + length - cursor]
        return view

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ZEROS = bytes(8 << 20)
