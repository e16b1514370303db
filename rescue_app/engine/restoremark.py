"""The mark an unfinished restore leaves on its target disk.

A restore can end at any byte: Ctrl-C, a killed process, a power cut. What it
leaves must never pass for a working disk. Two things make sure of that,
without any handler having to run:

- the first MiB of every partition (where ext2/3/4, XFS, Btrfs, FAT, NTFS and
  exFAT keep the signatures that blkid and mount look for) is zeroed before
  any data is written and written last, once the rest is on the disk, so a
  partly written partition is no filesystem at all;
- this mark, written right after the new partition table, sits in the first
  bytes of the disk: the MBR's boot-code area (no partition-table reader looks
  there) or, on a disk without a table, the start of the whole-disk
  filesystem's first MiB. The image's own boot code, or its first MiB, is
  written over it as the very last step.

``liferaft disks`` and the UI read it to say "incomplete restore of IMAGE
(started TIME)" until a restore of that disk completes.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from rescue_app.engine import blockio

MAGIC = b"LIFERAFT-INCOMPLETE-RESTORE\n"
SIZE = 440  # the MBR boot-code area: before the disk signature and the table
HOLD = 1024 * 1024  # the head of each partition written last


def encode(ref: str, started: datetime) -> bytes:
    doc = {"image": ref, "started": started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    raw = MAGIC + json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    if len(raw) > SIZE:
        raise ValueError("restore mark too long")
    return raw.ljust(SIZE, b"\0")


def decode(sector: bytes) -> str | None:
    """The text to show for a disk whose first bytes are ``sector``, or None."""
    if not sector.startswith(MAGIC):
        return None
    try:
        doc = json.loads(sector[len(MAGIC) : SIZE].split(b"\n", 1)[0])
        when = datetime.strptime(doc["started"], "%Y-%m-%dT%H:%M:%SZ")
        return (
            f"incomplete restore of {doc['image']} "
            f"(started {when.strftime('%Y-%m-%d %H:%M:%S')} UTC)"
        )
    except (ValueError, KeyError, TypeError):
        return "incomplete restore (started at an unknown time)"


def write(target: str, ref: str, started: datetime) -> None:
    """Put the mark on ``target`` and make sure it is on the disk."""
    with blockio.open_device(target, write=True) as fd:
        blockio.write_all(fd, target, encode(ref, started), 0)
        blockio.flush(fd, target)


def clear(target: str) -> None:
    """Remove the mark (when the image has no boot code of its own to put there)."""
    with blockio.open_device(target, write=True) as fd:
        head = blockio.read_exact(fd, target, 0, SIZE)
        if head.startswith(MAGIC):
            blockio.write_all(fd, target, bytes(SIZE), 0)
            blockio.flush(fd, target)


def read(device: str) -> str | None:
    """The mark's text on ``device``; None if there is none or it cannot be read."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return decode(os.pread(fd, SIZE, 0))
    except OSError:
        return None
    finally:
        os.close(fd)
