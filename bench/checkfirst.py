"""`make bench`, check-first part (issue 15): what checking every chunk before
the first write costs a restore, against ``--no-check-first``, from the
bench's local repository and over HTTP from one nginx on 127.0.0.1, the
page cache dropped before each:

    local   liferaft restore --repo DIR --image bench --to T --yes [--no-check-first]; sync
    http    liferaft restore --repo URL --image bench --to T --yes [--no-check-first]; sync

Each pair runs ROUNDS times alternated; each side's best time counts. Every
target is checked (the partition byte-identical to the source). Over HTTP
the bytes nginx sent are counted too: the check keeps what it fetched in a
spool, so they must stay about the same (target <= MAX_SERVED_RATIO).
Prints the time ratios; results in bench/results/checkfirst.json.

Alone: ``sudo .venv/bin/python bench/checkfirst.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
ROUNDS = 2
MAX_SERVED_RATIO = 1.05
RESULTS = Path(__file__).resolve().parent / "results" / "checkfirst.json"


def checkfirst_runs(bench: Any, ctx: Any, stack: contextlib.ExitStack) -> dict[str, float]:
    """``bench``: the bench/run.py module; ``ctx``: its context after a capture."""
    target = stack.enter_context(bench.loop_disk(bench.DISK_SIZE, ctx.work))
    www = os.path.join(ctx.work, "www-check")
    os.makedirs(www)
    os.symlink(ctx.repo, os.path.join(www, "repo"))
    best: dict[str, float] = {}
    served: dict[str, float] = {}
    with bench.Nginx(www, os.path.join(ctx.work, "nginx-check")) as server:
        url = f"http://127.0.0.1:{server.port}/repo"
        for _ in range(ROUNDS):
            for where, repo in (("local", ctx.repo), ("http", url)):
                for side, extra in (("check", []), ("nocheck", ["--no-check-first"])):
                    since = len(server.log_lines())
                    bench.drop_caches()
                    m = bench.timed_pipeline(
                        f"liferaft restore ({where}, {side})",
                        [[bench.LIFERAFT, "restore", "--repo", repo, "--image", "bench",
                          "--to", target, "--yes", "--no-seed", *extra]],
                    )  # fmt: skip
                    bench.check_restored(ctx, f"{target}p1")
                    key = f"{where}_{side}"
                    best[key] = min(best.get(key, m.seconds), m.seconds)
                    if where == "http":
                        served[key] = bench.served_bytes(server, since)
    numbers = {f"{k}_seconds": v for k, v in best.items()}
    for where in ("local", "http"):
        numbers[f"{where}_ratio"] = best[f"{where}_check"] / best[f"{where}_nocheck"]
    numbers["http_served_ratio"] = served["http_check"] / served["http_nocheck"]
    numbers["http_check_served_bytes"] = served["http_check"]
    numbers["used_bytes"] = float(ctx.used_bytes)
    numbers["load_average"] = os.getloadavg()[0]
    RESULTS.write_text(json.dumps(numbers, indent=1) + "\n")
    return numbers


def report(numbers: dict[str, float]) -> bool:
    """Print the figures; whether the HTTP download stayed single."""
    n = numbers
    mib = n["used_bytes"] / MIB
    for where in ("local", "http"):
        check, nocheck = n[f"{where}_check_seconds"], n[f"{where}_nocheck_seconds"]
        print(
            f"check-first restore ({where}) {check:.1f} s vs --no-check-first {nocheck:.1f} s "
            f"= {n[f'{where}_ratio']:.2f} x ({mib / check:.0f} vs {mib / nocheck:.0f} MiB/s)"
        )
    ok = n["http_served_ratio"] <= MAX_SERVED_RATIO
    print(
        f"check-first over http: nginx sent {n['http_served_ratio']:.3f} x the bytes of "
        f"--no-check-first  target <= {MAX_SERVED_RATIO:g} x  {'ok' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import run as bench

    numbers = bench.run_alone(
        "check first: liferaft restore with and without, local and over http",
        lambda ctx, stack: checkfirst_runs(bench, ctx, stack),
    )
    return 0 if report(numbers) else 1


if __name__ == "__main__":
    sys.exit(main())
