"""Block devices as frozen values, and the rules and text read off them.

Pure: no file, no process, no device is touched here. ``diskparse`` makes
these values from what the system says, ``diskscan`` asks the system.
Owns the rule that a disk with a role for the running system (``Role``) or
any mounted or in-use part is never a restore target (``ensure_restorable``),
and how disks are shown at the edge (``format_disks_table`` for `liferaft
disks`, ``disks_to_json`` for its ``--json``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rescue_app.engine.units import human_size
from rescue_app.errors import TargetRefusedError


class Role(Enum):
    """What a disk is to the running system: policy is decided on these, the
    text (``in_use``) is only for people."""

    RUNNING_SYSTEM = "holds the running system"
    BOOT_MEDIUM = "boot medium"
    READ_ONLY = "is read-only"


REASON_ROOT = Role.RUNNING_SYSTEM.value
REASON_BOOT = Role.BOOT_MEDIUM.value
REASON_READ_ONLY = Role.READ_ONLY.value


@dataclass(frozen=True)
class BlockPartition:
    path: str
    number: int
    start: int  # bytes from disk start
    size: int
    fstype: str | None
    label: str | None
    uuid: str | None
    partuuid: str | None
    parttype: str | None
    partlabel: str | None
    mountpoints: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class DiskHardware:
    """What the drive is: read from the system for a disk here (``BlockDisk``),
    recorded for each captured disk (``manifest.DiskImage``), compared at
    restore (same serial, same logical sector size). Keyword-only: the
    subclasses' own fields keep their order, and the manifest's key order is
    its own (``Manifest.to_json``)."""

    model: str | None
    serial: str | None
    wwn: str | None
    size: int  # bytes
    logical_sector_size: int
    physical_sector_size: int


@dataclass(frozen=True, kw_only=True)
class BlockDisk(DiskHardware):
    path: str
    name: str
    transport: str  # nvme, sata, usb, virtio, scsi, loop, ...
    removable: bool
    read_only: bool
    pttype: str | None  # "gpt", "dos" or None
    ptuuid: str | None
    fstype: str | None  # filesystem on the whole disk, if any
    partitions: tuple[BlockPartition, ...]
    # Reasons it is not a restore target, e.g. "holds the running system",
    # "boot medium", "/dev/sda1 is mounted on /home", "swap /dev/sda2 is active".
    in_use: tuple[str, ...]
    backing_file: str | None  # loop devices
    # "incomplete restore of web1@... (started ...)": a restore of this disk
    # was interrupted and none has completed since (engine/restoremark.py).
    incomplete_restore: str | None = None
    roles: frozenset[Role] = frozenset()

    @property
    def ours(self) -> bool:
        """The rescue system's own disk or boot medium: never offered for backup."""
        return bool(self.roles & {Role.RUNNING_SYSTEM, Role.BOOT_MEDIUM})

    @property
    def restorable(self) -> bool:
        return not self.in_use

    def describe(self) -> str:
        """One line a user recognises: "QEMU HARDDISK, serial ABC123, 4.0 GiB (/dev/sdb)"."""
        if self.model:
            what = self.model
        elif self.backing_file:
            what = f"loop over {self.backing_file}"
        else:
            what = f"{self.transport} disk"
        parts = [what]
        if self.serial:
            parts.append(f"serial {self.serial}")
        parts.append(human_size(self.size))
        return f"{', '.join(parts)} ({self.path})"


@dataclass(frozen=True)
class SystemState:
    """What /proc and /sys say, beyond lsblk. Kernel names (``sda``), not paths, as keys."""

    root_disks: frozenset[str] = frozenset()  # disks under / (through partitions, dm, md)
    boot_media: frozenset[str] = frozenset()  # live medium and loops behind its squashfs
    swaps: frozenset[str] = frozenset()  # active swap devices, as /dev paths
    holders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    partition_geometry: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # number, start
    backing_files: Mapping[str, str] = field(default_factory=dict)  # loop name -> file
    mount_fstypes: Mapping[str, str] = field(default_factory=dict)  # /dev path -> fstype
    # ``blkid -p`` results for devices lsblk knew nothing about (no udev database).
    probes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    restore_marks: Mapping[str, str] = field(default_factory=dict)  # disk path -> text


@dataclass(frozen=True)
class MountOnDisk:
    """A filesystem mounted from a disk (a partition, the whole disk, or a
    device stacked on it)."""

    source: str
    mountpoint: str
    read_only: bool


def ensure_restorable(disk: BlockDisk) -> None:
    if disk.in_use:
        raise TargetRefusedError(
            f"refusing to write to {disk.describe()}: {'; '.join(disk.in_use)}",
            hint="choose another disk, or unmount and stop what uses it",
        )


# ---------------------------------------------------------------- presenting


def _cut(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "~"


def format_disks_table(disks: Iterable[BlockDisk]) -> str:
    """The table of `liferaft disks`, 80 columns wide."""
    lines = [f"{'DISK':<14} {'MODEL':<22} {'SERIAL':<16} {'SIZE':>10} {'TRAN':<6} {'TABLE':<5}"]
    for disk in disks:
        lines.append(
            f"{_cut(disk.path, 14):<14} {_cut(disk.model, 22):<22} {_cut(disk.serial, 16):<16} "
            f"{human_size(disk.size):>10} {_cut(disk.transport, 6):<6} "
            f"{_cut(disk.pttype or disk.fstype, 5)}"
        )
        if disk.backing_file:
            lines.append(f"  {_cut('file ' + disk.backing_file, 76)}")
        if disk.incomplete_restore:
            # wrapped, never cut: the image and the time are what the user needs
            lines += textwrap.wrap(
                "WARNING: " + disk.incomplete_restore,
                78,
                initial_indent="  ",
                subsequent_indent="    ",
            )
        if disk.in_use:
            lines.append(f"  {_cut('IN USE: ' + '; '.join(disk.in_use), 76)}")
        for part in disk.partitions:
            mounts = ", ".join(part.mountpoints)
            lines.append(
                f"  {_cut(part.path, 16):<16} {_cut(part.fstype, 8):<8} "
                f"{_cut(part.label or part.partlabel, 16):<16} {human_size(part.size):>10} "
                f"{_cut(mounts, 22) if mounts else ''}".rstrip()
            )
    return "\n".join(lines)


def disks_to_json(disks: Iterable[BlockDisk]) -> list[dict[str, Any]]:
    """Plain data for `liferaft disks --json`."""
    out = []
    for disk in disks:
        # path and name first, as before the hardware fields came from a base class
        item: dict[str, Any] = {"path": disk.path, "name": disk.name}
        item.update(
            (k, v) for k, v in vars(disk).items() if k not in ("partitions", "in_use", "roles")
        )
        item["in_use"] = list(disk.in_use)
        item["roles"] = sorted(r.name.lower() for r in disk.roles)
        item["restorable"] = disk.restorable
        item["partitions"] = [
            {**vars(p), "mountpoints": list(p.mountpoints)} for p in disk.partitions
        ]
        out.append(item)
    return out
