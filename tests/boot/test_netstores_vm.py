"""smb:// and nfs:// repositories for real: the rescue system's kernel mounts
the host's smbd and nfs-ganesha (tests/stores/fileservers.py) over QEMU's
user network (the host is 10.0.2.2), in one boot.

The ISO's kernel boots with ``liferaft.action=none``: unattended mode does
nothing and the serial console is a root shell (liferaft-start), which the
test drives line by line (pexpect). The SMB password is typed into
``read -s`` -- never on the kernel command line, in argv or echoed on the
console -- and exported as LIFERAFT_PASSWORD. In the guest:

1. a wrong SMB password, an unknown share and an unknown NFS export each end
   in their own one-line error;
2. the source disk is captured to smb://lrbackup@10.0.2.2/share/repo, listed,
   and restored from there onto blank disk 1 -- this time with the password
   from a credentials file on a FAT stick (LIFERAFT_CREDENTIALS), not typed;
3. from nfs://10.0.2.2/export/repo (a repository the host made with
   `liferaft capture` in the exported folder) it lists the host's image,
   restores it onto blank disk 2, and captures the source there again;
4. nothing stays mounted; the VM powers off.

The host then checks both restored disks (fsck clean, every file's checksum
equal to the source's) and that the repositories the guest wrote verify.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from builder.context import SERIAL_CMDLINE
from rescue_app.engine.kernel import reread_partitions
from tests.enginekit import Layout, build_source, check_restored, liferaft
from tests.helpers.diskkit import PartSpec, loop_disk
from tests.stores.fileservers import nfs_ganesha, smbd

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1024 * 1024
DISK_BYTES = 192 * MIB
LAYOUT = Layout("gpt", [PartSpec(48, "ext4", "boot"), PartSpec(None, "ext4", "root")],
                ["ext4", "ext4"])  # fmt: skip
SOURCE_SERIAL, SMB_SERIAL, NFS_SERIAL = "LRNETSRC01", "LRNETSMB01", "LRNETNFS01"
CREDS_LABEL = "LRCREDS"
SMB_USER = "lrbackup"
SMB_URL = f"smb://{SMB_USER}@10.0.2.2/share/repo"
NFS_URL = "nfs://10.0.2.2/export/repo"
CMDLINE = f"{SERIAL_CMDLINE} liferaft.action=none"
BOOT_S = 300
STEP_S = 600  # one capture or restore under TCG


class SerialShell:
    """The guest's root shell on the serial console, one command at a time."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.n = 0

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """(exit status, output) of ``command`` in this shell (not a subshell:
        `export` sticks). Output goes to a file first, so the CLI prints plain
        progress lines, not a redrawn bar, and kernel messages cannot split it."""
        self.n += 1
        # The echoed line shows `$rc`, only the output has digits there.
        self.child.sendline(
            f"{{ {command} ; }} >/tmp/out 2>&1; rc=$?; echo @@{self.n}@out@@; "
            f"cat /tmp/out; echo @@{self.n}@rc=$rc@@"
        )
        self.child.expect(rf"@@{self.n}@out@@\r*\n", timeout=timeout)
        self.child.expect(rf"@@{self.n}@rc=(\d+)@@", timeout=30)
        out: str = self.child.before.decode("utf-8", "replace")
        return int(self.child.match.group(1)), out.replace("\r", "")

    def ok(self, command: str, timeout: float = STEP_S) -> str:
        started = time.monotonic()
        rc, out = self.run(command, timeout)
        assert rc == 0, f"{command} exited {rc}:\n{out[-3000:]}"
        print(f"guest: {command.split(' --')[0]} ... {time.monotonic() - started:.0f} s")
        return out

    def fails(self, command: str, *needles: str) -> str:
        """A user's mistake: nonzero exit, one `liferaft: error:` line, no traceback."""
        rc, out = self.run(command)
        assert rc != 0, out
        assert "Traceback" not in out, out
        errors = [ln.strip() for ln in out.splitlines() if ln.startswith("liferaft: error:")]
        assert len(errors) == 1, out
        for needle in needles:
            assert needle.lower() in errors[0].lower(), errors[0]
        print(f"guest: {errors[0]}")
        return errors[0]


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    dev = subprocess.run(["losetup", "-f", "--show", "-P", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _disk(image: Path, serial: str, readonly: bool = False) -> list[str]:
    ro = ",readonly=on" if readonly else ""
    return ["-drive", f"file={image},format=raw,if=none,id=d{serial}{ro}",
            "-device", f"virtio-blk-pci,drive=d{serial},serial={serial}"]  # fmt: skip


def _credentials_stick(image: Path, password: str) -> None:
    """A FAT stick holding credentials.yaml with the SMB password for the share."""
    text = (f"credentials:\n  - match: smb://{SMB_USER}@10.0.2.2/share\n"
            f"    password: \"{password}\"\n")  # fmt: skip
    yaml = image.with_suffix(".yaml")
    yaml.write_text(text)
    with open(image, "wb") as f:
        f.truncate(8 * MIB)
    subprocess.run(["mkfs.vfat", "-n", CREDS_LABEL, str(image)], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", str(image), str(yaml), "::/credentials.yaml"], check=True,
                   capture_output=True)  # fmt: skip
    yaml.unlink()


def _by_serial(serial: str) -> str:
    return f"$(readlink -f /dev/disk/by-id/virtio-{serial})"


def test_smb_and_nfs_repositories_in_the_rescue_system(
    live_kernel: tuple[Path, Path], built_iso: Path, tmp_path: Path
) -> None:
    vmlinuz, initrd = live_kernel
    password = "Smb-" + secrets.token_hex(8)
    targets = {s: tmp_path / f"{s}.img" for s in (SMB_SERIAL, NFS_SERIAL)}
    for image in targets.values():
        with open(image, "wb") as f:
            f.truncate(DISK_BYTES)
    with loop_disk(DISK_BYTES, str(tmp_path)) as src, \
            smbd(str(tmp_path / "smb"), SMB_USER, password) as smb, \
            nfs_ganesha(str(tmp_path / "nfs")) as nfs:  # fmt: skip
        source = build_source(src, LAYOUT, seed=21)
        nfs_repo = os.path.join(nfs.path, "repo")
        liferaft("capture", "--repo", nfs_repo, "--name", "nfssrc", src)
        with open(f"/sys/block/{os.path.basename(src)}/loop/backing_file") as f:
            src_image = Path(f.read().strip())
        creds = tmp_path / "creds.img"
        _credentials_stick(creds, password)
        argv = [
            "-accel", "tcg", "-m", "1536", "-smp", "2", "-display", "none", "-monitor", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", CMDLINE, "-cdrom", str(built_iso), "-nic", "user,model=virtio-net-pci",
            *_disk(src_image, SOURCE_SERIAL, readonly=True),
            *_disk(targets[SMB_SERIAL], SMB_SERIAL), *_disk(targets[NFS_SERIAL], NFS_SERIAL),
            *_disk(creds, "LRCREDS01", readonly=True),
        ]  # fmt: skip
        transcript = tmp_path / "serial.log"
        started = time.monotonic()
        child = pexpect.spawn("qemu-system-x86_64", argv, timeout=60)
        child.logfile_read = open(transcript, "wb")  # noqa: SIM115 - closed below
        try:
            _drive_guest(SerialShell(child), password, started)
            child.expect(pexpect.EOF, timeout=120)  # powered off
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            text = transcript.read_bytes().decode("utf-8", "replace")
            pytest.fail(f"serial console: {type(exc).__name__}:\n{text[-4000:]}")
        finally:
            child.close(force=True)
            child.logfile_read.close()
        console = transcript.read_bytes().decode("utf-8", "replace")
        print(f"guest: boot and all steps {time.monotonic() - started:.0f} s")

        # The password went nowhere it can be read back.
        assert password not in console
        for log in (smb.log, nfs.log):
            with open(log, errors="replace") as f:
                assert password not in f.read()
        # What the guest wrote over SMB and NFS is a sound repository.
        smb_repo = os.path.join(smb.path, "repo")
        assert "smbsrc@" in liferaft("images", "--repo", smb_repo).stdout
        assert "nfsback@" in liferaft("images", "--repo", nfs_repo).stdout
        for repo in (smb_repo, nfs_repo):
            assert ": OK" in liferaft("verify", "--repo", repo).stdout
            assert not os.listdir(os.path.join(repo, "tmp"))

    for serial, image in targets.items():
        with attached(image) as dev:
            nodes = reread_partitions(dev, len(source.nodes))
            check_restored(source, nodes)
            print(f"host: disk restored from {serial}: fsck clean, checksums equal")


def _drive_guest(sh: SerialShell, password: str, started: float) -> None:
    child = sh.child
    child.expect("unattended mode is running", timeout=BOOT_S)
    child.expect(r"# ", timeout=60)
    print(f"guest: shell after {time.monotonic() - started:.0f} s")
    # Kernel messages (CIFS errors are KERN_ERR) must not land inside our output.
    sh.ok("dmesg -n 1")
    sh.ok("for i in $(seq 90); do ip route | grep -q default && break; sleep 1; done; "
          "ip route | grep default")  # fmt: skip

    # The password, typed: `read -s` turns the echo off, so it is never on the console.
    sh.child.sendline("read -rs -p 'SMB password: ' LIFERAFT_PASSWORD; echo; echo @@pw@@read")
    child.expect("SMB password: ", timeout=30)
    time.sleep(0.5)
    child.sendline(password)
    child.expect("@@pw@@read", timeout=30)
    sh.ok("export LIFERAFT_PASSWORD")

    # 1. Each mistake has its own line.
    sh.fails(f"LIFERAFT_PASSWORD=not-the-password liferaft images --repo {SMB_URL}",
             "refused the login", "password")  # fmt: skip
    sh.fails(f"liferaft images --repo smb://{SMB_USER}@10.0.2.2/nosuch/repo",
             "no share named 'nosuch'")  # fmt: skip
    sh.fails("liferaft images --repo nfs://10.0.2.2/nosuch/repo", "exports no /nosuch/repo")

    src, smb_target, nfs_target = (_by_serial(s) for s in (SOURCE_SERIAL, SMB_SERIAL, NFS_SERIAL))
    # 2. Back up over SMB, list, restore.
    out = sh.ok(f"liferaft capture --repo {SMB_URL} --name smbsrc {src}")
    assert "captured smbsrc@" in out, out
    assert "smbsrc@" in sh.ok(f"liferaft images --repo {SMB_URL}")
    # The restore takes the password from the credentials file on the stick instead.
    sh.ok(f"mkdir -p /mnt/creds && mount -o ro /dev/disk/by-label/{CREDS_LABEL} /mnt/creds")
    sh.ok(
        f"env -u LIFERAFT_PASSWORD LIFERAFT_CREDENTIALS=/mnt/creds/credentials.yaml "
        f"liferaft restore --repo {SMB_URL} --image smbsrc --to {smb_target} --yes --verify"
    )
    sh.ok("umount /mnt/creds")

    # 3. Restore over NFS what the host put there; back up there too.
    assert "nfssrc@" in sh.ok(f"liferaft images --repo {NFS_URL}")
    sh.ok(f"liferaft restore --repo {NFS_URL} --image nfssrc --to {nfs_target} --yes --verify")
    sh.ok(f"liferaft capture --repo {NFS_URL} --name nfsback {src}")

    # 4. Every store unmounted what it mounted.
    rc, mounts = sh.run("grep -E ' (cifs|smb3|nfs4?) ' /proc/mounts")
    assert rc == 1, f"still mounted:\n{mounts}"
    sh.ok("sync")
    child.sendline("systemctl poweroff")
