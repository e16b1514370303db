"""`make bench`, seed restore part (issue 17): a restore onto a disk that
holds the previous image of the machine, against a full restore, in the
same run, over HTTP from one nginx on 127.0.0.1.

The bench's image ("bench") is restored onto a target, and the target copied
to a second one: both hold the previous image. Then 10% of the source's used
bytes change the way an update changes them, in runs of neighbouring files
(ext4 lays files of a folder out together), rewritten in place: random files
with new random bytes, the rest with their own bytes reversed (as
compressible as before). The source is captured again ("bench-new"), and,
the page cache dropped before each:

    full    liferaft restore --repo URL --image bench-new --to T1 --yes --no-seed; sync
    seed    liferaft restore --repo URL --image bench-new --to T2 --yes; sync

Both must be correct: T2's partition byte-identical to the source and
e2fsck clean, and the whole of T2 identical to the whole of T1. Prints the
time ratio (target <= 0.25x) and the ratio of bytes nginx sent (target
<= 0.15x). It changes the source disk, so it runs last.

Alone (``sudo .venv/bin/python bench/seed.py``) it builds the bench's source
disk and captures it first, as bench/run.py does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
CHANGED = 0.10  # of the used bytes
RUN_BYTES = 32 * MIB  # neighbouring files changed together
MAX_TIME_RATIO = 0.25
MAX_FETCHED_RATIO = 0.15


def _change_used_data(point: str, used: int) -> int:
    """Rewrite about CHANGED of ``used`` bytes in place, in runs of files."""
    files = []
    for folder, dirs, names in os.walk(point):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files.append((path, os.path.getsize(path)))
    rng = random.Random(17)
    want, done = int(used * CHANGED), 0
    taken: set[int] = set()
    while done < want and len(taken) < len(files):
        i = rng.randrange(len(files))
        run = 0
        while i < len(files) and run < RUN_BYTES and done < want:
            if i not in taken:
                taken.add(i)
                path, size = files[i]
                with open(path, "r+b") as f:
                    body = os.urandom(size) if "/data/random-" in path else f.read()[::-1]
                    f.seek(0)
                    f.write(body)
                run += size
                done += size
            i += 1
    os.sync()
    return done


def _whole_sha256(dev: str) -> str:
    digest = hashlib.sha256()
    with open(dev, "rb", buffering=0) as f:
        while block := f.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def seed_restores(bench: Any, ctx: Any, stack: contextlib.ExitStack) -> dict[str, float]:
    """``bench``: the bench/run.py module; adds two Measurements to
    ctx.results and returns the numbers for the report."""
    first = stack.enter_context(bench.loop_disk(bench.DISK_SIZE, ctx.work))
    second = stack.enter_context(bench.loop_disk(bench.DISK_SIZE, ctx.work))
    bench.run([bench.LIFERAFT, "restore", "--repo", ctx.repo, "--image", "bench", "--to", first,
               "--yes", "--no-seed"])  # fmt: skip
    subprocess.run(
        ["dd", f"if={first}", f"of={second}", "bs=8M", "conv=sparse,fsync", "status=none"],
        check=True,
    )
    bench.run(["partprobe", second])
    with bench.mounted(ctx.source_part, "ext4") as point:
        changed = _change_used_data(point, ctx.used_bytes)
    bench.run([bench.LIFERAFT, "capture", "--repo", ctx.repo, "--name", "bench-new",
               ctx.source_disk])  # fmt: skip
    www = os.path.join(ctx.work, "www-seed")
    os.makedirs(www)
    os.symlink(ctx.repo, os.path.join(www, "repo"))
    with bench.Nginx(www, os.path.join(ctx.work, "nginx-seed")) as server:
        url = f"http://127.0.0.1:{server.port}/repo"

        def restore(name: str, target: str, *extra: str) -> Any:
            since = len(server.log_lines())
            bench.drop_caches()
            argv = [bench.LIFERAFT, "restore", "--repo", url, "--image", "bench-new"]
            m = bench.timed_pipeline(name, [[*argv, "--to", target, "--yes", *extra]])
            m.detail["served_bytes"] = bench.served_bytes(server, since)
            return m

        full = restore("liferaft full restore over http (new)", first, "--no-seed")
        seed = restore("liferaft seed restore over http (new)", second)
    bench.check_restored(ctx, f"{second}p1")
    if _whole_sha256(first) != _whole_sha256(second):
        raise RuntimeError("the seed restore's disk differs from the full restore's")
    ctx.results["liferaft_http_full_restore_new"] = full
    ctx.results["liferaft_http_seed_restore"] = seed
    return {
        "changed_bytes": float(changed),
        "used_bytes": float(ctx.used_bytes),
        "full_seconds": full.seconds,
        "seed_seconds": seed.seconds,
        "time_ratio": seed.seconds / full.seconds,
        "full_served_bytes": full.detail["served_bytes"],
        "seed_served_bytes": seed.detail["served_bytes"],
        "fetched_ratio": seed.detail["served_bytes"] / full.detail["served_bytes"],
        # user + system CPU: under load, wall time follows it
        "full_cpu_seconds": full.cpu_seconds,
        "seed_cpu_seconds": seed.cpu_seconds,
        "load_average": os.getloadavg()[0],
    }


def report(numbers: dict[str, float]) -> bool:
    """Print the seed restore's figures; whether both targets are met."""
    n = numbers
    time_ok = n["time_ratio"] <= MAX_TIME_RATIO
    fetched_ok = n["fetched_ratio"] <= MAX_FETCHED_RATIO
    print(
        f"seed restore over http ({n['changed_bytes'] / MIB:.0f} MiB of "
        f"{n['used_bytes'] / MIB:.0f} MiB used changed): {n['seed_seconds']:.1f} s vs full "
        f"{n['full_seconds']:.1f} s = {n['time_ratio']:.2f} x (target <= {MAX_TIME_RATIO:g} x) "
        f"{'ok' if time_ok else 'MISSED'}; fetched {n['seed_served_bytes'] / MIB:.0f} MiB vs "
        f"{n['full_served_bytes'] / MIB:.0f} MiB = {n['fetched_ratio']:.2f} x (target <= "
        f"{MAX_FETCHED_RATIO:g} x) {'ok' if fetched_ok else 'MISSED'}; disks identical; "
        f"CPU {n['seed_cpu_seconds']:.1f} s vs {n['full_cpu_seconds']:.1f} s; "
        f"load average {n['load_average']:.1f}"
    )
    return time_ok and fetched_ok


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import run as bench

    numbers = bench.run_alone(
        "seed restore against full restore, over http",
        lambda ctx, stack: seed_restores(bench, ctx, stack),
    )
    return 0 if report(numbers) else 1


if __name__ == "__main__":
    sys.exit(main())
