"""Unattended restore inside the rescue system, checked on the host.

The host captures a real ext4 disk with `liferaft capture` into a repository
on a second disk image (ext4, label LRREPO). The VM boots the ISO's kernel
with liferaft.action=restore ... liferaft.target=serial:LRTARGET01 and two
virtio disks: the repository and a blank one with that serial. Unattended
mode restores, prints SUCCESS and powers off; the host then fscks the blank
disk's partition and compares every file's checksum with the source's.

Needs the engine's capture/restore (issue 2) and root for loop devices.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bootkit import REPO

from builder.context import SERIAL_CMDLINE
from rescue_app.engine.kernel import reread_partitions
from tests.helpers.diskkit import (
    PartSpec,
    fsck_clean,
    loop_disk,
    make_fs,
    mounted,
    partition_disk,
    populate,
    tree_checksums,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1024 * 1024
TARGET_SERIAL = "LRTARGET01"
REPO_LABEL = "LRREPO"


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    """A loop device over ``image`` with its partitions; always detached."""
    dev = subprocess.run(
        ["losetup", "-f", "--show", "-P", str(image)],
        check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    ).stdout.strip()  # fmt: skip
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, stdin=subprocess.DEVNULL)


def _liferaft(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rescue_app.cli", *args],
        cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"liferaft {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def test_unattended_restore_in_vm(live_kernel, built_iso: Path, vm, tmp_path: Path) -> None:
    vmlinuz, initrd = live_kernel

    # Source disk: GPT, one ext4 partition full of files; captured on the host.
    repo_img = tmp_path / "repo.img"
    with open(repo_img, "wb") as f:
        f.truncate(512 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", REPO_LABEL, str(repo_img)], check=True)
    with loop_disk(256 * MIB, str(tmp_path)) as src:
        (part,) = partition_disk(src, "gpt", [PartSpec(None, "ext4", "root")])
        make_fs(part, "ext4", label="srcroot")
        expected = populate(part, "ext4", seed=7)
        with attached(repo_img) as repo_dev, mounted(repo_dev, "ext4") as repo_mnt:
            _liferaft("capture", "--repo", f"{repo_mnt}/liferaft", "--name", "src", src)

    target_img = tmp_path / "target.img"
    with open(target_img, "wb") as f:
        f.truncate(256 * MIB)

    cmdline = (
        f"{SERIAL_CMDLINE} liferaft.action=restore "
        f"liferaft.repo=LABEL={REPO_LABEL}:/liferaft liferaft.image=src "
        f"liferaft.target=serial:{TARGET_SERIAL} liferaft.poweroff=1"
    )
    machine = vm(
        [
            "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
            "-cdrom", str(built_iso),
            "-drive", f"file={repo_img},format=raw,if=none,id=repo",
            "-device", "virtio-blk-pci,drive=repo,serial=LRREPO01",
            "-drive", f"file={target_img},format=raw,if=none,id=target",
            "-device", f"virtio-blk-pci,drive=target,serial={TARGET_SERIAL}",
        ]
    )  # fmt: skip
    machine.wait_for("LIFERAFT UNATTENDED RESTORE:", timeout=300)
    machine.wait_exit(timeout=120)
    console = machine.text()
    assert "LIFERAFT UNATTENDED RESTORE: SUCCESS" in console, console[-4000:]

    with attached(target_img) as dev:
        reread_partitions(dev, 1)
        fsck_clean(f"{dev}p1", "ext4")
        assert tree_checksums(f"{dev}p1", "ext4") == expected
