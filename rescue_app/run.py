"""Every external command liferaft runs goes through this module.

Argument lists only (never a shell string), stdin from /dev/null unless given,
LC_ALL=C so output can be parsed, each command logged, a missing binary
reported with the Debian package that provides it, and a failure turned into
a CommandError carrying stderr.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rescue_app.errors import CommandError, ToolMissingError

if TYPE_CHECKING:
    from rescue_app.progress import CancelToken

log = logging.getLogger("liferaft.run")

# program -> Debian package, for the "install X" hint.
PACKAGE_OF: dict[str, str] = {
    "lsblk": "util-linux",
    "losetup": "mount",
    "blkid": "util-linux",
    "blockdev": "util-linux",
    **dict.fromkeys(
        ("pvs", "vgs", "lvs", "pvcreate", "pvresize", "vgcfgbackup", "vgcfgrestore"), "lvm2"
    ),
    **dict.fromkeys(("vgchange", "lvchange", "lvextend"), "lvm2"),
    "mdadm": "mdadm",
    "cryptsetup": "cryptsetup-bin",
    "sfdisk": "fdisk",
    "partprobe": "parted",
    "partx": "util-linux",
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
    # liferaft schedule
    "systemctl": "systemd",
    "systemd-analyze": "systemd",
}


# Programs libraries run through system() that a rescue system may lack, and
# why doing without them is fine. libparted runs `udevadm settle` after each
# commit; without udev there is nothing to wait for, and the engine waits for
# the partition nodes itself (kernel.reread_partitions).
OPTIONAL_FOR_LIBRARIES: dict[str, str] = {
    "udevadm": "without udev there is nothing to settle; liferaft waits for the "
    "partition nodes itself",
}
_stand_in_lock = threading.Lock()
_stand_in: list[str] = []  # the folder of quiet stand-ins ("": none needed), made once

_tools_lock = threading.Lock()
_tools: dict[str, bool] = {}  # optional program -> installed, looked up once


def have_tool(program: str, without: str = "") -> bool:
    """Whether the optional ``program`` is installed (udevadm, partprobe,
    networkctl...), looked up once per process. A missing one is said once, in
    the log only (``without``: what liferaft does instead); the caller takes
    its fallback and nothing reaches the terminal."""
    with _tools_lock:
        found = _tools.get(program)
        if found is None:
            # Our own stand-ins (library_children) do not count as installed.
            path = ":".join(p for p in _search_path().split(":") if p and p not in _stand_in)
            found = _tools[program] = shutil.which(program, path=path) is not None
            if not found:
                log.info("%s is not installed%s", program, f": {without}" if without else "")
    return found


def _stand_in_folder() -> str:
    """A folder holding a do-nothing stand-in for each optional program that is
    missing ("" when none is): looked for once per process, said once in the log."""
    if not _stand_in:
        missing = [
            p
            for p, why in OPTIONAL_FOR_LIBRARIES.items()
            if not have_tool(p, f"libraries run without it ({why})")
        ]
        folder = ""
        if missing:
            folder = tempfile.mkdtemp(prefix="liferaft-stand-ins-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            for program in missing:
                os.symlink(shutil.which("true") or "/bin/true", os.path.join(folder, program))
        _stand_in.append(folder)
    return _stand_in[0]


@contextmanager
def library_children(what: str) -> Iterator[None]:
    """Keep the programs a library starts behind our back off the terminal.

    libparted runs ``udevadm settle`` through system(); on a system without
    udev the shell prints "sh: 1: udevadm: not found" over the progress bar
    or the UI. Such a program, when missing, is found once and replaced, for
    the library's calls only (PATH for the duration, one section at a time),
    by a stand-in that does nothing. File descriptor 2 is left alone: the
    full-screen UI draws on it from another thread, and a redirection would
    swallow its frames.
    """
    with _stand_in_lock:
        folder = _stand_in_folder()
        if not folder:
            yield
            return
        log.debug("%s runs with the stand-ins in %s on PATH", what, folder)
        saved = os.environ.get("PATH")
        os.environ["PATH"] = f"{folder}:{_search_path()}"
        try:
            yield
        finally:
            if saved is None:
                del os.environ["PATH"]
            else:
                os.environ["PATH"] = saved


def interactive(argv: Sequence[str]) -> int:
    """Run a program for the person at the terminal (a shell): stdin, stdout and
    stderr are the terminal's, the environment theirs (their locale, not C).
    Its exit status; CommandError if it cannot start."""
    log.info("interactive: %s", " ".join(argv))
    try:
        return subprocess.call(list(argv))
    except OSError as exc:
        raise CommandError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None


def _search_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def which(program: str) -> str:
    """Full path of ``program`` or ToolMissingError naming its package."""
    path = shutil.which(program, path=_search_path())
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
    cancel: CancelToken | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing text stdout and stderr.
    ``cancel``: once set, the command is killed and fails (the caller says
    "cancelled"); for long copies a UI can stop."""
    args = [which(argv[0]), *argv[1:]]
    log.debug("run: %s", " ".join(args))
    if cancel is not None:
        return _finish(argv, _run_cancellable(args, cancel, env, cwd), check)
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
    return _finish(argv, proc, check)


def feed(argv: Sequence[str], pieces: Iterable[bytes]) -> None:
    """Run a command with ``pieces`` written to its stdin as they come (an
    archive unpacked from a repository's chunks, never whole in memory).
    An exception from ``pieces`` kills the command and is raised."""
    args = [which(argv[0]), *argv[1:]]
    log.debug("run: %s < stream", " ".join(args))
    with (
        tempfile.TemporaryFile() as err,
        subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=_env(None)
        ) as child,
    ):
        assert child.stdin is not None
        try:
            for piece in pieces:
                child.stdin.write(piece)
            child.stdin.close()
        except BrokenPipeError:
            pass  # the command stopped early: its status and stderr say why
        except BaseException:
            child.kill()
            raise
        child.wait()
        err.seek(0)
        text = err.read().decode(errors="replace")
    _finish(argv, subprocess.CompletedProcess(args, child.returncode, "", text), True)


def _run_cancellable(
    args: Sequence[str],
    cancel: CancelToken,
    env: Mapping[str, str] | None,
    cwd: str | None,
) -> subprocess.CompletedProcess[str]:
    with subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
        cwd=cwd,
    ) as child:
        while True:
            try:
                out, err = child.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel.cancelled:
                    log.info("%s stopped: cancelled", args[0])
                    child.kill()
                    out, err = child.communicate()
                    break
        return subprocess.CompletedProcess(args, child.returncode, out, err)


def _finish(
    argv: Sequence[str], proc: subprocess.CompletedProcess[str], check: bool
) -> subprocess.CompletedProcess[str]:
    if proc.stdout:
        log.debug("stdout of %s: %s", argv[0], proc.stdout[-2000:])
    if proc.stderr:
        log.debug("stderr of %s: %s", argv[0], proc.stderr[-2000:])
    if check and proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        detail = last[-1] if last else f"exit status {proc.returncode}"
        raise CommandError(f"{argv[0]} failed: {detail}", stderr=proc.stderr)
    return proc
