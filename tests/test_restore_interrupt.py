"""An interrupted restore never leaves a disk that looks restored (issue 10, item 2).

A restore is stopped with SIGINT (its handler runs) and SIGKILL (nothing runs,
as after a power cut) at several points. Afterwards no partly written partition
is recognisable as a filesystem (blkid finds nothing, mount fails), and
`liferaft disks` says "incomplete restore of IMAGE (started TIME)" for the disk;
the next full restore succeeds and the warning is gone.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from rescue_app.engine.kernel import reread_partitions
from rescue_app.errors import DiskError
from tests.conftest import _disk_backed_tmp
from tests.enginekit import Layout, Source, check_restored, interrupt_restore, liferaft
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    loop_disk,
    make_fs,
    partition_disk,
    populate,
)

pytestmark = pytest.mark.root

LAYOUT = Layout(
    "gpt", [PartSpec(64, "ext4", "boot"), PartSpec(None, "xfs", "root")], ["ext4", "xfs"]
)
DISK = 448 * MIB


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[Source, str, str]]:
    """A two-partition source (ext4, XFS) captured as "src", and a target disk."""
    with (
        tempfile.TemporaryDirectory(prefix="liferaft-interrupt-", dir=_disk_backed_tmp()) as d,
        ExitStack() as stack,
    ):
        dev = stack.enter_context(loop_disk(DISK, d))
        nodes = partition_disk(dev, LAYOUT.label, LAYOUT.parts)
        files = {}
        for i, (node, fs) in enumerate(zip(nodes, ["ext4", "xfs"], strict=True)):
            make_fs(node, fs, label=f"int{i}")
            files[i] = populate(node, fs, seed=31 + i, n_files=200, big_mib=16)
        repo = os.path.join(d, "repo")
        liferaft("capture", "--repo", repo, "--name", "src", dev)
        target = stack.enter_context(loop_disk(DISK, d))
        yield Source(dev, LAYOUT, nodes, files), repo, target


def _restore_until(
    repo: str, target: str, stage: str | None, sig: int, after: float = 0.0
) -> subprocess.Popen[str]:
    """Start a restore, stop it with ``sig`` at ``stage`` (or ``after`` seconds)."""
    args = ("--repo", repo, "--image", "src", "--to", target, "--yes")
    return interrupt_restore(args, sig, stage=stage, after=after)


def _recognisable(node: str) -> bool:
    """What blkid and mount see: a filesystem signature, or a mountable filesystem."""
    probe = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", node], capture_output=True, text=True
    )
    if probe.stdout.strip():
        return True
    with tempfile.TemporaryDirectory() as point:
        mount = subprocess.run(["mount", "-o", "ro", node, point], capture_output=True)
        if mount.returncode == 0:
            subprocess.run(["umount", point], check=True)
            return True
    return False


def _nodes_now(target: str) -> list[str]:
    """The partitions the kernel shows now; a table cut off while being written
    shows fewer, or none."""
    try:
        return reread_partitions(target, 2, timeout=3)
    except DiskError:
        return sorted(n for n in glob.glob(target + "p*") if os.path.exists(n))


def _warning(target: str) -> str:
    out = liferaft("disks").stdout.splitlines()
    at = next(i for i, ln in enumerate(out) if ln.startswith(target + " "))
    block = []
    for ln in out[at + 1 :]:
        if not ln.startswith("  "):
            break
        block.append(ln)
    return "\n".join(block)


@pytest.mark.parametrize(
    ("stage", "sig"),
    [
        ("marked", signal.SIGKILL),  # table and mark written, no data yet
        ("partition-1", signal.SIGINT),  # the ext4 written but its first MiB
        ("partition-1", signal.SIGKILL),
        ("data", signal.SIGKILL),  # all data but the first MiB of each partition
        ("heads", signal.SIGINT),  # filesystems complete, boot code not yet
        (None, signal.SIGKILL),  # halfway through by the clock, wherever that is
    ],
)
def test_interrupted_restore_never_looks_restored(image, stage, sig):
    source, repo, target = image
    after = 0.0
    if stage is None:
        # halfway through a whole restore as long as this machine takes for one
        began = time.monotonic()
        liferaft("restore", "--repo", repo, "--image", "src", "--to", target, "--yes")
        after = (time.monotonic() - began) / 2
    before = disk_bytes_sha256(target, 0, DISK) if stage is None else ""
    proc = _restore_until(repo, target, stage, sig, after=after)
    if stage is None and proc.returncode == 0:
        pytest.fail(f"the restore finished within {after:.2f} s, half its usual time")
    assert proc.returncode == (130 if sig == signal.SIGINT else -sig), proc.returncode
    warning = _warning(target)
    if stage is None and "incomplete" not in warning:
        # Stopped before its first write, or while libparted rewrote the table
        # (it clears the mark, which is written again right after): then either
        # nothing changed, or nothing is recognisable where the partitions go.
        if disk_bytes_sha256(target, 0, DISK) != before:
            nodes = _nodes_now(target)
            assert not any(_recognisable(n) for n in nodes), "written to, unmarked, readable"
        liferaft("restore", "--repo", repo, "--image", "src", "--to", target, "--yes")
        return
    assert "incomplete restore of src@" in warning and "started " in warning, warning
    # (stopped at a random point, the table itself may be half written)
    nodes = reread_partitions(target, 2) if stage else _nodes_now(target)
    complete = stage == "heads"  # every filesystem is whole; only the boot code is missing
    for i, node in enumerate(nodes):
        if complete:
            continue
        partly = not (stage == "data" or (stage == "partition-1" and i == 0))
        assert not _recognisable(node), (
            f"{node} ({'never written' if partly else 'all but its first MiB'}) looks like "
            "a filesystem after an interrupted restore"
        )
    # the next restore completes, and says nothing of the old one any more
    liferaft("restore", "--repo", repo, "--image", "src", "--to", target, "--yes")
    assert "incomplete" not in _warning(target)
    check_restored(source, reread_partitions(target, 2))


def test_interrupted_restore_of_a_whole_disk_filesystem(loopdisk, workdir):
    dev = loopdisk(160 * MIB)
    make_fs(dev, "ext4", label="WHOLE")
    files = populate(dev, "ext4", seed=7, n_files=100, big_mib=24)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "src", dev)
    target = loopdisk(160 * MIB)
    make_fs(target, "ext4", label="OLDDATA")  # what was there must not show either
    proc = _restore_until(repo, target, "data", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not _recognisable(target)
    assert "incomplete restore of src@" in _warning(target)
    liferaft("restore", "--repo", repo, "--image", "src", "--to", target, "--yes")
    assert "incomplete" not in _warning(target)
    source = Source(dev, Layout("none", [], ["ext4"]), [dev], {0: files})
    check_restored(source, [target])
