"""NTFS onto a smaller disk, for real: a Windows-like disk (ESP vfat, MSR,
NTFS written through ntfs-3g) captured and restored onto a smaller one
through the CLI. The NTFS is shrunk by ntfsresize in a scratch copy in TMPDIR
(engine/ntfsshrink.py). Checks: the plan says so before anything is written,
ntfsfix and ntfsresize find the new volume clean, every file's sha256 equal
through ntfs-3g, identities kept, the table fits the smaller disk; a scratch
folder too small and data too large are refused in one line, the target
untouched."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from rescue_app.engine.kernel import reread_partitions
from rescue_app.run import run
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    make_fs,
    partition_disk,
    populate,
    tree_checksums,
)
from tests.test_shrink_restore import _identity

pytestmark = pytest.mark.root

GIB = 1024 * MIB


@pytest.fixture
def tmpfs(workdir: str) -> Iterator[Callable[[str, int], str]]:
    """Factory: ``tmpfs(name, mib)`` mounts a tmpfs of that size (the rescue
    stick's /tmp is one); all unmounted at teardown."""
    points: list[str] = []

    def make(name: str, mib: int) -> str:
        point = os.path.join(workdir, name)
        os.mkdir(point)
        run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", point])
        points.append(point)
        return point

    try:
        yield make
    finally:
        for point in points:
            run(["umount", point], check=False)


def _scratch_loops() -> list[str]:
    found = []
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        with open(backing) as f:
            if "liferaft-ntfs-" in f.read():
                found.append(backing)
    return found


def windows_disk(dev: str, big_mib: int = 150) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """A Windows-like GPT disk on ``dev``: ESP (vfat), MSR (no filesystem),
    NTFS "Windows" filling the rest, files written through ntfs-3g. Returns
    the partition nodes and the sha256 of each file of the ESP and the NTFS."""
    nodes = partition_disk(
        dev,
        "gpt",
        [
            PartSpec(64, "vfat", "EFI"),
            PartSpec(16, None, "MSR"),
            PartSpec(None, "ntfs", "Windows"),
        ],
    )
    make_fs(nodes[0], "vfat", label="ESP")
    esp = populate(nodes[0], "vfat", seed=3, n_files=4, big_mib=1)
    make_fs(nodes[2], "ntfs", label="Windows")
    files = populate(nodes[2], "ntfs", seed=5, n_files=60, big_mib=big_mib)
    return nodes, esp, files


def ntfs_checks_clean(node: str) -> str:
    """ntfsfix -n ($MFT, $MFTMirr, the alternate boot sector in the device's
    last sector) and ntfsresize --info find the NTFS on ``node`` clean;
    returns ntfsresize's output."""
    fsck_clean(node, "ntfs")
    info = subprocess.run(
        ["ntfsresize", "--info", "--force", node], capture_output=True, text=True, check=False
    )
    assert info.returncode == 0, info.stdout + info.stderr
    return info.stdout


def test_ntfs_shrinks_onto_a_smaller_disk(
    loopdisk: Callable[[int], str],
    workdir: str,
    tmpfs: Callable[[str, int], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = loopdisk(1 * GIB)
    nodes, esp, files = windows_disk(dev)
    identity = _identity(dev, nodes)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "win", dev)
    restore = ["restore", "--repo", repo, "--image", "win"]

    # The data does not fit: one line, before anything is written.
    tiny = loopdisk(256 * MIB)
    before = disk_bytes_sha256(tiny, 0, 256 * MIB)
    proc = liferaft(*restore, "--to", tiny, "--yes", check=False)
    assert_one_line_error(proc, "partition 3 (ntfs) does not fit", "of data", "is left for it")
    assert disk_bytes_sha256(tiny, 0, 256 * MIB) == before

    # A temporary folder too small for the scratch copy: one line naming the
    # space and the folder, in the dry run and before writing.
    small = loopdisk(512 * MIB)
    small_tmpfs = tmpfs("small-tmp", 32)  # too small for the scratch copy
    with open(small, "r+b") as f:
        f.write(os.urandom(MIB))
    before = disk_bytes_sha256(small, 0, 512 * MIB)
    # (TMPDIR in the dry run, --scratch before writing)
    monkeypatch.setenv("TMPDIR", small_tmpfs)
    for extra in (["--dry-run"], ["--yes", "--scratch", small_tmpfs]):
        proc = liferaft(*restore, "--to", small, *extra, check=False)
        assert_one_line_error(
            proc, "shrinking NTFS partition 3 needs", f"of scratch space in {small_tmpfs}"
        )
        assert "give a folder with at least" in proc.stderr and "--scratch" in proc.stderr
    proc = liferaft(*restore, "--to", small, "--dry-run", "--scratch", "/nonexistent", check=False)
    assert_one_line_error(proc, "cannot use /nonexistent for the NTFS scratch copy")
    assert disk_bytes_sha256(small, 0, 512 * MIB) == before

    # --scratch on a tmpfs large enough (TMPDIR still the small one): sparse
    # there too, and the loop device's writes of zeros punch holes
    scratch = tmpfs("scratch", 600)
    plan = liferaft(*restore, "--to", small, "--dry-run", "--scratch", scratch).stdout
    assert "NTFS p3: shrink with ntfsresize" in " ".join(plan.split()), plan
    assert disk_bytes_sha256(small, 0, 512 * MIB) == before
    started = time.monotonic()
    out = liferaft(
        *restore, "--to", small, "--yes", "--verify", "--json", "--scratch", scratch
    ).stdout
    shrink_seconds = time.monotonic() - started
    assert json.loads(out)["verified"]
    assert os.listdir(scratch) == [] and _scratch_loops() == []

    got = reread_partitions(small, 3)
    fsck_clean(got[0], "vfat")
    ntfs_checks_clean(got[2])
    assert _identity(small, got) == identity
    table = json.loads(run(["sfdisk", "--json", small]).stdout)["partitiontable"]
    ends = [p["start"] + p["size"] for p in table["partitions"]]
    assert max(ends) - 1 <= table["lastlba"] < 512 * MIB // 512
    size = int(run(["blockdev", "--getsize64", got[2]]).stdout)
    # (was 943 MiB) below half of it: mkntfs put $MFTMirr at 471 MiB, which
    # ntfsresize had to move
    assert size < 460 * MIB
    assert tree_checksums(got[0], "vfat") == esp
    assert tree_checksums(got[2], "ntfs") == files

    same = loopdisk(1 * GIB)
    started = time.monotonic()
    liferaft(*restore, "--to", same, "--yes")
    print(
        f"\nNTFS restore seconds: shrink {shrink_seconds:.1f}, "
        f"same size {time.monotonic() - started:.1f}"
    )
