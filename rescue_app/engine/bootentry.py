"""Firmware boot entries for restored disks (UEFI).

A UEFI machine boots what its NVRAM names: ``BootXXXX`` entries pointing at a
loader on an EFI system partition, by that partition's GUID. A disk restored
onto new hardware (or a new disk) has no entry, and only boots if the
removable-media path EFI/BOOT/BOOTX64.EFI happens to be there. After a
restore under UEFI this module finds each restored disk's ESP, looks for the
distribution's own loader (``EFI/<vendor>/shimx64.efi``, else
``grubx64.efi``; never EFI/BOOT, which needs no entry) and creates an entry
with efibootmgr, unless one with the same partition and loader exists.

What it may touch: the ESP is mounted read-only on a private folder and
unmounted again; the only write is efibootmgr's to the firmware. Anything
missing (no /sys/firmware/efi, no efibootmgr, no ESP, no loader) is a note
for the result, never a failure of the restore: the data is already there.
The pure parts (choosing the loader, the efibootmgr argv, recognising an
existing entry) are unit-tested without root or firmware.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.diskscan import find_disk
from rescue_app.engine.mounts import mounted
from rescue_app.errors import LiferaftError
from rescue_app.run import run

log = logging.getLogger("liferaft.bootentry")

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
EFI_FIRMWARE = "/sys/firmware/efi"
# Preference order: shim first, so that Secure Boot machines keep working.
LOADERS = ("shimx64.efi", "grubx64.efi")
REMOVABLE_DIR = "boot"  # EFI/BOOT: the firmware's fallback, needs no entry


@dataclass(frozen=True)
class BootEntry:
    disk: str  # /dev path of the whole disk
    partition: int  # number of the ESP on it
    partuuid: str | None  # how the firmware finds the partition again
    label: str  # shown in the firmware's boot menu
    loader: str  # \EFI\vendor\shimx64.efi, as efibootmgr wants it

    def describe(self) -> str:
        return f"{self.label}: {self.disk} partition {self.partition} {self.loader}"


def find_loader(files: Iterable[str]) -> tuple[str, str] | None:
    """(vendor, loader path in EFI notation) from the files of an ESP, or None.

    ``files`` are paths relative to the ESP's root with ``/`` separators, in
    any case (FAT ignores it): ``EFI/debian/shimx64.efi``. Vendors are tried
    in name order so the answer does not depend on directory order.
    """
    found: dict[str, dict[str, str]] = {}
    for path in files:
        parts = [p for p in path.strip("/").split("/") if p]
        if len(parts) != 3 or parts[0].lower() != "efi":
            continue
        vendor, name = parts[1], parts[2]
        if vendor.lower() == REMOVABLE_DIR or name.lower() not in LOADERS:
            continue
        found.setdefault(vendor, {})[name.lower()] = name
    for vendor in sorted(found, key=str.lower):
        for loader in LOADERS:
            if loader in found[vendor]:
                return vendor, f"\\EFI\\{vendor}\\{found[vendor][loader]}"
    return None


def efibootmgr_argv(entry: BootEntry) -> list[str]:
    return ["efibootmgr", "--create", "--disk", entry.disk, "--part", str(entry.partition),
            "--label", entry.label, "--loader", entry.loader]  # fmt: skip


def entry_exists(efibootmgr_verbose: str, entry: BootEntry) -> bool:
    """Whether `efibootmgr -v` already lists this partition and loader."""
    if not entry.partuuid:
        return False
    want_uuid = entry.partuuid.lower()
    want_loader = entry.loader.lower()
    for line in efibootmgr_verbose.splitlines():
        if not re.match(r"Boot[0-9A-Fa-f]{4}", line):
            continue
        low = line.lower()
        if want_uuid in low and f"file({want_loader})" in low:
            return True
    return False


def esp_partitions(disk: BlockDisk) -> list[tuple[int, str, str | None]]:
    """(number, node, partuuid) of each EFI system partition of ``disk``."""
    return [(p.number, p.path, p.partuuid) for p in disk.partitions
            if (p.parttype or "").lower() == ESP_TYPE]  # fmt: skip


def _esp_files(point: str) -> list[str]:
    """Paths two levels under EFI/ (all a loader can be), relative to the ESP."""
    out: list[str] = []
    efi = next((e for e in os.listdir(point) if e.lower() == "efi"), None)
    if efi is None:
        return out
    for vendor in os.listdir(os.path.join(point, efi)):
        vdir = os.path.join(point, efi, vendor)
        if os.path.isdir(vdir):
            out += [f"{efi}/{vendor}/{name}" for name in os.listdir(vdir)]
    return out


def plan_entries(disk: BlockDisk, notes: list[str]) -> list[BootEntry]:
    entries = []
    esps = esp_partitions(disk)
    if not esps:
        notes.append(f"{disk.path} has no EFI system partition; no boot entry was created")
    for number, node, partuuid in esps:
        with mounted(node, "vfat", prefix="liferaft-esp-") as point:
            found = find_loader(_esp_files(point))
        if found is None:
            notes.append(f"{node}: no EFI/<vendor>/shimx64.efi or grubx64.efi; "
                         "no boot entry was created")  # fmt: skip
            continue
        vendor, loader = found
        entries.append(BootEntry(disk.path, number, partuuid, vendor, loader))
    return entries


def recreate_boot_entries(disks: Sequence[str], *, firmware: str = EFI_FIRMWARE) -> list[str]:
    """Create the firmware boot entry of each restored disk; notes for the result."""
    if not os.path.isdir(firmware):
        return []  # BIOS: the boot code restored with the disk is all it needs
    notes: list[str] = []
    for path in disks:
        try:
            disk = find_disk(path)
            if disk.transport == "loop" or disk.backing_file:
                # A file behind a loop device is not something firmware boots;
                # and a test on a UEFI workstation must not touch its NVRAM.
                continue
            entries = plan_entries(disk, notes)
            if not entries:
                continue
            listing = run(["efibootmgr", "-v"], check=False, timeout=60).stdout
            for entry in entries:
                if entry_exists(listing, entry):
                    notes.append(f"boot entry {entry.describe()} already exists")
                    continue
                run(efibootmgr_argv(entry), timeout=60)
                log.info("created boot entry %s", entry.describe())
                notes.append(f"created the UEFI boot entry {entry.describe()}")
        except LiferaftError as exc:
            # efibootmgr missing, read-only efivars, an ESP that does not
            # mount: the restored disk is fine, it just needs an entry made.
            notes.append(f"no UEFI boot entry for {path}: {exc.message}"
                         + (f" ({exc.hint})" if exc.hint else ""))  # fmt: skip
        except OSError as exc:
            notes.append(f"no UEFI boot entry for {path}: {exc}")
    return notes
