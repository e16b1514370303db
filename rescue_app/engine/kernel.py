"""Making the kernel see a partition table, and waiting for its /dev nodes.

After a table is written (restore) or when a loop device was attached
without a scan (capture on a host without udev), the kernel must re-read
the table: ``partprobe``, else ``partx -u``, else the BLKRRPART ioctl (a
tool the system lacks is looked up once and skipped quietly). There is no
udev to settle on, so ``reread_partitions`` polls sysfs and creates a
missing /dev node for a partition the kernel already knows -- the only
change to the system this module makes.

    reread_partitions(disk_path, expected, timeout=10) -> list[str]
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from rescue_app.engine.diskscan import SYS_BLOCK, read_text
from rescue_app.errors import CommandError, DiskError
from rescue_app.run import have_tool, run

BLKRRPART = 0x125F  # <linux/fs.h> _IO(0x12, 95): re-read partition table


def _partition_nodes(disk_name: str) -> list[tuple[int, str]]:
    sys_dir = os.path.join(SYS_BLOCK, disk_name)
    nodes = []
    try:
        entries = os.listdir(sys_dir)
    except OSError as exc:
        raise DiskError(f"/dev/{disk_name} vanished") from exc
    for entry in entries:
        number = read_text(os.path.join(sys_dir, entry, "partition"))
        if number and entry.startswith(disk_name):
            nodes.append((int(number), entry))
    return sorted(nodes)


def _ensure_node(name: str) -> bool:
    """True once /dev/<name> is the block device sysfs describes; mknod it if missing."""
    dev = read_text(os.path.join(SYS_BLOCK, name, "dev"))
    if not dev:
        return False
    major, minor = (int(x) for x in dev.split(":"))
    path = f"/dev/{name}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        # devtmpfs normally creates it; without udev a race or an old /dev may not.
        try:
            os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        except FileExistsError:
            pass
        st = os.stat(path)
    return stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor)


def _rescan(disk_path: str) -> None:
    # partprobe and partx read the table themselves and tell the kernel each
    # partition (BLKPG), which works even where the kernel has no parser for
    # the table (a minimal kernel); BLKRRPART asks the kernel's own parsers.
    if have_tool("partprobe", "partition tables are re-read with partx or BLKRRPART"):
        try:
            run(["partprobe", disk_path], timeout=60)
            return
        except CommandError:
            pass  # it refuses some cases (busy partitions it cannot resize)
    if have_tool("partx", "partition tables are re-read with BLKRRPART"):
        try:
            run(["partx", "-u", disk_path], timeout=60)
            return
        except CommandError:
            pass
    fd = os.open(disk_path, os.O_RDONLY)
    try:
        for _ in range(10):
            try:
                fcntl.ioctl(fd, BLKRRPART)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise DiskError(f"the kernel cannot re-read {disk_path}: {exc}") from exc
                time.sleep(0.2)
        raise DiskError(f"the kernel cannot re-read {disk_path}: device busy")
    finally:
        os.close(fd)


def reread_partitions(
    disk_path: str, expected: int, timeout: float = 10, *, rescan: bool = True
) -> list[str]:
    """Make the kernel see the new table and wait for ``expected`` partition nodes.

    There is no udev on the host to settle on, so poll sysfs and /dev ourselves.
    ``expected`` counts every node the kernel makes, an msdos extended partition
    included. Returns the /dev paths ordered by partition number. ``rescan``
    False: the kernel already shows the table (only its /dev nodes are made sure of).
    """
    name = os.path.basename(os.path.realpath(disk_path))
    if rescan:
        _rescan(disk_path)
    deadline = time.monotonic() + timeout
    while True:
        nodes = _partition_nodes(name)
        if len(nodes) == expected and all(_ensure_node(n) for _, n in nodes):
            return [f"/dev/{n}" for _, n in nodes]
        if time.monotonic() > deadline:
            seen = ", ".join(n for _, n in nodes) or "none"
            raise DiskError(
                f"{disk_path}: expected {expected} partitions after re-reading, "
                f"the kernel shows {len(nodes)} ({seen})"
            )
        time.sleep(0.05)
