"""Reading and writing block devices: the only place that does either.

Sources are opened O_RDONLY and nothing here can write to them. An I/O
error, a short read or a device that disappears becomes DeviceVanishedError
naming the device and offset.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from rescue_app.engine.extents import Extent
from rescue_app.errors import DeviceVanishedError, DiskError

BLKZEROOUT = 0x127F  # _IO(0x12, 127)
BLKFLSBUF = 0x1261  # _IO(0x12, 97)
BLKGETSIZE64 = 0x80081272

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
