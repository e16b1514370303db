"""Bad input and failures: one clear line, a nonzero exit, and nothing lost."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from rescue_app.engine import Engine
from rescue_app.engine.diskmodel import ensure_restorable
from rescue_app.engine.diskscan import find_disk, list_disks
from rescue_app.errors import DeviceVanishedError, TargetRefusedError
from rescue_app.progress import Progress
from rescue_app.run import run
from tests.enginekit import Layout, assert_one_line_error, build_source, cli_argv, liferaft
from tests.helpers.diskkit import MIB, PartSpec, disk_bytes_sha256, make_fs, mounted

pytestmark = pytest.mark.root

NOBODY = 65534


@pytest.fixture
def captured(loopdisk, workdir):
    """A repository holding image 'src' of a small ext4 disk."""
    src = build_source(loopdisk(200 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "src", src.dev)
    return repo, src


def test_missing_repository(workdir):
    missing = os.path.join(workdir, "nope")
    for args in (["images"], ["verify"], ["restore", "--image", "x", "--to", "/dev/null"]):
        proc = liferaft(*args, "--repo", missing, check=False)
        assert_one_line_error(proc, "does not exist")


def test_folder_that_is_not_a_repository(workdir):
    assert_one_line_error(
        liferaft("images", "--repo", workdir, check=False), "not a liferaft repository"
    )


def test_unreadable_repository(captured):
    repo, _ = captured
    os.chmod(repo, 0o700)
    proc = liferaft("images", "--repo", repo, check=False, user=NOBODY)
    assert_one_line_error(proc, "not readable")


def test_read_only_repository(captured, loopdisk, workdir):
    _, src = captured
    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4")
    with mounted(dev, "ext4") as point:
        liferaft("capture", "--repo", os.path.join(point, "r"), "--name", "a", src.dev)
        run(["mount", "-o", "remount,ro", point])
        proc = liferaft(
            "capture", "--repo", os.path.join(point, "r"), "--name", "b", src.dev, check=False
        )
        assert_one_line_error(proc, "read-only")


def test_unknown_image(captured):
    repo, _ = captured
    proc = liferaft("restore", "--repo", repo, "--image", "other", "--to", "/dev/null", check=False)
    assert_one_line_error(proc, "no image named 'other'")
    proc = liferaft("verify", "--repo", repo, "src@20000101T000000Z", check=False)
    assert_one_line_error(proc, "not in repository")


def test_truncated_manifest(captured):
    repo, _ = captured
    folder = os.path.join(repo, "images", "src")
    path = os.path.join(folder, os.listdir(folder)[0])
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    proc = liferaft(
        "restore", "--repo", repo, "--image", "src", "--to", "/dev/null", "--dry-run", check=False
    )
    assert_one_line_error(proc, "corrupt or truncated")
    proc = liferaft("verify", "--repo", repo, check=False)
    assert proc.returncode == 1 and "corrupt or truncated" in proc.stderr


def test_target_too_small(captured, loopdisk):
    """A disk smaller than the data even file-level (a smaller disk that holds
    the data restores: tests/test_shrink_restore.py): one line naming the
    partition, its data and the room, the smallest disk in bytes; nothing written."""
    repo, _ = captured
    small = loopdisk(48 * MIB)
    before = disk_bytes_sha256(small, 0, 48 * MIB)
    proc = liferaft(
        "restore", "--repo", repo, "--image", "src", "--to", small, "--yes", check=False
    )
    line = assert_one_line_error(proc, "does not fit", small, "of data", "needs")
    assert "not supported" not in line and "as large as the original" not in line
    assert re.search(r"at least \d+\.\d MiB \(\d+ bytes\)", proc.stderr), proc.stderr
    assert disk_bytes_sha256(small, 0, 48 * MIB) == before


def test_mounted_target_is_refused_whatever_the_flags(captured, loopdisk):
    repo, _ = captured
    target = loopdisk(300 * MIB)
    other = build_source(target, Layout("gpt", [PartSpec(None, "ext4", "busy")], ["ext4"]))
    # the table and boot area; the mounted filesystem itself changes as it is mounted
    before = disk_bytes_sha256(target, 0, MIB)
    with mounted(other.nodes[0], "ext4"):
        proc = liferaft(
            "restore", "--repo", repo, "--image", "src", "--to", target, "--yes", check=False
        )
        assert_one_line_error(proc, "mounted")
    assert disk_bytes_sha256(target, 0, MIB) == before


def test_running_system_disk_is_never_a_target():
    system = [d for d in list_disks() if any("running system" in r for r in d.in_use)]
    assert system, "the disk holding / was not recognised"
    with pytest.raises(TargetRefusedError, match="running system"):
        ensure_restorable(find_disk(system[0].path))


def test_partition_is_not_a_disk(captured):
    repo, src = captured
    proc = liferaft(
        "restore", "--repo", repo, "--image", "src", "--to", src.nodes[0], "--dry-run", check=False
    )
    assert_one_line_error(proc, "is a partition")


def test_no_confirmation_no_write(captured, loopdisk):
    repo, _ = captured
    target = loopdisk(300 * MIB)
    before = disk_bytes_sha256(target, 0, 300 * MIB)
    proc = liferaft("restore", "--repo", repo, "--image", "src", "--to", target, check=False)
    assert_one_line_error(proc, "confirmation", "--yes")
    assert disk_bytes_sha256(target, 0, 300 * MIB) == before


def test_wrong_typed_confirmation_writes_nothing(captured, loopdisk):
    repo, _ = captured
    target = loopdisk(300 * MIB)
    before = disk_bytes_sha256(target, 0, 300 * MIB)
    # a real terminal, so liferaft asks; the answer names another disk
    script = shlex.join(cli_argv("restore", "--repo", repo, "--image", "src", "--to", target))
    proc = subprocess.run(
        ["script", "-qec", script, "/dev/null"],
        input="loop999\n",
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode != 0
    assert "will be ERASED" in proc.stdout and "not confirmed" in proc.stdout
    assert disk_bytes_sha256(target, 0, 300 * MIB) == before


def test_capture_refuses_mounted_source(loopdisk, workdir):
    src = build_source(loopdisk(200 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    with mounted(src.nodes[0], "ext4"):
        proc = liferaft(
            "capture", "--repo", os.path.join(workdir, "r"), "--name", "m", src.dev, check=False
        )
        assert_one_line_error(proc, "is mounted", "unmount")


def test_not_root(captured, workdir):
    repo, src = captured
    for args in (
        ["capture", "--repo", repo, "--name", "x", src.dev],
        ["restore", "--repo", repo, "--image", "src", "--to", src.dev, "--yes"],
    ):
        assert_one_line_error(liferaft(*args, check=False, user=NOBODY), "needs root")


def test_bad_image_name(captured):
    repo, src = captured
    proc = liferaft("capture", "--repo", repo, "--name", "../evil", src.dev, check=False)
    assert_one_line_error(proc, "not allowed")


def test_wrong_number_of_targets(captured, loopdisk):
    repo, _ = captured
    a, b = loopdisk(300 * MIB), loopdisk(300 * MIB)
    proc = liferaft(
        "restore", "--repo", repo, "--image", "src", "--to", a, "--to", b, "--dry-run", check=False
    )
    assert_one_line_error(proc, "1 disk(s) but 2 target(s)")


def test_device_vanishing_mid_capture(loopdisk, workdir):
    layout = Layout("gpt", [PartSpec(None, None, "raw")], [None])
    src = build_source(loopdisk(200 * MIB), layout)
    backing = run(["losetup", "-n", "-O", "BACK-FILE", src.dev]).stdout.strip()
    engine = Engine()
    repo = engine.open_repository(os.path.join(workdir, "repo"), create=True)
    shrunk: list[bool] = []

    def pull_the_plug(p: Progress) -> None:
        if p.phase == "capture" and not shrunk:
            # the disk goes away: its size drops to 1 MiB under our feet
            os.truncate(backing, MIB)
            run(["losetup", "-c", src.dev])
            shrunk.append(True)

    with pytest.raises(DeviceVanishedError, match=f"{src.dev} failed or vanished"):
        engine.capture(repo, "gone", [src.dev], progress=pull_the_plug)
    assert engine.list_images(repo) == []


def test_restore_refuses_a_target_changed_since_the_plan(captured, loopdisk):
    """The structural re-plan check lives in the engine (issue 11): the CLI, the UI and
    unattended mode all get it. A disk partitioned after the plan was shown is refused."""
    from rescue_app.errors import TargetRefusedError
    from tests.helpers.diskkit import partition_disk

    repo_dir, _ = captured
    target = loopdisk(300 * MIB)
    engine = Engine()
    repo = engine.open_repository(repo_dir)
    plan = engine.plan_restore(repo, "src", [target])
    partition_disk(target, "gpt", [PartSpec(None, "ext4", "new")])  # someone else's data now
    before = disk_bytes_sha256(target, 0, 300 * MIB)
    with pytest.raises(TargetRefusedError, match="changed after the plan"):
        engine.restore(plan)
    assert disk_bytes_sha256(target, 0, 300 * MIB) == before
