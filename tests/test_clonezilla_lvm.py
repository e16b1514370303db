"""Clonezilla images of LVM disks (issue 16), the parts that need no
device-mapper: lvm_<vg>.conf read without lvm2 (engine/lvmtext.py), and an
image folder's LVM files (lvm_vg_dev.list, lvm_logv.list, the LV images named
after /dev/VG/LV) turned into volume groups, or refused in one line.

tests/data/clonezilla-lvm/ holds the small files of a real image: what
Debian 12's ocs-sr savedisk wrote in the rescue system for
tests/guest/clonezilla_lvm.sh's disk (vda1 ext4; vda2 the PV of vg0: root
ext4 in two segments, swap, data ext4). The restore itself runs in QEMU:
tests/guest/test_clonezilla_lvm_vm.py.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue_app.engine.clonezilla import read_image
from rescue_app.engine.lvmtext import MetadataError, layout, parse_config
from rescue_app.engine.manifest import Method
from rescue_app.engine.partclone_image import ClonezillaImageError
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.diskkit import PartSpec, partition_disk

DATA = Path(__file__).parent / "data" / "clonezilla-lvm"
MIB = 1024 * 1024
CONF = (DATA / "lvm_vg0.conf").read_text()
PV = layout(CONF).pvs[0].uuid


def test_vgcfgbackup_text_is_read_without_lvm2() -> None:
    vg = layout(CONF)
    assert vg.name == "vg0" and vg.extent_size == 4 * MIB
    (pv,) = vg.pvs
    assert pv.key == "pv0" and pv.pe_start == MIB and pv.device.startswith("/dev/")
    lvs = {lv.name: lv for lv in vg.lvs}
    assert lvs["root"].size == 64 * MIB and lvs["root"].segtype == "linear"
    assert lvs["root"].visible and lvs["root"].pvs == ("pv0",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('vg0 {\n id = "x"\n', "expected }, found the end"),
        ("vg0 {\n id = @\n}\n", "unexpected '@' on line 2"),
        ('vg0 {\n id = "x"\n}\n', "no extent_size"),
        ("a = 1\n", "0 volume groups"),
    ],
)
def test_damaged_metadata_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(MetadataError, match=needle):
        layout(text)


def test_config_values() -> None:
    doc = parse_config('a = "q\\"x" # note\nb = [1, "two"]\ns {\n c = 2.5\n}\n')
    assert doc == {"a": 'q"x', "b": [1, "two"], "s": {"c": 2.5}}


def _folder(tmp_path: Path, **extra: str) -> Path:
    """The real image's small files; the partition and LV images as empty
    files (only their names are read), ``extra`` files written over them."""
    folder = tmp_path / "lvmimg"
    shutil.copytree(DATA, folder)
    for name in ("vda1.ext4-ptcl-img.gz", "vg0-root.ext4-ptcl-img.gz", "vg0-data.ext4-ptcl-img.gz"):
        (folder / name).write_bytes(b"")
    for name, text in extra.items():
        (folder / name).write_text(text)
    return folder


def test_an_lvm_image_folder_becomes_a_volume_group(tmp_path: Path) -> None:
    image = read_image(str(_folder(tmp_path)))
    (disk,) = image.disks
    assert [p.method for p in disk.partitions] == [Method.USED, Method.LVM_PV]
    (vg,) = image.volume_groups
    assert vg.layout.name == "vg0" and vg.pvs == (("vda2", PV),) and vg.metadata == CONF
    root, swap, data = vg.lvs
    assert (root.kernel_name, root.image, root.method) == (
        "vg0/root",
        "vg0-root.ext4-ptcl-img.gz",
        Method.USED,
    )
    assert (root.fs, root.uuid, root.label) == (
        "ext4",
        "f21e33dc-958c-441d-b939-b0ee64e89d2e",
        "root",
    )
    assert (swap.method, swap.uuid, swap.label) == (
        Method.SWAP,
        "f937e831-e928-4a81-bb84-a460460f7800",
        "lvswap",
    )
    assert (data.image, data.layout.size) == ("vg0-data.ext4-ptcl-img.gz", 48 * MIB)
    assert {"vg0-root.ext4-ptcl-img.gz", "vg0-data.ext4-ptcl-img.gz"} <= set(image.files())


def test_what_cannot_be_restored_is_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "luks": ({"lvm_vg_dev.list": f"vg0 /dev/mapper/ocs_luks_Ab1 {PV}\n"}, "ocs_luks_Ab1"),
        "raid": ({"lvm_vg0.conf": CONF.replace('type = "striped"', 'type = "raid1"', 1)}, "raid1"),
        "other-pv": ({"lvm_vg_dev.list": "vg0 /dev/vda2 zzzz\n"}, "zzzz"),
        "conf": ({"lvm_vg0.conf": "vg0 {\n}\n"}, "no extent_size"),
    }
    for tag, (extra, needle) in cases.items():
        where = tmp_path / tag
        where.mkdir()
        folder = _folder(where, **extra)
        with pytest.raises(ClonezillaImageError, match=needle) as caught:
            read_image(str(folder))
        assert "\n" not in caught.value.message, tag


def _partclone_gz(tmp_path: Path, size: int, label: str, out: Path) -> None:
    """An ext4 of ``size`` bytes as partclone.ext4 images it, gzip'ed as
    ocs-sr -z1p stores it."""
    fs = tmp_path / f"{label}.fs"
    with open(fs, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(fs)], check=True)
    raw = tmp_path / f"{label}.ptcl"
    subprocess.run(
        ["partclone.ext4", "-c", "-q", "-s", str(fs), "-O", str(raw), "-L", f"{raw}.log"],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(raw, "rb") as src, gzip.open(out, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)


@pytest.mark.root
def test_an_lvm_image_is_listed_imported_and_verified(tmp_path: Path, workdir: str) -> None:
    """Without lvm2: the listing shows disk -> partition -> PV -> VG -> LV,
    import reads every LV image (checksums) into the repository and verify
    passes. (The plan and the restore need lvm2: the guest test.)"""
    folder = _folder(tmp_path)
    _partclone_gz(tmp_path, 16 * MIB, "boot", folder / "vda1.ext4-ptcl-img.gz")
    _partclone_gz(tmp_path, 64 * MIB, "root", folder / "vg0-root.ext4-ptcl-img.gz")
    _partclone_gz(tmp_path, 48 * MIB, "data", folder / "vg0-data.ext4-ptcl-img.gz")
    (image,) = json.loads(liferaft("images", "--repo", str(folder), "--json").stdout)
    (vg,) = image["volume_groups"]
    assert vg["name"] == "vg0" and vg["pvs"] == ["disk 1 partition 2"], vg
    lvs = {lv["name"]: lv for lv in vg["lvs"]}
    assert (lvs["root"]["filesystem"], lvs["root"]["size"]) == ("ext4", 64 * MIB)
    assert lvs["swap"]["method"] == "swap" and lvs["data"]["size"] == 48 * MIB
    repo = os.path.join(workdir, "repo")
    liferaft("import", "--repo", repo, str(folder), "--name", "lvm")
    liferaft("verify", "--repo", repo)
    (kept,) = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    assert [lv["name"] for lv in kept["volume_groups"][0]["lvs"]] == ["root", "swap", "data"]
    assert kept["volume_groups"][0]["lvs"][0]["data_bytes"] > 0


WHOLE = Path(__file__).parent / "data" / "clonezilla-wholedisk"


@pytest.mark.root
def test_a_pv_on_a_whole_disk_is_a_disk_without_a_table(tmp_path: Path, workdir: str) -> None:
    """tests/data/clonezilla-wholedisk/: what ocs-sr savedisk wrote for a
    256 MiB disk that is one LVM PV (vgw: root ext4), no partition table
    (vdc-pt.sf empty). It becomes a disk without a table whose one entry is
    the PV, as capture describes such a disk; listed, imported, verified."""
    folder = tmp_path / "wimg"
    shutil.copytree(WHOLE, folder)
    _partclone_gz(tmp_path, 40 * MIB, "wroot", folder / "vgw-root.ext4-ptcl-img.gz")
    image = read_image(str(folder))
    (disk,) = image.disks
    assert (disk.table.type, disk.size, disk.head) == ("none", 256 * MIB, b"")
    (pv,) = disk.partitions
    assert (pv.entry.kind, pv.entry.size, pv.method) == ("whole-disk", 256 * MIB, Method.LVM_PV)
    (listed,) = json.loads(liferaft("images", "--repo", str(folder), "--json").stdout)
    assert listed["volume_groups"][0]["pvs"] == ["disk 1 (whole disk)"]
    repo = os.path.join(workdir, "repo")
    liferaft("import", "--repo", repo, str(folder), "--name", "whole")
    liferaft("verify", "--repo", repo)
    # without its size (vdc-pt.parted), such a disk cannot be planned: one line
    (folder / "vdc-pt.parted").unlink()
    with pytest.raises(ClonezillaImageError, match="vdc-pt.parted") as caught:
        read_image(str(folder))
    assert "\n" not in caught.value.message


THIN = Path(__file__).parent / "data" / "clonezilla-thin"


def _vgt_images(tmp_path: Path, folder: Path) -> None:
    """The partclone images ocs-sr wrote for vda1 and vgt's LVs (THIN,
    SAVEPARTS), made here at the sizes the image's metadata gives."""
    _partclone_gz(tmp_path, 16 * MIB, "boot", folder / "vda1.ext4-ptcl-img.gz")
    _partclone_gz(tmp_path, 32 * MIB, "lin", folder / "vgt-lin.ext4-ptcl-img.gz")
    _partclone_gz(tmp_path, 100 * MIB, "thin1", folder / "vgt-thin1.ext4-ptcl-img.gz")


