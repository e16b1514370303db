"""What may be captured, and a repository that only appears once data is written
(issue 10, items 1, 8, 10, 11 and the verify part of 3), on real loop devices."""

from __future__ import annotations

import glob
import json
import os
import subprocess

import pytest

from tests.enginekit import Layout, assert_one_line_error, build_source, liferaft
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    make_fs,
    mounted,
    partition_disk,
    populate,
    tree_checksums,
)

pytestmark = pytest.mark.root


def _whole_disk_ext4(loopdisk) -> tuple[str, dict[str, str]]:
    dev = loopdisk(96 * MIB)
    make_fs(dev, "ext4", label="WHOLE")
    return dev, populate(dev, "ext4", seed=5)


def test_mounted_read_write_whole_disk_is_refused_and_nothing_is_created(loopdisk, workdir):
    dev, _ = _whole_disk_ext4(loopdisk)
    repo = os.path.join(workdir, "new-repo")
    with mounted(dev, "ext4") as point:
        proc = liferaft("capture", "--repo", repo, "--name", "w", dev, check=False)
        assert_one_line_error(proc, dev, "mounted read-write", point, "remount,ro")
    assert not os.path.exists(repo), "a refused capture left a repository folder behind"


def test_mounted_read_only_whole_disk_is_captured(loopdisk, workdir):
    dev, files = _whole_disk_ext4(loopdisk)
    repo = os.path.join(workdir, "repo")
    with mounted(dev, "ext4", read_only=True):
        liferaft("capture", "--repo", repo, "--name", "ro", dev)
    target = loopdisk(96 * MIB)
    liferaft("restore", "--repo", repo, "--image", "ro", "--to", target, "--yes")
    assert tree_checksums(target, "ext4") == files


def test_repository_on_the_captured_disk_is_always_refused(loopdisk, workdir):
    # a whole-disk filesystem holding the repository
    dev, _ = _whole_disk_ext4(loopdisk)
    with mounted(dev, "ext4") as point:
        repo = os.path.join(point, "repo")
        proc = liferaft("capture", "--repo", repo, "--name", "w", dev, check=False)
        assert_one_line_error(proc, "repository", repo, "being captured", "another disk")
        assert not os.path.exists(repo)
    # a partition of the disk holding it, the other partition unmounted
    src = build_source(
        loopdisk(160 * MIB),
        Layout("gpt", [PartSpec(64, "ext4", "a"), PartSpec(None, "ext4", "b")], ["ext4", "ext4"]),
    )
    with mounted(src.nodes[1], "ext4") as point:
        repo = os.path.join(point, "backups", "repo")
        proc = liferaft("capture", "--repo", repo, "--name", "p", src.dev, check=False)
        assert_one_line_error(proc, "repository", src.dev, "being captured")
        assert not os.path.exists(os.path.join(point, "backups"))


def test_mounted_read_write_partition_is_refused(loopdisk, workdir):
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    with mounted(src.nodes[0], "ext4") as point:
        proc = liferaft(
            "capture", "--repo", os.path.join(workdir, "r"), "--name", "p", src.dev, check=False
        )
        assert_one_line_error(proc, src.nodes[0], "mounted read-write", point)
    with mounted(src.nodes[0], "ext4", read_only=True):
        liferaft("capture", "--repo", os.path.join(workdir, "r"), "--name", "p", src.dev)


def test_failed_capture_leaves_no_repository(loopdisk, workdir):
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    repo = os.path.join(workdir, "typo", "repo")
    for device in ("/dev/no-such-disk", src.nodes[0]):
        proc = liferaft("capture", "--repo", repo, "--name", "x", device, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert not os.path.exists(os.path.join(workdir, "typo")), device


def test_repo_that_is_a_file(workdir, loopdisk):
    path = os.path.join(workdir, "notes.txt")
    with open(path, "w") as f:
        f.write("not a repository\n")
    dev = loopdisk(32 * MIB)
    for args in (
        ["images"],
        ["verify"],
        ["capture", "--name", "x", dev],
        ["restore", "--image", "x", "--to", dev, "--dry-run"],
        ["serve", "--port", "0"],
    ):
        proc = liferaft(*args, "--repo", path, check=False, timeout=60)
        assert_one_line_error(proc, "is a file, not a folder")


def _two_images(loopdisk, workdir) -> str:
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "one", src.dev)
    liferaft("capture", "--repo", repo, "--name", "two", src.dev)
    return repo


