"""Optional tools (issue 11): a program the system may lack (udevadm without udev,
partprobe, networkctl, dumpe2fs) is looked up once (``run.have_tool``), said once
and only in the log, and the fallback is used; nothing reaches the terminal."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from rescue_app.run import have_tool
from tests.enginekit import REPO_ROOT, Layout, build_source, liferaft
from tests.helpers.diskkit import MIB, PartSpec, partition_disk


def test_a_missing_tool_is_looked_up_once_and_said_once_in_the_log(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"liferaft-test-tool-{os.getpid()}"
    caplog.set_level(logging.DEBUG, logger="liferaft.run")
    assert not have_tool(name, "the test goes on without it")
    # Installed meanwhile: this process keeps its first answer (one look-up).
    tool = tmp_path / name
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    assert not have_tool(name, "the test goes on without it")
    said = [r for r in caplog.records if name in r.getMessage()]
    assert [r.getMessage() for r in said] == [
        f"{name} is not installed: the test goes on without it"
    ]
    # INFO: the log file has it, the CLI's terminal (WARNING and up) does not.
    assert said[0].levelno == logging.INFO
    assert have_tool("sh")


@pytest.mark.root
def test_capture_and_restore_without_udevadm_print_no_not_found(loopdisk, workdir) -> None:
    """The host has no udev: libparted's `udevadm settle` used to print
    "sh: 1: udevadm: not found" several times per run. An MBR, because
    libparted writes it (a GPT is written by one sfdisk command)."""
    layout = Layout("msdos", [PartSpec(None, "ext4", "r")], ["ext4"])
    src = build_source(loopdisk(96 * MIB), layout)
    target = loopdisk(96 * MIB)
    repo = os.path.join(workdir, "repo")
    udev_missing = shutil.which("udevadm", path=os.environ["PATH"] + ":/usr/sbin:/sbin") is None
    for args in (
        ["capture", "--repo", repo, "--name", "src", src.dev],
        ["restore", "--repo", repo, "--image", "src", "--to", target, "--yes"],
    ):
        log = os.path.join(workdir, f"{args[0]}.log")
        proc = liferaft("--log", log, *args)
        assert "not found" not in proc.stderr, proc.stderr
        with open(log) as f:
            said = [ln for ln in f if "udevadm is not installed" in ln]
        assert len(said) <= 1, said  # once per process at most
        if udev_missing and args[0] == "restore":  # the table was written through libparted
            assert len(said) == 1


_WITHOUT_PARTPROBE = """
import sys
from rescue_app import run
# This host has parted; a minimal system may not. Recorded as the one look-up
# would have found it: partx (util-linux) tells the kernel the partitions. (The
# kernel here has no GPT parser, so BLKRRPART alone would find none.)
run._tools["partprobe"] = False
from rescue_app.engine.kernel import reread_partitions
print(" ".join(reread_partitions(sys.argv[1], 2)))
"""


@pytest.mark.root
def test_partition_nodes_come_back_without_partprobe(loopdisk) -> None:
    dev = loopdisk(64 * MIB)
    nodes = partition_disk(dev, "gpt", [PartSpec(16, None, "a"), PartSpec(None, None, "b")])
    subprocess.run(["partx", "-d", dev], check=True)  # the kernel forgets them
    assert not any(os.path.exists(n) for n in nodes)
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PARTPROBE, dev],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == nodes
    assert proc.stderr == ""
