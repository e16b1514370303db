"""Used-block maps of filesystems, taken from partclone's domain output.

``partclone.<fs> -D`` reads the filesystem's own allocation metadata and
writes a ddrescue domain map of the blocks in use; we parse that map and
never parse a filesystem ourselves. Reads the partition only.
"""

from __future__ import annotations

import os
import re
import tempfile

from rescue_app.engine.extents import Extent, normalize
from rescue_app.errors import CommandError
from rescue_app.run import have_tool, run

# lsblk FSTYPE -> the partclone program that understands it
PARTCLONE_OF = {
    "ext2": "partclone.ext2",
    "ext3": "partclone.ext3",
    "ext4": "partclone.ext4",
    "xfs": "partclone.xfs",
    "btrfs": "partclone.btrfs",
    "vfat": "partclone.fat",
    "ntfs": "partclone.ntfs",
    "exfat": "partclone.exfat",
}


class MapUnavailable(Exception):
    """partclone could not map this filesystem; the caller falls back to raw."""


def parse_domain_map(text: str) -> list[Extent]:
    """The '+' (in use) extents of a ddrescue domain map."""
    extents: list[Extent] = []
    status_line_seen = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if not status_line_seen:
            # the first data line is "current_pos current_status"
            status_line_seen = True
            if len(fields) == 2:
                continue
        if len(fields) != 3:
            raise ValueError(f"unexpected line in domain map: {line!r}")
        pos, size, status = int(fields[0], 16), int(fields[1], 16), fields[2]
        if status == "+":
            extents.append((pos, size))
    return normalize(extents)


def ntfs_backup_boot_sector(boot_sector: bytes) -> Extent | None:
    """Where NTFS keeps its backup boot sector: just after the volume's last
    sector. partclone's map leaves it out, and ntfsfix/chkdsk reject a
    volume without it, so capture adds it."""
    if len(boot_sector) < 0x30 or boot_sector[3:11] != b"NTFS    ":
        return None
    bytes_per_sector = int.from_bytes(boot_sector[0x0B:0x0D], "little")
    total_sectors = int.from_bytes(boot_sector[0x28:0x30], "little")
    if bytes_per_sector not in (256, 512, 1024, 2048, 4096) or not total_sectors:
        return None
    return total_sectors * bytes_per_sector, bytes_per_sector


EXT_FAMILY = ("ext2", "ext3", "ext4")


def parse_dumpe2fs(text: str) -> list[Extent]:
    """Used extents of an ext2/3/4 filesystem from ``dumpe2fs`` output: every
    block that no group lists as free (the block bitmaps, as e2fsprogs reads
    them, including groups whose bitmaps are not initialised)."""
    block_size = block_count = None
    free: list[Extent] = []
    for line in text.splitlines():
        if line.startswith("Block size:"):
            block_size = int(line.split(":", 1)[1])
        elif line.startswith("Block count:"):
            block_count = int(line.split(":", 1)[1])
        elif line.startswith("  Free blocks:"):
            ranges = line.split(":", 1)[1].strip()
            for item in filter(None, (r.strip() for r in ranges.split(","))):
                first, _, last = item.partition("-")
                lo, hi = int(first), int(last or first)
                free.append((lo, hi - lo + 1))
    if not block_size or not block_count:
        raise ValueError("dumpe2fs output has no block size or count")
    used: list[Extent] = []
    cursor = 0
    for lo, n in normalize(free):
        if lo > cursor:
            used.append((cursor * block_size, (lo - cursor) * block_size))
        cursor = max(cursor, lo + n)
    if cursor < block_count:
        used.append((cursor * block_size, (block_count - cursor) * block_size))
    return used


def parse_btrfs_chunks(text: str) -> list[tuple[int, int, list[int]]]:
    """(logical start, length, physical offset of each copy) of every
    metadata and system chunk, from ``btrfs inspect-internal dump-tree -t
    chunk`` (single device: each stripe is a whole copy)."""
    out: list[tuple[int, int, list[int]]] = []
    for block in re.split(r"\n\s*item \d+ key ", text):
        head = re.match(r"\(FIRST_CHUNK_TREE CHUNK_ITEM (\d+)\)", block)
        kind = re.search(r"length (\d+) owner \d+ stripe_len \d+ type (\S+)", block)
        if not head or not kind or not re.search(r"METADATA|SYSTEM", kind.group(2)):
            continue
        stripes = [int(x) for x in re.findall(r"stripe \d+ devid \d+ offset (\d+)", block)]
        out.append((int(head.group(1)), int(kind.group(1)), stripes))
    return out