def test_damaged_manifest_is_named_not_hidden(loopdisk, workdir):
    repo = _two_images(loopdisk, workdir)
    (manifest,) = glob.glob(os.path.join(repo, "images", "one", "*.json"))
    with open(manifest, "r+b") as f:
        f.truncate(100)
    proc = liferaft("images", "--repo", repo)
    assert "two@" in proc.stdout and "one@" not in proc.stdout
    warnings = [ln for ln in proc.stderr.splitlines() if "damaged" in ln]
    assert len(warnings) == 1 and "one@" in warnings[0], proc.stderr
    proc = liferaft("verify", "--repo", repo, check=False)
    assert proc.returncode != 0 and "one@" in proc.stderr


def test_damaged_repository_file_is_one_line_with_a_hint(loopdisk, workdir):
    repo = _two_images(loopdisk, workdir)
    with open(os.path.join(repo, "liferaft-repository.json"), "w") as f:
        f.write('{"format": "liferaft-repo')
    line = assert_one_line_error(
        liferaft("images", "--repo", repo, check=False), "liferaft-repository.json is damaged"
    )
    assert "FORMAT.md" in line or "copy" in line


def test_verify_names_every_image_that_needs_a_bad_chunk(loopdisk, workdir):
    repo = _two_images(loopdisk, workdir)  # the same disk twice: every chunk shared
    one = json.load(open(glob.glob(os.path.join(repo, "images", "one", "*.json"))[0]))
    digest = next(c for d in one["disks"] for p in d["partitions"] for c in p["chunks"] if c)
    os.unlink(glob.glob(os.path.join(repo, "chunks", "**", digest + "*"), recursive=True)[0])
    proc = liferaft("verify", "--repo", repo, check=False)
    assert proc.returncode != 0
    problems = [ln for ln in proc.stderr.splitlines() if digest[:12] in ln]
    assert len(problems) == 1, proc.stderr
    assert "image one@" in problems[0] and "image two@" in problems[0], problems[0]


def test_restore_with_a_missing_chunk_writes_nothing(loopdisk, workdir):
    """A dry run reports it, a restore refuses before erasing (item 3)."""
    repo = _two_images(loopdisk, workdir)
    one = json.load(open(glob.glob(os.path.join(repo, "images", "one", "*.json"))[0]))
    digest = next(c for d in one["disks"] for p in d["partitions"] for c in p["chunks"] if c)
    os.unlink(glob.glob(os.path.join(repo, "chunks", "**", digest + "*"), recursive=True)[0])
    target = loopdisk(128 * MIB)
    make_fs(target, "ext4", label="KEEPME")
    before = disk_bytes_sha256(target, 0, 128 * MIB)
    for extra in (["--dry-run"], ["--yes"]):
        proc = liferaft(
            "restore", "--repo", repo, "--image", "one", "--to", target, *extra, check=False
        )
        assert_one_line_error(proc, "1 chunk(s)", "missing", "one@", "two@", "nothing was written")
    assert disk_bytes_sha256(target, 0, 128 * MIB) == before


def test_disks_shows_labels_of_mounted_partitions(loopdisk):
    """Item 12: a mounted partition keeps its label in `liferaft disks` (no udev here)."""
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    with mounted(src.nodes[0], "ext4") as point:
        lines = liferaft("disks").stdout.splitlines()
        (line,) = [ln for ln in lines if ln.strip().startswith(src.nodes[0] + " ")]
        assert "ext40" in line and point[:18] in line, line  # the column is cut


