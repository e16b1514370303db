"""A repository on a web server: ``http://`` and ``https://``.

Any static server (nginx, a CDN, ``liferaft serve``) will do for reading:
every file of a repository is fetched by path and the images are found
through index.json. Writing (capture) needs ``liferaft serve --append-only``:
each file is one PUT, which that server has on stable storage when it
answers; it never replaces or deletes a file (409 for other bytes under a
taken name, 405 for DELETE), so forget and prune run on the server itself.
Each thread keeps its own keep-alive connection (restore and verify fetch
chunks from several threads). A download that breaks off resumes from the
byte it reached with ``Range: bytes=N-`` (guarded by ``If-Range`` so a file
that changed meanwhile is fetched whole); connection errors, timeouts and
5xx answers are retried with backoff for ``LIFERAFT_RETRY_SECONDS`` (60 s)
without progress, then reported as one line. TLS: the system's CAs, or the
CA file in ``?ca=PATH`` or ``LIFERAFT_CA_FILE``. Basic auth: ``user@`` in the
URL or ``user:`` of the credentials entry for the URL; the password from the
Engine's CredentialChain (typed in the UI, LIFERAFT_PASSWORD, the credentials
file, a prompt), never the URL.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qs, quote, unquote

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from rescue_app.engine.keychain import CredentialChain, SecretKind, SecretRequest
from rescue_app.engine.stores import (
    ByteStream,
    ReadStream,
    Store,
    reject_password_in_url,
    split_url,
)
from rescue_app.engine.stores.retry import RetryPolicy, network_reason
from rescue_app.errors import RepositoryError

log = logging.getLogger("liferaft.stores.http")

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
# Larger than any chunk file (4 MiB before compression): a body normally
# arrives in one read, straight into one bytes object of its exact length.
PIECE = 8 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _Transient(Exception):
    """Worth trying again: the connection broke, the server said 5xx."""


class _Progressed:
    """Set when an attempt received bytes: the retry clock starts over."""

    def __init__(self) -> None:
        self.flag = False


class HttpStore(Store):
    can_list = False

    def __init__(self, url: str, credentials: CredentialChain) -> None:
        self.credentials = credentials
        parts, host = split_url(url, "host name", "http://HOST[:PORT]/PATH")
        self.scheme = parts.scheme.lower()
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self.host = netloc
        path = parts.path.rstrip("/")
        self.location = f"{self.scheme}://{netloc}{path}"
        self.base = self.location + "/"
        reject_password_in_url(self.location, parts.password)
        query = parse_qs(parts.query)
        ca = (query.get("ca") or [os.environ.get("LIFERAFT_CA_FILE", "")])[0]
        if ca and not os.path.isfile(ca):
            raise RepositoryError(
                f"CA file {ca} for {self.location} does not exist",
                hint="give the path of a PEM file with the server's CA",
            )
        self.verify: bool | str = ca or True
        # The password asked for and not given by anyone (None: given, or no login).
        self._unanswered: SecretRequest | None = None
        self.auth = self._basic_auth(url, parts.username, host)
        self.policy = RetryPolicy.from_environment()
        self._answered = False  # has the server ever answered? (first contact fails fast)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _basic_auth(self, url: str, user: str | None, host: str) -> tuple[str, str] | None:
        """Basic auth when the URL names a user, or a credentials entry for
        this URL names one (so the URL people see and type can stay bare)."""
        bare = url.split("?", 1)[0]
        if user:
            user = unquote(user)
        else:
            user = self.credentials.user(bare)
            if not user:
                return None
        password = self.credentials.password(f"{user}@{host}", url=bare)
        if password is None:
            self._unanswered = SecretRequest(SecretKind.PASSWORD, url=bare, who=f"{user}@{host}")
        return (user, password or "")

    # -- connections -------------------------------------------------------
    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # Our own loop retries (it must resume); urllib3 must not.
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            # (verify is also passed on each request: requests lets
            # REQUESTS_CA_BUNDLE override a session's setting)
            s.verify = self.verify
            s.auth = self.auth
            # Ranges count bytes of the file itself, not of a gzip of it.
            s.headers.update({"Accept-Encoding": "identity", "User-Agent": "liferaft"})
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def _drop_session(self) -> None:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None

    def _retrying(self, what: str, attempt: Callable[[_Progressed], T]) -> T:
        """Run ``attempt`` until it succeeds, a permanent error, or the
        policy's deadline passes without a byte of progress. A server that
        never answered gets the short first-contact window; each wait is a
        notice to the running operation, which may cancel it."""
        tries = self.policy.attempts(self.watch, what, answered=self._answered)
        while True:
            progressed = _Progressed()
            try:
                return tries.succeeded(attempt(progressed))
            except (requests.exceptions.SSLError, urllib3.exceptions.SSLError) as exc:
                raise self._tls_error(exc) from None
            # (urllib3's own errors come from bodies read through Response.raw)
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.ProtocolError,
                urllib3.exceptions.TimeoutError,
                _Transient,
            ) as exc:
                reason = _reason(exc)
                self._drop_session()
                if isinstance(exc, _Transient):  # the server is there, if unwell
                    tries.answered = True
            finally:
                self._answered = tries.answered  # the next request's first contact is over
            if progressed.flag:
                tries.progressed()
                self._answered = True
            if not tries.wait(reason):
                raise tries.gave_up(
                    self.location, self.host, reason, "the URL (host name and port)"
                )

    def _tls_error(self, exc: Exception) -> RepositoryError:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            detail = "its certificate is not trusted"
            m = re.search(r"certificate verify failed: ([^(')]+)", text)
            if m:
                detail += f" ({m.group(1).strip()})"
        else:
            detail = "the TLS handshake failed"
        return RepositoryError(
            f"repository {self.location}: TLS failure talking to {self.host}: {detail}",
            hint="give the CA that signed the server's certificate with "
            "LIFERAFT_CA_FILE=ca.pem or ?ca=/path/ca.pem, or check the URL and the "
            "clock of this machine",
        )

    def _status_error(self, rel: str, r: requests.Response) -> RepositoryError:
        if r.status_code == 401 and self._unanswered is not None:
            # A user but no password from anyone: say where to put it, not "refused".
            return self.credentials.missing(self._unanswered, self.location)
        if r.status_code in (401, 403):
            return RepositoryError(
                f"repository {self.location}: {self.host} refused access to {rel} "
                f"(HTTP {r.status_code})",
                hint="check the user name and the password (the credentials file, "
                "LIFERAFT_PASSWORD)",
            )
        return RepositoryError(
            f"repository {self.location}: {self.host} answered HTTP {r.status_code} "
            f"{r.reason} for {rel}",
            hint="check the URL and the web server's configuration",
        )

    # -- reading -------------------------------------------------------------
    def read(self, rel: str) -> bytes:
        url = self.base + quote(rel)
        # The body is read straight off the socket, one copy; what an attempt
        # got before the connection broke is kept, and a resumed download appends.
        pieces: list[bytes] = []
        state: dict[str, str | int | None] = {"validator": None, "total": None, "got": 0}

        def restart() -> None:
            pieces.clear()
            state.update(validator=None, got=0)

        def attempt(progressed: _Progressed) -> bytes:
            got = state["got"]
            assert isinstance(got, int)
            headers = {}
            if got:
                headers["Range"] = f"bytes={got}-"
                if state["validator"]:
                    headers["If-Range"] = str(state["validator"])
            with self._session().get(
                url,
                headers=headers,
                stream=True,
                verify=self.verify,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            ) as r:
                code = r.status_code
                if code in (404, 410):
                    raise FileNotFoundError(rel)
                if code == 416 and got and state["total"] == got:
                    return _joined(pieces)
                if code >= 500 or code in (408, 429):
                    raise _Transient(f"HTTP {code} {r.reason}")
                if code == 206 and got:
                    m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != got:
                        # A range we did not ask for: start over, whole file.
                        restart()
                        raise _Transient("the server answered a different range")
                    if m.group(3) != "*":
                        state["total"] = int(m.group(3))
                    log.debug("%s: resumed at byte %d", rel, got)
                elif code == 200:
                    restart()
                    got = 0
                    length = r.headers.get("Content-Length")
                    state["total"] = int(length) if length and length.isdigit() else None
                    state["validator"] = r.headers.get("ETag") or r.headers.get("Last-Modified")
                else:
                    raise self._status_error(rel, r)
                # Undecoded reads skip urllib3's buffering copy; we asked for
                # identity, so only a server that compressed anyway needs decoding.
                plain = r.headers.get("Content-Encoding", "identity").lower() == "identity"
                while piece := r.raw.read(PIECE, decode_content=not plain):
                    pieces.append(piece)
                    got += len(piece)
                    state["got"] = got
                    progressed.flag = True
                total = state["total"]
                if isinstance(total, int) and got != total:
                    if got > total:
                        restart()
                    raise _Transient(f"the download stopped at byte {got} of {total}")
                return _joined(pieces)

        return self._retrying(f"downloading {rel}", attempt)

    def open_read(self, rel: str) -> ByteStream:
        # One GET read as the caller goes (a Clonezilla volume of gigabytes);
        # a connection that breaks midway ends the read in one error (the
        # caller reads the whole image again), unlike read()'s resumed download.
        url = self.base + quote(rel)

        def attempt(progressed: _Progressed) -> requests.Response:
            r = self._session().get(
                url, stream=True, verify=self.verify, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
            )
            if r.status_code == 200:
                r.raw.decode_content = True
                return r
            r.close()
            if r.status_code in (404, 410):
                raise FileNotFoundError(rel)
            if r.status_code >= 500 or r.status_code in (408, 429):
                raise _Transient(f"HTTP {r.status_code} {r.reason}")
            raise self._status_error(rel, r)

        return ReadStream(_Body(self._retrying(f"downloading {rel}", attempt)), self.location, rel)

    def has(self, rel: str) -> bool:
        url = self.base + quote(rel)

        def attempt(progressed: _Progressed) -> bool:
            r = self._session().head(
                url,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                verify=self.verify,
                allow_redirects=True,
            )
            if r.status_code in (404, 410):
                return False
            if r.status_code >= 500 or r.status_code in (408, 429):
                raise _Transient(f"HTTP {r.status_code} {r.reason}")
            if r.status_code != 200:
                raise self._status_error(rel, r)
            return r.headers.get("Content-Length", "1") != "0"

        return self._retrying(f"looking up {rel}", attempt)

    def list(self, rel: str) -> list[str]:
        return []  # a web server's folders cannot be listed; readers use index.json

    # -- writing: to an append-only server (liferaft serve --append-only) ----
    def _read_only(self) -> RepositoryError:
        return RepositoryError(
            f"repository {self.location} is read-only (a web server that takes no uploads)",
            hint="run 'liferaft serve --append-only' there, or capture to a local folder, "
            "sftp://, s3://, smb:// or nfs:// and serve that folder over HTTP",
        )

    def write(self, rel: str, data: bytes, *, durable: bool) -> None:
        # (the server syncs every upload before it answers: durable either way)
        url = self.base + quote(rel)

        def attempt(progressed: _Progressed) -> None:
            r = self._session().put(
                url, data=data, verify=self.verify, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
            )
            code = r.status_code
            if code in (200, 201, 204):
                return
            if code >= 500 or code in (408, 429):
                raise _Transient(f"HTTP {code} {r.reason}")
            if code == 409:
                raise RepositoryError(
                    f"repository {self.location}: {self.host} refused to replace {rel} "
                    "(HTTP 409: an append-only server keeps every file as first written)",
                    hint="nothing of the images already there was changed; if this repeats, "
                    "run 'liferaft verify' on the server",
                )
            if code in (405, 501):
                raise self._read_only()
            raise self._status_error(rel, r)

        self._retrying(f"uploading {rel}", attempt)

    def sync(self) -> None:
        return None  # each upload was on the server's stable storage when it was answered

    def check_writable(self) -> None:
        def attempt(progressed: _Progressed) -> str:
            r = self._session().options(
                self.base, verify=self.verify, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
            )
            if r.status_code >= 500 or r.status_code in (408, 429):
                raise _Transient(f"HTTP {r.status_code} {r.reason}")
            if r.status_code in (401, 403):
                raise self._status_error("the repository", r)
            return str(r.headers.get("Allow", ""))

        allowed = self._retrying("asking the server what it accepts", attempt)
        if "PUT" not in [m.strip().upper() for m in allowed.split(",")]:
            raise self._read_only()

    def prepare_new(self) -> None:
        self.check_writable()

    def check_can_delete(self) -> None:
        self.check_writable()  # a read-only server says so
        raise self.cannot_change()

    def cannot_change(self) -> RepositoryError:
        return RepositoryError(
            f"repository {self.location} is a web server: images and chunks cannot be "
            "deleted through it (an append-only server never deletes)",
            hint="run forget and prune on the server, on the repository folder itself "
            "(liferaft prune --repo /path/to/repository)",
        )

    def missing(self, create_hint: bool) -> RepositoryError:
        return RepositoryError(
            f"no liferaft repository at {self.location} (no liferaft-repository.json there)",
            hint="check the URL: it must name the folder that holds liferaft-repository.json",
        )

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()


class _Body:
    def __init__(self, r: requests.Response) -> None:
        self.r = r

    def read(self, n: int = -1, /) -> bytes:
        data: bytes = self.r.raw.read(n if n >= 0 else None)
        return data

    def close(self) -> None:
        self.r.close()


def _joined(pieces: list[bytes]) -> bytes:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _reason(exc: Exception) -> str:
    if isinstance(exc, _Transient):
        return str(exc)
    return network_reason(exc)
