"""The engine's one home for mounts (engine/mounts.py) and blkid look-ups (engine/probe.py),
on real loop devices."""

from __future__ import annotations

import os
import subprocess

import pytest

from rescue_app.engine import mounts, probe
from rescue_app.errors import LiferaftError
from tests.helpers.diskkit import MIB, disk_bytes_sha256, make_fs

pytestmark = pytest.mark.root


def _is_mount(point: str) -> bool:
    return os.path.ismount(point)


def test_read_only_mount_writes_nothing_and_is_always_unmounted(loopdisk):
    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4", label="MNTTEST")
    with (
        mounts.mounted(dev, "ext4", writable=True) as point,
        open(os.path.join(point, "f"), "w") as f,
    ):
        f.write("x")
    before = disk_bytes_sha256(dev, 0, 64 * MIB)
    seen = ""
    with pytest.raises(RuntimeError), mounts.mounted(dev, "ext4") as point:
        seen = point
        with open(os.path.join(point, "f")) as f:
            assert f.read() == "x"
        with pytest.raises(OSError):
            open(os.path.join(point, "g"), "w").close()
        raise RuntimeError("the caller fails inside the block")
    assert not _is_mount(seen) and not os.path.exists(seen), "unmounted and removed"
    assert disk_bytes_sha256(dev, 0, 64 * MIB) == before, "a read-only mount wrote to the disk"


def test_busy_mount_is_detached_lazily(loopdisk):
    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4")
    with mounts.mounted(dev, "ext4", writable=True) as point:
        holder = subprocess.Popen(["sleep", "30"], cwd=point)  # keeps the mount busy
        try:
            mounts.umount(point)  # no error: detached, the kernel finishes later
            assert not _is_mount(point)
        finally:
            holder.kill()
            holder.wait()
        mounts.mount(dev, point, fstype="ext4", options=["ro"])  # for the block's own umount


def test_mount_failure_is_one_error(loopdisk):
    dev = loopdisk(16 * MIB)  # no filesystem
    with pytest.raises(LiferaftError), mounts.mounted(dev, "ext4"):
        pass


def test_probe_finds_type_and_device_by_label(loopdisk):
    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4", label="PROBE7")
    assert probe.filesystem_type(dev) == "ext4"
    assert probe.device_with_tag("LABEL", "PROBE7") == dev
    assert probe.device_with_tag("LABEL", "NO-SUCH-LABEL-7") is None
    assert probe.filesystem_type(loopdisk(16 * MIB)) is None


def test_engine_facade_mounts_read_only_and_unmounts(loopdisk):
    from rescue_app.engine import Engine

    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4")
    with Engine().mounted(dev, "ext4") as point:
        assert _is_mount(point)
        with pytest.raises(OSError):
            open(os.path.join(point, "g"), "w").close()
    assert not _is_mount(point) and not os.path.exists(point)
