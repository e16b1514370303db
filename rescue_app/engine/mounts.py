"""Every mount and umount liferaft performs on local filesystems.

One home for the options that matter: read-only means really read-only (no
journal replay, which writes to the disk: ``noload`` for ext3/4,
``norecovery`` for XFS, ``rescue=nologreplay`` for Btrfs); NTFS through
ntfs-3g; exFAT through the kernel, else its FUSE driver; a failed umount
becomes a lazy one so a busy point never blocks the operation that is ending.
Network mounts (SMB, NFS) plan their source and options in stores/mount.py
(and translate its errors into their own messages) but mount and unmount
through here.

    with mounted("/dev/sdb1", "ext4") as point: ...          # ro, temp dir
    with mounted(node, "xfs", writable=True) as point: ...  # rw
    mount(device, "/run/liferaft/repo", fstype=None, options=["ro"])
    umount("/run/liferaft/repo")
    loop = attach_loop("/mnt/image/disk1/p2/p2.img")   # read-only loop device
    detach_loop(loop); loops_backed_under("/mnt/image"); mounts_under("/mnt/image")
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence

from rescue_app.engine.diskscan import read_mountinfo
from rescue_app.errors import LiferaftError
from rescue_app.run import run

log = logging.getLogger("liferaft.mounts")

TIMEOUT = 60.0


def options_for(fstype: str | None, writable: bool) -> list[str]:
    if writable:
        return ["rw"]
    # Read-only must not replay a journal either: that writes to the disk (and
    # on a read-only device, such as an image's loop device, the mount fails:
    # btrfs says "log replay required on RO media").
    extra = {
        "ext4": ["noload"],
        "ext3": ["noload"],
        "xfs": ["norecovery", "nouuid"],  # a copy of a mounted XFS (its image) mounts too
        "btrfs": ["rescue=nologreplay"],
    }
    return ["ro", *extra.get(fstype or "", [])]


def mount_argv(
    device: str, point: str, *, fstype: str | None = None, options: Sequence[str] = ("ro",)
) -> list[str]:
    """The kernel ``mount`` command line (no -o without options)."""
    typed = ["-t", fstype] if fstype else []
    opts = ["-o", ",".join(options)] if options else []
    return ["mount", *typed, *opts, device, point]


def mount(
    device: str,
    point: str,
    *,
    fstype: str | None = None,
    options: Sequence[str] = ("ro",),
    timeout: float = TIMEOUT,
) -> None:
    """Mount ``device`` on the existing folder ``point``; CommandError if it fails."""
    opts = ",".join(options)
    log.info("mounting %s (%s, %s) on %s", device, fstype or "auto", opts, point)
    if fstype == "ntfs":
        run(["ntfs-3g", "-o", opts, device, point], timeout=timeout)
    elif fstype == "exfat":
        try:
            run(mount_argv(device, point, fstype="exfat", options=options), timeout=timeout)
        except LiferaftError:
            run(["mount.exfat-fuse", "-o", opts, device, point], timeout=timeout)
    else:
        run(mount_argv(device, point, fstype=fstype, options=options), timeout=timeout)


def umount(point: str) -> None:
    """Unmount ``point``; if it is busy, detach it lazily rather than fail."""
    try:
        run(["umount", point], timeout=TIMEOUT)
    except LiferaftError as exc:
        log.warning("could not unmount %s: %s; detaching it lazily", point, exc)
        run(["umount", "-l", point], check=False, timeout=TIMEOUT)


@contextlib.contextmanager
def mounted(
    device: str,
    fstype: str | None,
    *,
    writable: bool = False,
    options: Sequence[str] = (),
    prefix: str = "liferaft-mnt-",
) -> Iterator[str]:
    """Mount on a private temporary folder for the ``with`` block; always unmounted."""
    point = tempfile.mkdtemp(prefix=prefix)
    try:
        mount(device, point, fstype=fstype, options=[*options_for(fstype, writable), *options])
        try:
            yield point
        finally:
            umount(point)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(point)


# -- loop devices over image files, and what is mounted below a folder (the
# browse mounts of engine/browse.py: an image's partitions loop-mounted inside
# its FUSE tree)


def attach_loop(path: str, *, writable: bool = False) -> str:
    """A loop device over the file ``path`` (read-only unless ``writable``:
    a restore's scratch copy); returns its /dev path."""
    mode = [] if writable else ["--read-only"]
    dev = run(["losetup", "--find", "--show", *mode, path], timeout=TIMEOUT).stdout
    log.info("attached %s %s to %s", path, "read-write" if writable else "read-only", dev.strip())
    return dev.strip()


def detach_loop(dev: str) -> None:
    run(["losetup", "--detach", dev], check=False, timeout=TIMEOUT)


def loops_backed_under(folder: str) -> list[str]:
    """Loop devices whose backing file lies below ``folder``."""
    prefix = os.path.realpath(folder).rstrip("/") + "/"
    found = []
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(backing) as f:
                path = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if path.startswith(prefix):
            found.append("/dev/" + backing.split("/")[3])
    return sorted(found)


def _mount_table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process sees."""
    return [(m.mountpoint, m.fstype) for m in read_mountinfo()]


def mounts_under(folder: str) -> list[str]:
    """Mount points at or below ``folder``, deepest first (the order to unmount)."""
    top = os.path.realpath(folder).rstrip("/") or "/"
    points = {p for p, _ in _mount_table() if p == top or p.startswith(top + "/")}
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def fstype_of(point: str) -> str | None:
    """The type of what is mounted on ``point`` last (None: nothing)."""
    top = os.path.realpath(point).rstrip("/") or "/"
    types = [t for p, t in _mount_table() if p == top]
    return types[-1] if types else None


def is_mount_point(folder: str) -> bool:
    return (os.path.realpath(folder).rstrip("/") or "/") in mounts_under(folder)
