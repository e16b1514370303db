"""Every external command liferaft runs goes through this module.

Argument lists only (never a shell string), stdin from /dev/null unless given,
LC_ALL=C so output can be parsed, each command logged, a missing binary
reported with the Debian package that provides it, and a failure turned into
a CommandError carrying stderr.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from rescue_app.errors import CommandError, ToolMissingError

log = logging.getLogger("liferaft.run")

# program -> Debian package, for the "install X" hint.
PACKAGE_OF: dict[str, str] = {
    "lsblk": "util-linux",
    "losetup": "mount",
    "blkid": "util-linux",
    "sfdisk": "fdisk",
    "partprobe": "parted",
    "partclone.ext2": "partclone",
    "partclone.ext3": "partclone",
    "partclone.ext4": "partclone",
    "partclone.xfs": "partclone",
    "partclone.btrfs": "partclone",
    "partclone.vfat": "partclone",
    "partclone.fat": "partclone",
    "partclone.ntfs": "partclone",
    "partclone.exfat": "partclone",
    "mkswap": "util-linux",
    "resize2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "xfs_growfs": "xfsprogs",
    "xfs_repair": "xfsprogs",
    "btrfs": "btrfs-progs",
    "ntfsresize": "ntfs-3g",
    "ntfsfix": "ntfs-3g",
    "fsck.vfat": "dosfstools",
    "fsck.exfat": "exfatprogs",
    "mount": "mount",
    "umount": "mount",
    "zstd": "zstd",
    "mksquashfs": "squashfs-tools",
    "mmdebstrap": "mmdebstrap",
    "xorriso": "xorriso",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mkfs.msdos": "dosfstools",
    "qemu-system-x86_64": "qemu-system-x86",
    "efibootmgr": "efibootmgr",
}


_fd2_lock = threading.Lock()


@contextmanager
def library_children(what: str) -> Iterator[None]:
    """Catch the stderr of programs a library starts behind our back.

    libparted runs ``udevadm settle`` through system() after a commit; on a
    system without udev that prints "sh: 1: udevadm: not found" over the
    progress bar or the UI. File descriptor 2 points at a temporary file for
    the duration (process-wide, so one section at a time); what was caught
    goes to the log, where errors and --debug show it.
    """
    with _fd2_lock, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace").strip()
            if text:
                log.debug("output of programs run by %s: %s", what, text[-2000:])


def which(program: str) -> str:
    """Full path of ``program`` or ToolMissingError naming its package."""
    path = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        package = PACKAGE_OF.get(program, program)
        raise ToolMissingError(
            f"{program} is not installed", hint=f"install the Debian package {package}"
        )
    return path


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing text stdout and stderr."""
    args = [which(argv[0]), *argv[1:]]
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            input=input.decode() if input is not None else None,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_env(env),
            cwd=cwd,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
    if proc.stdout:
        log.debug("stdout of %s: %s", argv[0], proc.stdout[-2000:])
    if proc.stderr:
        log.debug("stderr of %s: %s", argv[0], proc.stderr[-2000:])
    if check and proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        detail = last[-1] if last else f"exit status {proc.returncode}"
        raise CommandError(f"{argv[0]} failed: {detail}", stderr=proc.stderr)
    return proc
