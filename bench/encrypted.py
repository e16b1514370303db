"""`make bench`, encryption part (issue 15): capture and restore of the bench's
source disk into an encrypted repository, against the plain runs of the same
run (bench/run.py's liferaft capture and restore), the page cache dropped
before each:

    liferaft init --repo E --encrypt                      (not timed)
    liferaft capture --repo E --name bench DISK; sync     (LIFERAFT_PASSPHRASE set)
    liferaft restore --repo E --image bench --to DISK2 --yes; sync

The restore must be byte-identical to the source. Target (issue 15): each
no more than 10% slower than its plain twin. Alone (plain runs included):
``bench/encrypted.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

MAX_SLOWDOWN = 1.10
PASSPHRASE = "bench-passphrase-not-secret"


def encrypted_runs(bench: Any, ctx: Any, stack: contextlib.ExitStack) -> dict[str, float]:
    """``bench``: the bench/run.py module; needs ctx.results' liferaft_capture
    and liferaft_restore. Adds two Measurements and returns the report's numbers."""
    repo = os.path.join(ctx.work, "encrypted")
    os.environ["LIFERAFT_PASSPHRASE"] = PASSPHRASE
    try:
        bench.run([bench.LIFERAFT, "init", "--repo", repo, "--encrypt"])
        bench.drop_caches()
        cap = bench.timed_pipeline(
            "liferaft capture (encrypted)",
            [[bench.LIFERAFT, "capture", "--repo", repo, "--name", "bench", ctx.source_disk]],
        )
        cap.stored_bytes = bench.dir_bytes(os.path.join(repo, "chunks"))
        ctx.results["liferaft_encrypted_capture"] = cap
        target = stack.enter_context(bench.loop_disk(bench.DISK_SIZE, ctx.work))
        bench.drop_caches()
        res = bench.timed_pipeline(
            "liferaft restore (encrypted)",
            [[bench.LIFERAFT, "restore", "--repo", repo, "--image", "bench", "--to", target,
              "--yes"]],
        )  # fmt: skip
        bench.check_restored(ctx, f"{target}p1")
        ctx.results["liferaft_encrypted_restore"] = res
    finally:
        del os.environ["LIFERAFT_PASSPHRASE"]
        shutil.rmtree(repo, ignore_errors=True)
    plain_cap = ctx.results["liferaft_capture"]
    plain_res = ctx.results["liferaft_restore"]
    return {
        "capture_seconds": cap.seconds,
        "plain_capture_seconds": plain_cap.seconds,
        "capture_ratio": cap.seconds / plain_cap.seconds,
        "capture_cpu_ratio": cap.cpu_seconds / plain_cap.cpu_seconds,
        "restore_seconds": res.seconds,
        "plain_restore_seconds": plain_res.seconds,
        "restore_ratio": res.seconds / plain_res.seconds,
        "restore_cpu_ratio": res.cpu_seconds / plain_res.cpu_seconds,
        "used_bytes": float(ctx.used_bytes),
    }


def report(numbers: dict[str, float]) -> bool:
    ok = True
    for what in ("capture", "restore"):
        ratio = numbers[f"{what}_ratio"]
        mib_s = numbers["used_bytes"] / (1024 * 1024)
        good = ratio <= MAX_SLOWDOWN
        ok = ok and good
        print(
            f"encrypted {what:8} {numbers[f'{what}_seconds']:.1f} s vs plain "
            f"{numbers[f'plain_{what}_seconds']:.1f} s = {ratio:.2f} x "
            f"({mib_s / numbers[f'{what}_seconds']:.0f} vs "
            f"{mib_s / numbers[f'plain_{what}_seconds']:.0f} MiB/s; CPU "
            f"{numbers[f'{what}_cpu_ratio']:.2f} x)  target <= {MAX_SLOWDOWN:g} x  "
            f"{'ok' if good else 'MISSED'}"
        )
    return ok


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import run as bench

    numbers = bench.run_alone(
        "encrypted repository: liferaft capture, then restore",
        lambda ctx, stack: encrypted_runs(bench, ctx, stack),
        restore=True,
    )
    return 0 if report(numbers) else 1


if __name__ == "__main__":
    sys.exit(main())
