"""`make bench`, Clonezilla part (issue 16): a Clonezilla image restored by
liferaft and by Clonezilla itself, onto the same loop disk, in the same run.

The bench's source disk is saved once with ``ocs-sr savedisk`` (partclone,
zstd, like a current Clonezilla); then, the page cache dropped before each:

    ocs-sr restoredisk  ocs-sr -b ... restoredisk NAME DISK; sync
    liferaft            liferaft restore --repo ROOT --image NAME --to DISK --yes --no-seed; sync

on one target disk, first ocs-sr, then liferaft over it. Then the same at
partition level: the source partition saved with ``ocs-sr saveparts`` and,
onto the target's first partition (the same size), again ocs-sr first:

    ocs-sr restoreparts ocs-sr -b ... -f SRCPART restoreparts NAME PART; sync
    liferaft            liferaft restore --repo ROOT --image NAME --to PART --yes; sync

Every restore must be correct: e2fsck clean, and liferaft's partition
byte-identical to the source. ocs-sr runs with a /dev holding only its disk
(tests/helpers/devjail.py: it probes every disk it can see); its time
includes its own start-up, and the partclone part of it, from its log, is
reported beside it.
liferaft's includes reading the whole image once before writing (it checks
every partclone checksum and that no volume is missing before the first
write) and a second read while writing. Information, not a target.
Alone: ``.venv/bin/python -m bench.clonezilla`` (as root).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.devjail import only_devices

MIB = 1024 * 1024
IMAGE = "bench-cz"
# batch, partclone, the gap after the MBR, no fsck, no check, no encryption, zstd
SAVE = ["-b", "-q2", "-j2", "-sfsck", "-scs", "-senc", "-nogui", "-z9", "-i", "0"]
# batch, the gap after the MBR, the table as saved, no size check, no EFI
# NVRAM update, no image check first
RESTORE = ["-b", "-j2", "-k0", "-icds", "-iefi", "-scr", "-nogui"]
PARTS_IMAGE = "bench-cz-parts"
# batch, no table written, no image check first; -f: the saved partition that
# goes onto the (differently named) target partition
RESTORE_PARTS = ["-b", "-k", "-scr", "-nogui"]


def _ocs(root: str, args: list[str], disk: str) -> str:
    # (its /dev holds only the disk: ocs-sr probes every disk it can see)
    proc = subprocess.run(
        only_devices(["ocs-sr", *args[:-3], "-p", "true", "-or", root, *args[-3:]], [disk]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ocs-sr {args[-3]} failed: {proc.stdout[-2000:]}{proc.stderr}")
    return proc.stdout


def clonezilla_restores(bench: Any, ctx: Any, stack: contextlib.ExitStack) -> dict[str, float]:
    """``bench``: the bench/run.py module (its helpers); adds two Measurements
    to ctx.results and returns the numbers for the report."""
    root = os.path.join(ctx.work, "partimag")
    os.makedirs(root)
    _ocs(root, [*SAVE, "savedisk", IMAGE, os.path.basename(ctx.source_disk)], ctx.source_disk)
    image_bytes = sum(
        os.path.getsize(os.path.join(root, IMAGE, n)) for n in os.listdir(os.path.join(root, IMAGE))
    )
    target = stack.enter_context(bench.loop_disk(bench.DISK_SIZE, ctx.work))
    # The source's table first: ocs-sr's /dev (only_devices) holds the nodes
    # that exist when it starts, so the partition it restores onto must be
    # there (without, partclone wrote into a file of that /dev, not the disk).
    # ocs-sr writes the same table again.
    bench.partition_disk(target, "gpt", bench.LAYOUT)

    restore = [*RESTORE, "-p", "true", "-or", root, "restoredisk", IMAGE]
    bench.drop_caches()
    ocs = bench.timed_pipeline(
        "ocs-sr restoredisk",
        [only_devices(["ocs-sr", *restore, os.path.basename(target)], [target])],
    )
    bench.fsck_clean(f"{target}p1", "ext4")
    ocs.stored_bytes = image_bytes
    ctx.results["ocs_restoredisk"] = ocs

    bench.drop_caches()
    lf = bench.timed_pipeline(
        "liferaft restore (cz)",
        # --no-seed: the target holds what ocs-sr just wrote, the same table
        # and data, which liferaft would otherwise compare and not write
        [[bench.LIFERAFT, "restore", "--repo", root, "--image", IMAGE, "--to", target, "--yes",
          "--no-seed"]],
    )  # fmt: skip
    bench.check_restored(ctx, f"{target}p1")
    ctx.results["liferaft_cz_restore"] = lf
    out = {
        "liferaft_seconds": lf.seconds,
        "ocs_sr_seconds": ocs.seconds,
        "ratio": lf.seconds / ocs.seconds,
        "image_bytes": float(image_bytes),
    }
    # (the log is of ocs-sr's last run: read before the next one)
    partclone = _partclone_seconds()
    if partclone is not None:
        out["ocs_sr_partclone_seconds"] = partclone
        out["ratio_to_partclone_part"] = lf.seconds / partclone
    out.update(_partition_restores(bench, ctx, root, target))
    return out


def _partition_restores(bench: Any, ctx: Any, root: str, target: str) -> dict[str, float]:
    """The saveparts image of the source partition onto the target's first
    partition: ocs-sr restoreparts, then liferaft over it."""
    source = os.path.basename(ctx.source_part)
    _ocs(root, [*SAVE, "saveparts", PARTS_IMAGE, source], ctx.source_disk)
    part = f"{target}p1"
    restore = [*RESTORE_PARTS, "-f", source, "-p", "true", "-or", root, "restoreparts"]
    bench.drop_caches()
    ocs = bench.timed_pipeline(
        "ocs-sr restoreparts",
        [only_devices(["ocs-sr", *restore, PARTS_IMAGE, os.path.basename(part)], [target])],
    )
    bench.fsck_clean(part, "ext4")
    ctx.results["ocs_restoreparts"] = ocs
    partclone = _partclone_seconds()

    bench.drop_caches()
    lf = bench.timed_pipeline(
        "liferaft restore (cz parts)",
        [[bench.LIFERAFT, "restore", "--repo", root, "--image", PARTS_IMAGE, "--to", part,
          "--yes"]],
    )  # fmt: skip
    bench.check_restored(ctx, part)
    ctx.results["liferaft_cz_parts_restore"] = lf
    out = {
        "parts_liferaft_seconds": lf.seconds,
        "parts_ocs_sr_seconds": ocs.seconds,
        "parts_ratio": lf.seconds / ocs.seconds,
    }
    if partclone is not None:
        out["parts_ocs_sr_partclone_seconds"] = partclone
        out["parts_ratio_to_partclone_part"] = lf.seconds / partclone
    return out


def _partclone_seconds() -> float | None:
    """The partclone part of ocs-sr's restore, from the log it keeps in /var/log
    (">>> Time elapsed: 12.34 secs" after each partition)."""
    try:
        with open("/var/log/clonezilla.log", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # (the file holds the last run only: ocs-sr rotates it at each start)
    found = re.findall(r">>> Time elapsed: ([\d.]+) secs", text)
    return sum(float(x) for x in found) if found else None


def report(numbers: dict[str, float]) -> None:
    line = (
        f"Clonezilla image restore: liferaft {numbers['liferaft_seconds']:.1f} s vs "
        f"ocs-sr restoredisk {numbers['ocs_sr_seconds']:.1f} s = {numbers['ratio']:.2f} x"
    )
    if "ocs_sr_partclone_seconds" in numbers:
        line += (
            f" (its partclone part {numbers['ocs_sr_partclone_seconds']:.1f} s: "
            f"{numbers['ratio_to_partclone_part']:.2f} x)"
        )
    print(line + "  (information)")
    if "parts_ratio" not in numbers:
        return
    line = (
        f"Clonezilla partition restore (saveparts): liferaft "
        f"{numbers['parts_liferaft_seconds']:.1f} s vs ocs-sr restoreparts "
        f"{numbers['parts_ocs_sr_seconds']:.1f} s = {numbers['parts_ratio']:.2f} x"
    )
    if "parts_ocs_sr_partclone_seconds" in numbers:
        line += (
            f" (its partclone part {numbers['parts_ocs_sr_partclone_seconds']:.1f} s: "
            f"{numbers['parts_ratio_to_partclone_part']:.2f} x)"
        )
    print(line + "  (information)")


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import run as bench

    numbers = bench.run_alone(
        "Clonezilla images: ocs-sr restoredisk and restoreparts against liferaft restore",
        lambda ctx, stack: clonezilla_restores(bench, ctx, stack),
    )
    report(numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
