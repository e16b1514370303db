"""The online backup of a volume group whose thin pool is in use (issue 14),
in one guest boot: a thin ext4 LV mounted and written to (each file renamed
into place, carrying its own sha256) while `liferaft backup` runs (this
tree's engine, --app); the thin LV is read from a thin snapshot and the
pool's metadata from a metadata snapshot (engine/thinpool.py), nothing
stored raw, no snapshot left. The original disk is wiped and the image
restored onto another: same LV UUIDs, the pool activates (its metadata
matches the volume group's transaction id), e2fsck clean, the files that
did not change equal, every file of the writer whole (thin_online.sh).
The LV in use stays writable.

`liferaft backup --thin-delta` twice, 1% of a 2 GiB thin LV changed in
between (thin_delta.sh): the first keeps its snapshot as the base, the
second reads only the chunks thin_delta reports changed (≤ 5% of the LV,
issue 14's goal) and replaces the base; its image restores whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_a_thin_pool_in_use_is_backed_up_online_and_restores(
    guest_checks: Callable[..., str],
) -> None:
    checks = ("backed-up-online", "pool-activates", "fsck-clean", "no-torn-files")
    guest_checks("thin_online.sh", [2048, 2048, 2048], checks, timeout=1500, memory_mb=2048)


def test_thin_delta_reads_only_what_changed_since_the_kept_base(
    guest_checks: Callable[..., str],
) -> None:
    checks = ("base-kept", "reads-only-changes", "base-replaced", "restores-whole")
    out = guest_checks("thin_delta.sh", [3072, 3072, 3072], checks, timeout=1500, memory_mb=2048)
    measured = {k: int(v) for k, v in re.findall(r"^MEASURE (\w+) (\d+)$", out, re.M)}
    read, disk = measured["read_bytes"], measured["disk_bytes"]
    print(f"\nthin_delta incremental, 1% of a {disk >> 20} MiB thin LV changed: "
          f"{read >> 20} MiB read ({100 * read / disk:.1f}%)")  # fmt: skip
    assert read <= disk * 0.05
