"""``liferaft serve``: a local repository over HTTP, read-only or append-only.

For quick jobs (restore a machine from a laptop on the same switch) and for a
backup target that its clients cannot destroy. GET and HEAD, ``Range:
bytes=N-`` and ``N-M`` so interrupted downloads resume, keep-alive, one
thread per connection (a slow client holds only its own thread; a ranged
read is sent from the file by the kernel, ``sendfile``, never read whole into
memory). Each request is logged on stderr, one line (client, request, range,
status, bytes, time), unless ``quiet``. Only files inside the repository are served, never
``tmp/`` (writers' half files) and never a folder listing.

``append_only``: PUT stores a new file (written to ``tmp/``, fsynced, then
linked into place, so a file is whole or absent); a PUT to an existing file
succeeds only with the same bytes (a retried upload) and is otherwise 409.
Nothing is ever deleted or replaced (DELETE is 405); ``index.json`` only
gains entries (a client's copy is merged into the server's), and ``prune/``,
``tmp/`` and prune's ``.candidate`` files are not for clients. Pruning is done
on the server with direct access to the folder. Optional basic auth (one
user) and TLS (``tls``: certificate and key files).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from rescue_app.engine.repository import CANDIDATE_SUFFIX
from rescue_app.errors import UsageError

log = logging.getLogger("liferaft.serve")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
INDEX = "index.json"
MAX_UPLOAD = 64 * 1024 * 1024  # far above one compressed chunk or manifest
NOT_FOR_CLIENTS = ("tmp", "prune")  # writers' temporary files, prune's state


@dataclass(frozen=True)
class ServeOptions:
    """How ``liferaft serve`` shares its folder."""

    append_only: bool = False  # accept new files (PUT), never change or delete one
    user: str | None = None  # basic auth for every request when set
    password: str = ""
    tls_cert: str | None = None  # PEM files: HTTPS instead of HTTP
    tls_key: str | None = None
    log_requests: bool = False  # one line per request on stderr (the journal under systemd)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # (socketserver's 5 drops connections when a lab starts at once)
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so one
        # slow or broken client cannot hold up the others.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            request.settimeout(30)
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("%s: TLS handshake failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            try:
                wrapped.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            wrapped.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    server_version = "liferaft-serve"
    timeout = 300  # an idle keep-alive connection gives its thread back
    root = ""
    options = ServeOptions()
    index_lock = threading.Lock()
    stderr_lock = threading.Lock()
    _status: int | None = None
    _sent = 0

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def handle_one_request(self) -> None:
        self._status, self._sent, began = None, 0, time.monotonic()
        super().handle_one_request()
        if self._status is not None and self.options.log_requests:
            self._log_request(time.monotonic() - began)

    def _log_request(self, seconds: float) -> None:
        """The access log: client, request, range asked for, status, body bytes, time."""
        host, port = self.client_address[:2]
        wanted = self.headers.get("Range", "-") if self.headers else "-"
        line = (
            f"{host}:{port} {self.command or '-'} {self.path or '-'} {wanted} "
            f"{self._status} {self._sent} {seconds * 1000:.0f}ms\n"
        )
        with self.stderr_lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def _rel(self) -> str | None:
        """The repository path asked for; None if it is not one a client may name."""
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or parts[0] in NOT_FOR_CLIENTS:
            return None
        return rel

    def _file(self) -> str | None:
        rel = self._rel()
        if rel is None:
            return None
        path = os.path.join(self.root, *rel.split("/"))
        return path if os.path.isfile(path) else None

    def _answer(self, code: int, allow: str = "") -> None:
        """An answer without a body (errors, and the outcome of a PUT)."""
        self.send_response(code)
        if allow:
            self.send_header("Allow", allow)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="liferaft", charset="UTF-8"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _allowed(self) -> str:
        return "GET, HEAD, OPTIONS, PUT" if self.options.append_only else "GET, HEAD, OPTIONS"

    def _authorised(self) -> bool:
        """Basic auth when the server has a user; a 401 answer otherwise."""
        if self.options.user is None:
            return True
        given = self.headers.get("Authorization", "")
        expected = (
            "Basic "
            + base64.b64encode(f"{self.options.user}:{self.options.password}".encode()).decode()
        )
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._skip_body()
        self._answer(401)
        return False

    def _skip_body(self) -> None:
        """An answer before the body was read: the connection cannot be reused."""
        if self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True

    def do_HEAD(self) -> None:
        if self._authorised():
            self._serve(body=False)

    def do_GET(self) -> None:
        if self._authorised():
            self._serve(body=True)

    def do_OPTIONS(self) -> None:
        if self._authorised():
            self._answer(204, allow=self._allowed())

    def do_DELETE(self) -> None:
        if self._authorised():
            self._skip_body()
            self._answer(405, allow=self._allowed())

    def do_PUT(self) -> None:
        if not self._authorised():
            return
        if not self.options.append_only:
            self._skip_body()
            self._answer(405, allow=self._allowed())
            return
        rel = self._rel()
        length = self.headers.get("Content-Length", "")
        if rel is None or rel.endswith(CANDIDATE_SUFFIX) or rel.endswith("/"):
            self._skip_body()
            self._answer(403)
            return
        if not length.isdigit():
            self.close_connection = True
            self._answer(411)
            return
        if int(length) > MAX_UPLOAD:
            self._skip_body()
            self._answer(413)
            return
        try:
            tmp = self._receive(int(length))
        except (OSError, ValueError) as exc:
            log.warning("upload of %s failed: %s", rel, exc)
            self.close_connection = True
            self._answer(400 if isinstance(exc, ValueError) else 500)
            return
        try:
            code = self._merge_index(tmp) if rel == INDEX else self._place(tmp, rel)
        except OSError as exc:
            log.warning("storing %s failed: %s", rel, exc)
            code = 500
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        log.info("PUT %s: %d", rel, code)
        self._answer(code)

    def _receive(self, length: int) -> str:
        """The request's body in a synced file under tmp/ (readers never see tmp/)."""
        folder = os.path.join(self.root, "tmp")
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="serve-")
        try:
            with os.fdopen(fd, "wb") as f:
                left = length
                while left:
                    piece = self.rfile.read(min(left, 1 << 20))
                    if not piece:
                        raise ValueError(f"the body ended {left} bytes early")
                    f.write(piece)
                    left -= len(piece)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def _place(self, tmp: str, rel: str) -> int:
        """Link the upload into place unless the name is taken (a link, unlike
        a rename, never replaces): 201; the same bytes already there: 204; others: 409."""
        path = os.path.join(self.root, *rel.split("/"))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.link(tmp, path)
        except (FileExistsError, NotADirectoryError):  # (a file where a folder would be)
            return 204 if os.path.isfile(path) and _same_bytes(tmp, path) else 409
        _sync_dir(os.path.dirname(path))
        return 201

    def _merge_index(self, tmp: str) -> int:
        """index.json only grows: each of its lists (``images``; an encrypted
        repository's ``keys``) holds the server's entries and the client's,
        an image only if its manifest is here; written atomically, under one lock."""
        try:
            with open(tmp, "rb") as f:
                given = json.loads(f.read())
            if not isinstance(given, dict) or not isinstance(given.get("images"), list):
                raise ValueError("not an index")
        except ValueError:
            return 400
        final = os.path.join(self.root, INDEX)
        with self.index_lock:
            try:
                with open(final, "rb") as f:
                    doc = json.loads(f.read())
                if not isinstance(doc, dict):
                    raise ValueError("not an index")
            except (OSError, ValueError):
                doc = {k: v if not isinstance(v, list) else [] for k, v in given.items()}
            for key, offered in given.items():
                if isinstance(offered, list):
                    doc[key] = self._merged(key, doc.get(key), offered)
            body = (json.dumps(doc, indent=1) + "\n").encode()
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
            _sync_dir(self.root)
        return 204

    def _merged(self, key: str, current: object, offered: list[Any]) -> list[Any]:
        """The server's entries, then those of the client's it lacks."""
        kept = list(current) if isinstance(current, list) else []
        seen = {json.dumps(e, sort_keys=True) for e in kept}
        for e in offered:
            if key == "images" and not (
                isinstance(e, dict) and isinstance(e.get("path"), str)
                and self._manifest_here(e["path"])
            ):  # fmt: skip
                continue
            if json.dumps(e, sort_keys=True) not in seen:
                seen.add(json.dumps(e, sort_keys=True))
                kept.append(e)
        return sorted(kept, key=lambda e: json.dumps(e, sort_keys=True))

    def _manifest_here(self, rel: str) -> bool:
        parts = rel.split("/")
        if parts[0] != "images" or any(p in ("", ".", "..") for p in parts):
            return False
        return os.path.isfile(os.path.join(self.root, *parts))

    def _serve(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self._answer(404)
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError:
            self._answer(404)
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
                    self._answer(416)
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
                try:
                    # sendfile (a plain copy over TLS): no file is read into memory
                    self._sent = self.connection.sendfile(f, start, length)
                except OSError:  # the client went away
                    self.close_connection = True
                if self._sent != length:
                    self.close_connection = True


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_options(
    append_only: bool,
    user: str | None,
    password_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    quiet: bool = False,
) -> ServeOptions:
    """ServeOptions from what a person gave; UsageError naming what is wrong."""
    if (user is None) != (password_file is None):
        raise UsageError(
            "--user and --password-file go together", hint="give both for basic auth, or neither"
        )
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together", hint="give both, or neither")
    password = ""
    if password_file is not None:
        try:
            with open(password_file) as f:
                password = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(
                f"cannot read the password file {password_file}: {exc.strerror or exc}",
                hint="check the path",
            ) from None
        if not password:
            raise UsageError(f"the password file {password_file} is empty")
    options = ServeOptions(append_only, user, password, tls_cert, tls_key, log_requests=not quiet)
    if tls_cert is not None:
        try:
            _tls_context(options)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot use the certificate {tls_cert} with the key {tls_key}: "
                f"{getattr(exc, 'strerror', None) or exc}",
                hint="give PEM files: the certificate chain and its unencrypted private key",
            ) from None
    return options


def _tls_context(options: ServeOptions) -> ssl.SSLContext:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(options.tls_cert), options.tls_key)
    return tls


def make_server(
    root: str, bind: str = "127.0.0.1", port: int = 8080, options: ServeOptions | None = None
) -> ThreadingHTTPServer:
    """A server for the repository folder ``root``; call ``serve_forever``.
    OSError if it cannot listen; ssl.SSLError for unusable TLS files."""
    options = options or ServeOptions()
    attrs = {"root": os.path.abspath(root), "options": options, "index_lock": threading.Lock()}
    handler = type("RepoHandler", (_Handler,), attrs)
    server = _Server((bind, port), handler)
    server.tls = _tls_context(options) if options.tls_cert else None
    return server
