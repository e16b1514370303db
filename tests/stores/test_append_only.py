"""``liferaft serve --append-only``: captures go in through it, nothing already
there can be replaced or deleted through it (engine/stores/httpserve.py)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rescue_app.engine import CredentialChain, Engine, Repository
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.stores.http import HttpStore
from rescue_app.engine.stores.httpserve import ServeOptions, make_server
from rescue_app.errors import RepositoryError
from tests.enginekit import assert_one_line_error, check_restored, cli_argv, liferaft
from tests.stores.conftest import DISK_BYTES, Captured
from tests.stores.serverkit import free_port, running, self_signed_cert

PASSWORD = "append-only-secret"


@dataclass
class Served:
    folder: str  # the server's repository folder (direct access)
    url: str  # what clients use: https://backup@127.0.0.1:PORT/
    base: str  # the same without the user, for requests
    cert: str


@pytest.fixture
def served(workdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """liferaft serve --append-only with basic auth and TLS on an empty folder."""
    folder = os.path.join(workdir, "served")
    cert, key = self_signed_cert(workdir)
    pw = Path(workdir, "password")
    pw.write_text(PASSWORD + "\n")
    port = free_port()
    argv = cli_argv(
        "serve", "--repo", folder, "--port", str(port), "--append-only", "--user", "backup",
        "--password-file", str(pw), "--tls-cert", cert, "--tls-key", key,
    )  # fmt: skip
    monkeypatch.setenv("LIFERAFT_CA_FILE", cert)
    monkeypatch.setenv("LIFERAFT_PASSWORD", PASSWORD)
    with running(argv, port):
        yield Served(
            folder, f"https://backup@127.0.0.1:{port}/", f"https://127.0.0.1:{port}/", cert
        )


def _images(folder: str) -> list[str]:
    doc = json.loads(Path(folder, "index.json").read_text())
    return sorted(f"{e['name']}@{e['id']}" for e in doc["images"])


@pytest.mark.root
def test_capture_through_the_server_and_nothing_can_be_destroyed(
    served: Served, captured: Captured, loopdisk
):
    dev = captured.source.dev
    for name in ("web", "web", "db"):
        out = liferaft("capture", "--repo", served.url, "--name", name, dev).stdout
        assert f"captured {name}@" in out
    refs = _images(served.folder)
    assert len(refs) == 3
    assert not os.listdir(os.path.join(served.folder, "tmp"))  # every upload was placed

    # What a host holding only these credentials can try:
    proc = liferaft(
        "forget", "--repo", served.url, "--name", "web", "--keep-last", "1", check=False
    )
    assert_one_line_error(proc, "cannot be deleted through it", "prune --repo")
    proc = liferaft("prune", "--repo", served.url, "--grace", "0", check=False)
    assert_one_line_error(proc, "cannot be deleted through it")
    auth = ("backup", PASSWORD)

    def put(rel: str, body: bytes) -> int:
        return requests.put(served.base + rel, data=body, auth=auth, verify=served.cert).status_code

    chunk_dir = next(p for p in Path(served.folder, "chunks").iterdir() if any(p.iterdir()))
    chunk = next(chunk_dir.iterdir())
    rel_chunk = f"chunks/{chunk_dir.name}/{chunk.name}"
    manifest = next(Path(served.folder, "images/web").iterdir())
    rel_manifest = f"images/web/{manifest.name}"
    for rel in (rel_chunk, rel_manifest, "index.json", "liferaft-repository.json"):
        r = requests.delete(served.base + rel, auth=auth, verify=served.cert)
        assert r.status_code == 405, rel
    assert put(rel_chunk, b"ransom") == 409
    assert put(rel_chunk, chunk.read_bytes()) == 204  # a retried upload of the same bytes
    assert put(rel_manifest, b"{}") == 409
    assert put("liferaft-repository.json", b"{}") == 409
    empty = {"format": "liferaft-index", "version": 1, "images": []}
    assert put("index.json", json.dumps(empty).encode()) == 204  # merged: entries stay
    assert _images(served.folder) == refs
    assert put("index.json", b"garbage") == 400
    assert put("prune/candidates.json", b"{}") == 403
    assert put(rel_chunk + ".candidate", b"x") == 403
    assert put("tmp/x", b"x") == 403
    wrong = requests.put(
        served.base + "chunks/00/new", data=b"x", auth=("backup", "guess"), verify=served.cert
    )
    assert wrong.status_code == 401
    assert requests.get(served.base + "index.json", verify=served.cert).status_code == 401

    # every earlier image is whole: through the server and on the server's own disk
    assert "3 image(s)" in liferaft("verify", "--repo", served.url).stdout
    assert ": OK" in liferaft("verify", "--repo", served.folder).stdout
    listed = json.loads(liferaft("images", "--repo", served.url, "--json").stdout)
    assert sorted(i["ref"] for i in listed) == refs
    target = loopdisk(DISK_BYTES)
    first_web = next(r for r in refs if r.startswith("web@"))
    liferaft("restore", "--repo", served.url, "--image", first_web, "--to", target, "--yes")
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))
    # pruning is done on the server, with direct access
    liferaft("forget", "--repo", served.folder, "--name", "web", "--keep-last", "1")
    assert len(_images(served.folder)) == 2


def test_concurrent_uploads_of_one_name(tmp_path: Path) -> None:
    """Many threads upload the same new file at once: one places it, the
    retries with the same bytes succeed, other bytes are refused."""
    os.makedirs(tmp_path / "chunks")
    server = make_server(str(tmp_path), "127.0.0.1", 0, ServeOptions(append_only=True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        body = os.urandom(3 << 20)

        def put(i: int) -> int:
            data = body if i % 4 else body[:-1] + b"\0"
            return requests.put(base + "chunks/ab/x", data=data, timeout=30).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(put, range(24)))
        assert Path(tmp_path, "chunks/ab/x").read_bytes() in (body, body[:-1] + b"\0")
        winner = Path(tmp_path, "chunks/ab/x").read_bytes() == body
        ok = [c for i, c in enumerate(codes) if (i % 4 != 0) == winner]
        refused = [c for i, c in enumerate(codes) if (i % 4 != 0) != winner]
        assert sorted(set(ok)) in ([201, 204], [204]) and ok.count(201) <= 1, codes
        assert set(refused) == {409}, codes
        assert not os.listdir(tmp_path / "tmp")
        for taken in ("chunks", "chunks/ab/x/y"):  # a folder, a file as a folder
            assert requests.put(base + taken, data=b"x", timeout=5).status_code == 409
    finally:
        server.shutdown()
        server.server_close()


def test_read_only_server_refuses_uploads_in_one_line(tmp_path: Path) -> None:
    Repository.open(str(tmp_path / "r"), credentials=CredentialChain(), create=True).create_now()
    server = Engine().serve_repository(str(tmp_path / "r"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        store = HttpStore(url, CredentialChain.standard())
        with pytest.raises(RepositoryError, match="read-only.*serve --append-only"):
            store.check_writable()
        with pytest.raises(RepositoryError, match="read-only"):
            store.write("chunks/00/x", b"x", durable=True)
        assert requests.put(url + "chunks/00/x", data=b"x", timeout=5).status_code == 405
    finally:
        server.shutdown()
        server.server_close()


def test_serve_options_are_checked(tmp_path: Path) -> None:
    proc = liferaft("serve", "--repo", str(tmp_path), "--append-only", "--user", "u", check=False)
    assert_one_line_error(proc, "--user and --password-file go together")
    proc = liferaft(
        "serve", "--repo", str(tmp_path), "--tls-cert", "/nonexistent", "--tls-key", "/x",
        check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "cannot use the certificate /nonexistent")


def test_index_only_grows(tmp_path: Path) -> None:
    """index.json's lists are merged: a client adds entries (an image only if
    its manifest is on the server), never removes one."""
    Path(tmp_path, "images/a").mkdir(parents=True)
    Path(tmp_path, "images/a/20260101T000000Z.json").write_text("{}")
    server = make_server(str(tmp_path), "127.0.0.1", 0, ServeOptions(append_only=True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.json"
    real = {"path": "images/a/20260101T000000Z.json"}
    try:
        first = {"format": "liferaft-index", "version": 2, "keys": ["s1"],
                 "images": [real, {"path": "images/b/none.json"}]}  # fmt: skip
        assert requests.put(url, data=json.dumps(first), timeout=5).status_code == 204
        second = {"format": "liferaft-index", "version": 2, "keys": ["s2"], "images": []}
        assert requests.put(url, data=json.dumps(second), timeout=5).status_code == 204
        doc = requests.get(url, timeout=5).json()
        assert doc["images"] == [real] and doc["keys"] == ["s1", "s2"]
        assert requests.put(url, data=b"[]", timeout=5).status_code == 400
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.root
def test_encrypted_repository_through_the_server(
    captured: Captured, loopdisk, workdir: str, monkeypatch: pytest.MonkeyPatch
):
    """init --encrypt, capture, verify and restore, all through the server:
    its key slot and sealed manifests are uploads like any other."""
    folder = os.path.join(workdir, "served-enc")
    port = free_port()
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", "correct horse battery")
    argv = cli_argv("serve", "--repo", folder, "--port", str(port), "--append-only")
    with running(argv, port):
        url = f"http://127.0.0.1:{port}/"
        liferaft("init", "--repo", url, "--encrypt")
        liferaft("capture", "--repo", url, "--name", "sealed", captured.source.dev)
        assert ": OK" in liferaft("verify", "--repo", url, "sealed").stdout
        target = loopdisk(DISK_BYTES)
        liferaft("restore", "--repo", url, "--image", "sealed", "--to", target, "--yes")
        check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))
        monkeypatch.setenv("LIFERAFT_NEW_PASSPHRASE", "a second passphrase")
        liferaft("key", "add", "--repo", url)
        assert len(liferaft("key", "list", "--repo", url).stdout.strip().splitlines()) >= 2
        monkeypatch.setenv("LIFERAFT_PASSPHRASE", "a second passphrase")
        assert ": OK" in liferaft("verify", "--repo", url, "sealed").stdout
        assert "sealed" not in Path(folder, "index.json").read_text()
