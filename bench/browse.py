"""Browse over HTTP (issue 13): how long `liferaft mount` takes, and listing a
folder and reading a 10 MiB file, from an image on nginx, unlimited and at
100 Mbit/s per connection (nginx limit_rate), with what each step fetched.

Builds a 2 GiB GPT disk with one ext4 partition holding a tree of small files,
a 10 MiB random file and 1 GiB of random filler (a loop device over a sparse
file under /var/tmp), captures it into a local repository and serves that
with nginx on 127.0.0.1. The page cache is dropped before each round. Needs
root; touches only what it creates.

    .venv/bin/python bench/browse.py
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # tests.helpers is not installed with the package

from rescue_app.engine import mounts  # noqa: E402
from rescue_app.engine.browse import take_down  # noqa: E402
from tests.helpers.diskkit import PartSpec, loop_disk, make_fs, partition_disk  # noqa: E402
from tests.stores.serverkit import Nginx  # noqa: E402

MIB = 1024 * 1024


def _fill(node: str) -> None:
    with mounts.mounted(node, "ext4", writable=True) as root:
        for i in range(200):
            os.makedirs(f"{root}/tree/d{i % 20}", exist_ok=True)
            with open(f"{root}/tree/d{i % 20}/f{i}.txt", "w") as f:
                f.write(f"file {i}\n" * (i * 10 + 1))
        with open(f"{root}/ten.bin", "wb") as f:
            f.write(os.urandom(10 * MIB))
        with open(f"{root}/filler.bin", "wb") as f:
            for _ in range(64):
                f.write(os.urandom(16 * MIB))


def _sent(nginx: Nginx) -> int:
    return sum(int(ln.split()[2]) for ln in nginx.log_lines() if "/chunks/" in ln)


def _round(url: str, point: str, nginx: Nginx) -> dict[str, float]:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    argv = [sys.executable, "-m", "rescue_app.cli", "mount", "--repo", url, "--image", "b"]
    started = time.monotonic()
    proc = subprocess.Popen(
        [*argv, point], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("serving"):
                break
        out = {"mount_s": time.monotonic() - started, "mount_kib": _sent(nginx) / 1024}
        files = f"{point}/disk1/p1/files"
        before, started = _sent(nginx), time.monotonic()
        names = os.listdir(f"{files}/tree/d7")
        out["list_ms"] = (time.monotonic() - started) * 1000
        out["list_kib"] = (_sent(nginx) - before) / 1024
        assert names
        before, started = _sent(nginx), time.monotonic()
        with open(f"{files}/ten.bin", "rb") as f:
            hashlib.file_digest(f, "sha256")
        out["read_s"] = time.monotonic() - started
        out["read_mib"] = (_sent(nginx) - before) / MIB
        return out
    finally:
        proc.terminate()
        proc.wait(30)
        take_down(point)


def main() -> int:
    if os.geteuid() != 0:
        print("bench/browse.py needs root (loop devices, FUSE)", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="liferaft-bench-browse-", dir="/var/tmp") as d,
        loop_disk(2048 * MIB, d) as dev,
    ):
        (node,) = partition_disk(dev, "gpt", [PartSpec(None, "ext4")])
        make_fs(node, "ext4")
        _fill(node)
        repo = f"{d}/repo"
        subprocess.run(
            [sys.executable, "-m", "rescue_app.cli", "capture", "--repo", repo, "--name", "b", dev],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        image = sum(
            os.path.getsize(os.path.join(f, n))
            for f, _, ns in os.walk(f"{repo}/chunks")
            for n in ns
        )
        os.makedirs(f"{d}/mnt")
        print(f"image: {image / MIB:.0f} MiB of chunks (2 GiB ext4, 1 GiB of it random filler)")
        for rate in (None, "12500k"):
            with Nginx(repo, f"{d}/nginx-{rate}", limit_rate=rate) as nginx:
                r = _round(f"http://127.0.0.1:{nginx.port}/", f"{d}/mnt", nginx)
            what = "unlimited" if rate is None else "100 Mbit/s per connection"
            print(
                f"HTTP {what}: mount {r['mount_s']:.2f} s ({r['mount_kib']:.0f} KiB fetched); "
                f"list a folder {r['list_ms']:.0f} ms ({r['list_kib']:.0f} KiB); read 10 MiB "
                f"{r['read_s']:.2f} s ({r['read_mib']:.1f} MiB fetched)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
