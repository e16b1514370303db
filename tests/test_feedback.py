"""Honest, quick feedback (issue 10, items 5, 13, 14, 16): malformed URLs, Ctrl-C, units."""

from __future__ import annotations

import io
import os
import signal
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
    child = pexpect.spawn(sys.executable, ["-m", "rescue_app.cli", "capture", "--repo", repo,
                                           "--name", "big", dev],
                          cwd=REPO_ROOT, encoding="utf-8", timeout=120,
                          dimensions=(24, 80))
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
    src = build_source(loopdisk(128 * MIB), Layout("gpt", [PartSpec(None, "ext4", "r")],
                                                    ["ext4"]))
    target = loopdisk(160 * MIB)
    repo = os.path.join(workdir, "repo")
    ours = ("map: ", "capture [", "restore [", "verify [", "grow: ", "note: ")
    for args in (["capture", "--repo", repo, "--name", "src", src.dev],
                 ["restore", "--repo", repo, "--image", "src", "--to", target, "--yes",
                  "--grow", "--verify"]):
        proc = liferaft(*args)
        foreign = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith(ours)]
        assert not foreign, proc.stderr
