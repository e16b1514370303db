"""Honest, quick feedback (issue 10, items 5, 13, 14, 16): malformed URLs, Ctrl-C, units."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pexpect
import pytest

from rescue_app.cli import ProgressBar, build_parser
from rescue_app.engine.units import human_rate
from rescue_app.progress import Progress
from tests.enginekit import REPO_ROOT, Layout, assert_one_line_error, build_source, liferaft
from tests.helpers.diskkit import MIB, PartSpec

MALFORMED = [
    ("s3://bucket/p?endpoint=notaurl", "endpoint"),
    ("s3://bucket/p?endpoint=http://", "endpoint"),
    ("s3://bucket/p?endpoint=ftp://host", "endpoint"),
    ("s3://bucket/p?endpoint=http://host:port", "endpoint"),
    ("http://host:notaport/repo", "malformed"),
    ("sftp://host:notaport/repo", "malformed"),
    ("https://[::1/repo", "malformed"),
    ("smb://host:x/share/repo", "malformed"),
    ("nfs://host:x/export/repo", "malformed"),
]


@pytest.mark.parametrize(("url", "needle"), MALFORMED)
def test_malformed_repository_url_is_one_line(url: str, needle: str) -> None:
    for args in (["images"], ["verify"]):
        proc = liferaft(*args, "--repo", url, check=False, timeout=60)
        assert_one_line_error(proc, needle)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_bad_retry_seconds_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFERAFT_RETRY_SECONDS", value)
    proc = liferaft("images", "--repo", "http://127.0.0.1:9/repo", check=False)
    assert_one_line_error(proc, "LIFERAFT_RETRY_SECONDS", "positive number")


def _random_disk(dev: str, mib: int) -> None:
    """Incompressible bytes and no partition table: captured raw, a few seconds of work."""
    with open(dev, "r+b") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


@pytest.mark.root
def test_ctrl_c_on_its_own_line_and_exit_130(loopdisk, workdir) -> None:
    """On a terminal the bar is redrawn in place; Ctrl-C's message starts a new line."""
    dev = loopdisk(384 * MIB)
    _random_disk(dev, 384)
    repo = os.path.join(workdir, "repo")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "rescue_app.cli", "capture", "--repo", repo, "--name", "big", dev],
        cwd=REPO_ROOT,
        encoding="utf-8",
        timeout=120,
        dimensions=(24, 80),
    )
    try:
        child.expect(r"capture \[#*\.")  # the bar is drawn
        time.sleep(0.3)
        child.kill(signal.SIGINT)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = child.before or ""
    assert child.exitstatus == 130, out
    # what a terminal shows: each line's text after its last carriage return
    lines = [ln.rstrip("\r").split("\r")[-1] for ln in out.split("\n")]
    errors = [ln for ln in lines if "liferaft: error:" in ln]
    assert len(errors) == 1, out
    assert errors[0].startswith("liferaft: error: capture cancelled"), out
    assert "Traceback" not in out
    assert not os.path.exists(os.path.join(repo, "images", "big")), "no image after a cancel"


