"""Restore from web servers: nginx over HTTP and HTTPS, and ``liferaft serve``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from rescue_app.engine import CredentialChain, Engine
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.stores import open_store
from rescue_app.engine.stores.http import HttpStore
from rescue_app.errors import CancelledError, RepositoryError
from rescue_app.progress import CancelToken, Progress
from tests.enginekit import (
    REPO_ROOT,
    assert_one_line_error,
    check_restored,
    cli_argv,
    liferaft,
    start_liferaft,
)
from tests.helpers.diskkit import MIB
from tests.stores.conftest import DISK_BYTES, Captured
from tests.stores.serverkit import CountingProxy, Nginx, free_port, self_signed_cert, stop


def _restore(url: str, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return liferaft(
        "restore", "--repo", url, "--image", "src", "--to", target, "--yes", *extra, check=False
    )


def _check(captured: Captured, target: str) -> None:
    nodes = reread_partitions(target, len(captured.source.nodes))
    check_restored(captured.source, nodes)


@pytest.mark.root
def test_restore_over_https_and_untrusted_certificate(captured, loopdisk, workdir, monkeypatch):
    cert, key = self_signed_cert(workdir)
    with Nginx(captured.repo, os.path.join(workdir, "nginx"), tls=(cert, key)) as nginx:
        url = f"https://127.0.0.1:{nginx.port}/"
        monkeypatch.delenv("LIFERAFT_CA_FILE", raising=False)
        proc = liferaft("images", "--repo", url, check=False)
        assert_one_line_error(proc, "TLS failure", "127.0.0.1", "not trusted", "LIFERAFT_CA_FILE")

        monkeypatch.setenv("LIFERAFT_CA_FILE", cert)
        assert "src@" in liferaft("images", "--repo", url).stdout
        target = loopdisk(DISK_BYTES)
        proc = _restore(url, target, "--verify")
        assert proc.returncode == 0, proc.stderr
        _check(captured, target)
        # ?ca= in the URL works as well, and stays out of what is shown
        monkeypatch.delenv("LIFERAFT_CA_FILE")
        assert "src@" in liferaft("images", "--repo", f"{url}?ca={cert}").stdout


@pytest.mark.root
def test_restore_resumes_after_server_restart_without_downloading_again(
    captured, loopdisk, workdir
):
    # 3 MB/s per connection: the restore takes several seconds, long enough
    # to kill the server in the middle of chunk downloads.
    nginx = Nginx(captured.repo, os.path.join(workdir, "nginx"), limit_rate="3m")
    target = loopdisk(DISK_BYTES)
    with nginx, CountingProxy(nginx.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/"
        restore = start_liferaft(
            "restore", "--repo", url, "--image", "src", "--to", target, "--yes"
        )
        try:
            while proxy.served < 0.4 * captured.chunk_bytes:
                assert restore.poll() is None, restore.communicate()
                time.sleep(0.05)
            served_at_kill = proxy.served
            nginx.kill()
            time.sleep(1.5)
            nginx.start()
            out, err = restore.communicate(timeout=120)
        finally:
            stop(restore)
    assert restore.returncode == 0, err
    _check(captured, target)
    ratio = proxy.served / captured.chunk_bytes
    print(
        f"\nresume: served {proxy.served} bytes for {captured.chunk_bytes} bytes of chunks "
        f"({ratio:.3f}x), killed at {served_at_kill}"
    )
    assert ratio < 1.2
    resumed = [ln for ln in nginx.log_lines() if re.search(r'"bytes=[1-9]\d*-"$', ln)]
    assert resumed, "no download resumed with a Range request"


@pytest.mark.root
def test_server_that_lies_about_a_chunk(captured, loopdisk, workdir):
    liar = os.path.join(workdir, "liar")
    shutil.copytree(captured.repo, liar)
    chunks = sorted(
        os.path.join(d, n) for d, _, ns in os.walk(os.path.join(liar, "chunks")) for n in ns
    )
    big = max(chunks, key=os.path.getsize)
    other = next(c for c in chunks if c != big)
    shutil.copyfile(other, big)  # valid zstd, wrong content for its name
    with Nginx(liar, os.path.join(workdir, "nginx")) as nginx:
        target = loopdisk(DISK_BYTES)
        proc = _restore(f"http://127.0.0.1:{nginx.port}/", target)
    assert_one_line_error(
        proc,
        f"chunk {os.path.basename(big)[:12]}",
        "src@",
        "does not match its hash",
        f"nothing was written to {target}",  # checked before the first write
    )


def test_unreachable_server_is_one_line_within_seconds():
    """First contact with a port nobody listens on, or a host name that does not
    resolve: a few seconds, not a minute of silence (issue 10, item 6)."""
    port = free_port()
    for url, reason in (
        (f"http://127.0.0.1:{port}/repo", "connection refused"),
        ("http://no-such-host.invalid/repo", "host name"),
    ):
        started = time.monotonic()
        proc = liferaft("images", "--repo", url, check=False)
        assert_one_line_error(proc, "cannot reach", reason)
        assert time.monotonic() - started < 5  # the CLI's own start included


def _notices(seen: list[Progress]) -> list[str]:
    return [p.notice for p in seen if p.phase == "notice"]


@pytest.mark.root
def test_server_gone_mid_restore_is_reported_and_resumed(captured, loopdisk, workdir):
    """Once data flows, a lost server is retried; the user sees "server unreachable,
    retrying (N s of 60)" through the progress callback, then the all-clear."""
    nginx = Nginx(captured.repo, os.path.join(workdir, "nginx"), limit_rate="3m")
    target = loopdisk(DISK_BYTES)
    seen: list[Progress] = []
    engine = Engine()
    with nginx:
        repo = engine.open_repository(f"http://127.0.0.1:{nginx.port}/")
        plan = engine.plan_restore(repo, "src", [target])

        back = threading.Timer(3.0, nginx.start)

        def progress(p: Progress) -> None:
            seen.append(p)
            if (
                p.phase == "check"  # where a restore downloads (then from its spool)
                and p.done > 4 * MIB
                and not back.is_alive()
                and not back.finished.is_set()
            ):
                nginx.kill()
                back.start()

        try:
            engine.restore(plan, progress=progress)
        finally:
            back.join()
            repo.close()
    notices = _notices(seen)
    assert any(
        re.match(r"server unreachable \(.+\), retrying \(\d+ s of 60\)", n) for n in notices
    ), notices
    assert notices[-1] == "", "the notice is cleared once the server answers"
    _check(captured, target)


