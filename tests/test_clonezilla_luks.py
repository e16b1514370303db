"""Clonezilla images of LUKS disks (issue 16), the parts that need no
dm-crypt: the folder's LUKS files (luks-dev.list, <part>-luksHeader.bin, the
opened volume's image ocs_luks_XXX.<fs>-ptcl-img.*) turned into our LUKS
volumes (header area, volume inside, a PV inside), listed, imported into an
encrypted repository and verified; damaged or inconsistent pieces refused in
one line.

tests/data/clonezilla-luks/ holds the small files of a real image: what
Debian 12's ocs-sr savedisk (-luks yes) wrote for vda1 ext4, vda2 LUKS2 with
ext4 inside, vda3 LUKS1 holding the PV of vgl (root ext4, swap). The headers
and partclone images are made here with cryptsetup and partclone on files,
with the UUIDs the image names. The restore runs in QEMU:
tests/guest/test_clonezilla_lvm_vm.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue_app.engine.clonezilla import build_manifest, read_image
from rescue_app.engine.manifest import Method
from rescue_app.engine.partclone_image import ClonezillaImageError
from tests.enginekit import liferaft
from tests.test_clonezilla_lvm import _partclone_gz

DATA = Path(__file__).parent / "data" / "clonezilla-luks"
MIB = 1024 * 1024
# (partition, LUKS version, its size in bytes, as in vda-pt.sf and luks-dev.list)
HEADERS = {
    "vda2": (2, 163840 * 512, "f48eda90-f49a-4aa1-bdbf-13a9fe58edb3"),
    "vda3": (1, 323584 * 512, "7e38f18a-7d64-4415-a370-53e99faefc26"),
}


def _luks_header(tmp_path: Path, part: str, out: Path) -> None:
    """A LUKS header made by cryptsetup on a file as large as ``part``, kept
    by luksHeaderBackup as ocs-sr keeps it."""
    version, size, uuid = HEADERS[part]
    volume = tmp_path / f"{part}.luks"
    with open(volume, "wb") as f:
        f.truncate(size)
    kind = ["--type", "luks2", "--pbkdf", "pbkdf2"] if version == 2 else ["--type", "luks1"]
    subprocess.run(
        ["cryptsetup", "luksFormat", "-q", *kind, "--pbkdf-force-iterations", "1000",
         "--uuid", uuid, "--key-file", "-", str(volume)],
        input=b"secret", check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["cryptsetup", "luksHeaderBackup", "--header-backup-file", str(out), str(volume)],
        check=True, capture_output=True,
    )  # fmt: skip
    volume.unlink()


@pytest.fixture
def luks_folder(tmp_path: Path) -> Path:
    """The real image's small files with headers and partclone images made here."""
    folder = tmp_path / "lukimg"
    shutil.copytree(DATA, folder)
    for part in HEADERS:
        _luks_header(tmp_path, part, folder / f"{part}-luksHeader.bin")
    _partclone_gz(tmp_path, 16 * MIB, "boot", folder / "vda1.ext4-ptcl-img.gz")
    _partclone_gz(tmp_path, 64 * MIB, "secret", folder / "ocs_luks_eAz.ext4-ptcl-img.gz")
    _partclone_gz(tmp_path, 40 * MIB, "lroot", folder / "vgl-root.ext4-ptcl-img.gz")
    return folder


@pytest.mark.root
def test_luks_volumes_of_an_image_folder(luks_folder: Path) -> None:
    image = read_image(str(luks_folder))
    (disk,) = image.disks
    assert [p.method for p in disk.partitions] == [Method.USED, Method.LUKS, Method.LUKS]
    v2, v1 = image.luks_volumes
    assert (v2.partition, v2.header.version, v2.header.data_offset) == ("vda2", 2, 16 * MIB)
    assert (v1.partition, v1.header.version, v1.header.data_offset) == ("vda3", 1, 2 * MIB)
    assert v2.size == 64 * MIB and (v2.image, v2.fs) == ("ocs_luks_eAz.ext4-ptcl-img.gz", "ext4")
    assert v1.method == Method.LVM_PV and v1.image is None
    manifest, _static = build_manifest(image)
    m2, m1 = manifest.luks_volumes
    # the header area up to the data offset: a LUKS1 backup (2068480 bytes) padded
    assert (m2.header.length, m1.header.length) == (16 * MIB, 2 * MIB)
    assert (m2.disk, m2.partition, m2.uuid) == (0, 2, HEADERS["vda2"][2])
    assert m2.filesystem.type == "ext4" and m2.used_bytes > 0
    (vg,) = manifest.volume_groups
    (pv,) = vg.pvs
    assert (pv.disk, pv.partition, pv.luks) == (0, 3, True)
    assert [lv.name for lv in vg.lvs] == ["root", "swap"]


@pytest.mark.root
def test_a_luks_image_is_listed_and_imported_only_into_an_encrypted_repository(
    luks_folder: Path, workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (listed,) = json.loads(liferaft("images", "--repo", str(luks_folder), "--json").stdout)
    assert listed["luks_volumes"] == [
        f"disk 1 partition 2: LUKS2 volume {HEADERS['vda2'][2]} (ext4), opened by Clonezilla",
        f"disk 1 partition 3: LUKS1 volume {HEADERS['vda3'][2]} (LVM2_member), opened by "
        "Clonezilla",
    ]
    assert listed["volume_groups"][0]["pvs"] == ["disk 1 partition 3"]
    plain = os.path.join(workdir, "plain")
    proc = liferaft("import", "--repo", plain, str(luks_folder), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "may only go into an encrypted repository" in proc.stderr, proc.stderr
    assert "vda2, vda3" in proc.stderr and "init --encrypt" in proc.stderr
    if os.path.isdir(plain):
        assert json.loads(liferaft("images", "--repo", plain, "--json").stdout) == []
    repo = os.path.join(workdir, "sealed")
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", "repo passphrase")
    liferaft("init", "--repo", repo, "--encrypt")
    liferaft("import", "--repo", repo, str(luks_folder), "--name", "luks")
    liferaft("verify", "--repo", repo)
    (kept,) = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    assert kept["luks_volumes"] == [
        f"disk 1 partition 2: LUKS volume {HEADERS['vda2'][2]} (ext4), unlocked",
        f"disk 1 partition 3: LUKS volume {HEADERS['vda3'][2]} (LVM2_member), unlocked",
    ]


@pytest.mark.root
def test_damaged_luks_pieces_are_refused_in_one_line(luks_folder: Path) -> None:
    header = luks_folder / "vda2-luksHeader.bin"
    kept = header.read_bytes()
    cases: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
        "cut": (lambda: header.write_bytes(kept[:3000]), ("vda2-luksHeader.bin", "cut short")),
        "garbage": (lambda: header.write_bytes(b"x" * 4096), ("vda2-luksHeader.bin", "magic")),
        "missing": (header.unlink, ("vda2-luksHeader.bin", "missing")),
        "unlisted": (
            lambda: (luks_folder / "luks-dev.list").write_text(
                (DATA / "luks-dev.list").read_text().replace("/dev/vda2", "#")
            ),
            ("vda2-luksHeader.bin", "not in luks-dev.list"),
        ),
    }
    for tag, (damage, needles) in cases.items():
        damage()
        with pytest.raises(ClonezillaImageError) as caught:
            read_image(str(luks_folder))
        line = caught.value.message
        assert "\n" not in line and all(n in line for n in needles), (tag, line)
        header.write_bytes(kept)
        shutil.copy(DATA / "luks-dev.list", luks_folder / "luks-dev.list")
    read_image(str(luks_folder))
