"""The LVM drill machine (issues 12 and 14): Debian's "guided, use entire
disk and set up LVM" layout, with liferaft installed from its Debian package.

    1  bios_grub   1 MiB   GRUB's core.img (BIOS), reading /boot
    2  ESP        64 MiB   vfat: shim + signed GRUB, EFI/debian and EFI/BOOT
    3  /boot     256 MiB   ext4: kernel, initrd, GRUB's folder (/grub)
    4  LVM PV    the rest  volume group drill-vg: root (ext4) and swap_1, as the
                           installer names them, and free extents for snapshots

fstab names root and swap by /dev/mapper path and /boot, /boot/efi by UUID,
as the installer writes it. The root file system (the drill's mmdebstrap
root with lvm2, dosfstools and the liferaft package's Depends, drivers/md
kept for device-mapper) is cached as a tarball like machinekit's.

The host kernel has no device-mapper: the host makes the partitions, the ESP,
/boot and GRUB (BIOS and UEFI, as machinekit does); one boot of the rescue
ISO (tests/helpers/guest.py) makes the PV, the VG and the LVs and unpacks the
root into them. The disk is cached next to the tarball (cache/drill/
lvm-machine-KEY.img, keyed by the tarball and this kit's code), so that boot
is paid once; each drill works on a sparse copy.

At each boot the machine's drill-lvm unit (LVM_SCRIPT) checks what it holds
(fsck of root from a snapshot, of /boot and the ESP; the payload's checksums;
every writer file whole), and, when a disk labelled LRREPO is attached,
runs the drill's script found there (lvm_backup.sh, not part of the cached
disk): it installs the liferaft package from that disk (`dpkg -i`, as an
administrator would: this tree's, so the cached disk never holds a stale
one), starts the writer, schedules the backup (`liferaft schedule`), starts
the timer's service while the writer runs, checks the snapshots are gone and
how a failing scheduled run ends. Then the unit prints one MARKER line of
key=value figures on ttyS0 and powers off.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.drill import machinekit as mk
from tests.helpers.guest import run_in_guest

VG = "drill-vg"
ROOT_DEV = "/dev/mapper/drill--vg-root"
SWAP_DEV = "/dev/mapper/drill--vg-swap_1"
ROOT_MIB = 1536
SWAP_MIB = 128
REPO_LABEL = "LRREPO"
IMAGE = "drill-lvm"
PACKAGES = (*mk.PACKAGES, "lvm2", "dosfstools")
PRUNE = tuple(p for p in mk._PRUNE if p != "drivers/md")  # dm-mod, dm-snapshot
MARKER = "LIFERAFT-LVM-DRILL ok"

# Each file the writer leaves is whole (payload + its hex sha256) or absent:
# written to a temporary name, fsynced, renamed.
WRITER = """#!/usr/bin/python3
import hashlib, os, random, sys, time
if sys.argv[1:2] == ["--check"]:
    b = open(sys.argv[2], "rb").read()
    sys.exit(hashlib.sha256(b[:-64]).hexdigest().encode() != b[-64:])
os.makedirs("/srv/live", exist_ok=True)
n = 0
while True:
    payload = random.randbytes(random.choice([2000, 80_000, 600_000]))
    tmp = f"/srv/live/.t{n}"
    with open(tmp, "wb") as f:
        f.write(payload + hashlib.sha256(payload).hexdigest().encode())
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, f"/srv/live/w{n % 20}.dat")
    n += 1
    with open("/run/drill-writes", "w") as f:
        f.write(str(n))
    time.sleep(0.01)
"""

WRITER_UNIT = """[Unit]
Description=liferaft drill writer (files replaced atomically, each with its checksum)