def test_verify_progress_counts_bytes(loopdisk, workdir):
    """Item 14: verify's progress is in bytes like every other (not chunk counts)."""
    from rescue_app.engine import Engine
    from rescue_app.progress import Progress

    repo_dir = _two_images(loopdisk, workdir)
    seen: list[Progress] = []
    engine = Engine()
    report = engine.verify(engine.open_repository(repo_dir), progress=seen.append)
    assert report.ok and seen
    last = seen[-1]
    assert last.done == last.total == report.bytes_checked > 100 * 1024
    assert last.item == f"chunk {report.chunks_checked} of {report.chunks_checked}"


def test_capture_makes_the_kernel_show_partitions_and_names_raw_ones(loopdisk, workdir):
    """Issue 11: on a host without udev the partition nodes may be missing; capture
    must not silently store every partition raw. And a partition that is stored raw
    says so, with the reason, in the output and in `images --json`."""
    src = build_source(
        loopdisk(160 * MIB),
        Layout("gpt", [PartSpec(64, "ext4", "fs"), PartSpec(None, None, "blank")], ["ext4", None]),
    )
    with open(src.nodes[1], "r+b") as f:  # bytes no tool recognises
        f.write(os.urandom(2 * MIB))
    subprocess.run(["partx", "-d", src.dev], check=True)  # the kernel forgets them
    repo = os.path.join(workdir, "repo")
    proc = liferaft("capture", "--repo", repo, "--name", "s", src.dev)
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "partition 2" in notes[0] and "stored raw" in notes[0], notes
    (image,) = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    (manifest,) = glob.glob(os.path.join(repo, "images", "s", "*.json"))
    parts = json.load(open(manifest))["disks"][0]["partitions"]
    assert [p["method"] for p in parts] == ["used-blocks", "raw"], "the ext4 was stored raw"
    assert len(image["raw"]) == 1 and "partition 2" in image["raw"][0]
    assert "no filesystem recognised" in image["raw"][0]


def test_disk_with_an_incomplete_restore_is_not_captured(loopdisk, workdir):
    """An image of a half-restored disk would not work: refused until a restore completes."""
    from datetime import UTC, datetime

    from rescue_app.engine import restoremark

    dev, _ = _whole_disk_ext4(loopdisk)
    restoremark.write(dev, "web1@20261204T101500Z", datetime.now(UTC))
    repo = os.path.join(workdir, "repo")
    proc = liferaft("capture", "--repo", repo, "--name", "half", dev, check=False)
    assert_one_line_error(
        proc, "incomplete restore of web1@20261204T101500Z", "run the restore again"
    )
    assert not os.path.exists(repo)


def test_new_repository_on_a_read_only_filesystem_is_one_line(loopdisk, workdir):
    """A repository still to be created is checked before any disk is read, without
    creating anything: a read-only place says so and what to do."""
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    stick = loopdisk(32 * MIB)
    make_fs(stick, "ext4")
    with mounted(stick, "ext4", read_only=True) as point:
        proc = liferaft(
            "capture",
            "--repo",
            os.path.join(point, "new", "repo"),
            "--name",
            "x",
            src.dev,
            check=False,
        )
        assert_one_line_error(proc, "read-only filesystem", "remount it read-write")
        assert os.listdir(point) == ["lost+found"]


def test_firmware_raid_member_is_refused(loopdisk, workdir):
    """A disk of an Intel IMSM (RST) set: the set's metadata sits in the disk's
    last sectors (blkid reads the signature there). A capture by partitions
    would drop it, so the disk is refused in one line, nothing written."""
    dev = loopdisk(64 * MIB)
    (part,) = partition_disk(dev, "msdos", [PartSpec(None, "ext4")])
    make_fs(part, "ext4")
    with open(dev, "r+b") as f:
        f.seek(64 * MIB - 2 * 512)  # where the IMSM anchor lives
        f.write(b"Intel Raid ISM Cfg Sig. 1.3.00")
    repo = os.path.join(workdir, "repo")
    proc = liferaft("capture", "--repo", repo, "--name", "rst", dev, check=False)
    assert_one_line_error(proc, dev, "Intel IMSM/RST firmware RAID", "AHCI")
    assert not os.path.exists(repo)
