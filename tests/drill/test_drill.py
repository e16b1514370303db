"""The disaster-recovery drill (issue 6): a real machine is backed up over the
network, its disk is replaced by a bigger blank one, restored from the
network, and boots again -- all in QEMU (TCG), all started by this test.

1. A real machine (machinekit.py): Debian bookworm on a GPT disk with
   bios_grub, ESP, swap and ext4 root last; it boots to MARKER with BIOS and
   with UEFI (fresh NVRAM, so through the removable path EFI/BOOT).
2. Back up: the rescue ISO's kernel boots with liferaft.action=capture and a
   repository on an SFTP server on the host (10.0.2.2 from the guest); the
   password reaches the unattended service through systemd.setenv=.
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

Printed: backup time, repository size (the bytes the backup moved over the
network, and what the restore fetched back), recovery time (rescue start to
the restored system's marker).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.boot.bootkit import REPO, Vm, ovmf_args
from tests.drill import machinekit as mk
from tests.drill.sftpkit import sftp_server

pytestmark = [pytest.mark.slow, pytest.mark.root]

GIB = 1024 * mk.MIB
SOURCE_SIZE = 2560 * mk.MIB
TARGET_SIZE = SOURCE_SIZE + GIB
SOURCE_SERIAL = "LRDRILLSRC"
TARGET_SERIAL = "LRDRILLNEW"
IMAGE = "drill"
BOOT_S = 240  # Debian under TCG: ~20-35 s, the rest is headroom for a busy host
RESCUE_S = 900  # rescue boot + capture or restore of ~400 MB under TCG
NIC = ["-nic", "user,model=virtio-net-pci"]


def _disk(image: Path, serial: str) -> list[str]:
    return ["-drive", f"file={image},format=raw,if=none,id=d{serial}",
            "-device", f"virtio-blk-pci,drive=d{serial},serial={serial}"]  # fmt: skip


def _boot_to_marker(vm: Vm, what: str) -> tuple[float, str]:
    """(seconds to the marker, the marker line); the machine powers itself off."""
    seconds = vm.wait_for(mk.MARKER, timeout=BOOT_S)
    vm.wait_exit(timeout=120)
    line = next(ln for ln in vm.text().splitlines() if mk.MARKER in ln)
    print(f"{what}: marker after {seconds:.0f} s: {line.strip()}")
    assert "swaps=1" in line, f"{what}: swap is not active: {line}"
    return seconds, line


def _rescue(vm: Vm, what: str) -> tuple[float, str]:
    vm.wait_for(f"LIFERAFT UNATTENDED {what.upper()}:", timeout=RESCUE_S)
    vm.wait_exit(timeout=180)
    console = vm.text()
    assert f"LIFERAFT UNATTENDED {what.upper()}: SUCCESS" in console, console[-5000:]
    return time.monotonic() - vm.started, console


def _uefi(nvram_dir: Path) -> list[str]:
    """OVMF with its own copy of the variable store (the machine's NVRAM) in ``nvram_dir``."""
    nvram_dir.mkdir(parents=True, exist_ok=True)
    return ovmf_args(nvram_dir, False)


def _rescue_media(iso: Path) -> list[str]:
    """The ISO as a read-only virtio disk (a stick, to live-boot). Not -cdrom: under
    OVMF with a direct kernel boot, live-boot gives up before the IDE CD-ROM
    shows up ("Unable to find a medium containing a live file system")."""
    return ["-drive", f"file={iso},format=raw,if=none,id=live,readonly=on",
            "-device", "virtio-blk-pci,drive=live,serial=LIFERAFTISO"]  # fmt: skip


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


def test_drill(rescue_iso: Path, rescue_kernel: tuple[Path, Path],
               drill_vm: Callable[..., Vm], workdir: str) -> None:  # fmt: skip
    vmlinuz, initrd = rescue_kernel
    work = Path(workdir)

    # -- 1. a real machine -------------------------------------------------
    machine = mk.build_machine(work / "machine.img", SOURCE_SIZE, work)
    _, line = _boot_to_marker(drill_vm("src-bios", _disk(machine.image, SOURCE_SERIAL)), "BIOS")
    assert "cmdpath=(hd0)" in line
    _, line = _boot_to_marker(
        drill_vm("src-uefi", [*_uefi(work / "src-uefi"),
                              *_disk(machine.image, SOURCE_SERIAL)]),
        "UEFI, fresh NVRAM",
    )  # fmt: skip
    assert "/EFI/BOOT" in line  # no boot entry yet: the removable path
    blocks, bsize, _ = mk.root_block_count(machine.image)
    source_fs = blocks * bsize

    # -- 2. back up over the network ----------------------------------------
    served = work / "server"
    served.mkdir()
    password = secrets.token_hex(12)
    base = "boot=live console=ttyS0,115200n8 quiet liferaft.poweroff=1"
    with sftp_server(str(served), "drill", password) as sftp:
        cmdline = (
            f"{base} liferaft.action=capture liferaft.image={IMAGE} "
            f"liferaft.repo=sftp://drill@10.0.2.2:{sftp.port}/repo "
            f"liferaft.target=serial:{SOURCE_SERIAL} systemd.setenv=LIFERAFT_PASSWORD={password}"
        )
        vm = drill_vm("backup", ["-kernel", str(vmlinuz), "-initrd", str(initrd),
                                 "-append", cmdline, *_rescue_media(rescue_iso), *NIC,
                                 *_disk(machine.image, SOURCE_SERIAL)], 2048)  # fmt: skip
        backup_s, _ = _rescue(vm, "capture")
    repo = served / "repo"
    moved = _tree_bytes(repo)
    print(f"backup: {backup_s:.0f} s from rescue start to power-off, "
          f"{moved / 1e6:.0f} MB stored over SFTP")  # fmt: skip

    # -- 3. disaster ----------------------------------------------------------
    machine.image.unlink()
    target = work / "new-disk.img"
    with open(target, "wb") as f:
        f.truncate(TARGET_SIZE)

    # -- 4. restore from the network onto the new disk, under UEFI -------------
    nvram = work / "new-machine"
    firmware = _uefi(nvram)  # this machine's NVRAM, kept for step 5
    with liferaft_serve(repo) as port:
        cmdline = (
            f"{base} liferaft.action=restore liferaft.image={IMAGE} liferaft.grow=1 "
            f"liferaft.repo=http://10.0.2.2:{port}/ liferaft.target=serial:{TARGET_SERIAL}"
        )
        vm = drill_vm("restore", [*firmware, "-kernel", str(vmlinuz), "-initrd", str(initrd),
                                  "-append", cmdline, *_rescue_media(rescue_iso), *NIC,
                                  *_disk(target, TARGET_SERIAL)], 2048)  # fmt: skip
        rescue_started = vm.started
        restore_s, console = _rescue(vm, "restore")
    print(f"restore: {restore_s:.0f} s from rescue start to power-off, "
          f"{moved / 1e6:.0f} MB repository read over HTTP")  # fmt: skip
    entry_lines = [ln for ln in console.splitlines() if "boot entry" in ln]
    print("\n".join(entry_lines))
    assert any("created boot entry" in ln for ln in entry_lines), console[-5000:]

    # -- 5. it lives ---------------------------------------------------------
    vm = drill_vm("new-uefi", [*firmware, *_disk(target, TARGET_SERIAL)])
    _, line = _boot_to_marker(vm, "restored, UEFI, same NVRAM")
    recovery_s = time.monotonic() - rescue_started
    assert "/EFI/debian" in line, "the firmware did not take the created boot entry"
    _, line = _boot_to_marker(drill_vm("new-bios", _disk(target, TARGET_SERIAL)),
                              "restored, BIOS")  # fmt: skip
    assert "cmdpath=(hd0)" in line
    _, line = _boot_to_marker(
        drill_vm("new-uefi-fresh", [*_uefi(work / "new-uefi-fresh"),
                                    *_disk(target, TARGET_SERIAL)]),
        "restored, UEFI, fresh NVRAM (removable path alone)",
    )  # fmt: skip
    assert "/EFI/BOOT" in line

    blocks, bsize, part_bytes = mk.root_block_count(target)
    grown = blocks * bsize
    print(f"root file system: {source_fs / 1e6:.0f} MB -> {grown / 1e6:.0f} MB "
          f"(partition {part_bytes / 1e6:.0f} MB)")  # fmt: skip
    assert grown > source_fs + GIB * 9 // 10, "the root file system was not grown"
    assert part_bytes - grown < 4 * mk.MIB, "the root file system does not fill its partition"
    assert mk.file_checksums(target, list(machine.checksums)) == machine.checksums

    print(f"DRILL: backup {backup_s:.0f} s, {moved / 1e6:.0f} MB moved; "
          f"recovery (rescue start -> restored marker) {recovery_s:.0f} s")  # fmt: skip
