"""LVM without device-mapper: lvm2's reports as recorded in the rescue system,
the manifest's volume groups, and restore plans over a PV (issue 12).

The LVM round trip itself runs in QEMU (tests/guest/test_lvm_vm.py); these are
the pure parts, fast and on the host.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rescue_app.engine import capture, lvm, thinpool
from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    ImageSummary,
    LogicalVolumeImage,
    Manifest,
    Method,
    PartitionImage,
    PartitionTable,
    PhysicalVolumeImage,
    Region,
    SegmentImage,
    VolumeGroupImage,
    parse_manifest,
)
from rescue_app.engine.plan import RestoreChoices, RestorePlan, make_restore_plan
from rescue_app.errors import UsageError
from tests.enginekit import block_disk

DATA = Path(__file__).parent / "data" / "lvm"
MIB = 1024 * 1024
CHUNK = 4 * MIB  # the chunk grid
H = "ab" * 32


def _recorded(name: str) -> str:
    # `lvm ... --reportformat json` in the rescue system (Debian 12, lvm2 2.03.16):
    # a VG on /dev/vda2 with root, swap, and a thin pool holding thin1.
    return (DATA / f"debian12-thin-{name}.json").read_text()


def test_reports_parse_into_typed_values():
    (pv,) = lvm.parse_pvs(_recorded("pvs"))
    assert (pv.device, pv.vg, pv.pe_start, pv.metadata_copies) == ("/dev/vda2", "vg0", MIB, 1)
    assert pv.uuid == "gi4fFX-EPI9-6l8L-V7CA-zh0s-c4nv-6lmNoB" and pv.size < pv.dev_size
    (vg,) = lvm.parse_vgs(_recorded("vgs"))
    assert (vg.name, vg.extent_size, vg.tags) == ("vg0", 4 * MIB, ())
    lvs = {lv.name: lv for lv in lvm.parse_lvs(_recorded("lvs"))}
    assert lvs["pool_tmeta"].hidden and not lvs["pool"].hidden
    assert lvs["pool"].segtype == "thin-pool" and lvs["pool"].metadata_size == 4 * MIB
    assert lvs["thin1"].pool == "pool" and lvs["thin1"].segtype == "thin"
    assert lvs["root"].active and lvs["root"].size == 600 * MIB
    assert not lvs["lvol0_pmspare"].active
    assert lvs["root"].dm_path == "/dev/mapper/vg0-root"


def test_segments_place_only_single_device_segments():
    segs = {s.lv: s for s in lvm.parse_segments(_recorded("segments"))}
    assert (segs["pool_tmeta"].device, segs["pool_tmeta"].pe, segs["pool_tmeta"].extents) == (
        "/dev/vda2",
        231,
        1,
    )
    # the pool's segment lies on its data LV, a thin LV's on no device at all
    assert segs["pool"].pe == -1 and segs["thin1"].pe == -1


def test_dm_path_doubles_dashes():
    assert lvm.dm_path("my-vg", "lv-1") == "/dev/mapper/my--vg-lv--1"


# ---------------------------------------------------------------- manifest


def _lv(name: str, fs: str | None, method: str, **kw: object) -> LogicalVolumeImage:
    args: dict[str, object] = {
        "name": name,
        "uuid": f"uuid-{name}",
        "size": 100 * MIB,
        "segtype": "linear",
        "tags": (),
        "pool": "",
        "hidden": False,
        "holds_root": False,
        "filesystem": Filesystem(fs),
        "method": method,
        "used_bytes": 4 * MIB if method in (Method.USED, Method.RAW) else 0,
        "used_map": ExtentMap([(0, 4 * MIB)] if method == Method.USED else ()),
        "chunks": (H,) if method in (Method.USED, Method.RAW) else (),
    }
    args.update(kw)
    return LogicalVolumeImage(**args)  # type: ignore[arg-type]


METADATA = "vg0 {\n\tlogical_volumes {\n\n\t\thome {\n\t\t}\n\n\t\tdata {\n\t\t}\n\t}\n}\n"


def _vg(*lvs: LogicalVolumeImage) -> VolumeGroupImage:
    return VolumeGroupImage(
        name="vg0",
        uuid="vg-uuid",
        extent_size=4 * MIB,
        tags=(),
        metadata=METADATA,
        pvs=(PhysicalVolumeImage("pv-uuid", 0, 2, MIB, 800 * MIB, 1),),
        lvs=lvs,
    )


def _disk(pv_size: int = 800 * MIB) -> DiskImage:
    def part(number: int, start: int, size: int, fs: str, method: str) -> PartitionImage:
        return PartitionImage(
            number, start, size, "gpt", None, None, None, None, False, Filesystem(fs),
            method, 0, ExtentMap(), (),
        )  # fmt: skip

    return DiskImage(
        index=0,
        model="Disk",
        serial="S1",
        wwn=None,
        size=MIB + 100 * MIB + pv_size + MIB,
        logical_sector_size=512,
        physical_sector_size=512,
        transport="sata",
        table=PartitionTable("gpt", "guid"),
        head=Region(0, MIB, (None,)),
        gpt_backup=None,
        partitions=(
            part(1, MIB, 100 * MIB, "ext4", Method.USED),
            part(2, 101 * MIB, pv_size, lvm.PV_TYPE, Method.LVM_PV),
        ),
    )


def _manifest(vg: VolumeGroupImage | None) -> Manifest:
    return Manifest(
        "web", "20260101T000000Z", "2026-01-01T00:00:00Z", "web1", "0.1.0",
        4 * MIB, "sha256", "zstd", (_disk(),), {"chunks": 1},
        volume_groups=(vg,) if vg else (),
    )  # fmt: skip


def _thin_vg() -> VolumeGroupImage:
    return _vg(
        _lv("home", "ext4", Method.USED),
        _lv("data", "xfs", Method.USED),
        _lv("swap", "swap", Method.SWAP),
        _lv("pool", None, Method.NONE, segtype="thin-pool"),
        _lv(
            "pool_tmeta",
            None,
            Method.RAW,
            hidden=True,
            segments=(SegmentImage("pv-uuid", 0, 231, 1),),
        ),  # fmt: skip
        _lv("thin", "ext4", Method.USED, segtype="thin", pool="pool"),
    )


def test_manifest_with_volume_groups_round_trips_as_version_2():
    m = _manifest(_thin_vg())
    text = m.to_json()
    assert json.loads(text)["version"] == 2
    assert parse_manifest(text, "x") == m
    where = [w for _, w, _ in m.chunk_refs()]
    assert "volume group vg0 logical volume thin (ext4)" in where
    assert m.data_bytes == 4 * 4 * MIB  # home, data, tmeta, thin
    assert m.volume_group_of(0, 2) is not None and m.volume_group_of(0, 1) is None


def test_manifest_without_volume_groups_stays_version_1():
    # an image without LVM is still read by liferaft versions before LVM
    doc = json.loads(_manifest(None).to_json())
    assert doc["version"] == 1 and "volume_groups" not in doc
    assert parse_manifest(json.dumps(doc), "x") == _manifest(None)


def test_image_summary_shows_the_stack():
    summary = ImageSummary.of(_manifest(_thin_vg()))
    (vg,) = summary.volume_groups
    assert vg.pvs == ("disk 1 partition 2",)
    assert [lv.name for lv in vg.lvs] == ["home", "data", "swap", "pool", "thin"]
    assert summary.raw == ()  # the pool's metadata is kept whole on purpose


# ---------------------------------------------------------------- plans


def _target(size: int) -> BlockDisk:
    return block_disk("/dev/sdz", size, model="Blank", serial="T1")


def _plan(vg: VolumeGroupImage, size: int, **kw: object) -> RestorePlan:
    choices = RestoreChoices(**kw)  # type: ignore[arg-type]
    return make_restore_plan(None, _manifest(vg), [_target(size)], choices)  # type: ignore[arg-type]


def test_grow_extends_the_pv_and_by_default_the_lv_holding_root():
    vg = _vg(_lv("home", "ext4", Method.USED), _lv("data", "xfs", Method.USED, holds_root=True))
    plan = _plan(vg, 4000 * MIB, grow=True)
    (g,) = plan.volume_groups
    pv_step = plan.disks[0].steps[1]
    assert pv_step.grown and not pv_step.grow_fs  # the PV grows, the LV's fs later
    assert g.grown_pvs == ("pv-uuid",) and g.grow_lv == "data"
    text = plan.render()
    assert "LVM physical volume of volume group vg0" in text
    assert "Volume group vg0 (LVM, on disk 1 partition 2)" in text
    assert [ln for ln in text.splitlines() if "grows into the new space" in ln][0].split()[0] == (
        "data"
    )


def test_grow_without_root_takes_the_last_lv_created_and_skips_thin_and_swap():
    vg = _vg(
        _lv("home", "ext4", Method.USED),
        _lv("data", "xfs", Method.USED),
        _lv("swap", "swap", Method.SWAP),
        _lv("thin", "ext4", Method.USED, segtype="thin", pool="pool"),
    )
    # "data" comes after "home" in the metadata (creation order), though not by name
    assert _plan(vg, 4000 * MIB, grow=True).volume_groups[0].grow_lv == "data"
    assert _plan(vg, 4000 * MIB, grow=True, grow_lv="vg0/home").volume_groups[0].grow_lv == ("home")


def test_grow_lv_mistakes_are_one_line_errors():
    vg = _vg(_lv("home", "ext4", Method.USED), _lv("swap", "swap", Method.SWAP))
    with pytest.raises(UsageError, match="no such logical volume") as err:
        _plan(vg, 4000 * MIB, grow=True, grow_lv="vg0/swap")
    assert "vg0/home" in err.value.hint
    # a thin LV or its pool keeps its size (docs/FORMAT.md): refused by name
    for thin in ("vg0/thin", "vg0/pool"):
        with pytest.raises(UsageError, match="no such logical volume that can grow"):
            _plan(_thin_vg(), 4000 * MIB, grow=True, grow_lv=thin)
    with pytest.raises(UsageError, match="needs --grow"):
        _plan(vg, 4000 * MIB, grow_lv="vg0/home")


def test_same_size_disk_grows_nothing():
    vg = _vg(_lv("home", "ext4", Method.USED))
    plan = _plan(vg, _disk().size, grow=True)
    assert plan.volume_groups[0].grow_lv is None and not plan.volume_groups[0].grown_pvs
    assert plan.write_bytes == MIB + 4 * MIB  # head + the LV's used blocks


def test_an_lv_over_two_pvs_is_one_lv():
    # `lvs -o ...,segtype` prints a row per segment (seen in the guest: an LV
    # over two PVs was captured and restored twice)
    row = (
        '{"vg_name":"vg1", "lv_name":"span", "lv_uuid":"U", "lv_size":"2139095040", '
        '"segtype":"linear", "lv_tags":"", "pool_lv":"", "origin":"", '
        '"lv_attr":"-wi-a-----", "lv_metadata_size":""}'
    )
    text = f'{{"report": [{{"lv": [{row}, {row}]}}]}}'
    assert [lv.name for lv in lvm.parse_lvs(text)] == ["span"]


def test_the_ui_shows_the_stack():
    from rich.console import Console

    from rescue_app.tui.screens.images import describe_manifest
    from rescue_app.tui.screens.target import plan_table

    text = describe_manifest(_manifest(_thin_vg()))
    assert "LVM physical volume of volume group vg0" in text
    assert "Volume group vg0 (LVM)" in text and "thin pool" in text
    console = Console(width=100, record=True)
    console.print(plan_table(_plan(_thin_vg(), 4000 * MIB, grow=True)))
    shown = console.export_text()
    assert "Volume group vg0 (LVM, on disk 1 partition 2)" in shown
    assert "data" in shown and "grows into the new space" in shown


def test_a_pool_metadata_copy_keeps_only_the_volume_groups_thin_devices() -> None:
    """thin_dump --metadata-snap XML (its nr_data_blocks is 0): the backup's
    own snapshot (dev_id 2) goes, the transaction id is the VG text's."""
    dump = (
        '<superblock uuid="" time="1" transaction="2" version="2" data_block_size="128" '
        'nr_data_blocks="0">\n'
        '  <device dev_id="1" mapped_blocks="3" transaction="0" creation_time="0" snap_time="1">\n'
        '    <range_mapping origin_begin="0" data_begin="0" length="2" time="0"/>\n'
        '    <single_mapping origin_block="9" data_block="5" time="1"/>\n'
        "  </device>\n"
        '  <device dev_id="2" mapped_blocks="2" transaction="1" creation_time="1" snap_time="1">\n'
        '    <range_mapping origin_begin="0" data_begin="0" length="2" time="0"/>\n'
        "  </device>\n"
        "</superblock>\n"
    )
    out = ET.fromstring(thinpool.only_devices(dump, {1}, 1, 768 << 20))
    assert out.get("transaction") == "1" and out.get("data_block_size") == "128"
    assert out.get("nr_data_blocks") == "12288"  # 768 MiB of 64 KiB blocks
    assert [d.get("dev_id") for d in out.findall("device")] == ["1"]
    assert len(out.find("device")) == 2  # type: ignore[arg-type]  # its mappings kept
    assert thinpool.dm_name("vg-0", "my-pool", "tpool") == "vg--0-my--pool-tpool"


