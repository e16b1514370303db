"""Capture real disks and restore them onto blank ones: every filesystem must
pass its fsck and hold exactly the source's files, tables keep their IDs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from rescue_app.engine.kernel import reread_partitions
from rescue_app.run import run
from tests.enginekit import REPO_ROOT, Layout, build_source, check_restored, cli_argv, liferaft
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    make_fs,
    mounted,
    populate,
    tree_checksums,
)

pytestmark = pytest.mark.root

ALL_FS_GPT = Layout(
    "gpt",
    [
        PartSpec(64, "vfat", "esp"),
        PartSpec(160, "ext4", "root"),
        PartSpec(320, "xfs", "srv"),
        PartSpec(160, "btrfs", "home"),
        PartSpec(100, "ntfs", "win"),
        PartSpec(64, "exfat", "xch"),
        PartSpec(32, "swap", "swap"),
        PartSpec(None, "ext3", "var"),
    ],
    ["vfat", "ext4", "xfs", "btrfs", "ntfs", "exfat", "swap", "ext3"],
)

MBR_LOGICALS = Layout(
    "msdos",
    [
        PartSpec(120, "ext2", None),
        PartSpec(None, None, None, "extended"),
        PartSpec(100, "ntfs", None, "logical"),
        PartSpec(64, "vfat", None, "logical"),
        PartSpec(None, "ext4", None, "logical"),
    ],
    ["ext2", None, "ntfs", "vfat", "ext4"],
)


def _sfdisk(dev: str) -> dict:
    return json.loads(run(["sfdisk", "--json", dev]).stdout)["partitiontable"]


def _table_identity(dev: str) -> tuple:
    """Everything of a table that must survive a restore (not its size)."""
    t = _sfdisk(dev)
    parts = [
        (
            p["node"].removeprefix(dev),
            p["start"],
            p.get("type"),
            p.get("uuid"),
            p.get("name"),
            p.get("bootable"),
            p.get("attrs"),
        )
        for p in t["partitions"]
    ]
    return t["label"], t["id"], parts


def _blkid(node: str) -> dict[str, str]:
    out = run(["blkid", "-p", "-o", "export", node], check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _fs_ids(nodes: list[str]) -> list[tuple]:
    return [(_blkid(n).get("TYPE"), _blkid(n).get("UUID"), _blkid(n).get("LABEL")) for n in nodes]


def test_gpt_every_filesystem_equal_and_larger_disk(loopdisk, workdir):
    src = build_source(loopdisk(1100 * MIB), ALL_FS_GPT)
    run(["sfdisk", "--part-attrs", src.dev, "1", "RequiredPartition"])
    reread_partitions(src.dev, len(src.nodes))  # sfdisk made the kernel drop the nodes
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "allfs", src.dev)

    for size in (1100 * MIB, 1400 * MIB):
        target = loopdisk(size)
        out = liferaft(
            "restore", "--repo", repo, "--image", "allfs", "--to", target, "--yes", "--verify"
        ).stdout
        assert "read back and verified" in out
        nodes = reread_partitions(target, len(src.nodes))
        check_restored(src, nodes)
        assert _table_identity(target) == _table_identity(src.dev)
        assert _fs_ids(nodes) == _fs_ids(src.nodes)
        if size > 1100 * MIB:
            # the backup GPT header sits at the new end of the larger disk
            assert _sfdisk(target)["lastlba"] == size // 512 - 34


@pytest.mark.parametrize("target_mib, grow", [(600, False), (900, True)])
def test_mbr_logical_partitions_boot_code_gap_and_grow(target_mib, grow, loopdisk, workdir):
    src = build_source(loopdisk(600 * MIB), MBR_LOGICALS)
    run(["sfdisk", "--activate", src.dev, "1"])
    reread_partitions(src.dev, len(src.nodes))
    # A boot loader's code in the MBR and its core image in the gap must come back.
    boot = os.urandom(440)
    gap = os.urandom(MIB - 512)
    with open(src.dev, "r+b") as f:
        f.write(boot)
        f.seek(512)
        f.write(gap)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "mbr", src.dev)

    target = loopdisk(target_mib * MIB)
    liferaft(
        "restore",
        "--repo",
        repo,
        "--image",
        "mbr",
        "--to",
        target,
        "--yes",
        "--verify",
        *(["--grow"] if grow else []),
    )
    nodes = reread_partitions(target, len(src.nodes))
    check_restored(src, nodes)
    with open(target, "rb") as f:
        assert f.read(440) == boot
        f.seek(512)
        assert f.read(len(gap)) == gap
    label, disk_id, parts = _table_identity(target)
    assert (label, disk_id) == _table_identity(src.dev)[:2]
    assert parts[0][5] is True  # the active flag
    if not grow:
        assert _table_identity(target) == _table_identity(src.dev)
        return
    # the last logical partition and the extended one now reach the end of the disk
    t = _sfdisk(target)
    last = t["partitions"][-1]
    assert (last["start"] + last["size"]) * 512 == 900 * MIB
    with mounted(nodes[-1], "ext4", read_only=True) as point:
        st = os.statvfs(point)
        assert st.f_blocks * st.f_frsize > 400 * MIB


@pytest.mark.parametrize("fs", ["ext4", "xfs", "btrfs", "ntfs"])
def test_grow_last_filesystem(fs, loopdisk, workdir):
    layout = Layout("gpt", [PartSpec(32, "vfat", "esp"), PartSpec(None, fs, "data")], ["vfat", fs])
    src = build_source(loopdisk(400 * MIB), layout)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "g", src.dev)
    target = loopdisk(1000 * MIB)
    plan = liferaft(
        "restore", "--repo", repo, "--image", "g", "--to", target, "--grow", "--dry-run"
    ).stdout
    assert "grown from" in plan
    liferaft("restore", "--repo", repo, "--image", "g", "--to", target, "--yes", "--grow")
    nodes = reread_partitions(target, 2)
    check_restored(src, nodes)
    with mounted(nodes[1], fs, read_only=True) as point:
        st = os.statvfs(point)
        assert st.f_blocks * st.f_frsize > 800 * MIB, "the filesystem did not grow"


def test_disk_without_partition_table(loopdisk, workdir):
    dev = loopdisk(300 * MIB)
    make_fs(dev, "ext4", "whole")
    files = populate(dev, "ext4", seed=7)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "whole", dev)
    target = loopdisk(300 * MIB)
    liferaft("restore", "--repo", repo, "--image", "whole", "--to", target, "--yes", "--verify")
    fsck_clean(target, "ext4")
    assert tree_checksums(target, "ext4") == files


def test_second_capture_of_unchanged_disk_stores_almost_nothing(loopdisk, workdir):
    layout = Layout(
        "gpt", [PartSpec(200, "ext4", "a"), PartSpec(None, None, "raw")], ["ext4", None]
    )
    src = build_source(loopdisk(400 * MIB), layout)
    with open(src.nodes[1], "r+b") as f:  # a partition with no filesystem: copied raw
        f.write(os.urandom(20 * MIB))
    repo = os.path.join(workdir, "repo")
    first = liferaft("capture", "--repo", repo, "--name", "d", src.dev).stdout
    second = liferaft("capture", "--repo", repo, "--name", "d", src.dev).stdout
    images = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    assert len(images) == 2
    m = [json.load(open(os.path.join(repo, "images", "d", f"{i['id']}.json"))) for i in images]
    data = sum(p["used_bytes"] for d in m[1]["disks"] for p in d["partitions"])
    assert m[0]["stats"]["stored_bytes"] > 20 * MIB, first
    assert m[1]["stats"]["stored_bytes"] < 0.01 * data, second


def _chunk_files(repo: str) -> list[str]:
    out = []
    for sub in os.listdir(os.path.join(repo, "chunks")):
        folder = os.path.join(repo, "chunks", sub)
        out += [os.path.join(folder, f) for f in os.listdir(folder)]
    return out


def test_flipped_byte_is_caught_by_verify_and_restore(loopdisk, workdir):
    layout = Layout("gpt", [PartSpec(None, "ext4", "root")], ["ext4"])
    src = build_source(loopdisk(200 * MIB), layout)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "flip", src.dev)
    assert liferaft("verify", "--repo", repo).returncode == 0
    manifest = json.load(open(_manifest_paths(repo)[0]))
    part = manifest["disks"][0]["partitions"][0]
    index, digest = next((i, d) for i, d in enumerate(part["chunks"]) if d)
    path = os.path.join(repo, "chunks", digest[:2], digest)
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0x01
    open(path, "wb").write(blob)

    proc = liferaft("verify", "--repo", repo, check=False)
    assert proc.returncode == 1
    assert "flip@" in proc.stderr and "partition 1" in proc.stderr
    assert f"offset {index * manifest['chunk_size']}" in proc.stderr

    target = loopdisk(200 * MIB)
    proc = liferaft(
        "restore", "--repo", repo, "--image", "flip", "--to", target, "--yes", check=False
    )
    from tests.enginekit import assert_one_line_error

    assert_one_line_error(proc, "damaged", "flip@", "partition 1")


def _manifest_paths(repo: str) -> list[str]:
    out = []
    for name in sorted(os.listdir(os.path.join(repo, "images"))):
        folder = os.path.join(repo, "images", name)
        out += [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    return out


def test_capture_killed_halfway_leaves_earlier_images_intact(loopdisk, workdir):
    layout = Layout(
        "gpt", [PartSpec(100, "ext4", "root"), PartSpec(None, None, "bulk")], ["ext4", None]
    )
    src = build_source(loopdisk(900 * MIB), layout)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "keep", src.dev)
    with open(src.nodes[1], "r+b") as f:  # new incompressible data: a long second capture
        for _ in range(24):
            f.write(os.urandom(32 * MIB))
    os.sync()
    before = len(_chunk_files(repo))
    proc = subprocess.Popen(
        cli_argv("capture", "--repo", repo, "--name", "killed", src.dev),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(_chunk_files(repo)) < before + 20 and time.monotonic() < deadline:
        assert proc.poll() is None, "capture finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    images = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    assert [i["name"] for i in images] == ["keep"]
    assert liferaft("verify", "--repo", repo).returncode == 0
    target = loopdisk(900 * MIB)
    liferaft("restore", "--repo", repo, "--image", "keep", "--to", target, "--yes", "--verify")
    nodes = reread_partitions(target, 2)
    fsck_clean(nodes[0], "ext4")
    assert tree_checksums(nodes[0], "ext4") == src.files[0]
    # and the repository still takes new captures
    liferaft("capture", "--repo", repo, "--name", "after", src.dev)
    assert liferaft("verify", "--repo", repo).returncode == 0


def test_dry_run_writes_nothing(loopdisk, workdir):
    layout = Layout("gpt", [PartSpec(None, "ext4", "root")], ["ext4"])
    src = build_source(loopdisk(200 * MIB), layout)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "dry", src.dev)
    target = loopdisk(300 * MIB)
    other = build_source(target, Layout("msdos", [PartSpec(None, "vfat")], ["vfat"]), seed=9)
    before = disk_bytes_sha256(target, 0, 300 * MIB)
    out = liferaft("restore", "--repo", repo, "--image", "dry", "--to", target, "--dry-run").stdout
    assert "ERASES everything on " + target in out
    assert "vfat" in out  # says what is on the disk now
    assert "nothing was written" in out
    assert disk_bytes_sha256(target, 0, 300 * MIB) == before
    assert tree_checksums(other.nodes[0], "vfat") == other.files[0]


@pytest.mark.parametrize("fs", ["ext4", "ext2"])
def test_ext_used_map_from_e2fsprogs_equals_partclones(fs, loopdisk):
    from rescue_app.engine.usedmap import partclone_map, used_map

    src = build_source(loopdisk(300 * MIB), Layout("gpt", [PartSpec(None, fs, "r")], [fs]))
    assert used_map(src.nodes[0], fs) == partclone_map(src.nodes[0], fs)


def test_restore_over_a_disk_with_another_layout(loopdisk, workdir):
    """Old tables, old filesystems and old GPT backups must not survive or confuse."""
    src = build_source(
        loopdisk(400 * MIB),
        Layout("msdos", [PartSpec(150, "ext4"), PartSpec(None, "vfat")], ["ext4", "vfat"]),
    )
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "over", src.dev)
    target = loopdisk(500 * MIB)
    build_source(
        target,
        Layout(
            "gpt", [PartSpec(120, "btrfs", "old"), PartSpec(None, "xfs", "x")], ["btrfs", "xfs"]
        ),
        seed=5,
    )
    plan = liferaft("restore", "--repo", repo, "--image", "over", "--to", target, "--dry-run")
    assert "btrfs" in plan.stdout and "xfs" in plan.stdout  # it says what is erased
    liferaft("restore", "--repo", repo, "--image", "over", "--to", target, "--yes", "--verify")
    nodes = reread_partitions(target, 2)
    check_restored(src, nodes)
    assert _sfdisk(target)["label"] == "dos"
    assert [_blkid(n).get("TYPE") for n in nodes] == ["ext4", "vfat"]
    # no GPT left anywhere (the old backup header at the end is gone too)
    assert "gpt" not in run(["blkid", "-p", "-o", "export", target], check=False).stdout.lower()


def test_read_back_catches_a_byte_the_disk_got_wrong(loopdisk, workdir):
    from rescue_app.engine import Engine
    from rescue_app.engine.restore import Counter, _verify_disk
    from rescue_app.errors import VerifyError
    from rescue_app.progress import no_progress

    src = build_source(loopdisk(200 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    repo_path = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo_path, "--name", "rb", src.dev)
    target = loopdisk(200 * MIB)
    engine = Engine()
    repo = engine.open_repository(repo_path)
    plan = engine.plan_restore(repo, "rb", [target])
    engine.restore(plan, verify=True)
    part = plan.disks[0].steps[0].source
    bad = part.used_map[len(part.used_map) // 2][0] + 100  # a byte the image says is in use
    node = reread_partitions(target, 1)[0]
    with open(node, "r+b") as f:
        f.seek(bad)
        byte = f.read(1)
        f.seek(bad)
        f.write(bytes([byte[0] ^ 0xFF]))
    chunk_start = bad // (4 * MIB) * 4 * MIB
    with pytest.raises(VerifyError, match=f"differs from the image at offset {chunk_start}"):
        _verify_disk(repo, plan.manifest, plan.disks[0], Counter(1, no_progress, "verify"), None)


def test_table_written_on_a_device_whose_size_changed_in_this_process(loopdisk, workdir):
    """libparted caches devices by path; a restore onto a loop device (or a
    replaced disk) that was bigger earlier in the same process must still fit
    the table to the device's size now."""
    from rescue_app.engine import Engine

    src = build_source(loopdisk(100 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    repo_path = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo_path, "--name", "shrunk", src.dev)
    target = loopdisk(300 * MIB)
    engine = Engine()
    repo = engine.open_repository(repo_path)
    engine.restore(engine.plan_restore(repo, "shrunk", [target]))
    backing = run(["losetup", "-n", "-O", "BACK-FILE", target]).stdout.strip()
    os.truncate(backing, 120 * MIB)
    run(["losetup", "-c", target])
    engine.restore(engine.plan_restore(repo, "shrunk", [target]), verify=True)
    check_restored(src, reread_partitions(target, 1))
    assert _sfdisk(target)["lastlba"] == 120 * MIB // 512 - 34
