"""One source disk and one local repository of it, shared by the store tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import _disk_backed_tmp
from tests.enginekit import Layout, Source, liferaft
from tests.helpers.diskkit import MIB, PartSpec, loop_disk, make_fs, partition_disk, populate

LAYOUT = Layout(
    "gpt", [PartSpec(48, "ext4", "boot"), PartSpec(None, "ext4", "root")], ["ext4", "ext4"]
)
DISK_BYTES = 160 * MIB


@dataclass
class Captured:
    source: Source
    repo: str  # a local repository holding image "src"
    chunk_bytes: int  # bytes of all chunk files: what a restore must download


def chunk_bytes(repo: str) -> int:
    total = 0
    for folder, _dirs, names in os.walk(os.path.join(repo, "chunks")):
        total += sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    return total


@pytest.fixture(scope="session")
def captured() -> Iterator[Captured]:
    with (
        tempfile.TemporaryDirectory(prefix="liferaft-stores-", dir=_disk_backed_tmp()) as d,
        loop_disk(DISK_BYTES, d) as dev,
    ):
        nodes = partition_disk(dev, LAYOUT.label, LAYOUT.parts)
        files = {}
        for i, node in enumerate(nodes):
            make_fs(node, "ext4", label=f"st{i}")
            # Random data, so chunks do not compress away: ~30 MB to download.
            files[i] = populate(node, "ext4", seed=11 + i, big_mib=12 if i else 3)
        source = Source(dev, LAYOUT, nodes, files)
        repo = os.path.join(d, "repo")
        liferaft("capture", "--repo", repo, "--name", "src", dev)
        yield Captured(source, repo, chunk_bytes(repo))