# thin_delta's answer in the rescue system (thin-provisioning-tools 0.9): a
# 2 GiB thin LV with 1% changed between two snapshots
THIN_DELTA = """\
<superblock uuid="" time="2" transaction="3" data_block_size="128" nr_data_blocks="0">
  <diff left="2" right="3">
    <different begin="0" length="1"/>
    <same begin="1" length="15"/>
    <different begin="16" length="3"/>
    <different begin="3024" length="48"/>
    <right_only begin="14368" length="32"/>
    <left_only begin="16000" length="2"/>
  </diff>
</superblock>
"""


def test_thin_delta_ranges_are_byte_extents_of_the_lv() -> None:
    block = 64 * 1024
    assert thinpool.changed_extents(THIN_DELTA) == [
        (0, block), (16 * block, 3 * block), (3024 * block, 48 * block),
        (14368 * block, 32 * block), (16000 * block, 2 * block),
    ]  # fmt: skip


def _thin_lv_plan(extents: list[tuple[int, int]]) -> capture._LvPlan:
    lv = lvm.LogicalVolume("vg0", "thin", "u", 4 * CHUNK, "thin", (), "pool", "", False, True, 0)
    return capture._LvPlan(Filesystem("ext4"), Method.USED, extents, lv=lv)


A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def test_thin_delta_reuses_the_chunks_that_did_not_change_and_kept_their_used_blocks() -> None:
    used = [(0, 4 * CHUNK)]
    before = _lv("thin", "ext4", Method.USED, size=4 * CHUNK, segtype="thin", pool="pool",
                 used_map=ExtentMap(used), chunks=(A, B, C, D), thin_base="base-uuid")  # fmt: skip
    previous = _manifest(_vg(before))
    # chunk 1 changed (thin_delta); chunk 3's used blocks differ (a file freed)
    plan = _thin_lv_plan([(0, 3 * CHUNK + 4096)])
    capture._reuse_unchanged(plan, [(CHUNK + 8192, 65536)], previous)
    assert plan.reuse == {0: A, 2: C}
    assert plan.note == f"thin_delta since {previous.ref}: 2 of 4 chunks read"
    # the image records the base; without one the key is left out (older manifests unchanged)
    text = previous.to_json()
    assert parse_manifest(text, "m").volume_groups[0].lvs[0].thin_base == "base-uuid"
    plain = _manifest(_vg(_lv("thin", "ext4", Method.USED))).to_json()
    assert '"thin_base"' not in plain
