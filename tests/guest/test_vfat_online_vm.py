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

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_online_backup_keeps_a_mounted_vfats_dos_attributes(
    guest_checks: Callable[..., str],
) -> None:
    checks = ("backed-up-file-by-file", "manifest-has-attributes", "attributes-restored",
              "fsck-clean")  # fmt: skip
    guest_checks("vfat_online.sh", [256, 1024, 256], checks, timeout=1200)
