"""Every mount and umount liferaft performs on local filesystems.

One home for the options that matter: read-only means really read-only (no
journal replay, which writes to the disk: ``noload`` for ext3/4,
``norecovery`` for XFS); NTFS through ntfs-3g; exFAT through the kernel, else
its FUSE driver; a failed umount becomes a lazy one so a busy point never
blocks the operation that is ending. Network mounts (SMB, NFS) plan their
source and options in stores/mount.py (and translate its errors into their
own messages) but mount and unmount through here.

    with mounted("/dev/sdb1", "ext4") as point: ...          # ro, temp dir
    with mounted(node, "xfs", writable=True) as point: ...  # rw
    mount(device, "/run/liferaft/repo", fstype=None, options=["ro"])
    umount("/run/liferaft/repo")
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence

from rescue_app.errors import LiferaftError
from rescue_app.run import run

log = logging.getLogger("liferaft.mounts")

TIMEOUT = 60.0


def options_for(fstype: str | None, writable: bool) -> list[str]:
    if writable:
        return ["rw"]
    # Read-only must not replay a journal either: that writes to the disk.
    extra = {"ext4": ["noload"], "ext3": ["noload"], "xfs": ["norecovery"]}
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
