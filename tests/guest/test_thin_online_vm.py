"""The online backup of a volume group whose thin pool is in use (issue 14),
in one guest boot: a thin ext4 LV mounted and written to (each file renamed
into place, carrying its own sha256) while `liferaft backup` runs (this
tree's engine, --app); the thin LV is read from a thin snapshot and the
pool's metadata from a metadata snapshot (engine/thinpool.py), nothing
stored raw, no snapshot left. The original disk is wiped and the image
restored onto another: same LV UUIDs, the pool activates (its metadata
matches the volume group's transaction id), e2fsck clean, the files that
did not change equal, every file of the writer whole (thin_online.sh).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_a_thin_pool_in_use_is_backed_up_online_and_restores(
    guest_checks: Callable[..., str],
) -> None:
    checks = ("backed-up-online", "pool-activates", "fsck-clean", "no-torn-files")
    guest_checks("thin_online.sh", [2048, 2048, 2048], checks, timeout=1500, memory_mb=2048)
