"""A repository on an SSH server: ``sftp://[user@]host[:port]/path``.

Read-write. One SSH connection; each thread opens its own SFTP channel on it
(paramiko's transport multiplexes channels safely, an SFTPClient must not be
shared). Logins: a key (``?key=PATH`` or LIFERAFT_SSH_KEY, else the
credentials file's entry for the URL, else the usual ~/.ssh keys), then a
password from the Engine's CredentialChain (typed in the UI, LIFERAFT_PASSWORD,
the credentials file, a prompt) -- never from the URL.

Host keys are checked before any login, as ``hostkeys.py`` decides (a pinned
fingerprint, known_hosts files, the credentials entry's ``host_keys``, else
trust on first use for this process).

Writes go to ``tmp/`` and are renamed into place with
posix-rename@openssh.com. Every file is made durable before its rename
(paramiko's flush, then fsync@openssh.com when the server announces it), so
when the repository writes a manifest after its chunks, the chunks are on
the server's disk first and the manifest comes last. SFTP cannot fsync a
folder; the renames' durability is left to the server's file system.

A dropped connection (the server restarted, the session was killed, the
network blinked) is not the end of a restore: the operation reconnects --
same host key required -- and retries under the stores' one RetryPolicy
(backoff, LIFERAFT_RETRY_SECONDS without progress, notices to the running
operation, a cancel ends the wait), then fails with one line.
"""

from __future__ import annotations

import errno
import getpass
import logging
import os
import posixpath
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_INIT, CMD_VERSION

from rescue_app.engine.keychain import CredentialChain, SecretKind, SecretRequest
from rescue_app.engine.stores import (
    ByteStream,
    ReadStream,
    Store,
    reject_password_in_url,
    split_url,
)
from rescue_app.engine.stores.hostkeys import HostKeyTrust, describe_key
from rescue_app.engine.stores.retry import Attempts, RetryPolicy
from rescue_app.errors import RepositoryError

log = logging.getLogger("liferaft.stores.sftp")

TIMEOUT = 15.0
CHANNEL_TIMEOUT = 120.0  # one request's answer (a chunk is at most a few MB)
FSYNC = "fsync@openssh.com"

T = TypeVar("T")


def _login(client: paramiko.SSHClient, *args: Any, **kwargs: Any) -> None:
    """``client.connect``; having neither a key nor a password to offer is a
    refused login (so the chain's prompt is asked), not a network error."""
    try:
        client.connect(*args, **kwargs)
    except paramiko.SSHException as exc:
        if type(exc) is paramiko.SSHException and str(exc) == "No authentication methods available":
            raise paramiko.AuthenticationException(str(exc)) from None
        raise