def test_progress_bar_rates_in_mib_per_second() -> None:
    """Sizes in MiB and rates in MiB/s: one unit family (issue 10, item 14)."""
    out = io.StringIO()
    bar = ProgressBar(out)
    bar(Progress("restore", "disk", 0, 100 * MIB))
    bar.started -= 10  # ten seconds ago
    bar.last_draw = 0.0
    bar(Progress("restore", "disk", 50 * MIB, 100 * MIB))
    line = out.getvalue().splitlines()[-1]
    assert "50.0 MiB/100.0 MiB" in line
    assert "5.0 MiB/s" in line, line
    assert "MB/s" not in line.replace("MiB/s", "")
    assert human_rate(3 * 2**20) == "3.0 MiB/s"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_a_retry_notice_on_its_own_line() -> None:
    """A store's retries reach the CLI as Progress(phase="notice"): the notice gets a
    line of its own, never glued to the half-drawn bar, then the bar goes on (item 6)."""
    out = _Terminal()
    bar = ProgressBar(out)
    bar(Progress("restore", "disk", 10 * MIB, 100 * MIB))
    notice = "server unreachable (connection refused), retrying (12 s of 60)"
    bar(Progress("notice", "http://nas/repo", 0, 0, notice=notice))
    bar(Progress("notice", "http://nas/repo", 0, 0, notice=notice))  # not every second
    bar(Progress("notice", "http://nas/repo", 0, 0, notice=""))
    bar(Progress("restore", "disk", 20 * MIB, 100 * MIB))
    screen = [ln.split("\r")[-1] for ln in out.getvalue().split("\n")]
    assert screen[0].startswith("restore [")
    assert screen[1] == f"http://nas/repo: {notice}"
    assert screen[2] == "http://nas/repo: answering again"
    assert screen[3].startswith("restore [") and "20.0 MiB/100.0 MiB" in screen[3]
    assert len(screen) == 4, screen


def test_serve_binds_loopback_unless_told(workdir) -> None:
    """The safe default stays; README shows --bind next to the serve example (item 16)."""
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    serve_lines = [ln for ln in readme.splitlines() if ln.startswith("liferaft serve")]
    assert serve_lines and all("--bind" in ln for ln in serve_lines)
    assert "127.0.0.1" in readme and "--bind 0.0.0.0" in readme
    args = build_parser().parse_args(["serve", "--repo", workdir])
    assert args.bind == "127.0.0.1"


@pytest.mark.root
def test_no_child_output_leaks_onto_the_terminal(loopdisk, workdir) -> None:
    """What tools print (libparted's `udevadm settle` on a host without udev, say) goes to
    the log, not over the progress bar (item 7): stderr holds only liferaft's own lines."""
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")], ["ext4"]))
    target = loopdisk(160 * MIB)
    repo = os.path.join(workdir, "repo")
    ours = ("map: ", "capture [", "check [", "restore [", "verify [", "grow: ", "note: ")
    for args in (
        ["capture", "--repo", repo, "--name", "src", src.dev],
        [
            "restore",
            "--repo",
            repo,
            "--image",
            "src",
            "--to",
            target,
            "--yes",
            "--grow",
            "--verify",
        ],
    ):
        proc = liferaft(*args)
        foreign = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith(ours)]
        assert not foreign, proc.stderr


_DRAWING_WHILE_PARTITIONING = """
import os, sys, threading, time
from rescue_app.engine.manifest import PartitionTable
from rescue_app.engine.table import NewPartition, write_table
stop, drawn = threading.Event(), [0]
def draw():  # as Textual does: its own thread writes the screen to fd 2
    while not stop.is_set():
        os.write(2, b"frame %d\\n" % drawn[0])
        drawn[0] += 1
        time.sleep(0.001)
painter = threading.Thread(target=draw)
painter.start()
try:
    for _ in range(3):
        # an MBR: libparted writes it (a GPT is one sfdisk command)
        write_table(sys.argv[1], PartitionTable("dos", None),
                    [NewPartition(1, 1 << 20, 8 << 20, "primary", "83", None, None, None, False)],
                    512)
finally:
    stop.set()
    painter.join()
print(drawn[0])
"""


@pytest.mark.root
def test_partitioning_neither_leaks_nor_swallows_the_screen(loopdisk) -> None:
    """libparted's `udevadm settle` on a host without udev prints nothing (item 7), and
    what the UI draws on fd 2 from another thread meanwhile reaches the terminal whole."""
    dev = loopdisk(32 * MIB)
    proc = subprocess.run(
        [sys.executable, "-c", _DRAWING_WHILE_PARTITIONING, dev],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    drawn = int(proc.stdout)
    assert proc.stderr.splitlines() == [f"frame {i}" for i in range(drawn)], proc.stderr[-2000:]
