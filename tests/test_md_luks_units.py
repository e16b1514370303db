"""md RAID and LUKS without md or device-mapper: mdadm's and cryptsetup's
output as recorded in the rescue system, the manifest's md arrays, restore
plans over RAID members, and the mdadm --create command (issue 12).

The round trips themselves run in QEMU (tests/guest/test_md_luks_vm.py);
these are the pure parts, fast and on the host.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from rescue_app.engine import luks, mdraid
from rescue_app.engine import manifest as mf
from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.manifest import Filesystem, MdArrayImage, MdMemberImage, Method
from rescue_app.engine.plan import RestoreChoices, RestorePlan, make_restore_plan
from tests.enginekit import block_disk

DATA = Path(__file__).parent / "data"
MIB = 1024 * 1024
H = "cd" * 32


def _recorded(name: str) -> str:
    # recorded in the rescue system (Debian 12: mdadm 4.2, cryptsetup 2.6.1)
    return (DATA / name).read_text()


# ---------------------------------------------------------------- mdadm


def test_detail_export_of_a_raid1_gives_members_in_role_order():
    a = mdraid.parse_detail_export(_recorded("mdraid/raid1-detail-export.txt"))
    assert (a.level, a.raid_devices, a.metadata, a.name) == ("raid1", 2, "1.2", "oldhost:root")
    assert a.uuid == "62a272c2:43b9fcf4:ed5fb63e:df719fa7"
    # the export lists vdb1 (role 1) first
    assert a.members == (mdraid.MdMember("/dev/vda1", 0), mdraid.MdMember("/dev/vdb1", 1))
    assert a.missing == 0
    assert mdraid.parse_detail(_recorded("mdraid/raid1-detail.txt")) == {
        "chunk_size": 0,
        "layout": "",
        "bitmap": False,
    }


def test_degraded_raid5_keeps_its_missing_slot_chunk_layout_and_bitmap():
    a = mdraid.parse_detail_export(_recorded("mdraid/raid5-degraded-detail-export.txt"))
    assert (a.level, a.raid_devices, a.missing) == ("raid5", 3, 1)
    assert [m.role for m in a.members] == [0, 1]
    assert mdraid.parse_detail(_recorded("mdraid/raid5-degraded-detail.txt")) == {
        "chunk_size": 64 * 1024,
        "layout": "left-symmetric",
        "bitmap": True,
    }
    assert mdraid.parse_data_offset(_recorded("mdraid/raid5-member-examine.txt")) == 2048 * 512


def test_uuid_spellings_of_mdadm_and_blkid_compare_equal():
    # blkid shows a member's array UUID with dashes, mdadm with colons
    assert mdraid.uuid_hex("62a272c2:43b9fcf4:ed5fb63e:df719fa7") == mdraid.uuid_hex(
        "62a272c2-43b9-fcf4-ed5f-b63edf719fa7"
    )


def test_create_repeats_the_array_without_assume_clean():
    spec = mdraid.MdArray(
        level="raid5",
        raid_devices=3,
        metadata="1.2",
        uuid="77ea3951:e2d018f0:089f06d9:a5022602",
        name="web1:data",
        members=(),
        chunk_size=64 * 1024,
        layout="left-symmetric",
        bitmap=True,
        data_offset=2048 * 512,
    )
    argv = mdraid.create_argv(spec, ["/dev/sdb1", None, "/dev/sdc1"], "/dev/md/x")
    assert argv[:4] == ["mdadm", "--create", "/dev/md/x", "--run"]
    for flag in (
        "--metadata=1.2",
        "--level=raid5",
        "--raid-devices=3",
        "--uuid=77ea3951:e2d018f0:089f06d9:a5022602",
        "--name=web1:data",
        "--chunk=64K",
        "--layout=left-symmetric",
        "--bitmap=internal",
        "--data-offset=1024K",
    ):
        assert flag in argv
    assert "--assume-clean" not in argv and "--homehost=<none>" not in argv
    assert argv[-3:] == ["/dev/sdb1", "missing", "/dev/sdc1"]
    # a name without a host part stays so; 0.90 has no name; RAID 1 no chunk
    plain = mdraid.MdArray("raid1", 2, "1.2", "u", "root", ())
    assert "--homehost=<none>" in mdraid.create_argv(plain, ["a", "b"], "n")
    old = mdraid.MdArray("raid1", 2, "0.90", "u", "", ())
    assert not [a for a in mdraid.create_argv(old, ["a", "b"], "n") if a.startswith("--name")]


# ---------------------------------------------------------------- cryptsetup


def test_luks_dumps_give_version_uuid_and_data_offset():
    h2 = luks.parse_dump(_recorded("luks/luks2-dump.txt"))
    assert h2 == luks.LuksHeader(
        2, "12cb5bec-4053-4b0f-8ce8-5ec4f992810e", 16 * MIB, "aes-xts-plain64"
    )
    h1 = luks.parse_dump(_recorded("luks/luks1-dump.txt"))
    assert h1 == luks.LuksHeader(
        1, "4fd33c1c-d8cd-4b85-96f1-3190d342a513", 4096 * 512, "aes-xts-plain64"
    )


# ---------------------------------------------------------------- manifest and plans


def _member_disk(index: int, size: int = 130 * MIB) -> mf.DiskImage:
    part = mf.PartitionImage(
        1, MIB, size - 2 * MIB, "gpt", None, None, None, None, False,
        Filesystem(mdraid.MEMBER_TYPE, "62a272c2-43b9-fcf4-ed5f-b63edf719fa7"),
        Method.MD_MEMBER, 0, ExtentMap(), (),
    )  # fmt: skip
    return mf.DiskImage(
        index=index, model="Disk", serial=f"S{index}", wwn=None, size=size,
        logical_sector_size=512, physical_sector_size=512, transport="sata",
        table=mf.PartitionTable("gpt", "guid"), head=mf.Region(0, MIB, (None,)),
        gpt_backup=None, partitions=(part,),
    )  # fmt: skip


def _array(members: tuple[MdMemberImage, ...], devices: int = 2) -> MdArrayImage:
    return MdArrayImage(
        name="oldhost:root", uuid="62a272c2:43b9fcf4:ed5fb63e:df719fa7",
        level="raid1" if devices == 2 else "raid5", metadata="1.2", raid_devices=devices,
        chunk_size=0, layout="", bitmap=False, data_offset=MIB, size=126 * MIB,
        members=members, filesystem=Filesystem("ext4", "fs-uuid", "mdroot"),
        method=Method.USED, used_bytes=8 * MIB, used_map=ExtentMap([(0, 8 * MIB)]),
        chunks=(H, None),
    )  # fmt: skip


def _manifest(array: MdArrayImage) -> mf.Manifest:
    return mf.Manifest(
        "srv", "20260101T000000Z", "2026-01-01T00:00:00Z", "srv1", "0.1.0",
        4 * MIB, "sha256", "zstd", (_member_disk(0), _member_disk(1)), {"chunks": 1},
        md_arrays=(array,),
    )  # fmt: skip


RAID1 = _array((MdMemberImage(0, 1, 0), MdMemberImage(1, 1, 1)))


def test_manifest_with_md_arrays_round_trips_as_version_3():
    m = _manifest(RAID1)
    text = m.to_json()
    assert json.loads(text)["version"] == 3
    assert mf.parse_manifest(text, "x") == m
    # the array's chunks are referenced once (prune and verify keep them)
    assert [w for _, w, _ in m.chunk_refs()] == ["md array oldhost:root (ext4)"]
    assert m.data_bytes == 8 * MIB
    assert m.md_array_of(1, 1) is RAID1 and m.md_array_of(1, 2) is None


def test_image_summary_shows_disk_partition_array_contents():
    summary = mf.ImageSummary.of(_manifest(RAID1))
    assert summary.md_arrays == (
        "md array oldhost:root (raid1, metadata 1.2, UUID 62a272c2:43b9fcf4:ed5fb63e:df719fa7) "
        "on disk 1 partition 1, disk 2 partition 1: ext4",
    )
    degraded = mf.ImageSummary.of(_manifest(_array((MdMemberImage(0, 1, 0),), devices=3)))
    assert "degraded: 2 of 3 missing" in degraded.md_arrays[0]


def _target(name: str, size: int) -> BlockDisk:
    return block_disk(f"/dev/{name}", size, model="Blank", serial=name)


def _plan(array: MdArrayImage, size: int, grow: bool) -> RestorePlan:
    targets = [_target("sdy", size), _target("sdz", size)]
    return make_restore_plan(None, _manifest(array), targets, RestoreChoices(grow=grow))  # type: ignore[arg-type]


def test_plan_shows_members_and_array_and_grows_it_when_every_member_grows():
    plan = _plan(RAID1, 400 * MIB, grow=True)
    (a,) = plan.md_arrays
    steps = [d.steps[0] for d in plan.disks]
    assert all(s.grown and not s.grow_fs for s in steps)  # the partitions, not a filesystem
    assert a.grow_fs
    text = plan.render()
    assert "md RAID member (device 0) of array oldhost:root" in text
    assert "md RAID member (device 1) of array oldhost:root" in text
    assert "md RAID array oldhost:root (raid1, metadata 1.2), same UUID" in text
    assert "grows with its members" in text
    assert plan.write_bytes == 2 * MIB + 8 * MIB  # two heads and the array's data, once
    assert not _plan(RAID1, 400 * MIB, grow=False).md_arrays[0].grow_fs


def test_plan_of_a_degraded_array_says_so():
    text = _plan(_array((MdMemberImage(0, 1, 0), MdMemberImage(1, 1, 2)), 3), 130 * MIB, False)
    assert "degraded as captured: 1 of 3 members missing" in text.render()


def test_the_ui_shows_the_array():
    from rich.console import Console

    from rescue_app.tui.screens.images import describe_manifest
    from rescue_app.tui.screens.target import plan_table

    text = describe_manifest(_manifest(RAID1))
    assert "md RAID member of array oldhost:root" in text
    assert "md array oldhost:root (raid1" in text
    console = Console(width=100, record=True)
    console.print(plan_table(_plan(RAID1, 400 * MIB, grow=True)))
    assert "md RAID array oldhost:root" in console.export_text()


# ---------------------------------------------------------------- LUKS in images and plans


def _luks_disk(method: str) -> mf.DiskImage:
    part = mf.PartitionImage(
        1, MIB, 62 * MIB, "gpt", None, None, None, None, False,
        Filesystem(luks.LUKS_TYPE, "12cb5bec-4053-4b0f-8ce8-5ec4f992810e"), method,
        62 * MIB if method == Method.RAW else 0,
        ExtentMap(), (H,) * 16 if method == Method.RAW else (),
    )  # fmt: skip
    return mf.DiskImage(
        index=0, model="Disk", serial="S0", wwn=None, size=64 * MIB,
        logical_sector_size=512, physical_sector_size=512, transport="sata",
        table=mf.PartitionTable("gpt", "guid"), head=mf.Region(0, MIB, (None,)),
        gpt_backup=None, partitions=(part,),
    )  # fmt: skip


UNLOCKED = mf.LuksVolumeImage(
    disk=0, partition=1, uuid="12cb5bec-4053-4b0f-8ce8-5ec4f992810e", version=2,
    header=mf.Region(0, 16 * MIB, (H, None, None, None)), size=46 * MIB,
    filesystem=Filesystem("ext4", "inner", "inside"), method=Method.USED,
    used_bytes=20 * MIB, used_map=ExtentMap([(0, 20 * MIB)]), chunks=(H,) * 5,
)  # fmt: skip


def _luks_manifest(method: str, volumes: tuple[mf.LuksVolumeImage, ...]) -> mf.Manifest:
    return mf.Manifest(
        "lap", "20260101T000000Z", "2026-01-01T00:00:00Z", "lap1", "0.1.0",
        4 * MIB, "sha256", "zstd", (_luks_disk(method),), {"chunks": 1},
        luks_volumes=volumes,
    )  # fmt: skip


def test_locked_luks_plan_says_no_used_blocks_saving():
    plan = make_restore_plan(
        None,  # type: ignore[arg-type]
        _luks_manifest(Method.RAW, ()),
        [_target("sdz", 64 * MIB)],
    )
    text = plan.render()
    assert "LUKS (encrypted): laid back byte for byte as ciphertext" in text
    assert "used-blocks saving is possible without the key" in text


def test_unlocked_luks_round_trips_as_version_3_and_plans_header_then_inside():
    m = _luks_manifest(Method.LUKS, (UNLOCKED,))
    text = m.to_json()
    assert json.loads(text)["version"] == 3
    assert mf.parse_manifest(text, "x") == m
    where = [w for _, w, _ in m.chunk_refs()]
    assert where.count("LUKS volume 12cb5bec-4053-4b0f-8ce8-5ec4f992810e (ext4) header") == 1
    assert where.count("LUKS volume 12cb5bec-4053-4b0f-8ce8-5ec4f992810e (ext4)") == 5
    assert m.data_bytes == 16 * MIB + 20 * MIB
    assert mf.ImageSummary.of(m).luks_volumes == (
        "disk 1 partition 1: LUKS volume 12cb5bec-4053-4b0f-8ce8-5ec4f992810e (ext4), unlocked",
    )
    plan = make_restore_plan(None, m, [_target("sdz", 64 * MIB)])  # type: ignore[arg-type]
    shown = plan.render()
    assert "LUKS2, unlocked: header as it was (same passphrases)" in shown
    assert "ext4 inside, 20.0 MiB of data" in shown
    assert plan.write_bytes == MIB + 16 * MIB + 20 * MIB


def test_luks_passphrase_comes_from_its_own_variable_or_a_key_file(tmp_path: Path):
    from rescue_app.engine.facade import Engine
    from rescue_app.engine.keychain import CredentialChain, Environment
    from rescue_app.errors import UsageError

    env = {"LIFERAFT_LUKS_PASSPHRASE": "volume", "LIFERAFT_PASSPHRASE": "repository"}
    engine = Engine(credentials=CredentialChain(Environment(env)))
    assert engine.luks_keys()("/dev/sda2", "u") == b"volume"
    key = tmp_path / "key"
    key.write_bytes(b"\x00\xffkey bytes")
    assert engine.luks_keys(str(key))("/dev/sda2", "u") == b"\x00\xffkey bytes"
    nobody = Engine(credentials=CredentialChain(Environment({"LIFERAFT_PASSPHRASE": "r"})))
    try:
        nobody.luks_keys()("/dev/sda2", "u")
    except UsageError as exc:
        assert "no passphrase for the LUKS volume /dev/sda2" in exc.message
        assert "LIFERAFT_LUKS_PASSPHRASE" in exc.hint
    else:
        raise AssertionError("a missing LUKS passphrase was not an error")


def test_lvm_inside_luks_is_placed_on_the_opened_volume():
    from rescue_app.engine.manifest import PhysicalVolumeImage, VolumeGroupImage

    inner = mf.LuksVolumeImage(
        disk=0, partition=1, uuid="u", version=2, header=mf.Region(0, 16 * MIB, (H,)),
        size=46 * MIB, filesystem=Filesystem("LVM2_member"), method=Method.LVM_PV,
        used_bytes=0, used_map=ExtentMap(), chunks=(),
    )  # fmt: skip
    vg = VolumeGroupImage(
        name="cryptvg", uuid="vg", extent_size=4 * MIB, tags=(), metadata="cryptvg {\n}\n",
        pvs=(PhysicalVolumeImage("pv", 0, 1, MIB, 44 * MIB, 1, luks=True),), lvs=(),
    )  # fmt: skip
    m = replace(_luks_manifest(Method.LUKS, (inner,)), volume_groups=(vg,))
    assert mf.parse_manifest(m.to_json(), "x") == m
    plan = make_restore_plan(None, m, [_target("sdz", 64 * MIB)])  # type: ignore[arg-type]
    assert "Volume group cryptvg (LVM, on LUKS on disk 1 partition 1)" in plan.render()


def test_lvm_on_an_md_array_is_placed_on_the_array():
    from rescue_app.engine.manifest import PhysicalVolumeImage, VolumeGroupImage

    array = replace(
        RAID1, filesystem=Filesystem("LVM2_member"), method=Method.LVM_PV, used_bytes=0,
        used_map=ExtentMap(), chunks=(),
    )  # fmt: skip
    vg = VolumeGroupImage(
        name="mdvg", uuid="vg", extent_size=4 * MIB, tags=(), metadata="mdvg {\n}\n",
        pvs=(PhysicalVolumeImage("pv", 0, 1, MIB, 120 * MIB, 1, md=True),), lvs=(),
    )  # fmt: skip
    m = replace(_manifest(array), volume_groups=(vg,))
    assert mf.parse_manifest(m.to_json(), "x") == m
    text = _plan(array, 130 * MIB, grow=False)
    plan = make_restore_plan(None, m, [_target("sdy", 130 * MIB), _target("sdz", 130 * MIB)])  # type: ignore[arg-type]
    assert "Volume group mdvg (LVM, on md array on disk 1 partition 1)" in plan.render()
    assert "md RAID array oldhost:root" in text.render()
    # a larger pair of disks with --grow: the array is created at the new
    # members' size, so its PV grows (pvresize) and the VG's plan says so
    targets = [_target("sdy", 400 * MIB), _target("sdz", 400 * MIB)]
    grown = make_restore_plan(None, m, targets, RestoreChoices(grow=True))  # type: ignore[arg-type]
    assert grown.volume_groups[0].grown_pvs == ("pv",)
    assert "no logical volume of mdvg can be grown" in grown.render()
    assert make_restore_plan(None, m, targets).volume_groups[0].grown_pvs == ()  # type: ignore[arg-type]


def test_unlocked_luks_grows_partition_volume_and_filesystem_with_grow():
    m = _luks_manifest(Method.LUKS, (UNLOCKED,))
    plan = make_restore_plan(None, m, [_target("sdz", 256 * MIB)], RestoreChoices(grow=True))  # type: ignore[arg-type]
    (step,) = plan.disks[0].steps
    assert step.grown and not step.grow_fs  # the partition; crypto_LUKS itself is not resized
    (v,) = plan.luks_volumes
    assert (v.grows, v.grow_fs) == (True, True)  # the opened volume spans it, ext4 grows
    assert "grows: partition → LUKS volume → ext4" in plan.render()
    assert "cannot be grown" not in plan.render()
    from rich.console import Console

    from rescue_app.tui.screens.target import plan_table

    console = Console(width=100, record=True)
    console.print(plan_table(plan))
    assert "grows: partition → LUKS volume → ext4" in console.export_text()
    # without --grow: the partition, the volume and ext4 keep their sizes
    kept = make_restore_plan(None, m, [_target("sdz", 256 * MIB)])  # type: ignore[arg-type]
    assert not kept.disks[0].steps[0].grown
    assert (kept.luks_volumes[0].grows, kept.luks_volumes[0].grow_fs) == (False, False)
    assert "grows:" not in kept.render()
    # a filesystem liferaft does not grow inside (vfat): the volume grows, it keeps its size
    vfat = replace(UNLOCKED, filesystem=Filesystem("vfat"))
    other = make_restore_plan(
        None, _luks_manifest(Method.LUKS, (vfat,)), [_target("sdz", 256 * MIB)],  # type: ignore[arg-type]
        RestoreChoices(grow=True),
    )  # fmt: skip
    assert not other.luks_volumes[0].grow_fs
    assert "grows: partition → LUKS volume → vfat, which keeps its size" in other.render()


def test_locked_luks_partition_grows_but_the_volume_keeps_its_size():
    plan = make_restore_plan(
        None, _luks_manifest(Method.RAW, ()), [_target("sdz", 256 * MIB)],  # type: ignore[arg-type]
        RestoreChoices(grow=True),
    )  # fmt: skip
    (step,) = plan.disks[0].steps
    assert step.grown and not step.grow_fs
    text = plan.render()
    assert ("the partition grows; the LUKS volume and its contents keep their size") in text
    assert "cannot be grown" not in text


def test_lvm_inside_luks_grows_pv_then_the_chosen_lv():
    """The Debian "encrypted LVM" layout on a larger disk with --grow:
    partition -> LUKS volume -> PV (pvresize) -> the LV holding / and its ext4."""
    from rescue_app.engine.manifest import PhysicalVolumeImage, VolumeGroupImage
    from tests.test_lvm_units import _lv

    inner = mf.LuksVolumeImage(
        disk=0, partition=1, uuid="u", version=2, header=mf.Region(0, 16 * MIB, (H,)),
        size=46 * MIB, filesystem=Filesystem("LVM2_member"), method=Method.LVM_PV,
        used_bytes=0, used_map=ExtentMap(), chunks=(),
    )  # fmt: skip
    metadata = "cryptvg {\n\tlogical_volumes {\n\n\t\troot {\n\t\t}\n\n\t\tswap {\n\t\t}\n}\n"
    vg = VolumeGroupImage(
        name="cryptvg", uuid="vg", extent_size=4 * MIB, tags=(), metadata=metadata,
        pvs=(PhysicalVolumeImage("pv", 0, 1, MIB, 44 * MIB, 1, luks=True),),
        lvs=(
            _lv("root", "ext4", Method.USED, holds_root=True, size=32 * MIB),
            _lv("swap", "swap", Method.SWAP, size=8 * MIB),
        ),
    )  # fmt: skip
    m = replace(_luks_manifest(Method.LUKS, (inner,)), volume_groups=(vg,))
    big = [_target("sdz", 256 * MIB)]
    plan = make_restore_plan(None, m, big, RestoreChoices(grow=True))  # type: ignore[arg-type]
    (g,) = plan.volume_groups
    assert (g.grown_pvs, g.grow_lv) == (("pv",), "root")
    (v,) = plan.luks_volumes
    assert v.grows and not v.grow_fs  # the PV is resized by the volume group's restore
    text = plan.render()
    assert "grows: partition → LUKS volume → LVM physical volume (pvresize" in text
    assert "grows into the new space" in text
    same = make_restore_plan(None, m, big)  # type: ignore[arg-type]
    assert (same.volume_groups[0].grown_pvs, same.volume_groups[0].grow_lv) == ((), None)


def test_captured_array_describes_the_array_it_recreates():
    """restore's mdadm --create values are the captured image's (spec_fields)."""
    image = replace(RAID1, layout="left-symmetric", chunk_size=512 * 1024, bitmap=True)
    spec = mdraid.MdArray(**mdraid.spec_fields(image), members=())
    assert (spec.uuid, spec.name, spec.level, spec.metadata) == (
        RAID1.uuid, "oldhost:root", "raid1", "1.2"
    )  # fmt: skip
    assert (spec.layout, spec.chunk_size, spec.bitmap, spec.data_offset) == (
        "left-symmetric", 512 * 1024, True, MIB
    )  # fmt: skip
    back = replace(image, **mdraid.spec_fields(spec))
    assert back == image


def _md_sysfs(root: Path, action: str, completed: str) -> str:
    # /sys/block/md127/md as the kernel lays it out (Documentation/admin-guide/md.rst)
    md = root / "block" / "md127" / "md"
    md.mkdir(parents=True)
    (md / "sync_action").write_text(action + "\n")
    (md / "sync_completed").write_text(completed + "\n")
    return str(root)


def test_restore_says_an_array_is_still_resyncing(tmp_path: Path):
    sys_root = _md_sysfs(tmp_path / "a", "resync", "65536 / 262144")
    note = mdraid.resync_note("md array oldhost:root", "/dev/md127", sys_root)
    assert note is not None
    assert note.startswith("md array oldhost:root: array resyncing, 25% — do not remove disks")
    pending = _md_sysfs(tmp_path / "b", "resync", "delayed")
    assert "resyncing, 0%" in (mdraid.resync_note("a", "/dev/md127", pending) or "")
    done = _md_sysfs(tmp_path / "c", "idle", "none")
    assert mdraid.resync_note("a", "/dev/md127", done) is None
    assert mdraid.resync_note("a", "/dev/md127", str(tmp_path / "none")) is None


def test_plan_says_a_spare_is_left_empty():
    spare = _array((MdMemberImage(0, 1, 0), MdMemberImage(1, 1, -1)))  # slot 1 missing
    text = _plan(spare, 400 * MIB, grow=False).render()
    assert "md RAID member (device 0) of array oldhost:root" in text
    assert "md RAID spare of array oldhost:root: left empty, not added back" in text
    assert "device -1" not in text
