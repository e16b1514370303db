"""diskparse.parse_lsblk and friends on recorded lsblk output: no root, no devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue_app.engine import diskmodel, diskscan, units
from rescue_app.engine.diskmodel import SystemState
from rescue_app.engine.diskparse import parse_lsblk
from rescue_app.errors import DiskError, TargetRefusedError

DATA = Path(__file__).parent / "data" / "lsblk"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


DESKTOP_STATE = SystemState(
    root_disks=frozenset({"nvme0n1"}),
    swaps=frozenset({"/dev/nvme0n1p3", "/dev/zram0"}),
    holders={"sda2": ("dm-0",)},
    partition_geometry={
        "nvme0n1p1": (1, 1048576),
        "nvme0n1p2": (2, 537919488),
        "nvme0n1p3": (3, 495465791488),
        "sda1": (1, 1048576),
        "sda2": (2, 1000205189120),
        "sdb1": (1, 1048576),
    },
    backing_files={"loop1": "/var/lib/snapd/snaps/core22_1380.snap"},
)


@pytest.fixture
def desktop() -> dict[str, diskmodel.BlockDisk]:
    return {d.name: d for d in parse_lsblk(load("desktop-nvme-sata-usb.json"), DESKTOP_STATE)}


def test_desktop_disks_and_skips(desktop):
    # zram, sr0 and the unbacked loop0 are not disks anyone restores to.
    assert sorted(desktop) == ["loop1", "nvme0n1", "sda", "sdb"]
    nvme = desktop["nvme0n1"]
    assert nvme.transport == "nvme"
    assert nvme.model == "Samsung SSD 970 EVO Plus 500GB"
    assert nvme.pttype == "gpt"
    assert [p.number for p in nvme.partitions] == [1, 2, 3]
    assert nvme.partitions[1].start == 537919488
    assert nvme.partitions[0].fstype == "vfat"
    assert nvme.partitions[0].mountpoints == ("/boot/efi",)
    assert desktop["sda"].physical_sector_size == 4096
    assert desktop["sdb"].removable and desktop["sdb"].transport == "usb"
    assert desktop["loop1"].backing_file.endswith("core22_1380.snap")


def test_desktop_in_use_reasons(desktop):
    nvme = desktop["nvme0n1"].in_use
    assert nvme[0] == "holds the running system"
    assert "/dev/nvme0n1p1 is mounted on /boot/efi" in nvme
    assert "/dev/nvme0n1p2 is mounted on /" in nvme
    assert "swap /dev/nvme0n1p3 is active" in nvme
    # LVM on sda2: the mounted logical volume is named, with what it sits on.
    assert desktop["sda"].in_use == ("/dev/mapper/vg0-srv (on /dev/sda2) is mounted on /srv",)
    assert desktop["sdb"].in_use == ("/dev/sdb1 is mounted on /media/anna/STICK",)
    assert "is read-only" in desktop["loop1"].in_use
    assert not any(d.restorable for d in desktop.values())


def test_unmounted_usb_is_restorable_and_held_partition_is_not():
    data = load("desktop-nvme-sata-usb.json")
    for dev in data["blockdevices"]:
        if dev["name"] == "sdb":
            dev["children"][0]["mountpoints"] = [None]
        if dev["name"] == "sda":
            dev["children"][1]["children"][0]["mountpoints"] = [None]
    found = {d.name: d for d in parse_lsblk(data, DESKTOP_STATE)}
    assert found["sdb"].restorable
    diskmodel.ensure_restorable(found["sdb"])
    assert found["sda"].in_use == ("/dev/sda2 is held by dm-0",)


def test_boot_medium_marked():
    data = load("desktop-nvme-sata-usb.json")
    state = SystemState(boot_media=frozenset({"sdb"}))
    sdb = next(d for d in parse_lsblk(data, state) if d.name == "sdb")
    assert "boot medium" in sdb.in_use


def test_swap_from_lsblk_without_proc_swaps():
    found = {d.name: d for d in parse_lsblk(load("desktop-nvme-sata-usb.json"), SystemState())}
    assert "swap /dev/nvme0n1p3 is active" in found["nvme0n1"].in_use
    assert not any("[SWAP]" in r for r in found["nvme0n1"].in_use)


def test_recorded_vm_without_udev_uses_probes_and_mounts():
    # Recorded on a Debian 12 VM without udev: lsblk leaves FSTYPE, PTTYPE... empty.
    data = load("debian12-vm-loop.json")
    state = SystemState(
        root_disks=frozenset({"vda"}),
        backing_files={"loop0": "/var/tmp/t.img"},
        partition_geometry={"loop0p1": (1, 1048576), "loop0p2": (2, 209715200)},
        mount_fstypes={"/dev/vda": "ext4", "/dev/loop0p1": "ext4"},
        probes={"/dev/loop0": {"PTTYPE": "gpt", "PTUUID": "30c4af22"}},
    )
    found = {d.name: d for d in parse_lsblk(data, state)}
    assert sorted(found) == ["loop0", "vda"]
    vda, loop = found["vda"], found["loop0"]
    assert vda.transport == "virtio" and vda.fstype == "ext4" and vda.partitions == ()
    assert vda.in_use == ("holds the running system", "/dev/vda is mounted on /")
    assert loop.transport == "loop" and loop.pttype == "gpt" and loop.fstype is None
    assert loop.partitions[0].fstype == "ext4"
    assert loop.partitions[1].start == 209715200
    assert loop.in_use == ("/dev/loop0p1 is mounted on /var/tmp/mnt1",)
    with pytest.raises(TargetRefusedError, match=r"virtio disk, 256.0 GiB \(/dev/vda\): holds"):
        diskmodel.ensure_restorable(vda)


def test_find_disk(desktop):
    listed = list(desktop.values())
    assert diskscan.find_disk("/dev/sda", listed).name == "sda"
    assert diskscan.find_disk("serial:ZFL1ABCD", listed).name == "sda"
    assert diskscan.find_disk("wwn:0x5000C500C1234567", listed).name == "sda"
    assert diskscan.find_disk("wwn:5000c500c1234567", listed).name == "sda"
    with pytest.raises(DiskError, match="is a partition, not a disk"):
        diskscan.find_disk("/dev/sda1", listed)
    with pytest.raises(DiskError, match="liferaft disks") as err:
        diskscan.find_disk("serial:NOPE", listed)
    assert "\n" not in str(err.value)
    with pytest.raises(DiskError, match="liferaft disks"):
        diskscan.find_disk("/dev/sdz", listed)


def test_describe_and_human_size(desktop):
    assert desktop["sda"].describe() == "ST2000DM008-2FR102, serial ZFL1ABCD, 1.8 TiB (/dev/sda)"
    assert units.human_size(0) == "0 B"
    assert units.human_size(1023) == "1023 B"
    assert units.human_size(4 * 1024**3) == "4.0 GiB"
    assert units.human_size(1536 * 1024) == "1.5 MiB"


def test_table_fits_80_columns_and_json(desktop):
    table = diskmodel.format_disks_table(desktop.values())
    assert all(len(line) <= 80 for line in table.splitlines())
    assert "IN USE: holds the running system" in table
    assert "  /dev/nvme0n1p1" in table
    data = diskmodel.disks_to_json(desktop.values())
    json.dumps(data)
    sdb = next(d for d in data if d["name"] == "sdb")
    assert sdb["partitions"][0]["fstype"] == "exfat" and sdb["restorable"] is False


def test_roles_are_typed_not_read_from_text() -> None:
    """Policy (what is never backed up or restored to) is decided on Role, not on the
    words shown to people (issue 11)."""
    data = load("debian12-vm-loop.json")
    state = SystemState(root_disks=frozenset({"vda"}))
    (vda,) = [d for d in parse_lsblk(data, state) if d.name == "vda"]
    assert diskmodel.Role.RUNNING_SYSTEM in vda.roles and vda.ours
