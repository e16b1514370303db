"""`make bench`, many machines at once (issue 17): N restores running
together from one HTTP server on 127.0.0.1 against one restore alone, for
``liferaft serve`` and for nginx, in the same run, from the same repository.

For each server, with the page cache dropped before each run:

    single  liferaft restore --repo URL --image bench --to T1 --yes --no-seed; sync
    fleet   the same onto T1..TN, all started at once; sync

(``--no-seed``: the targets hold the image from the previous run, and a seed
restore would fetch nothing.) Every target's partition must equal the source
byte for byte and be e2fsck clean. Prints the aggregate throughput (N x the
used bytes over the fleet's time) against the single restore's, and the
server's peak CPU (busiest 0.5 s, 100% = one core) and peak RSS, sampled from
/proc.

Alone: ``sudo .venv/bin/python bench/fleet.py [--machines 8] [--disk-mib 1024]``
builds a source disk (default: the bench's 4 GiB) and captures it first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ is not installed
from tests.stores.serverkit import free_port, stop, wait_port  # noqa: E402

MACHINES = 4
SAMPLE = 0.5  # seconds between samples of the server's CPU and RSS
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class ServerSampler(threading.Thread):
    """Peak CPU (over SAMPLE seconds) and peak RSS of one server process."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_cpu = 0.0  # 1.0: one core busy
        self.peak_rss = 0
        self.halt = threading.Event()

    def _read(self) -> tuple[int, int]:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE  # utime+stime, rss

    def run(self) -> None:
        ticks, _ = self._read()
        then = time.monotonic()
        while not self.halt.wait(SAMPLE):
            try:
                now_ticks, rss = self._read()
            except OSError:
                return
            now = time.monotonic()
            self.peak_cpu = max(self.peak_cpu, (now_ticks - ticks) / TICKS / (now - then))
            self.peak_rss = max(self.peak_rss, rss)
            ticks, then = now_ticks, now

    def stop(self) -> tuple[float, int]:
        self.halt.set()
        self.join()
        return self.peak_cpu, self.peak_rss


@contextlib.contextmanager
def liferaft_serve(bench: Any, repo: str, work: str) -> Iterator[tuple[str, int]]:
    """`liferaft serve` of ``repo``: (URL, pid); its request log in ``work``."""
    port = free_port()
    with open(os.path.join(work, "serve.log"), "wb") as log:
        proc = subprocess.Popen(
            [bench.LIFERAFT, "serve", "--repo", repo, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}/", proc.pid
    finally:
        stop(proc)


@contextlib.contextmanager
def nginx(bench: Any, repo: str, work: str) -> Iterator[tuple[str, int]]:
    with bench.Nginx(repo, os.path.join(work, "nginx-fleet")) as server:
        yield f"http://127.0.0.1:{server.port}/", server.proc.pid


def restore_at_once(bench: Any, url: str, targets: list[str], pid: int) -> dict[str, float]:
    """All restores started together; seconds to the last byte on disk, the
    server's peaks."""
    bench.drop_caches()
    sampler = ServerSampler(pid)
    sampler.start()
    began = time.monotonic()
    argv = [bench.LIFERAFT, "restore", "--repo", url, "--image", "bench", "--yes", "--no-seed"]
    procs = [
        subprocess.Popen(
            [*argv, "--to", t],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for t in targets
    ]
    errors = [p.communicate()[1] for p in procs]
    os.sync()
    seconds = time.monotonic() - began
    cpu, rss = sampler.stop()
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"a concurrent restore failed: {err.decode(errors='replace')}")
    return {"seconds": seconds, "server_peak_cpu": cpu, "server_peak_rss": float(rss)}


def fleet_restores(
    bench: Any, ctx: Any, stack: contextlib.ExitStack, machines: int = MACHINES
) -> dict[str, Any]:
    """One restore, then ``machines`` at once, from each server; the figures."""
    targets = [stack.enter_context(bench.loop_disk(bench.DISK_SIZE, ctx.work))
               for _ in range(machines)]  # fmt: skip
    out: dict[str, Any] = {
        "machines": machines,
        "used_bytes": float(ctx.used_bytes),
        "load_average_before": os.getloadavg()[0],
    }
    for name, server in (("liferaft serve", liferaft_serve), ("nginx", nginx)):
        with server(bench, ctx.repo, ctx.work) as (url, pid):
            single = restore_at_once(bench, url, targets[:1], pid)
            fleet = restore_at_once(bench, url, targets, pid)
        for t in targets:
            bench.check_restored(ctx, f"{t}p1")
        out[name] = {"single": single, "fleet": fleet}
    out["load_average_after"] = os.getloadavg()[0]
    return out


def report(n: Any) -> None:
    """Print the aggregate throughput against one restore, per server."""
    if not n:
        return
    used, machines = n["used_bytes"], n["machines"]
    for name in ("liferaft serve", "nginx"):
        single, fleet = n[name]["single"], n[name]["fleet"]
        one = used / single["seconds"]
        many = machines * used / fleet["seconds"]
        print(
            f"{machines} restores at once from {name}: {fleet['seconds']:.1f} s, aggregate "
            f"{many / 2**20:.0f} MiB/s vs one restore {one / 2**20:.0f} MiB/s "
            f"({single['seconds']:.1f} s) = {many / one:.2f} x; server peak CPU "
            f"{fleet['server_peak_cpu'] * 100:.0f}% of a core, peak RSS "
            f"{fleet['server_peak_rss'] / 2**20:.0f} MiB (alone: "
            f"{single['server_peak_cpu'] * 100:.0f}%, {single['server_peak_rss'] / 2**20:.0f} MiB)"
        )
    print(
        f"  ({used / 2**20:.0f} MiB used per disk, every disk identical to the source; load "
        f"average {n['load_average_before']:.1f} before, {n['load_average_after']:.1f} after)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=MACHINES)
    parser.add_argument("--disk-mib", type=int, default=0, help="source disk size (default 4096)")
    args = parser.parse_args()
    from bench import run as bench

    if args.disk_mib:  # a smaller disk: the OS tree keeps its share of it
        scale = args.disk_mib * bench.MIB / bench.DISK_SIZE
        bench.OS_TREE_BYTES = int(bench.OS_TREE_BYTES * scale)
        bench.DISK_SIZE = args.disk_mib * bench.MIB
    numbers = bench.run_alone(
        f"{args.machines} restores at once against one, over http",
        lambda ctx, stack: fleet_restores(bench, ctx, stack, args.machines),
    )
    report(numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
