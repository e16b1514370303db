"""Which SSH host keys a repository's server may show: known_hosts, pins, first use.

Owns the host-key trust of SSH stores (``sftp.py``), like ssh with
``StrictHostKeyChecking=accept-new``, decided before any login:

- ``?fingerprint=SHA256:...`` in the URL (a profile's repository) pins the key:
  any other key is refused;
- otherwise the keys in the known_hosts file LIFERAFT_SSH_KNOWN_HOSTS or
  ``?known_hosts=PATH`` (else ~/.ssh/known_hosts), in
  /etc/ssh/ssh_known_hosts (what a site puts on its rescue stick) and in the
  credentials entry's ``host_keys`` count: a host listed there with another
  key is a hard error that names both fingerprints;
- a host listed nowhere is trusted on first use: its SHA256 fingerprint is
  logged as a warning (the console, the CLI's stderr), and every later
  connection of this process -- reconnects included -- must show the same
  key. Nothing is written to known_hosts files: a rescue system's are gone
  at the next boot, and a test machine's must not fill up with loopback keys.

Reads known_hosts files; never connects, never logs in, never writes a file.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from rescue_app.errors import RepositoryError

if TYPE_CHECKING:
    from rescue_app.engine.credentials import Credential

log = logging.getLogger("liferaft.stores.sftp")

GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"

# Keys trusted on first use by this process, by known_hosts name ([host]:port).
_first_use: dict[str, paramiko.PKey] = {}
_first_use_lock = threading.Lock()


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def describe_key(key: paramiko.PKey) -> str:
    """``ssh-ed25519 SHA256:...``: what ssh-keygen -l shows, for people to compare."""
    return f"{key.get_name()} {key.fingerprint}"


@dataclass(frozen=True)
class HostKeyTrust:
    """The host keys one repository's server (``host``, ``port``) may show."""

    location: str  # the repository, as errors name it
    host: str
    port: int
    pinned: str | None  # "SHA256:..." from the URL: only this key
    known_hosts: str | None  # LIFERAFT_SSH_KNOWN_HOSTS or ?known_hosts=
    entry: Credential | None  # the credentials entry, for its host_keys

    def client(self) -> paramiko.SSHClient:
        """A client that knows the trusted keys and refuses any other."""
        client = paramiko.SSHClient()
        sources: list[str] = []
        if self.pinned is None:
            keys = client.get_host_keys()
            for path in self._known_hosts_files():
                try:
                    keys.load(path)
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    raise RepositoryError(
                        f"repository {self.location}: cannot read the known_hosts file "
                        f"{path}: {text}",
                        hint="fix or remove the file's bad lines",
                    ) from None
                sources.append(path)
            name = known_hosts_name(self.host, self.port)
            if self.entry is not None and self.entry.host_keys:
                for line in self.entry.known_hosts_lines(self.host, self.port):
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                    if entry is not None:
                        keys.add(name, entry.key.get_name(), entry.key)
                sources.append(f"the credentials file's host_keys for {self.entry.match}")
            with _first_use_lock:
                earlier = _first_use.get(name)
            if earlier is not None and keys.lookup(name) is None:
                keys.add(name, earlier.get_name(), earlier)
        client.set_missing_host_key_policy(_HostKeyCheck(self, sources or ["known_hosts"]))
        return client

    def _known_hosts_files(self) -> list[str]:
        if self.known_hosts is not None:
            if not os.path.isfile(self.known_hosts):
                raise RepositoryError(
                    f"repository {self.location}: the known_hosts file {self.known_hosts} "
                    "does not exist",
                    hint="check LIFERAFT_SSH_KNOWN_HOSTS or ?known_hosts= in the URL",
                )
            files = [self.known_hosts]
        else:
            files = [os.path.expanduser("~/.ssh/known_hosts")]
        return [f for f in [*files, GLOBAL_KNOWN_HOSTS] if os.path.isfile(f)]

    def changed_key(self, expected: str, got: str, pinned: bool = False) -> RepositoryError:
        if pinned:
            hint = (
                "check the fingerprint in the URL against `ssh-keygen -lf` of the server's "
                "host key; if they differ, someone may be in between"
            )
        else:
            name = known_hosts_name(self.host, self.port)
            hint = (
                f"if {self.host} was reinstalled, remove its old key "
                f"(ssh-keygen -R '{name}' -f FILE) and connect again; otherwise someone "
                "may be in between: do not go on"
            )
        return RepositoryError(
            f"repository {self.location}: the SSH host key of {self.host} port {self.port} "
            f"has changed: {expected}, the server sent {got}",
            hint=hint,
        )


class _HostKeyCheck(paramiko.MissingHostKeyPolicy):
    """Called by paramiko, before any login, for a key it does not find in
    the client's host keys (a key of the same type that differs raises
    BadHostKeyException in paramiko itself)."""

    def __init__(self, trust: HostKeyTrust, sources: list[str]) -> None:
        self.trust = trust
        self.sources = sources

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        got = describe_key(key)
        pinned = self.trust.pinned
        if pinned is not None:
            if key.fingerprint == pinned:
                return
            raise self.trust.changed_key(f"the URL pins {pinned}", got, pinned=True)
        known = client.get_host_keys().lookup(hostname)
        if known:
            # Known, but under other key types only: the server no longer has them.
            have = ", ".join(describe_key(k) for k in known.values())
            raise self.trust.changed_key(f"{' or '.join(self.sources)} has {have}", got)
        with _first_use_lock:
            earlier = _first_use.setdefault(hostname, key)
        if earlier != key:
            raise self.trust.changed_key(f"this session first saw {describe_key(earlier)}", got)
        if earlier is key:
            t = self.trust
            log.warning(
                "SSH host %s port %d is not in known_hosts: trusting its key %s on first use "
                "(to pin it, add ?fingerprint=%s to the URL, or its key to "
                "LIFERAFT_SSH_KNOWN_HOSTS or %s)",
                t.host, t.port, got, key.fingerprint, GLOBAL_KNOWN_HOSTS,
            )  # fmt: skip
