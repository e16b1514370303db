"""The LVM drill (issues 12 and 14): a running Debian whose root is on LVM is
backed up online by the liferaft it has installed, restored by the stick onto
a bigger disk, grown, and boots again with UEFI and with BIOS.

1. The machine (lvmkit.py): Debian's guided LVM layout (bios_grub, ESP,
   /boot, a PV with root and swap_1); the LVM part is made in one rescue-ISO
   guest (no device-mapper here), once: the disk is cached.
2. It boots (BIOS, GRUB from the disk) with a repository disk attached,
   installs this tree's liferaft package from it (dpkg -i),
   systemd as PID 1, a writer service keeps replacing files (each carrying
   its own checksum), a stale liferaft-snap-root lies around as after a
   crash, `liferaft schedule` enables a daily timer (with --keep-last 3)
   and its service, started as the timer starts it, captures the running
   system (lvm_backup.sh): root from an LVM snapshot, /boot and the ESP
   file by file, swap not stored; then forget --prune runs.
   Afterwards no liferaft-snap-* LV is left (the stale one too), the writer
   still runs, root is still mounted read-write. A second schedule, into an
   SFTP server that does not answer, fails: its unit's result is exit-code,
   status 1, with one "liferaft: error:" line in the journal.
3. The disk dies. The stick's unattended restore (UEFI, liferaft.grow=1)
   lays the image onto a disk 1 GiB bigger; the PV and the root LV grow.
4. The restored disk boots with UEFI through the boot entry the restore
   created, then with BIOS: each boot checks, in the machine, fsck of root
   (from a snapshot), /boot and the ESP, the payload's checksums and that
   every writer file is whole, and reports the root LV and its file system.

This replaces the rescue-system-only online LVM test (tests/guest/
online_lvm.sh): every check it made is made here, in a booted machine.
Printed: machine build, backup, restore and boot times, the image's size.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.drill import lvmkit
from tests.drill import machinekit as mk
from tests.drill import rescuekit as rk
from tests.drill.machinekit import DrillSite
from tests.drill.rescuekit import Rescue, disk

pytestmark = [pytest.mark.slow, pytest.mark.root]

GIB = 1024 * mk.MIB
SOURCE_SIZE = 2560 * mk.MIB
TARGET_SIZE = SOURCE_SIZE + GIB
SOURCE_SERIAL = "LRLVMSRC"
TARGET_SERIAL = "LRLVMNEW"
REPO_SERIAL = "LRLVMREPO"
BACKUP_BOOT_S = 1200  # boot + online backup of ~700 MB under TCG
BOOT_S = 300
BACKUP_SCRIPT = Path(__file__).with_name("lvm_backup.sh")  # run by the machine from that disk


def _boot(site: DrillSite, name: str, args: list[str], timeout: float) -> dict[str, str]:
    """Boot to the LVM machine's marker; its key=value figures."""
    vm = site.vm(name, args)
    seconds = vm.wait_for(lvmkit.MARKER, timeout=timeout)
    vm.wait_exit(timeout=120)
    line = lvmkit.MARKER + vm.text().split(lvmkit.MARKER, 1)[1].splitlines()[0]
    print(f"{name}: marker after {seconds:.0f} s: {line.strip()}")
    fields = lvmkit.marker_fields(line)
    fields["boot_s"] = f"{seconds:.0f}"
    fields["console"] = str(vm.serial)
    assert fields["pid1"] == "systemd", line
    assert fields["root"] == lvmkit.ROOT_DEV, line
    assert fields["swaps"] == "1", f"the swap LV is not active: {line}"
    return fields


def _whole(fields: dict[str, str]) -> None:
    """What each boot checks in the machine: fsck clean, files equal and whole."""
    console = Path(fields["console"]).read_text("utf-8", "replace")[-5000:]
    assert fields["fsck"] == "ok", console
    assert fields["static"] == "ok", console
    assert fields["torn"] == "0", console


def _repo_disk(path: Path, deb: Path) -> list[str]:
    """The repository's disk, holding the liferaft package the machine installs."""
    with open(path, "wb") as f:
        f.truncate(3 * GIB)
    mk._run(["mkfs.ext4", "-q", "-F", "-L", lvmkit.REPO_LABEL, str(path)])
    with mk.mounted(str(path)) as mnt:
        shutil.copyfile(deb, mnt / "liferaft.deb")
        shutil.copyfile(BACKUP_SCRIPT, mnt / "backup.sh")
    return disk(path, REPO_SERIAL)