[Service]
ExecStart=/usr/local/sbin/drill-writer
"""

LVM_SCRIPT = f"""#!/bin/bash
# The LVM drill machine's boot: checks, the online backup if a repository
# disk is attached, one marker line on ttyS0, power off.
exec > /dev/ttyS0 2>&1
export LVM_SUPPRESS_FD_WARNINGS=1
cmdpath=$(sed -n 's/.*drill\\.cmdpath=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
swaps=$(($(wc -l < /proc/swaps) - 1))
# what the disk holds: every writer file whole, the payload equal
files=0; torn=0
for f in /srv/live/w*.dat; do
    [ -e "$f" ] || continue
    files=$((files + 1))
    /usr/local/sbin/drill-writer --check "$f" || {{ torn=$((torn + 1)); echo "TORN $f"; }}
done
static=ok
(cd / && sha256sum -c --quiet /usr/local/share/drill/static.sum) || static=bad
# fsck: root from a snapshot (LVM freezes the file system for it), /boot and the ESP unmounted
fsck=ok
if lvcreate -q -y -s -n drillfsck -L 64M {VG}/root; then
    e2fsck -f -n /dev/{VG}/drillfsck || fsck=bad-root
    lvremove -q -y {VG}/drillfsck
else
    fsck=no-snapshot
fi
boot=$(findmnt -n -o SOURCE /boot); esp=$(findmnt -n -o SOURCE /boot/efi)
umount /boot/efi && umount /boot || fsck=busy
e2fsck -f -n "$boot" || fsck=bad-boot
fsck.vfat -n "$esp" || fsck=bad-esp
mount /boot && mount /boot/efi
rootlv=$(blockdev --getsize64 /dev/{VG}/root)
rootfs=$(dumpe2fs -h /dev/{VG}/root 2>/dev/null \\
    | awk -F: '/^Block count/{{c=$2}} /^Block size/{{s=$2}} END{{printf "%.0f", c*s}}')
vgfree=$(vgs --noheadings --nosuffix --units b -o vg_free {VG} | tr -d ' ')
backup="backup=none"
if repo=$(blkid -L {REPO_LABEL}); then
    # the online backup and its figures: the drill's script on that disk
    mkdir -p /mnt/repo && mount "$repo" /mnt/repo
    bash /mnt/repo/backup.sh /run/drill-backup.fields
    backup=$(cat /run/drill-backup.fields)
    umount /mnt/repo
fi
echo "{MARKER} cmdpath=${{cmdpath:-none}} swaps=$swaps root=$(findmnt -n -o SOURCE /)" \\
    "pid1=$(cat /proc/1/comm) fsck=$fsck static=$static files=$files torn=$torn" \\
    "rootlv=$rootlv rootfs=$rootfs vgfree=$vgfree $backup"
sync
systemctl --no-block poweroff
"""

LVM_UNIT = """[Unit]
Description=liferaft LVM drill: checks, online backup, marker
After=local-fs.target swap.target

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/usr/local/sbin/drill-lvm

[Install]
WantedBy=multi-user.target
"""

GUEST_SCRIPT = f"""# Runs in the rescue system (tests/helpers/guest.py): vda the machine's
# disk (partitions made by the host), vdb the root tarball, vdc the overlay tar.
# The root has liferaft (the tarball's); the drill installs this tree's at boot.
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
udevadm settle
pvcreate -q -y /dev/vda4
vgcreate -q {VG} /dev/vda4
lvcreate -q -y -n root -L {ROOT_MIB}M {VG}
lvcreate -q -y -n swap_1 -L {SWAP_MIB}M {VG}
mkfs.ext4 -q -L root /dev/{VG}/root
mkswap -L swap /dev/{VG}/swap_1
mkdir -p /tmp/t
mount /dev/{VG}/root /tmp/t
tar -C /tmp/t --numeric-owner -xpf /dev/vdb --exclude='./boot/*'
tar -C /tmp/t --numeric-owner -xpf /dev/vdc
umount /tmp/t
vgchange -q -an {VG}
sync
lsblk -b -o NAME,SIZE,TYPE,FSTYPE /dev/vda
echo LVM-MACHINE-BUILT
"""


def build_deb(out: Path) -> Path:
    """The liferaft package of this tree (what `make deb` builds) in ``out``."""
    mk._run([str(mk.REPO / ".venv" / "bin" / "liferaft-build"), "deb",
             "--output-dir", str(out / "dist"), "--build-dir", str(out / "build")],
            timeout=900)  # fmt: skip
    (deb,) = (out / "dist").glob("liferaft_*_all.deb")
    return deb


def rootfs_tarball(deb: Path) -> Path:
    """The drill root with LVM and liferaft's Depends; keyed by those Depends,
    so a new liferaft does not rebuild it (the guest installs this tree's)."""
    depends = mk._run(["dpkg-deb", "-f", str(deb), "Depends"]).strip()
    return mk.rootfs_tarball(PACKAGES, PRUNE, name="rootfs-lvm", local_debs=(deb,),
                             key_extra=depends)  # fmt: skip


@dataclass
class LvmMachine:
    image: Path
    size: int
    boot_uuid: str
    esp_uuid: str
    checksums: dict[str, str] = field(default_factory=dict)  # path in root -> sha256
    seconds: float = 0.0  # to build it


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _overlay(path: Path, boot_uuid: str, esp_uuid: str) -> dict[str, str]:
    """The files laid over the root in the guest; returns the payload's checksums."""
    payload = {
        "srv/drill/big.bin": b"".join(
            hashlib.sha256(b"liferaft lvm drill %d" % i).digest() * (mk.MIB // 32)
            for i in range(16)
        ),
        "srv/drill/note.txt": b"the liferaft LVM drill was here\n",
    }
    checksums = {rel: hashlib.sha256(data).hexdigest() for rel, data in payload.items()}
    fstab = (
        f"{ROOT_DEV} / ext4 errors=remount-ro 0 1\n"
        f"UUID={boot_uuid} /boot ext4 defaults 0 2\n"
        f"UUID={esp_uuid} /boot/efi vfat umask=0077 0 1\n"
        f"{SWAP_DEV} none swap sw 0 0\n"
    )
    sums = "".join(f"{digest}  {rel}\n" for rel, digest in checksums.items())
    wants = "etc/systemd/system/multi-user.target.wants/drill-lvm.service"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for rel, data in payload.items():
            _add(tar, rel, data)
        _add(tar, "etc/fstab", fstab.encode())
        _add(tar, "etc/hostname", b"drill-lvm\n")
        _add(tar, "etc/machine-id", b"")
        _add(tar, "usr/local/share/drill/static.sum", sums.encode())
        _add(tar, "usr/local/sbin/drill-writer", WRITER.encode(), 0o755)
        _add(tar, "usr/local/sbin/drill-lvm", LVM_SCRIPT.encode(), 0o755)
        _add(tar, "etc/systemd/system/drill-writer.service", WRITER_UNIT.encode())
        _add(tar, "etc/systemd/system/drill-lvm.service", LVM_UNIT.encode())
        # No getty on the console: agetty's vhangup() would cut drill-lvm's output.
        getty = "etc/systemd/system/serial-getty@ttyS0.service"
        unit = "/etc/systemd/system/drill-lvm.service"
        for name, target in ((wants, unit), (getty, "/dev/null")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
    return checksums


def lvm_machine(image: Path, size: int, work: Path, iso: Path, deb: Path) -> LvmMachine:
    """The machine's disk at ``image``: a copy of the cached one, built first if
    there is none (``deb`` gives the root's Depends)."""
    started = time.monotonic()
    tarball = rootfs_tarball(deb)
    h = hashlib.sha256(f"{tarball.name}\0{size}\0".encode())
    for code in (__file__, mk.__file__):
        h.update(Path(code).read_bytes())
    # What this process lays on the disk, too: a run that imported an older
    # lvmkit.py must not store its disk under the key of the file edited since.
    for text in (GUEST_SCRIPT, LVM_SCRIPT, LVM_UNIT, WRITER, WRITER_UNIT):
        h.update(text.encode())
    cached = mk.cache_dir() / f"lvm-machine-{h.hexdigest()[:16]}.img"
    facts = cached.with_suffix(".json")
    if not facts.exists():
        machine = build_lvm_machine(image, size, work, iso, tarball)
        tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
        mk._run(["cp", "--sparse=always", str(image), str(tmp)])
        tmp.rename(cached)
        facts.write_text(json.dumps({"boot_uuid": machine.boot_uuid, "esp_uuid": machine.esp_uuid,
                                     "checksums": machine.checksums}))  # fmt: skip
        return machine
    mk._run(["cp", "--sparse=always", str(cached), str(image)])
    known = json.loads(facts.read_text())
    seconds = time.monotonic() - started
    print(f"LVM machine copied from {cached} in {seconds:.0f} s")
    return LvmMachine(image, size, known["boot_uuid"], known["esp_uuid"], known["checksums"],
                      seconds)  # fmt: skip


def build_lvm_machine(image: Path, size: int, work: Path, iso: Path, tarball: Path) -> LvmMachine:
    """The machine's disk: partitions, ESP, /boot and GRUB here; LVM in a guest."""
    started = time.monotonic()
    with open(image, "wb") as f:
        f.truncate(size)
    mk._run(["sgdisk", "-Z",
             "-n1:1M:+1M", "-t1:EF02", "-c1:bios",
             "-n2:0:+64M", "-t2:EF00", "-c2:esp",
             "-n3:0:+256M", "-t3:8300", "-c3:boot",
             "-n4:0:0", "-t4:8E00", "-c4:lvm", str(image)])  # fmt: skip
    with mk.attached(image) as dev:
        _bios, esp, bootp, _pv = mk.wait_partitions(dev, 4)
        mk._run(["mkfs.ext4", "-q", "-F", "-L", "boot", bootp])
        boot_uuid = mk.blkid(bootp, "UUID")
        mk._fill_esp(esp, boot_uuid, work, prefix="/grub")
        esp_uuid = mk.blkid(esp, "UUID")
        with mk.mounted(bootp) as boot:
            mk._run(["tar", "-C", str(boot), "--numeric-owner", "--strip-components=2",
                     "-xpf", str(tarball), "./boot/"])  # fmt: skip
            (boot / "grub").mkdir(exist_ok=True)
            cfg = mk._grub_cfg(boot_uuid, boot, boot="", root_arg=ROOT_DEV)
            (boot / "grub" / "grub.cfg").write_text(cfg)
            mk._install_bios_grub(dev, boot, boot_uuid, work, grub="grub")
    overlay = work / "overlay.tar"
    checksums = _overlay(overlay, boot_uuid, esp_uuid)
    root_copy = work / "rootfs.tar"  # QEMU locks its disks: not the shared cache file
    subprocess.run(["cp", "--reflink=auto", str(tarball), str(root_copy)], check=True)
    try:
        result = run_in_guest(iso, [image, root_copy, overlay], GUEST_SCRIPT, timeout=900)
    finally:
        root_copy.unlink()
        overlay.unlink()
    if result.exit_code != 0 or "LVM-MACHINE-BUILT" not in result.output:
        raise RuntimeError(f"the guest did not build the LVM machine:\n{result.output[-3000:]}")
    seconds = time.monotonic() - started
    print(f"LVM machine built in {seconds:.0f} s (guest boot {result.boot_seconds:.0f} s, "
          f"script {result.seconds - result.boot_seconds:.0f} s)")  # fmt: skip
    return LvmMachine(image, size, boot_uuid, esp_uuid, checksums, seconds)


def marker_fields(line: str) -> dict[str, str]:
    """The MARKER line's key=value figures."""
    return dict(w.split("=", 1) for w in line.split(MARKER, 1)[1].split() if "=" in w)


if __name__ == "__main__":  # warm the cache: python -m tests.drill.lvmkit
    import tempfile

    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        print(rootfs_tarball(build_deb(Path(d))))
