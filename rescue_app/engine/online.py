"""The online backup (``liferaft backup``): a running system's disks, captured while in use.

Owns choosing the disks (by default those holding /, /boot and /boot/efi),
politeness (the process's I/O at idle class, ``ionice -c3``; a byte rate
limit) and the per-partition summary of how each was captured. The capture
itself is engine/capture.py with ``online=True``: partitions mounted
read-write file by file (engine/filelevel.py; Btrfs from read-only
snapshots), everything else block by block as an offline capture does.
No filesystem is frozen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rescue_app.engine.capture import capture
from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.diskparse import StackedVolume, stacked_volumes
from rescue_app.engine.diskscan import disks_holding_path, find_disk, read_lsblk
from rescue_app.engine.manifest import Manifest, Method
from rescue_app.engine.repository import Repository
from rescue_app.engine.results import CaptureResult
from rescue_app.errors import DiskError
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from rescue_app.run import run

SYSTEM_PATHS = ("/", "/boot", "/boot/efi")


def system_disks(paths: Sequence[str] = SYSTEM_PATHS) -> list[str]:
    """/dev paths of the disks holding the running system (each of ``paths``
    that is a mount point, / always)."""
    names: set[str] = set()
    for path in paths:
        if path == "/" or os.path.ismount(path):
            names |= disks_holding_path(path)
    if not names:
        raise DiskError(
            "no disk holding the running system was found (/ is not on a local disk: "
            "a container, a network or RAM root?)",
            hint="name the disks to back up: liferaft backup --repo REPO --name NAME /dev/sdX",
        )
    return [f"/dev/{n}" for n in sorted(names)]


class RateLimit:
    """A progress callback that makes the capture wait so that the bytes it
    reports stay under ``rate`` bytes per second (the engine calls progress
    between reads, from the thread that reads or hands out the reads)."""

    def __init__(self, rate: int, inner: ProgressCallback) -> None:
        self.rate = rate
        self.inner = inner
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        self.inner(p)
        if p.phase != "capture" or self.rate <= 0:
            return
        with self.lock:
            ahead = p.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def idle_io() -> None:
    """This process's I/O at the idle class (``ionice -c3``); threads started
    after inherit it."""
    run(["ionice", "-c3", "-p", str(os.getpid())], check=False)


@dataclass(frozen=True)
class BackupRequest:
    """What ``liferaft backup`` was asked for."""

    name: str  # the image name
    devices: tuple[str, ...] = ()  # the disks; empty: the running system's (system_disks)
    limit_rate: int = 0  # bytes per second read at most; 0: no limit
    thin_delta: bool = False  # keep thin LVs' snapshots; read only what changed since them


def backup(
    repo: Repository,
    request: BackupRequest,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> CaptureResult:
    """Capture the request's disks while in use."""
    if request.limit_rate < 0:
        raise DiskError("--limit-rate must be a positive number of bytes per second")
    repo.ensure_writable()  # before any disk is looked at
    disks: list[BlockDisk] = [find_disk(d) for d in (request.devices or system_disks())]
    tree = read_lsblk()
    for disk in disks:
        refuse_stacked_in_use(disk.path, stacked_volumes(tree, disk.name))
    idle_io()
    rate = request.limit_rate
    paced = RateLimit(rate, progress) if rate else progress
    return capture(
        repo,
        request.name,
        disks,
        progress=paced,
        cancel=cancel,
        online=True,
        thin_delta=request.thin_delta,
    )


def refuse_stacked_in_use(disk: str, volumes: Sequence[StackedVolume]) -> None:
    """An md array or open LUKS volume on ``disk`` that is in use cannot be
    copied consistently while the system runs (no snapshot below the
    filesystem): one line saying so and what to do. Idle ones are taken
    (an active array is read through its device, an idle LUKS volume raw)."""
    leave_out = f"or leave {disk} out by naming the other disks (liferaft backup ... /dev/sdX)"
    for v in volumes:
        if not v.use:
            continue
        if v.kind == "md":
            raise DiskError(
                f"{v.member} is a member of the md array {v.device}, which is in use "
                f"({v.use}): an online backup cannot copy an array being written consistently",
                hint="back this machine up from the rescue stick, which assembles the array "
                f"read-only; {leave_out}",
            )
        raise DiskError(
            f"{v.member} is a LUKS volume open as {v.device}, which is in use ({v.use}): "
            "an online backup would copy its encrypted blocks while they change",
            hint="back this machine up from the rescue stick (liferaft capture --unlock "
            f"reads what is inside); {leave_out}",
        )


def methods_used(manifest: Manifest) -> list[str]:
    """One line per captured volume: how it was captured, for the summary."""
    how = {
        Method.FILES: "file by file from the mounted tree",
        Method.USED: "block level, used blocks",
        Method.RAW: "block level, every byte",
        Method.SWAP: "not stored (swap, made anew)",
        Method.LVM_PV: "LVM physical volume (its logical volumes below)",
        Method.MD_MEMBER: "md member (its array below)",
        Method.LUKS: "LUKS, unlocked",
    }
    out = []
    for d in manifest.disks:
        for p in d.partitions:
            if p.method == Method.NONE:
                continue
            text = how.get(Method(p.method), p.method)
            if p.method == Method.FILES and p.filesystem.type == "btrfs":
                text = "file by file from read-only snapshots of each subvolume"
            out.append(f"disk {d.index + 1} {p.label}: {text}")
    for vg in manifest.volume_groups:
        for lv in vg.lvs:
            if not lv.hidden:
                text = how.get(Method(lv.method), lv.method)
                text += f" ({lv.note})" if lv.note else ""
                out.append(f"volume group {vg.name} {lv.label}: {text}")
    return out


__all__ = [
    "SYSTEM_PATHS",
    "BackupRequest",
    "RateLimit",
    "backup",
    "idle_io",
    "methods_used",
    "refuse_stacked_in_use",
    "system_disks",
]
