"""Many machines at once (issue 17): 4 restores running together from one
HTTP server (``liferaft serve``, then nginx) onto 4 loop disks; each disk
equals the source and the server's memory stays bounded."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from rescue_app.engine.kernel import reread_partitions
from tests.enginekit import REPO_ROOT, check_restored, cli_argv
from tests.stores.conftest import DISK_BYTES, Captured
from tests.stores.serverkit import Nginx, free_port, stop, wait_port

MACHINES = 4
MAX_SERVER_RSS = 200 * 1024 * 1024  # generous: liferaft serve stays near 40 MiB


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, _rss(self.pid))
            except OSError:
                return
            time.sleep(0.05)


def _restore_all(captured: Captured, url: str, targets: list[str], server_pid: int) -> int:
    """The restores started together; all must succeed. The server's peak RSS."""
    sampler = _PeakRss(server_pid)
    sampler.start()
    procs = [
        subprocess.Popen(
            cli_argv("restore", "--repo", url, "--image", "src", "--to", t, "--yes"),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in targets
    ]
    try:
        errors = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        for p in procs:
            stop(p)
        sampler.running = False
        sampler.join(5)
    assert [p.returncode for p in procs] == [0] * len(procs), errors
    for t in targets:
        check_restored(captured.source, reread_partitions(t, len(captured.source.nodes)))
    return sampler.peak


@pytest.fixture
def liferaft_serve(captured: Captured, workdir: str) -> Iterator[tuple[int, int, str]]:
    """`liferaft serve` of the captured repository: (port, pid, its stderr's file)."""
    port = free_port()
    log = os.path.join(workdir, "serve.log")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            cli_argv("serve", "--repo", captured.repo, "--port", str(port)),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_port(port, proc=proc)
        yield port, proc.pid, log
    finally:
        stop(proc)


@pytest.mark.root
def test_four_restores_at_once_from_liferaft_serve(
    captured: Captured, loopdisk: Callable[[int], str], liferaft_serve: tuple[int, int, str]
) -> None:
    port, pid, log = liferaft_serve
    targets = [loopdisk(DISK_BYTES) for _ in range(MACHINES)]
    peak = _restore_all(captured, f"http://127.0.0.1:{port}/", targets, pid)
    assert 0 < peak < MAX_SERVER_RSS, peak
    with open(log) as f:
        lines = f.read().splitlines()
    # one line per request: client address:port, method, path, range, status, bytes, time
    line = re.compile(r"^127\.0\.0\.1:(\d+) (GET|HEAD) /\S+ (\S+) (\d{3}) (\d+) \d+ms$")
    parsed = [line.match(ln) for ln in lines]
    assert all(parsed), [ln for ln, m in zip(lines, parsed, strict=True) if not m][:3]
    chunk_gets = [m for m in parsed if m and m.group(2) == "GET" and "/chunks/" in m.group(0)]
    assert chunk_gets and all(m.group(4) in ("200", "206") for m in chunk_gets)
    # every restore downloads (nearly) every chunk (a few tiny ones may not be needed)
    assert sum(int(m.group(5)) for m in chunk_gets) >= 0.95 * MACHINES * captured.chunk_bytes
    clients = {m.group(1) for m in parsed if m}
    assert len(clients) >= MACHINES, "each restore has its own connections"
    print(f"\nliferaft serve: {MACHINES} restores, peak RSS {peak / 2**20:.0f} MiB")


@pytest.mark.root
def test_four_restores_at_once_from_nginx(
    captured: Captured, loopdisk: Callable[[int], str], workdir: str
) -> None:
    targets = [loopdisk(DISK_BYTES) for _ in range(MACHINES)]
    with Nginx(captured.repo, os.path.join(workdir, "nginx")) as nginx:
        assert nginx.proc is not None
        url = f"http://127.0.0.1:{nginx.port}/"
        peak = _restore_all(captured, url, targets, nginx.proc.pid)
    assert 0 < peak < MAX_SERVER_RSS, peak
    print(f"\nnginx: {MACHINES} restores, peak RSS {peak / 2**20:.0f} MiB")


def _largest_chunk(repo: str) -> str:
    best, size = "", -1
    for folder, _dirs, names in os.walk(os.path.join(repo, "chunks")):
        for n in names:
            path = os.path.join(folder, n)
            if os.path.getsize(path) > size:
                best, size = path, os.path.getsize(path)
    return os.path.relpath(best, repo)


@pytest.mark.root
def test_liferaft_serve_answers_others_while_a_client_stalls(
    captured: Captured, liferaft_serve: tuple[int, int, str]
) -> None:
    """A client that stops reading mid-download holds only its own thread;
    ranged reads on a kept-alive connection go on for everybody else."""
    port, _pid, log = liferaft_serve
    url = f"http://127.0.0.1:{port}/{_largest_chunk(captured.repo)}"
    stalled = requests.get(url, stream=True, timeout=10)
    try:
        stalled.raw.read(1)  # then reads nothing more
        with requests.Session() as other:
            began = time.monotonic()
            whole = other.get(url, timeout=5).content
            for start in (0, 100, len(whole) // 2):
                r = other.get(url, headers={"Range": f"bytes={start}-{start + 999}"}, timeout=5)
                assert r.status_code == 206 and r.content == whole[start : start + 1000]
            assert time.monotonic() - began < 5
    finally:
        stalled.close()
    with open(log) as f:
        ranged = [ln for ln in f.read().splitlines() if " bytes=" in ln]
    assert len(ranged) == 3 and all(" 206 1000 " in ln for ln in ranged), ranged
    assert len({ln.split()[0] for ln in ranged}) == 1, "one kept-alive connection"
