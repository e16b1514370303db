"""The disaster-recovery drill (issue 6): a real machine is backed up over the
network, its disk is replaced by a bigger blank one, restored from the
network, and boots again -- all in QEMU (TCG), all started by this test.

1. A real machine (machinekit.py): Debian bookworm on a GPT disk with
   bios_grub, ESP, swap and ext4 root last; it boots to MARKER with BIOS and
   with UEFI (fresh NVRAM, so through the removable path EFI/BOOT).
2. Back up: the rescue ISO's kernel boots with liferaft.action=capture and a
   repository on an SFTP server on the host (10.0.2.2 from the guest); the
   password comes from a credentials file on a small FAT stick
   (liferaft.credentials=LABEL=...:PATH), never from the kernel command line:
   it must appear nowhere on the serial console.
3. Disaster: a new blank disk, 1 GiB bigger, with another serial.
4. Restore: the rescue system boots under UEFI on the "new machine"
   (its own copy of OVMF_VARS) and restores from http:// (`liferaft serve`
   on the host, same folder) with grow; bootentry.py creates the firmware
   boot entry EFI/debian/shimx64.efi.
5. It lives: the restored disk boots alone with UEFI on the same NVRAM (the
   marker shows GRUB's $cmdpath: EFI/debian, so the created entry was used),
   with BIOS, and with a fresh NVRAM (the removable path alone); the host
   then checks the root file system fills its grown partition, fsck is
   clean, and every recorded checksum is equal.

6. The restore again, this time typed into `liferaft tui` on the serial
   console (pexpect + pyte, as tests/tui/test_tui_vm.py): the repository URL,
   the image, "grow", the typed confirmation; the result must live too.

Printed: backup time, repository size (the bytes the backup moved over the
network, and what the restore fetched back), recovery time (rescue start to
the restored system's marker).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from tests.boot.bootkit import REPO, Vm
from tests.drill import machinekit as mk
from tests.drill import rescuekit as rk
from tests.drill.machinekit import DrillSite
from tests.drill.rescuekit import NIC, RESCUE_CMDLINE, Rescue, disk, rescue_media, uefi
from tests.drill.sftpkit import sftp_server
from tests.tui.test_tui_vm import SerialScreen

pytestmark = [pytest.mark.slow, pytest.mark.root]

GIB = 1024 * mk.MIB
SOURCE_SIZE = 2560 * mk.MIB
TARGET_SIZE = SOURCE_SIZE + GIB
SOURCE_SERIAL = "LRDRILLSRC"
TARGET_SERIAL = "LRDRILLNEW"
TUI_SERIAL = "LRDRILLTUI"
KEY_LABEL = "LRDRILLKEY"  # the stick with the credentials file
IMAGE = "drill"
BOOT_S = 240  # Debian under TCG: ~20-35 s, the rest is headroom for a busy host


def _boot_to_marker(vm: Vm, what: str) -> tuple[float, str]:
    """(seconds to the marker, the marker line); the machine powers itself off."""
    seconds = vm.wait_for(mk.MARKER, timeout=BOOT_S)
    vm.wait_exit(timeout=120)
    line = next(ln for ln in vm.text().splitlines() if mk.MARKER in ln)
    print(f"{what}: marker after {seconds:.0f} s: {line.strip()}")
    assert "swaps=1" in line, f"{what}: swap is not active: {line}"
    return seconds, line


def _credentials_stick(image: Path, work: Path, password: str) -> list[str]:
    """A small FAT stick labelled KEY_LABEL holding /liferaft/credentials.yaml
    (made with mtools: the host kernel has no vfat); its QEMU arguments."""
    text = f'credentials:\n  - match: drill@10.0.2.2\n    password: "{password}"\n'
    src = work / "credentials.yaml"
    src.write_text(text)
    src.chmod(0o600)
    with open(image, "wb") as f:
        f.truncate(8 * mk.MIB)
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for argv in (
        ["mkfs.vfat", "-n", KEY_LABEL, str(image)],
        ["mmd", "-i", str(image), "::/liferaft"],
        ["mcopy", "-i", str(image), str(src), "::/liferaft/credentials.yaml"],
    ):
        subprocess.run(argv, check=True, capture_output=True, env=env)
    src.unlink()
    return ["-drive", f"file={image},format=raw,if=none,id=dkey,readonly=on",
            "-device", f"virtio-blk-pci,drive=dkey,serial={KEY_LABEL}"]  # fmt: skip


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@contextlib.contextmanager
def liferaft_serve(repo: Path) -> Iterator[int]:
    """`liferaft serve` of ``repo`` on 127.0.0.1; stopped at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rescue_app.cli", "serve", "--repo", str(repo),
         "--port", str(port), "--bind", "127.0.0.1"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"liferaft serve did not start: {err}")
            time.sleep(0.2)
        yield port
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Backup:
    machine: mk.Machine
    repo: Path  # the folder the SFTP server wrote, served again over HTTP
    source_fs: int  # bytes of the source's root file system
    seconds: float  # rescue start to power-off
    moved: int  # bytes stored in the repository, all sent over SFTP


