"""A capture on a machine without lvm2 (issue 12): an LVM physical volume is
stored raw, as before LVM support, with the reason in its note; the capture
does not fail. (LVM itself is tested in QEMU: tests/guest/test_lvm_vm.py.)"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib

import pytest

from tests.enginekit import liferaft
from tests.helpers.diskkit import PartSpec, make_fs, partition_disk

pytestmark = pytest.mark.root

MIB = 1024 * 1024


def _lvm_crc(data: bytes) -> int:
    # lvm2's calc_crc: CRC-32 without the final inversion, seeded 0xf597a6cf
    return zlib.crc32(data, 0xF597A6CF ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def write_pv_label(node: str, uuid: str, size: int) -> None:
    """The label pvcreate writes in a PV's second sector (what blkid recognises)."""
    pv_header = uuid.encode() + struct.pack("<Q", size)
    pv_header += struct.pack("<QQQQ", MIB, 0, 0, 0)  # data area from 1 MiB; end of list
    pv_header += struct.pack("<QQQQ", 4096, MIB - 4096, 0, 0)  # metadata area; end
    sector = bytearray(512)
    sector[32 : 32 + len(pv_header)] = pv_header
    struct.pack_into("<8sQ", sector, 0, b"LABELONE", 1)
    struct.pack_into("<I8s", sector, 20, 32, b"LVM2 001")
    struct.pack_into("<I", sector, 16, _lvm_crc(bytes(sector[20:])))
    fd = os.open(node, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(sector), 512)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(shutil.which("pvs", path="/usr/sbin:/sbin:/usr/bin") is not None,
                    reason="lvm2 is installed here")  # fmt: skip
def test_pv_without_lvm2_is_stored_raw_with_the_reason(loopdisk, workdir):
    dev = loopdisk(64 * MIB)
    boot, pv = partition_disk(dev, "gpt", [PartSpec(16, "ext4"), PartSpec(None)])
    make_fs(boot, "ext4")
    write_pv_label(pv, "a" * 32, 46 * MIB)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "pv", dev)
    (image,) = json.loads(liferaft("images", "--repo", repo, "--json").stdout)
    (raw,) = image["raw"]
    assert raw.startswith("disk 1 partition 2 (LVM2_member)"), raw
    assert "lvm2" in raw and "stored raw" in raw
    assert image["volume_groups"] == []
