"""The online backup refuses a disk whose md array or open LUKS volume is in
use (nothing snapshots below such a filesystem, so its blocks would change
while read): one line naming the member, the array or mapping and its use,
and what to do. Idle ones are taken.

The host has no md or device-mapper: the lsblk output is recorded in the
rescue system (tests/data/lsblk/rescue-md-luks-in-use.sh): vda1+vdb1 a RAID1
mounted, vda2 LUKS holding LVM (root mounted, swap active), vda3 plain ext4,
vda4+vdb2 a RAID1 nothing uses, vda5 LUKS open and unused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rescue_app.engine.diskparse import StackedVolume, stacked_volumes
from rescue_app.engine.online import refuse_stacked_in_use
from rescue_app.errors import DiskError

RECORDED = Path(__file__).parent / "data" / "lsblk" / "rescue-md-luks-in-use.json"


def _tree() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def test_md_arrays_and_luks_volumes_on_a_disk_with_their_use() -> None:
    assert stacked_volumes(_tree(), "vda") == [
        StackedVolume("md", "/dev/md0", "/dev/vda1", "/dev/md0 is mounted on /mnt/md"),
        StackedVolume(
            "luks",
            "/dev/mapper/cryptlvm",
            "/dev/vda2",
            "/dev/mapper/vgc-root is mounted on /mnt/luks",
        ),
        StackedVolume("md", "/dev/md1", "/dev/vda4", ""),
        StackedVolume("luks", "/dev/mapper/idle", "/dev/vda5", ""),
    ]
    assert [(v.device, v.member, bool(v.use)) for v in stacked_volumes(_tree(), "vdb")] == [
        ("/dev/md0", "/dev/vdb1", True),
        ("/dev/md1", "/dev/vdb2", False),
    ]
    assert stacked_volumes(_tree(), "sr0") == []
    assert stacked_volumes(_tree(), "nosuchdisk") == []


def _one_line(exc: pytest.ExceptionInfo[DiskError]) -> str:
    text = f"{exc.value.message} ({exc.value.hint})"
    assert "\n" not in text
    assert "rescue stick" in text and "leave /dev/vd" in text, text
    return text


def test_an_array_in_use_is_refused_in_one_line() -> None:
    with pytest.raises(DiskError) as exc:
        refuse_stacked_in_use("/dev/vdb", stacked_volumes(_tree(), "vdb"))
    text = _one_line(exc)
    assert "/dev/vdb1 is a member of the md array /dev/md0, which is in use " in text
    assert "(/dev/md0 is mounted on /mnt/md)" in text


def test_a_luks_volume_in_use_is_refused_in_one_line_also_for_swap() -> None:
    luks_only = [v for v in stacked_volumes(_tree(), "vda") if v.kind == "luks"]
    with pytest.raises(DiskError) as exc:
        refuse_stacked_in_use("/dev/vda", luks_only)
    text = _one_line(exc)
    assert "/dev/vda2 is a LUKS volume open as /dev/mapper/cryptlvm, which is in use" in text
    assert "liferaft capture --unlock" in text
    # root unmounted, the swap LV still active: still in use
    data = copy.deepcopy(_tree())
    vda = next(n for n in data["blockdevices"] if n["name"] == "vda")
    crypt = next(c for c in vda["children"] if c["name"] == "vda2")["children"][0]
    crypt["children"][0]["mountpoints"] = [None]
    (volume,) = [v for v in stacked_volumes(data, "vda") if v.member == "/dev/vda2"]
    assert volume.use == "/dev/mapper/vgc-swap is active swap"


def test_idle_arrays_and_luks_volumes_and_plain_partitions_are_taken() -> None:
    idle = [v for v in stacked_volumes(_tree(), "vda") if not v.use]
    assert len(idle) == 2
    refuse_stacked_in_use("/dev/vda", idle)  # no refusal
    refuse_stacked_in_use("/dev/vda", [])
