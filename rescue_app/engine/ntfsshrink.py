"""NTFS onto a smaller partition: ntfsresize in a scratch copy.

ntfsresize shrinks a volume in place, so it needs the whole old volume on
something it can write; a smaller target has no room for it. So the
partition's used blocks are first laid into a sparse file of the old size in
the temporary folder (TMPDIR), through a loop device and restore's own
writer; ntfsresize shrinks that file to the new size (it works on files),
and only then is the target written: the data of the file's first N bytes,
its first MiB last. ntfsresize, given the size in bytes, writes the backup
boot sector into the new volume's last sector; it is written there once more
from sector 0, which ntfsfix checks.

The scratch file holds about the partition's used bytes (sparse) plus what
ntfsresize moves from beyond N (shrink.scratch_need); the space is checked
before anything is written. This module owns the scratch folder, the
ntfsresize runs and the copy onto the partition; restore.py decides when.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Self

from rescue_app.engine import blockio, restoremark
from rescue_app.engine.manifest import PartitionImage
from rescue_app.engine.mounts import attach_loop, detach_loop
from rescue_app.engine.plan import DiskPlan, PartitionStep, RestorePlan
from rescue_app.engine.shrink import scratch_need
from rescue_app.engine.units import human_size
from rescue_app.errors import CancelledError, TargetRefusedError, VerifyError
from rescue_app.progress import CancelToken
from rescue_app.run import run

MIB = 1 << 20
SECTOR = 512  # NTFS keeps its backup boot sector in the partition's last 512 bytes
_PIECE = 4 << 20


def resized_steps(plan: RestorePlan) -> list[tuple[DiskPlan, PartitionStep]]:
    """Every partition of the plan that ntfsresize shrinks."""
    return [(d, s) for d in plan.disks for s in d.steps if s.resize]


def scratch_folder(plan: RestorePlan) -> str:
    """Where the scratch copies go: the user's choice (``--scratch``), else
    TMPDIR, else /tmp."""
    return plan.choices.scratch or tempfile.gettempdir()


def check_scratch_space(plan: RestorePlan) -> None:
    """Before anything is written: the temporary folder can hold the scratch
    copies of every NTFS partition that shrinks. TargetRefusedError if not."""
    steps = resized_steps(plan)
    if not steps:
        return
    need = sum(scratch_need(s.source, s.new.size) for _, s in steps)
    folder = scratch_folder(plan)
    try:
        st = os.statvfs(folder)
        if not os.path.isdir(folder):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
    except OSError as exc:
        raise TargetRefusedError(
            f"cannot use {folder} for the NTFS scratch copy: {exc.strerror}",
            hint="give a writable folder on a disk that is not a target (--scratch DIR)",
        ) from None
    free = st.f_bavail * st.f_frsize
    if free < need:
        which = ", ".join(str(s.source.number) for _, s in steps)
        raise TargetRefusedError(
            f"shrinking NTFS partition {which} needs {human_size(need)} of scratch space in "
            f"{folder}, which has {human_size(free)} free",
            hint=f"give a folder with at least {human_size(need)} free on a disk that is "
            "not a target (--scratch /mnt/usb, or TMPDIR; in the UI the scratch folder "
            "field), or choose a disk that holds the NTFS partition at its size",
        )


class Scratch:
    """The scratch copies of one restore, removed when it ends."""

    def __init__(self, parent: str | None = None) -> None:
        self.parent = parent  # where the folder is made (None: TMPDIR)
        self.folder: str | None = None
        self.files: dict[tuple[int, int], str] = {}
        self.fetched = 0  # bytes fetched from the repository to fill them

    def new_file(self, disk: int, p: PartitionImage) -> str:
        """An empty sparse file of ``p``'s old size for partition ``p`` of ``disk``."""
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="liferaft-ntfs-", dir=self.parent)
        path = os.path.join(self.folder, f"disk{disk + 1}-p{p.number}.ntfs")
        try:
            with open(path, "wb") as f:
                f.truncate(p.size)
        except OSError as exc:
            raise TargetRefusedError(
                f"cannot make the NTFS scratch copy {path}: {exc.strerror}",
                hint="set TMPDIR to a folder on a disk that is not a target",
            ) from None
        self.files[(disk, p.number)] = path
        return path

    @contextlib.contextmanager
    def device(self, disk: int, p: PartitionImage) -> Iterator[str]:
        """A writable loop device over a new scratch file for ``p``."""
        dev = attach_loop(self.new_file(disk, p), writable=True)
        try:
            yield dev
        finally:
            detach_loop(dev)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.files.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shrink(path: str, p: PartitionImage, size: int, disk_size: int | None = None) -> None:
    """ntfsresize the scratch copy ``path`` of ``p`` to ``size`` bytes: a
    test run first, so a volume that cannot shrink that far is refused in
    one line (the target is not written yet), naming the smallest disk that
    would do when ``disk_size`` (the target's) is given."""
    size_arg = ["--size", str(size), path]
    test = run(["ntfsresize", "--no-action", "--force", *size_arg], check=False)
    if test.returncode != 0:
        msg = (
            f"NTFS partition {p.number} ({human_size(p.used_bytes)} of data) cannot shrink "
            f"to {human_size(size)}: ntfsresize says: {_reason(test.stdout + test.stderr)}"
        )
        least = smallest_size(path)
        if least is None or disk_size is None or least <= size:
            raise TargetRefusedError(
                msg, hint="choose a larger disk, or let another partition shrink too (--shrink)"
            )
        disk = -(-(disk_size + least - size) // MIB) * MIB
        raise TargetRefusedError(
            f"{msg}; it shrinks to {human_size(least)} at the least: the smallest disk that "
            f"would do is {human_size(disk)} ({disk} bytes)",
            hint=f"choose a disk of at least {human_size(disk)}, or let another partition "
            "shrink too (--shrink)",
        )
    run(["ntfsresize", "--force", "--force", *size_arg])


def smallest_size(path: str) -> int | None:
    """The smallest partition the NTFS in ``path`` shrinks into: what
    ``ntfsresize --info`` says it might resize at, and the backup boot
    sector after it (None: it does not say)."""
    info = run(["ntfsresize", "--info", "--no-action", "--force", path], check=False)
    match = re.search(r"You might resize at (\d+) bytes", info.stdout)
    return None if match is None else -(-(int(match.group(1)) + SECTOR) // MIB) * MIB


def _reason(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no reason given"])[0].removeprefix("ERROR: ").rstrip(".")


def _data_runs(fd: int, end: int) -> Iterator[tuple[int, int]]:
    """The parts of the sparse file below ``end`` that hold data."""
    offset = 0
    while offset < end:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole after offset
                return
            raise
        if start >= end:
            return
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        yield start, stop - start
        offset = stop


def copy_to(path: str, node: str, size: int, cancel: CancelToken | None = None) -> int:
    """The shrunk volume's first ``size`` bytes onto the partition ``node``
    (the data of the sparse file only; the first MiB last, see restoremark),
    then the backup boot sector into its last sector. Returns bytes written."""
    written = 0
    held: list[tuple[int, bytes]] = []
    with open(path, "rb") as src, blockio.TargetWriter(node) as writer:
        fd = src.fileno()
        for start, length in _data_runs(fd, size):
            for base in range(start, start + length, _PIECE):
                if cancel is not None and cancel.cancelled:
                    raise CancelledError(
                        f"restore cancelled: {node} is only partly written and will not work",
                        hint="run the restore again before using this disk",
                    )
                data = os.pread(fd, min(_PIECE, start + length - base), base)
                if base < restoremark.HOLD:
                    held.append((base, data))
                    continue
                writer.write_extents(data, base, [(base, len(data))])
                written += len(data)
        for base, data in held:
            writer.write_extents(data, base, [(base, len(data))])
            written += len(data)
        boot = os.pread(fd, SECTOR, 0)
        writer.write_extents(boot, size - SECTOR, [(size - SECTOR, SECTOR)])
        writer.flush()
    return written + SECTOR


def check(node: str) -> None:
    """ntfsfix's read-only check of a shrunk NTFS (--verify): its blocks
    are not the image's, so they cannot be compared chunk by chunk."""
    proc = run(["ntfsfix", "--no-action", node], check=False)
    if proc.returncode != 0:
        raise VerifyError(
            f"verification failed: ntfsfix finds the shrunk NTFS on {node} unclean "
            f"({_reason(proc.stdout + proc.stderr)})",
            hint="the target disk may be failing; restore again or use another disk",
        )


__all__ = [
    "Scratch",
    "check",
    "check_scratch_space",
    "copy_to",
    "resized_steps",
    "shrink",
    "smallest_size",
]
