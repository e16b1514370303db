"""Shared steps of the engine tests: run the CLI, build source disks, compare."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rescue_app.engine.diskmodel import BlockDisk
from tests.helpers.diskkit import (
    PartSpec,
    fsck_clean,
    make_fs,
    partition_disk,
    populate,
    tree_checksums,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_argv(*args: str) -> list[str]:
    """The command line of this tree's liferaft CLI (for Popen, pexpect, shells)."""
    return [sys.executable, "-m", "rescue_app.cli", *args]


def liferaft(
    *args: str, check: bool = True, user: int | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would; stdin is not a terminal."""
    argv = cli_argv(*args)
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"liferaft {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_liferaft(
    *args: str, env: Mapping[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """The real CLI started in the background, for a test that acts while it
    runs (kills a server, signals it at a pause); stdin is not a terminal,
    stderr is a pipe. The caller ends it (``proc.wait``, ``kill``)."""
    return subprocess.Popen(
        cli_argv(*args),
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt_restore(
    args: Sequence[str], sig: int, *, stage: str | None = None, after: float = 0.0
) -> subprocess.Popen[str]:
    """`liferaft restore ARGS` stopped by ``sig``: at its test pause ``stage``
    (LIFERAFT_TEST_PAUSE, engine/restore.py), else ``after`` seconds from its
    start. Returns it ended (killed if ``sig`` did not end it in 2 minutes);
    what it wrote to stderr after the pause is still in ``proc.stderr``."""
    env = dict(os.environ, LIFERAFT_TEST_PAUSE=stage) if stage else None
    proc = start_liferaft("restore", *args, env=env, stdout=subprocess.DEVNULL)
    try:
        if stage:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith(f"liferaft-test: paused at {stage}"):
                    break
            else:
                raise AssertionError(f"the restore ended before {stage}: {proc.wait()}")
        else:
            time.sleep(after)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A failure the user meets: nonzero exit, one clear line, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("liferaft: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]
    return errors[0]


@dataclass
class Layout:
    """A source disk: its table, its partitions' filesystems and their files."""

    label: str
    parts: list[PartSpec]
    filesystems: list[str | None]  # per partition; None = nothing made (extended)


@dataclass
class Source:
    dev: str
    layout: Layout
    nodes: list[str]
    files: dict[int, dict[str, str]]  # partition index -> {path: sha256}


def build_source(dev: str, layout: Layout, seed: int = 1) -> Source:
    nodes = partition_disk(dev, layout.label, layout.parts)
    files: dict[int, dict[str, str]] = {}
    for i, (node, fs) in enumerate(zip(nodes, layout.filesystems, strict=True)):
        if fs is None:
            continue
        make_fs(node, fs, label=f"{fs[:4]}{i}")
        if fs != "swap":
            files[i] = populate(node, fs, seed=seed + i)
    return Source(dev, layout, nodes, files)


def check_restored(source: Source, nodes: list[str]) -> None:
    """Every filesystem passes its fsck and holds exactly the source's files."""
    assert len(nodes) == len(source.nodes)
    for i, fs in enumerate(source.layout.filesystems):
        if fs is None:
            continue
        fsck_clean(nodes[i], fs)
        if fs != "swap":
            assert tree_checksums(nodes[i], fs) == source.files[i], f"files differ on {nodes[i]}"


def block_disk(path: str, size: int, **changes: Any) -> BlockDisk:
    """The value lsblk gives an empty, unused SATA disk at ``path`` (512-byte
    sectors, no table), with ``changes`` (any BlockDisk field): for pure
    tests of plans and rules, no device behind it."""
    fields: dict[str, Any] = {
        "path": path, "name": os.path.basename(path), "model": None, "serial": None,
        "wwn": None, "size": size, "logical_sector_size": 512, "physical_sector_size": 512,
        "transport": "sata", "removable": False, "read_only": False, "pttype": None,
        "ptuuid": None, "fstype": None, "partitions": (), "in_use": (), "backing_file": None,
    }  # fmt: skip
    return BlockDisk(**{**fields, **changes})


def files_below(root: str) -> dict[str, bytes]:
    """Every file below ``root`` (a repository's folder, say), by its path
    relative to ``root``, with its bytes: to compare before and after."""
    out = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def secret_in_process_listing(secret: str) -> bool:
    """Whether any process's command line holds ``secret`` (what `ps` shows)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if secret.encode() in f.read():
                        return True
            except OSError:
                continue
    return False