def parse_btrfs_tree_blocks(text: str, nodesize: int) -> list[Extent]:
    """Logical (start, length) of every tree block the extent tree lists
    (``dump-tree -t extent``): METADATA_ITEMs, and EXTENT_ITEMs flagged
    TREE_BLOCK (filesystems without skinny metadata)."""
    blocks = [(int(b), nodesize) for b in re.findall(r"key \((\d+) METADATA_ITEM \d+\)", text)]
    for start, size in re.findall(
        r"key \((\d+) EXTENT_ITEM (\d+)\)[^\n]*\n[^\n]*flags [^\n]*TREE_BLOCK", text
    ):
        blocks.append((int(start), int(size)))
    return blocks


def btrfs_tree_block_map(partition_path: str) -> list[Extent]:
    """Where on the partition every copy of every Btrfs tree block lies.
    partclone.btrfs's map misses some (a subvolume's tree, a DUP mirror: its
    issues #78, #239, #303), and one missing tree block leaves the restored
    filesystem unreadable; capture adds these to partclone's map."""
    try:
        super_text = run(["btrfs", "inspect-internal", "dump-super", partition_path]).stdout
        chunks = parse_btrfs_chunks(
            run(["btrfs", "inspect-internal", "dump-tree", "-t", "chunk", partition_path]).stdout
        )
        extent_text = run(
            ["btrfs", "inspect-internal", "dump-tree", "-t", "extent", partition_path]
        ).stdout
    except CommandError as exc:
        raise MapUnavailable(f"btrfs could not list its tree blocks: {exc}") from None
    size = re.search(r"^nodesize\s+(\d+)", super_text, re.MULTILINE)
    if size is None:
        raise MapUnavailable("btrfs dump-super shows no node size")
    return place_tree_blocks(chunks, parse_btrfs_tree_blocks(extent_text, int(size.group(1))))


def place_tree_blocks(
    chunks: list[tuple[int, int, list[int]]], blocks: list[Extent]
) -> list[Extent]:
    """Logical tree blocks -> every physical copy of each, on the device."""
    out: list[Extent] = []
    for logical, length in blocks:
        for start, chunk_length, copies in chunks:
            if start <= logical < start + chunk_length:
                out += [(copy + logical - start, length) for copy in copies]
                break
    return normalize(out)


def used_map(partition_path: str, fstype: str) -> list[Extent]:
    if fstype in EXT_FAMILY and have_tool("dumpe2fs", "ext maps come from partclone"):
        # e2fsprogs answers in milliseconds; partclone's progress thread
        # makes every map take at least two seconds.
        proc = run(["dumpe2fs", partition_path], check=False)
        if proc.returncode == 0:
            try:
                return parse_dumpe2fs(proc.stdout)
            except ValueError:
                pass
    if fstype == "btrfs":
        return normalize(
            [*partclone_map(partition_path, fstype), *btrfs_tree_block_map(partition_path)]
        )
    return partclone_map(partition_path, fstype)


def partclone_map(partition_path: str, fstype: str) -> list[Extent]:
    program = PARTCLONE_OF.get(fstype)
    if program is None:
        raise MapUnavailable(f"no partclone support for {fstype}")
    with tempfile.TemporaryDirectory(prefix="liferaft-map-") as tmp:
        out = os.path.join(tmp, "domain.map")
        logfile = os.path.join(tmp, "partclone.log")
        try:
            run([program, "-D", "-s", partition_path, "-o", out, "-L", logfile])
        except CommandError as exc:
            detail = _last_meaningful_line(exc.stderr) or str(exc)
            raise MapUnavailable(
                f"partclone could not read the {fstype} filesystem: {detail}"
            ) from None
        with open(out) as f:
            text = f.read()
    try:
        extents = parse_domain_map(text)
    except ValueError as exc:
        raise MapUnavailable(str(exc)) from None
    if not extents:
        raise MapUnavailable("partclone reported no used blocks")
    if fstype == "ntfs":
        with open(partition_path, "rb") as dev:
            backup = ntfs_backup_boot_sector(dev.read(512))
        if backup is not None:
            extents = normalize([*extents, backup])
    return extents


def _last_meaningful_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Partclone" in line and "fail" not in line.lower():
            continue
        return line
    return ""
