"""The online backup in the rescue system, three scenarios in ONE guest boot
(tests/guest/scenarios.sh; a boot costs 30-60 s under TCG). Each scenario
has its own disks and its own test here, so a failure names it.

A volume group whose thin pool is in use (issue 14, thin_online.sh): a thin
ext4 LV mounted and written to (each file renamed into place, carrying its
own sha256) while `liferaft backup` runs (this tree's engine, --app); the
thin LV is read from a thin snapshot and the pool's metadata from a metadata
snapshot (engine/thinpool.py), nothing stored raw, no snapshot left. The
original disk is wiped and the image restored onto another: same LV UUIDs,
the pool activates (its metadata matches the volume group's transaction id),
e2fsck clean, the files that did not change equal, every file of the writer
whole. The LV in use stays writable.

`liferaft backup --thin-delta` twice, 1% of a 2 GiB thin LV changed in
between (thin_delta.sh): the first keeps its snapshot as the base, the
second reads only the chunks thin_delta reports changed (≤ 5% of the LV,
issue 14's goal) and replaces the base; its image restores whole.

The DOS attributes of a mounted vfat (an ESP, vfat_online.sh): the rescue
system's kernel mounts vfat (this host's cannot), so FAT_IOCTL_GET_ATTRIBUTES
is read from a real vfat mount. An ESP with a hidden+system+read-only file,
a hidden folder, a file without the archive flag and a UTF-8 name (mtools),
mounted, backed up (`liferaft backup` of its disk), restored onto another
disk; `mattrib -/` of both equal; fsck.fat.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.guest import Scenario, run_scenarios, scenario_output

pytestmark = [pytest.mark.slow, pytest.mark.root]

THIN_ONLINE = Scenario(
    "thin_online.sh", (2048, 2048, 2048),
    ("backed-up-online", "pool-activates", "fsck-clean", "no-torn-files"),
)  # fmt: skip
THIN_DELTA = Scenario(
    "thin_delta.sh", (3072, 3072, 3072),
    ("base-kept", "reads-only-changes", "base-replaced", "restores-whole"),
)  # fmt: skip
VFAT_ONLINE = Scenario(
    "vfat_online.sh", (256, 1024, 256),
    ("backed-up-file-by-file", "manifest-has-attributes", "attributes-restored", "fsck-clean"),
)  # fmt: skip


@pytest.fixture(scope="module")
def online_boot(guest_iso: Path, scenario_workdir: Path) -> dict[str, str]:
    """The one boot all tests of this file read (the thin scenarios need 2 GiB)."""
    scenarios = (THIN_ONLINE, THIN_DELTA, VFAT_ONLINE)
    return run_scenarios(guest_iso, scenario_workdir, scenarios, timeout=2400, memory_mb=2048)


def test_a_thin_pool_in_use_is_backed_up_online_and_restores(online_boot: dict[str, str]) -> None:
    scenario_output(online_boot, THIN_ONLINE)


def test_thin_delta_reads_only_what_changed_since_the_kept_base(
    online_boot: dict[str, str],
) -> None:
    out = scenario_output(online_boot, THIN_DELTA)
    measured = {k: int(v) for k, v in re.findall(r"^MEASURE (\w+) (\d+)$", out, re.M)}
    read, disk = measured["read_bytes"], measured["disk_bytes"]
    print(f"\nthin_delta incremental, 1% of a {disk >> 20} MiB thin LV changed: "
          f"{read >> 20} MiB read ({100 * read / disk:.1f}%)")  # fmt: skip
    assert read <= disk * 0.05


def test_online_backup_keeps_a_mounted_vfats_dos_attributes(online_boot: dict[str, str]) -> None:
    scenario_output(online_boot, VFAT_ONLINE)
