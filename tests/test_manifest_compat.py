"""Manifests written by earlier liferaft versions open, and a manifest is
written byte for byte as before (key order included): tests/data/manifest
holds one of each version (partitions; a volume group; an md array; an
unlocked LUKS volume; a file-level partition), written by liferaft before
the disk models shared their hardware fields (diskmodel.DiskHardware), and
one of partitions only (version 5, a Clonezilla saveparts image imported)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue_app.engine.diskmodel import DiskHardware, SystemState, disks_to_json
from rescue_app.engine.diskparse import parse_lsblk
from rescue_app.engine.manifest import DiskImage, parse_manifest

DATA = Path(__file__).parent / "data" / "manifest"
FIXTURES = sorted(DATA.glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_a_stored_manifest_opens_and_is_written_the_same(path: Path) -> None:
    text = path.read_text()
    manifest = parse_manifest(text, path.name)
    assert manifest.to_json() == text


def test_every_manifest_version_has_a_fixture() -> None:
    versions = {parse_manifest(p.read_text(), p.name).to_json().split('"version": ')[1][0]
                for p in FIXTURES}  # fmt: skip
    assert versions == {"1", "2", "3", "4", "5"}


def test_the_image_of_a_disk_records_its_hardware_fields() -> None:
    assert issubclass(DiskImage, DiskHardware)


def test_liferaft_disks_json_keeps_its_key_order() -> None:
    """`liferaft disks --json`: path and name first, then the hardware, as before."""
    data = json.loads((DATA.parent / "lsblk" / "desktop-nvme-sata-usb.json").read_text())
    item = disks_to_json(parse_lsblk(data, SystemState()))[0]
    assert list(item)[:9] == [
        "path", "name", "model", "serial", "wwn", "size", "logical_sector_size",
        "physical_sector_size", "transport",
    ]  # fmt: skip
