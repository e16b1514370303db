"""How the engine reads a source disk (engine/blockio.py, issue 17): a chunk
with many small extents, as a filesystem of small files gives, is read in a
few large requests, and the bytes outside the extents still come back as
zeros. Real loop disk; the requests are counted by the kernel."""

from __future__ import annotations

import os

import pytest

from rescue_app.engine import blockio
from tests.helpers.diskkit import MIB


def _reads_completed(dev: str) -> int:
    with open(f"/sys/block/{os.path.basename(dev)}/stat") as f:
        return int(f.read().split()[0])


@pytest.mark.root
def test_a_fragmented_chunk_is_read_in_few_requests(loopdisk):
    dev = loopdisk(16 * MIB)
    data = os.urandom(4 * MIB)
    with open(dev, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    # 4 KiB used, 4 KiB free, ... over the first MiB; then one extent far off
    extents = [(i * 8192, 4096) for i in range(128)] + [(3 * MIB, 4096)]
    expected = bytearray(4 * MIB)
    for start, n in extents:
        expected[start : start + n] = data[start : start + n]
    with blockio.SourceReader(dev) as reader:
        blockio.drop_cache(reader.buffered)
        before = _reads_completed(dev)
        got = bytes(reader.read(0, 4 * MIB, extents))
        requests = _reads_completed(dev) - before
    assert got == bytes(expected)
    # one request per extent before: 129
    assert requests <= 8, requests