@pytest.mark.root
def test_a_thin_pool_gets_fresh_metadata_naming_its_thin_lvs(tmp_path: Path, workdir: str) -> None:
    """tests/data/clonezilla-thin/: what ocs-sr savedisk wrote for vda1 ext4
    and vda2 the PV of vgt: lin (linear ext4), the thin pool tp (64 MiB,
    tp_tmeta, tp_tdata, lvol0_pmspare) and thin1 (100 MiB thin ext4).
    Clonezilla saves each thin LV, not the pool's metadata: the image gets
    metadata made with thin_restore (thin1's device id, the pool's
    transaction id), written through the PVs where tp_tmeta lies, so the
    pool activates and thin1 is written through it. Listed, imported,
    verified (the restore: the guest test)."""
    folder = tmp_path / "timg"
    shutil.copytree(THIN, folder)
    _vgt_images(tmp_path, folder)
    image = read_image(str(folder))
    (vg,) = image.volume_groups
    lvs = {lv.layout.name: lv for lv in vg.lvs}
    assert set(lvs) == {"lin", "tp", "thin1", "lvol0_pmspare", "tp_tmeta", "tp_tdata"}
    assert lvs["thin1"].pool == "tp" and lvs["thin1"].image == "vgt-thin1.ext4-ptcl-img.gz"
    meta = lvs["tp_tmeta"]
    (seg,) = meta.segments
    assert meta.hidden and meta.method == Method.RAW and (seg.le, seg.pe, seg.extents) == (0, 25, 1)
    assert 'transaction="1"' in meta.pool_xml and 'dev_id="1"' in meta.pool_xml
    assert lvs["tp_tdata"].hidden and lvs["lvol0_pmspare"].hidden and not lvs["tp"].hidden
    (listed,) = json.loads(liferaft("images", "--repo", str(folder), "--json").stdout)
    shown = {lv["name"]: lv for lv in listed["volume_groups"][0]["lvs"]}
    assert set(shown) == {"lin", "tp", "thin1"} and shown["thin1"]["size"] == 100 * MIB
    repo = os.path.join(workdir, "repo")
    liferaft("import", "--repo", repo, str(folder), "--name", "thin")
    liferaft("verify", "--repo", repo)
    (kept,) = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    assert {lv["name"] for lv in kept["volume_groups"][0]["lvs"]} == {"lin", "tp", "thin1"}


