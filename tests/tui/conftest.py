"""Fixtures for the UI tests: a real source disk captured into a real repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from rescue_app.engine import Engine
from tests.helpers.diskkit import PartSpec, make_fs, partition_disk, populate

MIB = 1024 * 1024
DISK_SIZE = 96 * MIB


@dataclass(frozen=True)
class CapturedImage:
    source: str  # /dev/loopN the image was taken from
    repo: str  # repository folder
    ref: str
    trees: dict[int, dict[str, str]]  # partition number -> {path: sha256}
    fstypes: dict[int, str]


def make_source_disk(loopdisk: Callable[[int], str]) -> tuple[str, dict[int, dict[str, str]]]:
    dev = loopdisk(DISK_SIZE)
    parts = partition_disk(
        dev, "gpt", [PartSpec(40, "ext4", "root"), PartSpec(None, "ext4", "data")]
    )
    trees = {}
    for n, part in enumerate(parts, 1):
        make_fs(part, "ext4", label=f"tui{n}")
        trees[n] = populate(part, "ext4", seed=40 + n, n_files=6, big_mib=2)
    return dev, trees


@pytest.fixture
def captured(loopdisk: Callable[[int], str], workdir: str) -> CapturedImage:
    source, trees = make_source_disk(loopdisk)
    engine = Engine()
    repo_dir = os.path.join(workdir, "repo")
    repo = engine.open_repository(repo_dir, create=True)
    result = engine.capture(repo, "tuihost", [source])
    return CapturedImage(source, repo_dir, result.ref, trees, {1: "ext4", 2: "ext4"})