@pytest.fixture(scope="module")
def backup(site: DrillSite, rescue: Rescue) -> Backup:
    """Steps 1-3: the real machine boots, is backed up over SFTP, its disk is gone."""
    work = site.work

    # -- 1. a real machine -------------------------------------------------
    machine = mk.build_machine(work / "machine.img", SOURCE_SIZE, work)
    _, line = _boot_to_marker(site.vm("src-bios", disk(machine.image, SOURCE_SERIAL)), "BIOS")
    assert "cmdpath=(hd0)" in line
    _, line = _boot_to_marker(
        site.vm("src-uefi", [*uefi(work / "src-uefi"), *disk(machine.image, SOURCE_SERIAL)]),
        "UEFI, fresh NVRAM",
    )  # fmt: skip
    assert "/EFI/BOOT" in line  # no boot entry yet: the removable path
    blocks, bsize, _ = mk.root_block_count(machine.image)

    # -- 2. back up over the network ----------------------------------------
    served = work / "server"
    served.mkdir()
    password = secrets.token_hex(12)
    stick = _credentials_stick(work / "credentials-stick.img", work, password)
    with sftp_server(str(served), "drill", password) as sftp:
        options = (
            f"liferaft.image={IMAGE} liferaft.repo=sftp://drill@10.0.2.2:{sftp.port}/repo "
            f"liferaft.target=serial:{SOURCE_SERIAL} "
            f"liferaft.credentials=LABEL={KEY_LABEL}:/liferaft/credentials.yaml"
        )
        assert password not in options  # so not in the guest's /proc/cmdline either
        run = rk.unattended(site, "backup", rescue, "capture", options,
                            [*disk(machine.image, SOURCE_SERIAL), *stick])  # fmt: skip
    backup_s, console = run.seconds, run.console
    loaded = f"credentials from LABEL={KEY_LABEL}:/liferaft/credentials.yaml: 1 entry"
    assert loaded in console, console[-5000:]
    assert password not in console, "the password showed up on the serial console"
    repo = served / "repo"
    moved = _tree_bytes(repo)
    print(f"backup: {backup_s:.0f} s from rescue start to power-off, "
          f"{moved / 1e6:.0f} MB stored over SFTP")  # fmt: skip

    # -- 3. disaster ----------------------------------------------------------
    machine.image.unlink()
    return Backup(machine, repo, blocks * bsize, backup_s, moved)


def _it_lives(site: DrillSite, target: Path, serial: str, firmware: list[str],
              backup: Backup, name: str) -> float:  # fmt: skip
    """Step 5: boots with the firmware entry, root grown, checksums equal.
    Returns the monotonic time the marker was seen."""
    _, line = _boot_to_marker(site.vm(f"{name}-uefi", [*firmware, *disk(target, serial)]),
                              f"{name}: restored, UEFI, same NVRAM")  # fmt: skip
    marker_at = time.monotonic()
    assert "/EFI/debian" in line, "the firmware did not take the created boot entry"
    blocks, bsize, part_bytes = mk.root_block_count(target)
    grown = blocks * bsize
    print(f"{name}: root file system {backup.source_fs / 1e6:.0f} MB -> {grown / 1e6:.0f} MB "
          f"(partition {part_bytes / 1e6:.0f} MB)")  # fmt: skip
    assert grown > backup.source_fs + GIB * 9 // 10, "the root file system was not grown"
    assert part_bytes - grown < 4 * mk.MIB, "the root file system does not fill its partition"
    checksums = mk.file_checksums(target, list(backup.machine.checksums))
    assert checksums == backup.machine.checksums
    return marker_at


def test_unattended_restore_boots_again(site: DrillSite, backup: Backup, rescue: Rescue) -> None:
    """Steps 4-5 in unattended mode, then the restored disk under BIOS and with
    the removable path alone."""
    with liferaft_serve(backup.repo) as port:
        new = rk.restore_new_machine(site, "restore", rescue, size=TARGET_SIZE,
                                     serial=TARGET_SERIAL, repo=f"http://10.0.2.2:{port}/",
                                     image=IMAGE, grow=True)  # fmt: skip
    target, firmware, console = new.disk, new.firmware, new.run.console
    print(f"restore: {new.run.seconds:.0f} s from rescue start to power-off, "
          f"{backup.moved / 1e6:.0f} MB repository read over HTTP")  # fmt: skip
    entry_lines = [ln for ln in console.splitlines() if "boot entry" in ln]
    print("\n".join(entry_lines))
    assert any("created boot entry" in ln for ln in entry_lines), console[-5000:]

    recovery_s = _it_lives(site, target, TARGET_SERIAL, firmware, backup, "unattended")
    recovery_s -= new.run.started
    _, line = _boot_to_marker(site.vm("new-bios", disk(target, TARGET_SERIAL)),
                              "restored, BIOS")  # fmt: skip
    assert "cmdpath=(hd0)" in line
    _, line = _boot_to_marker(
        site.vm("new-uefi-fresh", [*uefi(site.work / "new-uefi-fresh"),
                                   *disk(target, TARGET_SERIAL)]),
        "restored, UEFI, fresh NVRAM (removable path alone)",
    )  # fmt: skip
    assert "/EFI/BOOT" in line
    print(f"DRILL: backup {backup.seconds:.0f} s, {backup.moved / 1e6:.0f} MB moved; "
          f"recovery (rescue start -> restored marker) {recovery_s:.0f} s")  # fmt: skip