def _image_bytes(repo_disk: Path) -> int:
    """The repository's size and what liferaft lists in it (printed)."""
    with mk.mounted(str(repo_disk), read_only=True) as mnt:
        repo = mnt / "repo"
        size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
        proc = subprocess.run(
            [sys.executable, "-m", "rescue_app.cli", "images", "--repo", str(repo)],
            cwd=mk.REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        print(proc.stdout)
    return size


def test_lvm_root_backed_up_online_restored_grown_and_booting(
    site: DrillSite, rescue: Rescue
) -> None:
    work = site.work

    # -- 1. the machine ------------------------------------------------------
    deb = lvmkit.build_deb(work / "deb")
    machine = lvmkit.lvm_machine(work / "lvm-machine.img", SOURCE_SIZE, work, rescue.iso, deb)

    # -- 2. running, backed up online -----------------------------------------
    repo_disk = work / "lvm-repo.img"
    repo = _repo_disk(repo_disk, deb)
    src = _boot(site, "lvm-src-bios", [*disk(machine.image, SOURCE_SERIAL), *repo],
                BACKUP_BOOT_S)  # fmt: skip
    _whole(src)
    console = Path(src["console"]).read_text("utf-8", "replace")
    assert src["cmdpath"] == "(hd0)", src
    # the scheduled run: the timer enabled and waiting, its service ran the backup
    assert src["timer"] == "enabled/active", src
    assert src["next"] != "none", "the timer has no next run: its OnCalendar= was not read"
    assert (src["backup"], src["result"]) == ("0", "success"), console[-6000:]
    assert src["writer"] == "active", "the writer stopped during the backup"
    writer_lines = [ln for ln in console.splitlines() if ln.startswith("WRITER: ")]
    assert int(src["writes"] or 0) > 20, "\n".join([str(src), *writer_lines])
    assert src["snaps"] == "0", "a liferaft-snap LV was left (the stale one or the backup's)"
    assert src["rootrw"] == "rw", "root is no longer mounted read-write"
    backup_lines = [ln for ln in console.splitlines() if ln.startswith("BACKUP: ")]
    print("\n".join(backup_lines))
    assert any("liferaft forget --repo /mnt/repo/repo --name drill-lvm --keep-last 3 --prune"
               in ln for ln in backup_lines), "the schedule's retention did not run"  # fmt: skip
    # a failing scheduled run: the unit fails with liferaft's status, one error line
    fail_lines = [ln for ln in console.splitlines() if ln.startswith("FAILLOG: ")]
    print("\n".join(fail_lines))
    assert (src["failresult"], src["failstatus"]) == ("exit-code", "1"), src
    assert src["faillines"] == "1" and "cannot connect to 127.0.0.1 port 2" in fail_lines[0], src
    assert src["failleft"] == "0", "schedule --remove left the failing schedule"
    summary = "\n".join(backup_lines)
    assert re.search(
        r"logical volume root \(ext4\): block level, used blocks \(in use: read from the "
        r"snapshot liferaft-snap-root",
        summary,
    ), summary
    # the mounted ESP (vfat: no snapshot) and /boot, file by file
    for part in ("partition 2 (vfat)", "partition 3 (ext4)"):
        assert f"{part}: file by file from the mounted tree" in summary, summary
    image_bytes = _image_bytes(repo_disk)
    print(f"backup: {src['seconds']} s online, repository {image_bytes / 1e6:.0f} MB, "
          f"writer replaced {src['writes']} files meanwhile")  # fmt: skip

    # -- 3. disaster, restore by the stick ---------------------------------------
    machine.image.unlink()
    new = rk.restore_new_machine(site, "lvm-restore", rescue, size=TARGET_SIZE,
                                 serial=TARGET_SERIAL, repo=f"LABEL={lvmkit.REPO_LABEL}:/repo",
                                 image=lvmkit.IMAGE, grow=True, disks=repo)  # fmt: skip
    target, firmware, restore_s, console = new.disk, new.firmware, new.run.seconds, new.run.console
    assert any("created boot entry" in ln for ln in console.splitlines()), console[-5000:]
    print(f"restore: {restore_s:.0f} s from rescue start to power-off")

    # -- 4. it lives, grown ---------------------------------------------------------
    started = time.monotonic()
    uefi = _boot(site, "lvm-new-uefi", [*firmware, *disk(target, TARGET_SERIAL)], BOOT_S)
    bios = _boot(site, "lvm-new-bios", disk(target, TARGET_SERIAL), BOOT_S)
    boots_s = time.monotonic() - started
    grown = int(uefi["rootlv"]) - int(src["rootlv"])
    print(f"root LV {int(src['rootlv']) / 1e6:.0f} MB -> {int(uefi['rootlv']) / 1e6:.0f} MB, "
          f"file system {int(uefi['rootfs']) / 1e6:.0f} MB; VG free {src['vgfree']} B -> "
          f"{uefi['vgfree']} B")  # fmt: skip
    assert "/EFI/debian" in uefi["cmdpath"], "the firmware did not take the created boot entry"
    assert bios["cmdpath"] == "(hd0)", bios
    assert uefi["vgfree"] == src["vgfree"], "the restore did not keep the VG's free space"
    _whole(uefi)
    _whole(bios)
    assert int(uefi["files"]) > 0, "no writer file in the image"
    assert uefi["backup"] == "none"
    assert grown > GIB * 9 // 10, "the root LV was not grown"
    assert int(uefi["rootlv"]) - int(uefi["rootfs"]) < 4 * mk.MIB, "root does not fill its LV"
    assert bios["rootlv"] == uefi["rootlv"] and bios["files"] == uefi["files"]
    print(f"LVM DRILL: machine built {machine.seconds:.0f} s; backup {src['seconds']} s online "
          f"(boot to marker {src['boot_s']} s); image {image_bytes / 1e6:.0f} MB; restore "
          f"{restore_s:.0f} s; restored boots UEFI {uefi['boot_s']} s, BIOS {bios['boot_s']} s "
          f"(both {boots_s:.0f} s)")  # fmt: skip