SAVEPARTS = Path(__file__).parent / "data" / "clonezilla-saveparts-lvm"


@pytest.mark.root
def test_lvm_in_a_saveparts_image_is_planned_onto_named_partitions(
    tmp_path: Path, loopdisk: Callable[[int], str]
) -> None:
    """tests/data/clonezilla-saveparts-lvm/: ocs-sr saveparts of vda1 (ext4)
    and vda2 (the PV of vgt, with a thin pool). The PV partition is a saved
    partition like the others; its volume group is recreated on the target
    named for it (the plan says so, with the VG's LVs); a target smaller than
    the PV is refused in one line. (Written and activated: the guest test.)"""
    folder = tmp_path / "thinparts"
    shutil.copytree(SAVEPARTS, folder)
    _vgt_images(tmp_path, folder)
    image = read_image(str(folder))
    assert image.partitions_only and [vg.layout.name for vg in image.volume_groups] == ["vgt"]
    dev = loopdisk(400 * MIB)
    small, big = partition_disk(dev, "gpt", [PartSpec(100), PartSpec(None)])
    root = str(tmp_path)

    def restore(*to: str) -> subprocess.CompletedProcess[str]:
        argv = ["restore", "--repo", root, "--image", "thinparts", "--dry-run", "--grow"]
        return liferaft(*argv, *(a for t in to for a in ("--to", t)), check=False)

    plan = restore(small, big)
    assert plan.returncode == 0, plan.stderr
    assert "an LVM physical volume: its volume group below is recreated on it, grown" in plan.stdout
    assert "Volume group vgt (LVM, on disk 1 partition 2)" in plan.stdout
    assert "thin, in pool tp" in plan.stdout
    line = assert_one_line_error(restore(big, small), "smaller than the filesystem of vda2")
    assert small in line
    only_boot = restore(f"vda1={small}")
    assert only_boot.returncode == 0 and "Volume group" not in only_boot.stdout