def test_restore_through_the_tui(site: DrillSite, backup: Backup, rescue: Rescue) -> None:
    """Step 4 again, typed into `liferaft tui` on the serial console: the URL of
    the repository, the image, grow, the typed confirmation."""
    target = rk.blank_disk(site.work / "tui-disk.img", TARGET_SIZE)
    firmware = uefi(site.work / "tui-machine")
    with liferaft_serve(backup.repo) as port:
        argv = [
            "-accel", "tcg", "-m", "2048", "-smp", "2", "-display", "none", "-monitor", "none",
            "-no-reboot", "-serial", "stdio", *firmware, "-kernel", str(rescue.vmlinuz),
            "-initrd", str(rescue.initrd), "-append", RESCUE_CMDLINE, *rescue_media(rescue.iso),
            *NIC, *disk(target, TUI_SERIAL),
        ]  # fmt: skip
        started = time.monotonic()
        child = pexpect.spawn("qemu-system-x86_64", argv, dimensions=(24, 80), timeout=30)
        try:
            console = SerialScreen(child)
            console.wait_for("Restore an image onto a disk", timeout=300)
            console.send("r")
            console.wait_for("Where are the images?", timeout=60)
            console.send("\x14")  # ctrl+t: type a path or URL
            # Textual moves the focus after the keys already queued: let it
            # land on the field before typing, or the first letters go elsewhere.
            console.pump(1.5)
            console.send(f"http://10.0.2.2:{port}/\r")
            console.wait_for(IMAGE, timeout=120)
            console.send("\r")
            console.wait_for("ERASES everything on", timeout=120)
            console.send("\t ")  # from the target list to "Grow the last partition", tick it
            console.wait_for("(grown)", timeout=60)
            console.send("\x0e")  # ctrl+n
            text = console.wait_for("type the name of each target disk", timeout=60)
            match = re.search(r"target disk \((/dev/\w+)\)", text.replace("\n", " "))
            assert match, text
            console.send(match.group(1) + "\r")
            text = console.wait_for("Press Enter for the home screen", timeout=600)
            assert "Done." in text, text
            assert "Traceback" not in bytes(console.raw).decode("utf-8", "replace")
            print(f"tui: restored {time.monotonic() - started:.0f} s after the rescue start")
            console.send("\r")
            console.wait_for("Restore an image onto a disk", timeout=60)
        finally:
            child.terminate(force=True)
    marker_at = _it_lives(site, target, TUI_SERIAL, firmware, backup, "tui")
    print(f"tui: recovery (rescue start -> restored marker, keys typed by the test) "
          f"{marker_at - started:.0f} s")  # fmt: skip


SMALL_SIZE = SOURCE_SIZE * 3 // 5  # 60 % of the original disk
SMALL_SERIAL = "LRDRILLSML"


def test_restore_onto_a_smaller_disk_boots(site: DrillSite, backup: Backup, rescue: Rescue) -> None:
    """Issue 13: the machine restored (unattended, over HTTP) onto a disk 60 %
    of its size: the root shrinks and is laid back file-level (same UUID, so
    fstab and GRUB find it), the rest block-level; it boots with the created
    UEFI entry, with BIOS (GRUB's core in bios_grub reads the new root), and
    every recorded file is equal."""
    with liferaft_serve(backup.repo) as port:
        new = rk.restore_new_machine(site, "restore-small", rescue, size=SMALL_SIZE,
                                     serial=SMALL_SERIAL, repo=f"http://10.0.2.2:{port}/",
                                     image=IMAGE, grow=False)  # fmt: skip
    target, firmware = new.disk, new.firmware
    assert "shrunk from" in new.run.console, new.run.console[-5000:]
    print(f"small disk: restored in {new.run.seconds:.0f} s from rescue start to power-off")
    _, line = _boot_to_marker(site.vm("small-uefi", [*firmware, *disk(target, SMALL_SERIAL)]),
                              "smaller disk, UEFI, same NVRAM")  # fmt: skip
    assert "/EFI/debian" in line, "the firmware did not take the created boot entry"
    _, line = _boot_to_marker(site.vm("small-bios", disk(target, SMALL_SERIAL)),
                              "smaller disk, BIOS")  # fmt: skip
    assert "cmdpath=(hd0)" in line
    _blocks, _bsize, part_bytes = mk.root_block_count(target)  # e2fsck -f -n clean too
    assert part_bytes < SMALL_SIZE
    checksums = mk.file_checksums(target, list(backup.machine.checksums))
    assert checksums == backup.machine.checksums
