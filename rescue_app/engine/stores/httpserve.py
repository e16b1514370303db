"""``liferaft serve``: a local repository, read-only, over HTTP.

For quick jobs (restore a machine from a laptop on the same switch); a real
site puts the folder behind nginx. GET and HEAD only, ``Range: bytes=N-`` and
``N-M`` so interrupted downloads resume, keep-alive, one thread per
connection. Only files inside the repository are served, never ``tmp/``
(writers' half files) and never a folder listing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

log = logging.getLogger("liferaft.serve")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    server_version = "liferaft-serve"
    root = ""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _file(self) -> str | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or parts[0] == "tmp":
            return None
        path = os.path.join(self.root, *parts)
        return path if os.path.isfile(path) else None

    def _error(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self._error(404)
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError:
            self._error(404)
            return
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
            start, end = 0, size - 1
            status = 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            m = _RANGE.match(wanted or "")
            if wanted and (if_range is None or if_range == etag):
                if not m:
                    self._error(416)
                    return
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                if start >= size or end < start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            length = end - start + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if body and length:
                f.seek(start)
                try:
                    shutil.copyfileobj(_Limited(f, length), self.wfile, 256 * 1024)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True


class _Limited:
    def __init__(self, f: object, left: int) -> None:
        self.f = f
        self.left = left

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data: bytes = self.f.read(n)  # type: ignore[attr-defined]
        self.left -= len(data)
        return data


def make_server(root: str, bind: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A server for the repository folder ``root``; call ``serve_forever``."""
    handler = type("RepoHandler", (_Handler,), {"root": os.path.abspath(root)})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    return server
