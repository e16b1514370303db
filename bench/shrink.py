"""Restore onto a smaller disk (issue 13): a shrink restore (the root laid
back file-level through the image's FUSE mount) against a full restore onto a
disk of the original size (block-level), from the same local repository.

Builds a 4 GiB GPT disk (64 MiB ESP vfat + ext4 root) whose root holds 1 GiB
of files (64 random files of 14 MiB, 2000 small ones, a 1 GiB sparse file
with 8 MiB of data), captures it, then restores it onto a 2 GiB disk and onto
a 4 GiB one, page cache dropped before each. Needs root; touches only the
loop devices it creates.

    .venv/bin/python bench/shrink.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # tests.helpers is not installed with the package

from rescue_app.engine import mounts  # noqa: E402
from tests.helpers.diskkit import MIB, PartSpec, loop_disk, make_fs, partition_disk  # noqa: E402

GIB = 1024 * MIB


def _fill(root: str) -> int:
    rng = random.Random(13)
    total = 0
    os.makedirs(f"{root}/big")
    for i in range(64):
        with open(f"{root}/big/f{i:02d}.bin", "wb") as f:
            total += f.write(rng.randbytes(14 * MIB))
    for i in range(2000):
        os.makedirs(f"{root}/small/{i % 40}", exist_ok=True)
        with open(f"{root}/small/{i % 40}/s{i}", "wb") as f:
            total += f.write(rng.randbytes(rng.randint(0, 16000)))
    with open(f"{root}/sparse.img", "wb") as f:
        f.truncate(GIB)
        f.seek(512 * MIB)
        f.write(rng.randbytes(8 * MIB))
    return total


def _liferaft(*args: str) -> float:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "rescue_app.cli", *args], cwd=REPO_ROOT,
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    return time.monotonic() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="liferaft-bench-", dir="/var/tmp") as d:
        with loop_disk(4 * GIB, d) as src:
            nodes = partition_disk(src, "gpt", [PartSpec(64, "vfat", "esp"), PartSpec(None)])
            make_fs(nodes[0], "vfat", "ESP")
            make_fs(nodes[1], "ext4", "root")
            with mounts.mounted(nodes[1], "ext4", writable=True) as root:
                data = _fill(root)
            repo = f"{d}/repo"
            capture_s = _liferaft("capture", "--repo", repo, "--name", "bench", src)
        print(f"source: 4 GiB disk, root ext4 with {data / MIB:.0f} MiB of file data "
              f"(+ a 1 GiB sparse file); capture {capture_s:.1f} s")  # fmt: skip
        for size, what in ((2 * GIB, "shrink onto 2 GiB (file-level root)"),
                           (4 * GIB, "same size, 4 GiB (block-level)")):  # fmt: skip
            with loop_disk(size, d) as target:
                seconds = _liferaft(
                    "restore", "--repo", repo, "--image", "bench", "--to", target, "--yes"
                )
            print(f"restore, {what}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
