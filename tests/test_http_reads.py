"""HttpStore.read against a small web server on loopback that breaks the rules
on purpose: bodies cut off mid-piece, Range ignored on a retry. The nginx
tests (tests/stores/test_http.py) cover the ordinary paths and a real server
kill; these pin down the byte accounting of a resumed download."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator

import pytest

from rescue_app.engine import CredentialChain
from rescue_app.engine.stores.http import HttpStore

MIB = 1 << 20
# A little larger than the largest chunk file.
BODY = hashlib.sha256(b"seed").digest() * ((5 * MIB + 12345) // 32)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Per test: "cut" sends the first N bytes of the first answer and hangs up;
    # "ignore_range" answers every retry with the whole file (200).
    script: dict[str, int | bool] = {}
    ranges: list[str | None] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = 0
        if rng and not self.script.get("ignore_range"):
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        cut = int(self.script.get("cut", 0))
        if len(self.ranges) == 1 and cut:
            self.wfile.write(BODY[start:cut])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        self.wfile.write(BODY[start:])


@contextlib.contextmanager
def _read_from_server(**script: int | bool) -> Iterator[tuple[bytes, list[str | None]]]:
    """(what HttpStore.read returned, the Range header of each request)"""
    ranges: list[str | None] = []
    handler = type("Handler", (_Handler,), {"script": script, "ranges": ranges})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = HttpStore(f"http://127.0.0.1:{server.server_address[1]}/", CredentialChain())
        try:
            yield store.read("f"), ranges
        finally:
            store.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFERAFT_RETRY_SECONDS", "5")


def test_whole_body_in_one_answer() -> None:
    with _read_from_server() as (got, ranges):
        assert got == BODY
        assert ranges == [None]


@pytest.mark.parametrize("cut", [1, MIB - 1, 4 * MIB + 7])
def test_cut_off_body_resumes_at_the_exact_byte(cut: int) -> None:
    with _read_from_server(cut=cut) as (got, ranges):
        assert got == BODY
        # The bytes of the first answer were kept, however many there were.
        assert ranges == [None, f"bytes={cut}-"]


def test_server_ignoring_the_range_gives_the_whole_file_once() -> None:
    with _read_from_server(cut=MIB + 7, ignore_range=True) as (got, ranges):
        assert got == BODY
        assert ranges == [None, f"bytes={MIB + 7}-"]