class _Unreachable(RepositoryError):
    """The connection could not be made (a retry may help, unlike a refused login)."""

    def __init__(self, message: str, reason: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason  # short, for a retry's log line


class _Sftp(paramiko.SFTPClient):
    """An SFTP session that keeps the extensions the server announced in its
    version packet (paramiko reads and drops them)."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        # paramiko's own packet calls (private, not in its type stubs)
        send, receive = getattr(self, "_send_packet"), getattr(self, "_read_packet")  # noqa: B009
        init = paramiko.Message()
        init.add_int(3)
        send(CMD_INIT, init)
        kind, data = receive()
        if kind != CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        msg = paramiko.Message(data)
        version = msg.get_int()
        self.extensions = {}
        while msg.get_remainder():
            name = msg.get_text()
            self.extensions[name] = msg.get_binary()
        return version


class SftpStore(Store):
    def __init__(self, url: str, credentials: CredentialChain) -> None:
        self.credentials = credentials
        parts, self.host = split_url(url, "host name", "sftp://[USER@]HOST[:PORT]/PATH")
        self.port = parts.port or 22
        bare = url.split("?", 1)[0]
        # What the credentials say about this server: its host keys, a key, a user.
        self.entry = credentials.lookup(SecretRequest(SecretKind.HOST_KEYS, url=bare), ask=False)
        self.key_entry = credentials.lookup(SecretRequest(SecretKind.SSH_KEY, url=bare), ask=False)
        user = unquote(parts.username) if parts.username else None
        self.user = user or credentials.user(bare) or getpass.getuser()
        self.root = posixpath.normpath(unquote(parts.path) or "/")
        port = "" if self.port == 22 else f":{self.port}"
        self.location = f"sftp://{self.user}@{self.host}{port}{self.root}"
        reject_password_in_url(self.location, parts.password)
        self.url = self.location if user is None else bare  # what credentials entries match
        query = parse_qs(parts.query)

        def option(name: str, env: str | None = None) -> str | None:
            value = (query.get(name) or [os.environ.get(env, "") if env else ""])[0]
            return value or None

        self.key = option("key", "LIFERAFT_SSH_KEY")
        self.known_hosts = option("known_hosts", "LIFERAFT_SSH_KNOWN_HOSTS")
        pinned = option("fingerprint")
        # A query string turns '+' into ' '; base64 has no spaces.
        self.pinned = pinned.replace(" ", "+") if pinned else None
        if self.pinned is not None and not self.pinned.startswith("SHA256:"):
            raise RepositoryError(
                f"repository {self.location}: fingerprint={self.pinned} is not a SHA256 "
                "fingerprint",
                hint="write it as ssh-keygen -l shows it: fingerprint=SHA256:...",
            )
        self._fsync_warned = False
        self._local = threading.local()
        # each channel with the thread it belongs to
        self._channels: list[tuple[threading.Thread, paramiko.SFTPClient]] = []
        self._lock = threading.Lock()
        self._generation = 0  # bumped by each reconnect; a thread's channel is of one
        self._reconnect_lock = threading.Lock()
        self._closed = False
        self.policy = RetryPolicy.from_environment()
        self._client = self._first_connect()

    # -- connection ----------------------------------------------------------
    def _connect(self) -> paramiko.SSHClient:
        # The key of a credentials entry, unless ?key= or LIFERAFT_SSH_KEY names one.
        pkey = self.key_entry.private_key() if self.key_entry is not None and not self.key else None
        trust = HostKeyTrust(
            self.location, self.host, self.port, self.pinned, self.known_hosts, self.entry
        )
        client = trust.client()
        who = f"{self.user}@{self.host}"
        password = self.credentials.password(who, ask=False, url=self.url)
        asked = False
        while True:
            try:
                _login(
                    client,
                    self.host,
                    self.port,
                    username=self.user,
                    password=password,
                    pkey=pkey,
                    key_filename=self.key,
                    look_for_keys=self.key is None and pkey is None,
                    allow_agent=False,
                    timeout=TIMEOUT,
                    banner_timeout=TIMEOUT,
                    auth_timeout=TIMEOUT,
                )
                return client
            except paramiko.AuthenticationException:
                if password is None and not asked:
                    asked = True
                    password = self.credentials.password(who, ask=True, url=self.url)
                    if password is not None:
                        continue
                client.close()
                if password is None:  # keys at most were tried: say where a password goes
                    wanted = SecretRequest(SecretKind.PASSWORD, url=self.url, who=who)
                    raise RepositoryError(
                        f"repository {self.location}: {self.host} refused the login of "
                        f"{self.user} by key, and no password was given",
                        hint="check the key (LIFERAFT_SSH_KEY or ?key=PATH), or give the "
                        f"password: {self.credentials.hints(wanted)}",
                    ) from None
                raise RepositoryError(
                    f"repository {self.location}: {self.host} refused the login of "
                    f"{self.user} (wrong password or key)",
                    hint="check the user name, the password (LIFERAFT_PASSWORD) or the key "
                    "(LIFERAFT_SSH_KEY or ?key=PATH)",
                ) from None
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise trust.changed_key(
                    f"known_hosts has {describe_key(exc.expected_key)}", describe_key(exc.key)
                ) from None
            except RepositoryError:
                client.close()
                raise
            except (OSError, paramiko.SSHException, EOFError) as exc:
                client.close()
                raise _Unreachable(
                    f"repository {self.location}: cannot connect to {self.host} port "
                    f"{self.port}: {_reason(exc)}",
                    _reason(exc),
                    hint="check that the SSH server runs and is reachable, the host name, "
                    "the port and the network",
                ) from None

    def _first_connect(self) -> paramiko.SSHClient:
        """A wrong port or host name fails in seconds (the policy's first-contact
        window), a server that blinked is tried again once or twice."""
        tries = self.policy.attempts(self.watch, "connecting", answered=False)
        while True:
            try:
                return self._connect()
            except _Unreachable as exc:
                if not tries.wait(exc.reason):
                    raise

    def _alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _reconnect(self, generation: int) -> None:
        """A new SSH connection, unless another thread made one since ``generation``."""
        with self._reconnect_lock:
            if self._generation != generation or self._closed:
                return
            self._drop_channels()
            self._client.close()
            self._client = self._connect()
            self._generation += 1
            log.warning("reconnected to %s port %d", self.host, self.port)

    def _retrying(self, what: str, op: Callable[[_Sftp], T]) -> T:
        """``op`` on this thread's channel; after a dropped connection,
        reconnect and do it again, with backoff."""
        tries: Attempts | None = None  # made when the connection is first found lost
        while True:
            generation = self._generation
            try:
                result = op(self._sftp())
                self.watch.recovered()
                return result
            except FileNotFoundError:
                raise
            except (OSError, paramiko.SSHException, EOFError) as exc:
                # An OSError on a live connection is the server's answer
                # (permission denied, disk full): retrying cannot help. A
                # timeout leaves the channel out of step: start again.
                dropped = (
                    not isinstance(exc, OSError)
                    or isinstance(exc, TimeoutError)
                    or not self._alive()
                )
                if not dropped or self._closed:
                    raise
                error: BaseException = exc
            if tries is None:
                log.warning(
                    "connection to %s port %d lost while %s (%s); reconnecting",
                    self.host,
                    self.port,
                    what,
                    _reason(error),
                )
                tries = self.policy.attempts(self.watch, what, answered=True)
            while self._generation == generation:  # else another thread reconnected
                if not tries.wait(_reason(error)):
                    raise RepositoryError(
                        f"repository {self.location}: the connection to {self.host} was lost "
                        f"while {what} and could not be made again (tried for "
                        f"{tries.limit:.0f} s): {_reason(error)}",
                        hint="check that the SSH server runs and the network; then run the "
                        "same command again",
                    ) from None
                try:
                    self._reconnect(generation)
                except _Unreachable as exc:
                    error = exc

    def _sftp(self) -> _Sftp:
        mine: tuple[int, _Sftp] | None = getattr(self._local, "sftp", None)
        if mine is not None and mine[0] == self._generation:
            return mine[1]
        generation = self._generation
        transport = self._client.get_transport()
        if transport is None:
            raise paramiko.SSHException("not connected")
        try:
            s = _Sftp.from_transport(transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not self._alive():
                raise
            raise RepositoryError(
                f"repository {self.location}: {self.host} did not open an SFTP session: "
                f"{_reason(exc)}",
                hint="the SSH server must offer the sftp subsystem",
            ) from None
        if s is None:
            raise paramiko.SSHException("no SFTP channel")
        # A server that stops answering must not hang a restore for ever.
        channel = s.get_channel()
        if channel is not None:
            channel.settimeout(CHANNEL_TIMEOUT)
        self._local.sftp = (generation, s)
        with self._lock:
            # Channels of threads that have ended (a pool of an earlier
            # operation) are closed: the server allows only so many sessions.
            ended = [c for t, c in self._channels if not t.is_alive()]
            self._channels = [(t, c) for t, c in self._channels if t.is_alive()]
            self._channels.append((threading.current_thread(), s))
        for c in ended:
            try:
                c.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass
        return s

    def _drop_channels(self) -> None:
        with self._lock:
            channels, self._channels = self._channels, []
        for _thread, s in channels:
            try:
                s.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass

    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def _error(self, what: str, exc: BaseException) -> RepositoryError:
        if isinstance(exc, RepositoryError):
            return exc
        if isinstance(exc, PermissionError):
            return RepositoryError(
                f"repository {self.location}: permission denied: {what}",
                hint=f"check that {self.user} may read and write the folder on {self.host}",
            )
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return RepositoryError(
                f"repository {self.location} is full: {what}", hint="free space on the server"
            )
        return RepositoryError(
            f"repository {self.location}: {what} on {self.host} failed: {_reason(exc)}",
            hint="check the connection to the server and its disk",
        )

    # -- reading -------------------------------------------------------------
    def read(self, rel: str) -> bytes:
        def op(sftp: _Sftp) -> bytes:
            with sftp.open(self._path(rel), "rb") as f:
                f.prefetch()
                data: bytes = f.read()
                return data

        try:
            return self._retrying(f"reading {rel}", op)
        except FileNotFoundError:
            raise FileNotFoundError(rel) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"reading {rel}", exc) from None

    def open_read(self, rel: str) -> ByteStream:
        def op(sftp: _Sftp) -> _SftpStream:
            f = sftp.open(self._path(rel), "rb")
            return _SftpStream(f, f.stat().st_size or 0)

        try:
            stream = self._retrying(f"reading {rel}", op)
        except FileNotFoundError:
            raise FileNotFoundError(rel) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"reading {rel}", exc) from None
        return ReadStream(stream, self.location, rel)

    def has(self, rel: str) -> bool:
        try:
            size = self._retrying(
                f"looking up {rel}", lambda s: s.stat(self._path(rel)).st_size or 0
            )
            return size > 0
        except FileNotFoundError:
            return False
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"looking up {rel}", exc) from None

    def list(self, rel: str) -> list[str]:
        try:
            return sorted(self._retrying(f"listing {rel}", lambda s: s.listdir(self._path(rel))))
        except FileNotFoundError:
            return []
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"listing {rel}", exc) from None

    # -- writing -------------------------------------------------------------
    def _makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        missing = []
        while path not in ("/", ""):
            try:
                if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    break
            except FileNotFoundError:
                missing.append(path)
                path = posixpath.dirname(path)
                continue
            break
        for p in reversed(missing):
            try:
                sftp.mkdir(p)
            except OSError:
                # another thread made it meanwhile
                if not stat.S_ISDIR(sftp.stat(p).st_mode or 0):
                    raise

    def _fsync(self, sftp: _Sftp, f: paramiko.SFTPFile) -> None:
        """The file's data on the server's disk. Requests on a channel are
        answered in order, so this also waits for every pipelined write."""
        if FSYNC not in sftp.extensions:
            if not self._fsync_warned:
                self._fsync_warned = True
                log.warning(
                    "SFTP server %s does not offer %s: what is written is only as "
                    "safe as the server's own write-back",
                    self.host,
                    FSYNC,
                )
            return
        request = getattr(sftp, "_request")  # noqa: B009 - paramiko has no public call for it
        request(CMD_EXTENDED, FSYNC, f.handle)

    def _write_once(self, sftp: _Sftp, rel: str, data: bytes) -> None:
        final = self._path(rel)
        tmp = self._path(f"tmp/{posixpath.basename(rel)}.{uuid.uuid4().hex[:12]}")
        try:
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
                f.flush()
                self._fsync(sftp, f)
            # (close() above raised any error of a pipelined write)
            try:
                sftp.posix_rename(tmp, final)
            except FileNotFoundError:
                self._makedirs(sftp, posixpath.dirname(final))
                sftp.posix_rename(tmp, final)
        except BaseException:
            try:
                if self._alive():
                    sftp.remove(tmp)
            except (OSError, paramiko.SSHException, EOFError):
                pass
            raise

    def write(self, rel: str, data: bytes, *, durable: bool) -> None:
        # Durable or not, every file is fsynced before its rename: SFTP has no
        # syncfs, so sync() could not reach earlier writes later.
        try:
            self._retrying(f"writing {rel}", lambda s: self._write_once(s, rel, data))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"writing {rel}", exc) from None

    def delete(self, rel: str) -> None:
        try:
            self._retrying(f"deleting {rel}", lambda s: s.remove(self._path(rel)))
        except FileNotFoundError:
            pass
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"deleting {rel}", exc) from None

    def rename(self, rel: str, new_rel: str) -> None:
        try:
            self._retrying(
                f"renaming {rel}", lambda s: s.posix_rename(self._path(rel), self._path(new_rel))
            )
        except FileNotFoundError:
            raise FileNotFoundError(rel) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"renaming {rel}", exc) from None

    def sizes(self, rel: str) -> dict[str, int]:
        try:
            entries = self._retrying(f"listing {rel}", lambda s: s.listdir_attr(self._path(rel)))
        except FileNotFoundError:
            return {}
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"listing {rel}", exc) from None
        return {e.filename: e.st_size or 0 for e in entries if stat.S_ISREG(e.st_mode or 0)}

    def sync(self) -> None:
        # Each write was fsynced before its rename (see write()).
        return None

    def check_writable(self) -> None:
        probe = f"tmp/.probe-{uuid.uuid4().hex}"
        try:
            sftp = self._sftp()
            self._makedirs(sftp, self._path("tmp"))
            with sftp.open(self._path(probe), "wb") as f:
                f.write(b"x")
            sftp.remove(self._path(probe))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error("writing a test file", exc) from None

    def missing(self, create_hint: bool) -> RepositoryError:
        try:
            self._sftp().stat(self.root)
        except FileNotFoundError:
            return RepositoryError(
                f"repository {self.location} does not exist", hint=f"check the path on {self.host}"
            )
        except (OSError, paramiko.SSHException, EOFError) as exc:
            return self._error("looking up the repository", exc)
        return RepositoryError(
            f"{self.location} is not a liferaft repository (no liferaft-repository.json)",
            hint="point --repo at the folder that holds liferaft-repository.json",
        )

    def prepare_new(self) -> None:
        try:
            sftp = self._sftp()
            self._makedirs(sftp, self.root)
            if sftp.listdir(self.root):
                raise RepositoryError(
                    f"{self.location} is not empty and not a liferaft repository",
                    hint="choose an empty or new folder for a new repository",
                )
            for sub in ("chunks", "images", "tmp"):
                self._makedirs(sftp, self._path(sub))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error("creating the repository", exc) from None

    def clean_tmp(self, older_than: float = 3600) -> None:
        now = time.time()
        try:
            sftp = self._sftp()
            for entry in sftp.listdir_attr(self._path("tmp")):
                if now - (entry.st_mtime or now) > older_than:
                    sftp.remove(self._path(f"tmp/{entry.filename}"))
        except (OSError, paramiko.SSHException, EOFError, RepositoryError):
            pass

    def close(self) -> None:
        self._closed = True
        self._drop_channels()
        self._client.close()


class _SftpStream:
    """A remote file read in order, WINDOW bytes of pipelined requests at a
    time (paramiko's prefetch of a whole file would hold all of it in memory
    when the reader is slower than the network)."""

    WINDOW = 8 * 1024 * 1024

    def __init__(self, f: paramiko.SFTPFile, size: int) -> None:
        self.f, self.size, self.offset = f, size, 0
        self.buffer = b""
        self.at = 0  # read so far of ``buffer``

    def read(self, n: int = -1, /) -> bytes:
        if self.at == len(self.buffer) and self.offset < self.size:
            length = min(self.WINDOW, self.size - self.offset)
            self.buffer = b"".join(self.f.readv([(self.offset, length)]))
            self.offset += length
            self.at = 0
        end = len(self.buffer) if n < 0 else min(len(self.buffer), self.at + n)
        data = self.buffer[self.at : end]
        self.at = end
        return data

    def close(self) -> None:
        self.f.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Unreachable):
        return f"cannot connect: {exc.reason}"
    if isinstance(exc, RepositoryError):
        return exc.message
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        # paramiko's "Unable to connect to port P on H", one error per address
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes == {errno.ECONNREFUSED}:
            return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host name"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text) or type(exc).__name__
