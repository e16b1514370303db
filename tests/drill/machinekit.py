"""The drill's "real machine": a bootable Debian bookworm on a GPT disk image.

The root file system comes from mmdebstrap once and is cached as a tarball
under cache/drill/ (LIFERAFT_DRILL_CACHE), keyed by everything that goes into
it; each drill lays it onto a fresh sparse disk image:

    1  bios_grub   1 MiB   core.img of GRUB for BIOS (grub-install i386-pc)
    2  ESP        64 MiB   vfat: EFI/debian/{shimx64,grubx64,mmx64}.efi + grub.cfg
                           and the removable path EFI/BOOT/{BOOTX64,grubx64}.efi
    3  swap      128 MiB
    4  root      the rest  ext4, LAST so that a restore can grow it

The ESP gets what `grub-install --uefi-secure-boot` installs on Debian (the
signed shim and GRUB), written with mtools because the host kernel has no
vfat. GRUB hands its ``$cmdpath`` to the kernel as ``drill.cmdpath=``, so the
marker line tells which loader path the firmware took. fstab and GRUB name
file systems by UUID. A unit prints MARKER on ttyS0 and powers the machine off.

This module owns only files and loop devices it creates; every loop device
and mount is released, also on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.boot.bootkit import Vm

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = os.environ.get("LIFERAFT_DRILL_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "linux-image-amd64", "systemd-sysv", "initramfs-tools", "udev", "e2fsprogs",
    "util-linux", "grub-pc-bin", "grub-efi-amd64-bin",
)  # fmt: skip
MARKER = "LIFERAFT-DRILL-MARKER ok"
MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

# Kernel modules a QEMU guest never needs: dropping them makes the root (and
# so every backup and restore of it) a few hundred MB smaller.
_PRUNE = (
    "sound", "drivers/gpu", "drivers/net/wireless", "drivers/media", "drivers/infiniband",
    "drivers/staging", "drivers/bluetooth", "drivers/isdn", "drivers/iio", "drivers/hid",
    "drivers/net/ethernet", "net/wireless", "net/bluetooth", "net/mac80211", "fs/ocfs2",
    "fs/btrfs", "fs/xfs", "fs/nfs", "fs/smb", "fs/gfs2", "drivers/md", "drivers/scsi/qla2xxx",
    "drivers/scsi/lpfc", "drivers/net/can", "drivers/usb/gadget", "drivers/input/touchscreen",
)  # fmt: skip

_MARKER_SCRIPT = f"""#!/bin/sh
# Printed on the serial console once the system is up (the drill waits for it).
cmdpath=$(sed -n 's/.*drill\\.cmdpath=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
swaps=$(($(wc -l < /proc/swaps) - 1))
root=$(findmnt -n -o SOURCE /)
echo "{MARKER} cmdpath=${{cmdpath:-none}} swaps=$swaps root=$root" > /dev/ttyS0
sync
systemctl --no-block poweroff
"""

_MARKER_UNIT = """[Unit]
Description=liferaft drill marker
After=local-fs.target swap.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/drill-marker

[Install]
WantedBy=multi-user.target
"""


def _run(argv: list[str], timeout: float | None = None) -> str:
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env={**os.environ, "LC_ALL": "C"}, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stderr[-3000:]}")  # fmt: skip
    return str(proc.stdout)


# ---------------------------------------------------------------- root tarball


def _customize_script(prune_dirs: tuple[str, ...] = _PRUNE) -> str:
    prune = " ".join(f'"$1"/lib/modules/*/kernel/{p}' for p in prune_dirs)
    return (
        f"rm -rf {prune}; "
        'for k in "$1"/lib/modules/*; do chroot "$1" depmod "$(basename "$k")"; done; '
        'echo "drill" > "$1/etc/hostname"; '
        'chroot "$1" update-initramfs -u -k all >/dev/null; '
        'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*'
    )


def cache_dir() -> Path:
    return Path(os.environ.get("LIFERAFT_DRILL_CACHE", REPO / "cache" / "drill"))


def rootfs_key(packages: tuple[str, ...] = PACKAGES, customize: str = "") -> str:
    h = hashlib.sha256()
    for part in (SUITE, MIRROR, *packages, customize or _customize_script(), "dpkg-excludes-1"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def rootfs_tarball(
    packages: tuple[str, ...] = PACKAGES,
    prune: tuple[str, ...] = _PRUNE,
    *,
    name: str = "rootfs",
    local_debs: tuple[Path, ...] = (),
    key_extra: str = "",
) -> Path:
    """The cached mmdebstrap root (built once per key; about 1-2 minutes).

    ``local_debs`` are installed too (apt brings their Depends); they are not
    part of the key: ``key_extra`` says what of them the root depends on."""
    customize = _customize_script(prune)
    key = rootfs_key((*packages, key_extra) if key_extra else packages, customize)
    out = cache_dir() / f"{name}-{key}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp{os.getpid()}.tar")  # mmdebstrap: .tar -> tarball
    excludes = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
    started = time.monotonic()
    includes = ",".join((*packages, *map(str, local_debs)))
    local = ["--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount"] if local_debs else []
    try:
        _run([
            "mmdebstrap", "--variant=minbase", f"--include={includes}", *local,
            *[f"--dpkgopt=path-exclude={p}" for p in excludes],
            f"--customize-hook={customize}",
            SUITE, str(tmp), MIRROR,
        ], timeout=1800)  # fmt: skip
        tmp.rename(out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    print(f"drill root built with mmdebstrap in {time.monotonic() - started:.0f} s: {out}")
    return out


# ---------------------------------------------------------------- the disk


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    """A loop device over ``image`` with partition scanning; always detached."""
    dev = _run(["losetup", "-f", "--show", "-P", str(image)]).strip()
    try:
        yield dev
    finally:
        for _ in range(50):
            proc = subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
            if proc.returncode == 0:
                break
            time.sleep(0.2)


def wait_partitions(dev: str, count: int, timeout: float = 20) -> list[str]:
    """No udev daemon on the host: wait until the partition nodes are block devices."""
    nodes = [f"{dev}p{i}" for i in range(1, count + 1)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(n) and os.stat(n).st_mode & 0o060000 for n in nodes):
            return nodes
        subprocess.run(["partx", "-u", dev], capture_output=True, check=False)
        time.sleep(0.2)
    raise RuntimeError(f"partitions of {dev} did not appear: {nodes}")


@contextlib.contextmanager
def mounted(node: str, *, read_only: bool = False) -> Iterator[Path]:
    point = Path(tempfile.mkdtemp(prefix="drill-mnt-"))
    try:
        _run(["mount", "-o", "ro,noload" if read_only else "rw", node, str(point)])
        try:
            yield point
        finally:
            os.sync()
            for _ in range(50):
                if subprocess.run(["umount", str(point)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)
            else:
                _run(["umount", "-l", str(point)])
    finally:
        with contextlib.suppress(OSError):
            point.rmdir()


def blkid(node: str, tag: str) -> str:
    return _run(["blkid", "-p", "-o", "value", "-s", tag, node]).strip()


@dataclass
class Machine:
    image: Path
    size: int
    root_uuid: str
    esp_uuid: str
    swap_uuid: str
    checksums: dict[str, str] = field(default_factory=dict)  # path in root -> sha256


# Files whose checksums the drill records and compares after the restore: a
# big one (spans many chunks), a sparse-ish one, a small text and a binary of
# the system itself.
def _write_payload(root: Path) -> None:
    data = root / "srv" / "drill"
    data.mkdir(parents=True, exist_ok=True)
    seed = hashlib.sha256(b"liferaft drill").digest()
    with open(data / "big.bin", "wb") as f:
        block = seed * (MIB // len(seed))
        for i in range(24):  # 24 MiB, every MiB different
            f.write(hashlib.sha256(block + bytes([i])).digest() * (MIB // 32))
    with open(data / "holes.bin", "wb") as f:
        f.seek(8 * MIB)
        f.write(b"end of a file with a hole\n")
    (data / "note.txt").write_text("the liferaft drill was here\n")


def _checksums(root: Path) -> dict[str, str]:
    out = {}
    for rel in ("srv/drill/big.bin", "srv/drill/holes.bin", "srv/drill/note.txt",
                "etc/fstab", "usr/bin/bash"):  # fmt: skip
        out[rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    return out


def _grub_cfg(root_uuid: str, root: Path, *, boot: str = "boot", root_arg: str = "") -> str:
    """GRUB's menu: the kernel in ``root``/``boot`` (``boot`` "" when ``root``
    is a /boot file system of its own, found by ``root_uuid``); the kernel's
    root= is ``root_arg``, by default UUID=``root_uuid``."""
    kernels = sorted((root / boot).glob("vmlinuz-*"))
    initrds = sorted((root / boot).glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError(f"no kernel or initrd in {root / boot}")
    where = f"/{boot}/" if boot else "/"
    return (
        "set timeout=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        'if [ -z "$cmdpath" ]; then set cmdpath=bios; fi\n'
        "menuentry 'Debian (liferaft drill)' {\n"
        f"  search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        f"  linux {where}{kernels[-1].name} root={root_arg or 'UUID=' + root_uuid} ro "
        'console=ttyS0,115200n8 quiet drill.cmdpath="$cmdpath"\n'
        f"  initrd {where}{initrds[-1].name}\n"
        "}\n"
    )


def _efi_stub_cfg(root_uuid: str, grub: str = "/boot/grub") -> str:
    # What grub-install writes next to the signed GRUB on Debian.
    return (f"search.fs_uuid {root_uuid} root\n"
            f"set prefix=($root)'{grub}'\n"
            "configfile $prefix/grub.cfg\n")  # fmt: skip


def _fill_esp(node: str, root_uuid: str, workdir: Path, prefix: str = "/boot/grub") -> None:
    _run(["mkfs.vfat", "-F", "32", "-n", "ESP", node])
    stub = workdir / "grub.cfg"
    stub.write_text(_efi_stub_cfg(root_uuid, prefix))
    img = f"-i{node}"
    shim = Path("/usr/lib/shim/shimx64.efi.signed")
    grub = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
    mm = Path("/usr/lib/shim/mmx64.efi.signed")
    _run(["mmd", img, "::/EFI", "::/EFI/debian", "::/EFI/BOOT"])
    for src, dest in ((shim, "::/EFI/debian/shimx64.efi"), (grub, "::/EFI/debian/grubx64.efi"),
                      (mm, "::/EFI/debian/mmx64.efi"), (stub, "::/EFI/debian/grub.cfg"),
                      (shim, "::/EFI/BOOT/BOOTX64.EFI"), (grub, "::/EFI/BOOT/grubx64.efi"),
                      (stub, "::/EFI/BOOT/grub.cfg")):  # fmt: skip
        _run(["mcopy", "-o", img, str(src), dest])


def _install_bios_grub(
    dev: str, root: Path, root_uuid: str, workdir: Path, grub: str = "boot/grub"
) -> None:
    """What `grub-install --target=i386-pc` does, done by hand: grub-install and
    grub-bios-setup both fail on a loop device's partitions ("cannot find a
    GRUB drive for /dev/loop0p4", "cannot get disk geometry"). The layout is
    GRUB's own: core.img (diskboot + kernel) in the bios_grub partition with
    the blocklist of its remaining sectors, boot.img in the MBR's code area
    pointing at core.img's first sector (util/setup.c does the same). GRUB's
    folder is ``root``/``grub`` on the file system ``root_uuid`` names."""
    moddir = root / grub / "i386-pc"
    shutil.copytree("/usr/lib/grub/i386-pc", moddir, dirs_exist_ok=True)
    early = workdir / "early.cfg"
    early.write_text(f"search.fs_uuid {root_uuid} root\nset prefix=($root)/{grub}\n")
    core_path = moddir / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-d", str(moddir), "-o", str(core_path),
          "-c", str(early), "-p", f"/{grub}",
          "biosdisk", "part_gpt", "ext2", "search_fs_uuid", "search", "serial"])  # fmt: skip
    lba = int(Path(f"/sys/class/block/{os.path.basename(dev)}p1/start").read_text())
    core = bytearray(core_path.read_bytes())
    sectors = -(-len(core) // 512)
    core = core.ljust(sectors * 512, b"\0")
    # diskboot.img's blocklist (at the end of its sector): the rest of core.img,
    # contiguous after it, loaded at segment 0x820; the entry before it ends the list.
    struct.pack_into("<QHH", core, 512 - 12, lba + 1, sectors - 1, 0x820)
    struct.pack_into("<QHH", core, 512 - 24, 0, 0, 0)
    boot = (moddir / "boot.img").read_bytes()
    with open(dev, "r+b") as disk:
        mbr = bytearray(disk.read(512))
        mbr[0:0x03] = boot[0:0x03]  # the jump; 0x03-0x5a (BPB) keeps the disk's bytes
        mbr[0x5A:440] = boot[0x5A:440]
        struct.pack_into("<Q", mbr, 0x5C, lba)  # GRUB_BOOT_MACHINE_KERNEL_SECTOR
        mbr[0x66:0x68] = b"\x90\x90"  # hard disk: skip the floppy drive check
        disk.seek(0)
        disk.write(mbr)
        disk.seek(lba * 512)
        disk.write(core)
        os.fsync(disk.fileno())


def build_machine(image: Path, size: int, workdir: Path) -> Machine:
    """Lay the cached root onto a new GPT disk image and make it bootable."""
    tarball = rootfs_tarball()
    with open(image, "wb") as f:
        f.truncate(size)
    _run(["sgdisk", "-Z",
          "-n1:1M:+1M", "-t1:EF02", "-c1:bios",
          "-n2:0:+64M", "-t2:EF00", "-c2:esp",
          "-n3:0:+128M", "-t3:8200", "-c3:swap",
          "-n4:0:0", "-t4:8300", "-c4:root", str(image)])  # fmt: skip
    with attached(image) as dev:
        _bios, esp, swap, rootp = wait_partitions(dev, 4)
        _run(["mkswap", "-L", "swap", swap])
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", rootp])
        root_uuid, esp_uuid, swap_uuid = blkid(rootp, "UUID"), "", blkid(swap, "UUID")
        _fill_esp(esp, root_uuid, workdir)
        esp_uuid = blkid(esp, "UUID")
        with mounted(rootp) as root:
            _run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tarball)])
            (root / "etc" / "fstab").write_text(
                f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
                f"UUID={esp_uuid} /boot/efi vfat umask=0077,nofail 0 1\n"
                f"UUID={swap_uuid} none swap sw 0 0\n"
            )  # fmt: skip
            (root / "boot" / "efi").mkdir(exist_ok=True)
            script = root / "usr" / "local" / "sbin" / "drill-marker"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(_MARKER_SCRIPT)
            script.chmod(0o755)
            unit = root / "etc" / "systemd" / "system" / "drill-marker.service"
            unit.write_text(_MARKER_UNIT)
            wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            (wants / "drill-marker.service").symlink_to("/etc/systemd/system/drill-marker.service")
            # No password prompt: a getty on the serial line is not needed.
            (root / "etc" / "machine-id").write_text("")
            _write_payload(root)
            grub_dir = root / "boot" / "grub"
            grub_dir.mkdir(parents=True, exist_ok=True)
            (grub_dir / "grub.cfg").write_text(_grub_cfg(root_uuid, root))
            _install_bios_grub(dev, root, root_uuid, workdir)
            checksums = _checksums(root)
    return Machine(image, size, root_uuid, esp_uuid, swap_uuid, checksums)


def _dumpe2fs_number(text: str, field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+)", text, re.M)
    if found is None:
        raise RuntimeError(f"dumpe2fs -h printed no {field!r}:\n{text[-3000:]}")
    return int(found.group(1))


def root_block_count(image: Path) -> tuple[int, int, int]:
    """(block count, block size, partition bytes) of the image's last (root) partition."""
    with attached(image) as dev:
        nodes = wait_partitions(dev, 4)
        text = _run(["dumpe2fs", "-h", nodes[3]])
        blocks, bsize = _dumpe2fs_number(text, "Block count"), _dumpe2fs_number(text, "Block size")
        part = int(Path(f"/sys/class/block/{os.path.basename(nodes[3])}/size").read_text()) * 512
        _run(["e2fsck", "-f", "-n", nodes[3]])
    return blocks, bsize, part


def file_checksums(image: Path, paths: list[str]) -> dict[str, str]:
    with attached(image) as dev:
        nodes = wait_partitions(dev, 4)
        with mounted(nodes[3], read_only=True) as root:
            return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in paths}


def esp_listing(image: Path) -> str:
    with attached(image) as dev:
        nodes = wait_partitions(dev, 4)
        return _run(["mdir", "-/", "-b", f"-i{nodes[1]}", "::/EFI"])


class DrillSite:
    """The drill's folder (on a real disk, not tmpfs) and every VM started in it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.vms: list[Vm] = []

    def vm(self, name: str, args: list[str], memory_mb: int = 1536) -> Vm:
        """A VM whose serial console goes to WORK/NAME/serial.log."""
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        machine = Vm(args, d, memory_mb)
        self.vms.append(machine)
        return machine

    def stop_all(self) -> None:
        for machine in self.vms:
            machine.stop()


if __name__ == "__main__":  # warm the cache: python -m tests.drill.machinekit
    print(rootfs_tarball())
