"""The rescue stick in the drill: QEMU arguments for a machine's disks, its
UEFI NVRAM and the stick, and one unattended run of the stick (capture or
restore) from the kernel command line to the power-off.

Every drill that restores unattended -- onto a bigger disk, a smaller one,
an LVM machine's new disk -- boots a "new machine" the same way: a blank
disk with its own serial, its own copy of OVMF_VARS, the stick's kernel
booted directly with liferaft.action=restore. That is `restore_new_machine`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from builder.context import SERIAL_CMDLINE
from tests.boot.bootkit import ovmf_args
from tests.drill.machinekit import DrillSite

RESCUE_S = 900  # rescue boot + capture or restore of ~400 MB under TCG
NIC = ["-nic", "user,model=virtio-net-pci"]
RESCUE_CMDLINE = SERIAL_CMDLINE


@dataclass(frozen=True)
class Rescue:
    """The rescue ISO and the kernel and initrd taken out of it (direct boots)."""

    iso: Path
    vmlinuz: Path
    initrd: Path


@dataclass(frozen=True)
class RescueRun:
    """What one unattended run of the stick left: when QEMU started, how long it
    took to the power-off, and the serial console."""

    started: float  # time.monotonic() at QEMU start
    seconds: float  # start to power-off
    console: str


@dataclass(frozen=True)
class NewMachine:
    """A machine restored by the stick: its disk and its firmware (with the
    NVRAM the restore wrote its boot entry into, kept for the next boots)."""

    disk: Path
    serial: str
    firmware: list[str]
    run: RescueRun


def disk(image: Path, serial: str) -> list[str]:
    """``image`` as a virtio disk with ``serial`` (how liferaft.target=serial: finds it)."""
    return ["-drive", f"file={image},format=raw,if=none,id=d{serial}",
            "-device", f"virtio-blk-pci,drive=d{serial},serial={serial}"]  # fmt: skip


def uefi(nvram_dir: Path) -> list[str]:
    """OVMF with its own copy of the variable store (the machine's NVRAM) in ``nvram_dir``."""
    nvram_dir.mkdir(parents=True, exist_ok=True)
    return ovmf_args(nvram_dir, False)


def rescue_media(iso: Path) -> list[str]:
    """The ISO as a read-only virtio disk (a stick, to live-boot). Not -cdrom: under
    OVMF with a direct kernel boot, live-boot gives up before the IDE CD-ROM
    shows up ("Unable to find a medium containing a live file system")."""
    return ["-drive", f"file={iso},format=raw,if=none,id=live,readonly=on",
            "-device", "virtio-blk-pci,drive=live,serial=LIFERAFTISO"]  # fmt: skip


def blank_disk(path: Path, size: int) -> Path:
    """A new, empty (sparse) disk image of ``size`` bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def unattended(site: DrillSite, name: str, rescue: Rescue, action: str, options: str,
               disks: list[str], firmware: list[str] | None = None) -> RescueRun:  # fmt: skip
    """The stick's kernel booted with liferaft.action=ACTION, ``options`` (more
    liferaft.* words) and power-off; waits for its result line and the power-off
    and fails the test unless the result is SUCCESS."""
    cmdline = f"{RESCUE_CMDLINE} liferaft.poweroff=1 liferaft.action={action} {options}"
    args = [*(firmware or []), "-kernel", str(rescue.vmlinuz), "-initrd", str(rescue.initrd),
            "-append", cmdline, *rescue_media(rescue.iso), *NIC, *disks]  # fmt: skip
    vm = site.vm(name, args, 2048)
    vm.wait_for(f"LIFERAFT UNATTENDED {action.upper()}:", timeout=RESCUE_S)
    vm.wait_exit(timeout=180)
    console = vm.text()
    assert f"LIFERAFT UNATTENDED {action.upper()}: SUCCESS" in console, console[-5000:]
    return RescueRun(vm.started, time.monotonic() - vm.started, console)


def restore_new_machine(site: DrillSite, name: str, rescue: Rescue, *, size: int, serial: str,
                        repo: str, image: str, grow: bool,
                        disks: list[str] | None = None) -> NewMachine:  # fmt: skip
    """A new machine (a blank disk of ``size`` with ``serial``, its own NVRAM)
    restored by the stick, unattended, under UEFI: ``image`` from ``repo`` (a
    liferaft.repo= value), grown when ``grow``; ``disks`` are more drives
    (a repository's disk)."""
    target = blank_disk(site.work / f"{name}-disk.img", size)
    firmware = uefi(site.work / f"{name}-nvram")
    options = f"liferaft.image={image} liferaft.repo={repo} liferaft.target=serial:{serial}"
    if grow:
        options += " liferaft.grow=1"
    run = unattended(site, name, rescue, "restore", options,
                     [*(disks or []), *disk(target, serial)], firmware)  # fmt: skip
    return NewMachine(target, serial, firmware, run)
