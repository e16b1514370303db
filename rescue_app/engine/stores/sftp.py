"""A repository on an SSH server: ``sftp://[user@]host[:port]/path``.

Read-write. One SSH connection; each thread opens its own SFTP channel on it
(paramiko's transport multiplexes channels safely, an SFTPClient must not be
shared). Logins: a key (``?key=PATH`` or LIFERAFT_SSH_KEY, else the usual
~/.ssh keys), then a password from the UI, LIFERAFT_PASSWORD or a prompt --
never from the URL. Host keys are checked against LIFERAFT_KNOWN_HOSTS or
~/.ssh/known_hosts; an unknown host is accepted with its fingerprint logged
(a rescue system has no known_hosts), a changed key is refused. Writes go to
``tmp/`` and are renamed into place with posix-rename@openssh.com; durable
writes ask the server to fsync (fsync@openssh.com) when it can.
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
from urllib.parse import parse_qs, unquote, urlsplit

import paramiko

from rescue_app.engine.stores import Store, password_for, reject_password_in_url
from rescue_app.errors import RepositoryError

log = logging.getLogger("liferaft.stores.sftp")

TIMEOUT = 15.0


class _LogUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        log.warning("unknown SSH host %s, key %s %s accepted (not in known_hosts)",
                    hostname, key.get_name(), key.fingerprint)


class SftpStore(Store):
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise RepositoryError(f"repository URL {url.split('?')[0]!r} has no host name",
                                  hint="write it as sftp://[USER@]HOST[:PORT]/PATH")
        self.host = parts.hostname
        self.port = parts.port or 22
        self.user = unquote(parts.username) if parts.username else getpass.getuser()
        self.root = posixpath.normpath(unquote(parts.path) or "/")
        port = "" if self.port == 22 else f":{self.port}"
        self.location = f"sftp://{self.user}@{self.host}{port}{self.root}"
        reject_password_in_url(self.location, parts.password)
        query = parse_qs(parts.query)
        self.key = (query.get("key") or [os.environ.get("LIFERAFT_SSH_KEY", "")])[0] or None
        self._client = self._connect()
        self._local = threading.local()
        self._channels: list[paramiko.SFTPClient] = []
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------
    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        known = os.environ.get("LIFERAFT_KNOWN_HOSTS")
        try:
            if known:
                client.load_host_keys(known)
            else:
                client.load_system_host_keys()
        except OSError:
            pass
        client.set_missing_host_key_policy(_LogUnknownHost())
        who = f"{self.user}@{self.host}"
        password = password_for(who, ask=False)
        asked = False
        while True:
            try:
                client.connect(self.host, self.port, username=self.user, password=password,
                               key_filename=self.key, look_for_keys=self.key is None,
                               allow_agent=False, timeout=TIMEOUT, banner_timeout=TIMEOUT,
                               auth_timeout=TIMEOUT)
                return client
            except paramiko.AuthenticationException:
                if password is None and not asked:
                    asked = True
                    password = password_for(who, ask=True)
                    if password is not None:
                        continue
                client.close()
                raise RepositoryError(
                    f"repository {self.location}: {self.host} refused the login of "
                    f"{self.user} (wrong password or key)",
                    hint="check the user name, the password (LIFERAFT_PASSWORD) or the key "
                         "(LIFERAFT_SSH_KEY or ?key=PATH)",
                ) from None
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise RepositoryError(
                    f"repository {self.location}: the SSH host key of {self.host} is not the "
                    f"one in known_hosts (now {exc.key.get_name()} {exc.key.fingerprint})",
                    hint="if the server was reinstalled, update known_hosts; otherwise "
                         "someone may be in between",
                ) from None
            except (OSError, paramiko.SSHException, EOFError) as exc:
                client.close()
                raise RepositoryError(
                    f"repository {self.location}: cannot connect to {self.host} port "
                    f"{self.port}: {_reason(exc)}",
                    hint="check that the SSH server runs and is reachable, the host name, "
                         "the port and the network",
                ) from None

    def _sftp(self) -> paramiko.SFTPClient:
        s: paramiko.SFTPClient | None = getattr(self._local, "sftp", None)
        if s is None:
            try:
                s = self._client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise RepositoryError(
                    f"repository {self.location}: {self.host} did not open an SFTP session: "
                    f"{_reason(exc)}",
                    hint="the SSH server must offer the sftp subsystem",
                ) from None
            self._local.sftp = s
            with self._lock:
                self._channels.append(s)
        return s

    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def _error(self, what: str, exc: BaseException) -> RepositoryError:
        if isinstance(exc, PermissionError):
            return RepositoryError(
                f"repository {self.location}: permission denied: {what}",
                hint=f"check that {self.user} may read and write the folder on {self.host}",
            )
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return RepositoryError(f"repository {self.location} is full: {what}",
                                   hint="free space on the server")
        return RepositoryError(
            f"repository {self.location}: {what} on {self.host} failed: {_reason(exc)}",
            hint="check the connection to the server and its disk",
        )

    # -- reading -------------------------------------------------------------
    def read(self, rel: str) -> bytes:
        try:
            with self._sftp().open(self._path(rel), "rb") as f:
                f.prefetch()
                data: bytes = f.read()
                return data
        except FileNotFoundError:
            raise FileNotFoundError(rel) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"reading {rel}", exc) from None

    def has(self, rel: str) -> bool:
        try:
            return (self._sftp().stat(self._path(rel)).st_size or 0) > 0
        except FileNotFoundError:
            return False
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"looking up {rel}", exc) from None

    def list(self, rel: str) -> list[str]:
        try:
            return sorted(self._sftp().listdir(self._path(rel)))
        except FileNotFoundError:
            return []
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"listing {rel}", exc) from None

    # -- writing -------------------------------------------------------------
    def _makedirs(self, path: str) -> None:
        sftp = self._sftp()
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

    def write(self, rel: str, data: bytes, *, durable: bool) -> None:
        sftp = self._sftp()
        final = self._path(rel)
        tmp = self._path(f"tmp/{posixpath.basename(rel)}.{uuid.uuid4().hex[:12]}")
        try:
            try:
                with sftp.open(tmp, "wb") as f:
                    f.set_pipelined(True)
                    f.write(data)
                    if durable:
                        _fsync(f)
                try:
                    sftp.posix_rename(tmp, final)
                except FileNotFoundError:
                    self._makedirs(posixpath.dirname(final))
                    sftp.posix_rename(tmp, final)
            except BaseException:
                try:
                    sftp.remove(tmp)
                except (OSError, paramiko.SSHException, EOFError):
                    pass
                raise
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(f"writing {rel}", exc) from None

    def sync(self) -> None:
        # Each durable write is fsynced by the server; chunk writes are
        # closed files on the server, which its own kernel flushes. SFTP has
        # no syncfs, so this is as far as a client can go.
        return None

    def check_writable(self) -> None:
        probe = f"tmp/.probe-{uuid.uuid4().hex}"
        try:
            self._makedirs(self._path("tmp"))
            with self._sftp().open(self._path(probe), "wb") as f:
                f.write(b"x")
            self._sftp().remove(self._path(probe))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error("writing a test file", exc) from None

    def missing(self, create_hint: bool) -> RepositoryError:
        try:
            self._sftp().stat(self.root)
        except FileNotFoundError:
            return RepositoryError(f"repository {self.location} does not exist",
                                   hint=f"check the path on {self.host}")
        except (OSError, paramiko.SSHException, EOFError) as exc:
            return self._error("looking up the repository", exc)
        return RepositoryError(
            f"{self.location} is not a liferaft repository (no liferaft-repository.json)",
            hint="point --repo at the folder that holds liferaft-repository.json",
        )

    def prepare_new(self) -> None:
        try:
            self._makedirs(self.root)
            if self._sftp().listdir(self.root):
                raise RepositoryError(
                    f"{self.location} is not empty and not a liferaft repository",
                    hint="choose an empty or new folder for a new repository",
                )
            for sub in ("chunks", "images", "tmp"):
                self._makedirs(self._path(sub))
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
        with self._lock:
            for s in self._channels:
                s.close()
            self._channels.clear()
        self._client.close()


def _fsync(f: paramiko.SFTPFile) -> None:
    """fsync@openssh.com on an open file, if the server offers it (paramiko
    has no public call for it)."""
    try:
        request = getattr(f.sftp, "_request")  # noqa: B009 - private in paramiko
        request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
    except (OSError, paramiko.SSHException) as exc:
        log.debug("server cannot fsync: %s", exc)


def _reason(exc: BaseException) -> str:
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