@pytest.mark.root
def test_cancel_while_retrying_says_cancelled(captured, loopdisk, workdir):
    nginx = Nginx(captured.repo, os.path.join(workdir, "nginx"), limit_rate="3m")
    target = loopdisk(DISK_BYTES)
    cancel = CancelToken()
    seen: list[Progress] = []
    engine = Engine()
    with nginx:
        repo = engine.open_repository(f"http://127.0.0.1:{nginx.port}/")
        plan = engine.plan_restore(repo, "src", [target])

        def progress(p: Progress) -> None:
            seen.append(p)
            if p.phase == "check" and p.done > 4 * MIB:
                nginx.kill()
            if p.phase == "notice" and p.notice:
                cancel.cancel()

        started = time.monotonic()
        with pytest.raises(CancelledError) as caught:
            engine.restore(plan, progress=progress, cancel=cancel)
        repo.close()
    assert time.monotonic() - started < 30
    assert "cancelled" in str(caught.value) and "retried" not in str(caught.value)
    assert _notices(seen)


@pytest.mark.root
def test_cli_shows_the_notice_and_ctrl_c_ends_the_wait(captured, loopdisk, workdir):
    """What a user at the CLI sees: the notice on a line of its own, Ctrl-C during the
    retries ends them at once with 'cancelled' (not 'retried for 60 s'), exit 130."""
    nginx = Nginx(captured.repo, os.path.join(workdir, "nginx"), limit_rate="1m")
    target = loopdisk(DISK_BYTES)
    lines: list[str] = []
    with nginx, CountingProxy(nginx.port) as proxy:
        argv = cli_argv(
            "restore",
            "--repo",
            f"http://127.0.0.1:{proxy.port}/",
            "--image",
            "src",
            "--to",
            target,
            "--yes",
        )
        restore = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert restore.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(restore.stderr or []))
        reader.start()
        try:
            while proxy.served < 0.2 * captured.chunk_bytes:  # chunks are flowing
                assert restore.poll() is None, lines
                time.sleep(0.05)
            nginx.kill()
            deadline = time.monotonic() + 20
            while not any("server unreachable" in ln for ln in lines):
                assert restore.poll() is None and time.monotonic() < deadline, lines
                time.sleep(0.05)
            interrupted = time.monotonic()
            restore.send_signal(signal.SIGINT)
            restore.wait(10)
            took = time.monotonic() - interrupted
        finally:
            stop(restore)
            reader.join(5)
    print("".join(lines))
    assert restore.returncode == 130, lines
    assert took < 3, took
    notice = [ln for ln in lines if "server unreachable" in ln]
    assert re.match(
        rf"http://127\.0\.0\.1:{proxy.port}: server unreachable \(.+\), "
        r"retrying \(\d+ s of 60\)$",
        notice[0].rstrip("\n"),
    ), lines
    errors = [ln for ln in lines if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("liferaft: error: "), lines
    assert "restore cancelled" in errors[0] and "retried" not in errors[0], lines
    assert "nothing was written" in errors[0], lines  # cancelled while checking first


def test_store_basics(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"hello")
    from rescue_app.engine.stores.httpserve import make_server

    server = make_server(str(tmp_path), "127.0.0.1", 0)
    import threading

    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv("LIFERAFT_PASSWORD", "s3cret-pw")
        store = open_store(f"http://bob@127.0.0.1:{port}/", CredentialChain.standard())
        assert isinstance(store, HttpStore)
        assert "bob" not in store.location and "s3cret" not in store.location
        assert store.read("a/f") == b"hello"
        assert store.has("a/f") and not store.has("a/nope")
        with pytest.raises(FileNotFoundError):
            store.read("a/nope")
        assert store.can_list is False and store.list("images") == []
        with pytest.raises(RepositoryError, match="read-only"):
            store.check_writable()
        store.close()
        with pytest.raises(RepositoryError, match="holds a password"):
            open_store(f"http://bob:pw@127.0.0.1:{port}/", CredentialChain.standard())
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.root
def test_liferaft_serve(captured):
    port = free_port()
    proc = start_liferaft("serve", "--repo", captured.repo, "--port", str(port))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        url = f"http://127.0.0.1:{port}"
        assert "src@" in liferaft("images", "--repo", url).stdout
        out = liferaft("verify", "--repo", url, "src").stdout
        assert ": OK" in out
        marker = requests.get(f"{url}/liferaft-repository.json", timeout=5).content
        r = requests.get(
            f"{url}/liferaft-repository.json", headers={"Range": "bytes=10-"}, timeout=5
        )
        assert r.status_code == 206 and r.content == marker[10:]
        assert r.headers["Content-Range"] == f"bytes 10-{len(marker) - 1}/{len(marker)}"
        r = requests.get(
            f"{url}/liferaft-repository.json", headers={"Range": f"bytes={len(marker)}-"}, timeout=5
        )
        assert r.status_code == 416
        for bad in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/tmp/", "/", "/chunks"):
            assert requests.get(url + bad, timeout=5).status_code == 404, bad
    finally:
        stop(proc)
        proc.communicate()
