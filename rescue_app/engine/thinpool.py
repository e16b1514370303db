"""A thin pool in use, read consistently (the online backup).

Owns the copy of a live LVM thin pool's metadata. The pool's metadata
device (``_tmeta``) changes while the pool is written, so it is not read
raw: the kernel is asked for a metadata snapshot (``dmsetup message ...
reserve_metadata_snap``), ``thin_dump --metadata-snap`` reads that one
moment, and ``thin_restore`` makes it a metadata device again, in a file of
the metadata LV's size behind a loop device, which capture reads as if it
were the LV (restore writes it back verbatim, as for an offline capture).

The copy is made to match the volume group's text metadata, taken before
the backup's own snapshots (engine/lvm.py ``liferaft-snap-*``): their thin
devices are left out (their blocks then are free in the copy) and the
transaction id is the one that text records, which LVM checks when the
restored pool is activated. Writes only its temporary file (through its loop
device).

``liferaft backup --thin-delta``: in the same metadata snapshot,
``thin_delta`` lists the blocks in which a thin LV's new snapshot differs
from its base (the snapshot kept by the previous backup, engine/lvm.py
``liferaft-base-LV``), as byte extents of the LV; capture reads only the
chunks that hold them.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from rescue_app.engine import mounts
from rescue_app.errors import CommandError, DiskError
from rescue_app.run import run


def dm_name(vg: str, lv: str, layer: str = "") -> str:
    """The device-mapper name of an LV (a hyphen in a name is doubled)."""
    name = f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"
    return f"{name}-{layer}" if layer else name


def only_devices(dump: str, keep: Collection[int], transaction: int, data_bytes: int) -> str:
    """``thin_dump`` XML with only the thin devices ``keep``, the
    superblock's transaction id set to ``transaction`` and its data size to
    ``data_bytes`` (the pool's data LV): dumped from a metadata snapshot it
    says ``nr_data_blocks="0"``, which thin_restore refuses ("mapping beyond
    end of data device")."""
    root = ET.fromstring(dump)
    if root.tag != "superblock":
        raise DiskError("thin_dump gave no <superblock>")
    for device in list(root.findall("device")):
        if int(device.get("dev_id", "-1")) not in keep:
            root.remove(device)
    root.set("transaction", str(transaction))
    block = int(root.get("data_block_size", "0")) * 512
    if block <= 0:
        raise DiskError("thin_dump gave no data block size")
    root.set("nr_data_blocks", str(data_bytes // block))
    return ET.tostring(root, encoding="unicode")


def changed_extents(delta: str) -> list[tuple[int, int]]:
    """``thin_delta`` XML -> (byte offset, length) of every range that is not
    the same in both devices (its units: the pool's data blocks)."""
    root = ET.fromstring(delta)
    block = int(root.get("data_block_size", "0")) * 512
    if block <= 0:
        raise DiskError("thin_delta gave no data block size")
    out = []
    for kind in ("different", "left_only", "right_only"):
        for r in root.iter(kind):
            out.append((int(r.get("begin", "0")) * block, int(r.get("length", "0")) * block))
    return sorted(out)


@dataclass(frozen=True)
class PoolCopy:
    device: str  # the metadata copy, to read in place of the metadata LV
    changed: dict[str, list[tuple[int, int]]]  # thin LV -> byte extents changed since its base


@contextmanager
def metadata_copy(
    vg: str,
    pool: str,
    sizes: tuple[int, int],
    keep: Collection[int],
    transaction: int,
    deltas: Mapping[str, tuple[int, int]] | None = None,
) -> Iterator[PoolCopy]:
    """A loop device holding the metadata of the thin pool
    ``vg/pool`` (active, in use) as it was at one moment, with only the
    thin devices ``keep`` and the transaction id ``transaction``; ``sizes``:
    the metadata LV's and the data LV's; ``deltas``: thin LV -> (its base's
    thin id, its new snapshot's): their changed extents from thin_delta.
    Detached and removed after."""
    size, data_bytes = sizes
    tpool = "/dev/mapper/" + dm_name(vg, pool, "tpool")
    tmeta = "/dev/mapper/" + dm_name(vg, f"{pool}_tmeta")
    where = f"the thin pool {vg}/{pool}"
    try:
        run(["dmsetup", "message", tpool, "0", "reserve_metadata_snap"])
        try:
            dump = run(["thin_dump", "--metadata-snap", tmeta]).stdout
            changed = {
                lv: changed_extents(
                    run(
                        [
                            "thin_delta",
                            "--metadata-snap",
                            "--snap1",
                            str(base),
                            "--snap2",
                            str(new),
                            tmeta,
                        ]
                    ).stdout  # fmt: skip
                )
                for lv, (base, new) in (deltas or {}).items()
            }
        finally:
            run(["dmsetup", "message", tpool, "0", "release_metadata_snap"], check=False)
    except CommandError as exc:
        raise DiskError(
            f"{where}: its metadata could not be read at one moment ({exc.message})",
            hint="back this machine up from the rescue stick",
        ) from None
    with tempfile.TemporaryDirectory(prefix="liferaft-tmeta-") as folder:
        source = os.path.join(folder, "metadata.xml")
        with open(source, "w") as f:
            f.write(only_devices(dump, keep, transaction, data_bytes))
        copy = os.path.join(folder, "tmeta")
        with open(copy, "wb") as f:
            f.truncate(size)
        # Through a loop device: thin_restore opens its output O_DIRECT,
        # which a file on tmpfs (/tmp of the rescue system, often of a
        # server) refuses ("you cannot run this tool ... on live metadata").
        loop = mounts.attach_loop(copy, writable=True)
        try:
            run(["thin_restore", "-i", source, "-o", loop])
            yield PoolCopy(loop, changed)
        finally:
            mounts.detach_loop(loop)


def fresh_pool_xml(
    transaction: int, block_sectors: int, data_bytes: int, devices: Mapping[int, int]
) -> str:
    """``thin_restore`` XML of a pool whose thin devices (``devices``: thin
    id -> its transaction id) map no block yet; ``transaction``: the pool's,
    as the volume group's text records it (LVM checks it on activation)."""
    root = ET.Element(
        "superblock",
        uuid="",
        time="0",
        transaction=str(transaction),
        flags="0",
        version="2",
        data_block_size=str(block_sectors),
        nr_data_blocks=str(data_bytes // (block_sectors * 512)),
    )
    for dev_id, tx in sorted(devices.items()):
        device = ET.SubElement(
            root,
            "device",
            dev_id=str(dev_id),
            mapped_blocks="0",
            transaction=str(tx),
            creation_time="0",
            snap_time="0",
        )
        device.text = "\n"
    return ET.tostring(root, encoding="unicode")


@contextmanager
def fresh_metadata(xml: str, size: int) -> Iterator[str]:
    """A file of ``size`` bytes (the pool's metadata LV) holding the thin pool
    metadata ``xml`` describes (``fresh_pool_xml``), made by thin_restore;
    removed after. A pool whose thin LVs were saved one by one (Clonezilla)
    starts from it: their data is written through the active pool after."""
    with tempfile.TemporaryDirectory(prefix="liferaft-tmeta-") as folder:
        source = os.path.join(folder, "metadata.xml")
        with open(source, "w") as f:
            f.write(xml)
        copy = os.path.join(folder, "tmeta")
        with open(copy, "wb") as f:
            f.truncate(size)
        loop = mounts.attach_loop(copy, writable=True)  # (O_DIRECT: see metadata_copy)
        try:
            run(["thin_restore", "-i", source, "-o", loop])
        except CommandError as exc:
            raise DiskError(f"thin pool metadata could not be made: {exc.message}") from None
        finally:
            mounts.detach_loop(loop)
        yield copy


__all__ = [
    "PoolCopy",
    "changed_extents",
    "dm_name",
    "fresh_metadata",
    "fresh_pool_xml",
    "metadata_copy",
    "only_devices",
]
