"""The DOS attributes of a mounted vfat (an ESP) through the online backup,
in one guest boot: the rescue system's kernel mounts vfat (this host's
cannot), so FAT_IOCTL_GET_ATTRIBUTES is read from a real vfat mount.

vfat_online.sh makes an ESP with a hidden+system+read-only file, a hidden
folder, a file without the archive flag and a UTF-8 name (mtools), mounts
it, runs `liferaft backup` of its disk (this tree's engine, --app), restores
the image onto another disk and compares `mattrib -/` of both; fsck.fat.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.guest import GuestResult, sparse_disk

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1024**2
HERE = Path(__file__).resolve().parent
CHECKS = ("backed-up-file-by-file", "manifest-has-attributes", "attributes-restored", "fsck-clean")


def test_online_backup_keeps_a_mounted_vfats_dos_attributes(
    guest: Callable[..., GuestResult], workdir: str
) -> None:
    sizes = {"src": 256, "repo": 1024, "dst": 256}
    disks = [sparse_disk(Path(workdir) / f"{name}.img", n * MIB) for name, n in sizes.items()]
    result = guest((HERE / "vfat_online.sh").read_text(), disks, app=True, timeout=1200)
    assert result.exit_code == 0, result.output[-3000:]
    for name in CHECKS:
        assert f"CHECK {name} ok" in result.output, name
