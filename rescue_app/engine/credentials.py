"""Secrets for network repositories, from a credentials file readable by root only.

The file (``LIFERAFT_CREDENTIALS``, default /etc/liferaft/credentials.yaml;
a profile bakes one into the image, unattended mode can read one from an
attached medium) lists one entry per server::

    credentials:
      - match: backup@nas.example.com            # user@host: any scheme, any port
        password: "..."
      - match: sftp://backup@files.example.com/srv/images   # a URL prefix
        ssh_key_file: backup_ed25519             # relative to this file
        host_keys: ["ssh-ed25519 AAAAC3Nz..."]
      - match: https://images.example.com/liferaft/
        user: rescue                             # when the URL names no user
        password_file: images-password
      - match: s3://rescue-images
        access_key_id: AKIA...
        secret_access_key: "..."
        passphrase_file: images.key              # an encrypted repository's passphrase
        object_lock_days: 30                     # S3 Object Lock for new objects
        object_lock_mode: compliance             # or governance

The most specific entry wins: a URL prefix (the longest), then ``user@host``,
then a bare ``host``. Files an entry names (``password_file``,
``ssh_key_file``, ``secret_access_key_file``, ``passphrase_file``) are read when the credentials
file is loaded, so the medium holding them may be unmounted afterwards.

The file, and every file it names, must be owned by root (or the user
running liferaft) and not be readable or writable by group or others --
except on file systems without Unix permissions (FAT, exFAT, NTFS, ISO 9660),
whose modes are made up by the mount. Errors never quote the file's text: a
YAML error names line and column only, a wrong value names the key only.

This module owns the format and the lookup in one file; where secrets come
from (this file among other sources) is rescue_app/engine/keychain.py, whose
CredentialChain the stores ask. It never logs a secret, and a Credential's
repr leaves secrets out.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rescue_app.engine.diskparse import mount_holding
from rescue_app.engine.diskscan import read_mountinfo
from rescue_app.errors import LiferaftError

log = logging.getLogger("liferaft.credentials")

DEFAULT_PATH = "/etc/liferaft/credentials.yaml"
ENV_PATH = "LIFERAFT_CREDENTIALS"

# Their modes are invented by the mount (umask=, fmask=), not kept on disk.
NO_UNIX_MODES = frozenset({"vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk",
                           "iso9660", "udf"})  # fmt: skip

_STRING_KEYS = (
    "match",
    "user",
    "password",
    "password_file",
    "ssh_key",
    "ssh_key_file",
    "access_key_id",
    "secret_access_key",
    "secret_access_key_file",
    "passphrase",  # an encrypted repository's (match: its URL or folder)
    "passphrase_file",
    "object_lock_mode",  # S3: compliance (default) or governance
)
_LIST_KEYS = ("host_keys",)
_INT_KEYS = ("object_lock_days",)  # S3: Object Lock retention of new objects
# key in the file -> the secret it fills
_FILE_KEYS = {"password_file": "password", "ssh_key_file": "ssh_key",
              "secret_access_key_file": "secret_access_key",
              "passphrase_file": "passphrase"}  # fmt: skip
HOST_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                  "sk-ecdsa-sha2-nistp256@openssh.com")  # fmt: skip


class CredentialsError(LiferaftError):
    """The credentials file is unsafe, unreadable or malformed."""


@dataclass(frozen=True)
class Credential:
    """One entry of a credentials file; secrets stay out of repr()."""

    match: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key: str | None = field(default=None, repr=False)  # private key, PEM/OpenSSH text
    host_keys: tuple[str, ...] = ()  # "ssh-ed25519 AAAA...": the server's public keys
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)  # AWS_SESSION_TOKEN only
    passphrase: str | None = field(default=None, repr=False)  # an encrypted repository's
    # S3 Object Lock for the objects written (stores/s3.py); not secrets
    object_lock_days: int | None = None
    object_lock_mode: str | None = None

    def private_key(self) -> Any:
        """``ssh_key`` as a paramiko key (ed25519, ECDSA or RSA), None if there is none."""
        if not self.ssh_key:
            return None
        import io

        import paramiko

        kinds: tuple[Any, ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
        for kind in kinds:
            try:
                return kind.from_private_key(io.StringIO(self.ssh_key))
            except paramiko.PasswordRequiredException:
                raise CredentialsError(
                    f"credentials for {self.match}: the SSH key is protected by a passphrase",
                    hint="give liferaft a key without a passphrase (ssh-keygen -p -N '')",
                ) from None
            except (paramiko.SSHException, ValueError):
                continue
        raise CredentialsError(
            f"credentials for {self.match}: ssh_key is not a private key liferaft can read",
            hint="use an OpenSSH or PEM ed25519, ECDSA or RSA key",
        )

    def known_hosts_lines(self, host: str, port: int = 22) -> list[str]:
        """``host_keys`` as known_hosts lines for ``host`` (port 22: no brackets)."""
        name = host if port == 22 else f"[{host}]:{port}"
        return [f"{name} {k}" for k in self.host_keys]


@dataclass(frozen=True)
class Credentials:
    """A loaded credentials file."""

    path: str
    entries: tuple[Credential, ...] = ()

    def find(self, url: str | None = None, *, who: str | None = None) -> Credential | None:
        """The most specific entry for a repository ``url`` or for ``who``
        (``user@host``, when only that is known), None if nothing matches."""
        want = _Want.of(url, who)
        if want is None:
            return None
        best: tuple[int, Credential] | None = None
        for entry in self.entries:
            score = _score(entry, want)
            if score is not None and (best is None or score > best[0]):
                best = (score, entry)
        return best[1] if best else None


# --------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class _Want:
    scheme: str | None  # None: only user@host is known
    user: str | None
    host: str
    port: int | None
    path: str

    @staticmethod
    def of(url: str | None, who: str | None) -> _Want | None:
        if url is not None and "://" in url:
            parts = urlsplit(url)
            if not parts.hostname:
                return None
            user = unquote(parts.username) if parts.username else None
            if user is None and who and "@" in who:
                user = who.rpartition("@")[0]  # a user the URL leaves out (HTTP)
            return _Want(parts.scheme.lower(), user, parts.hostname.lower(), parts.port,
                         parts.path or "/")  # fmt: skip
        text = who or url
        if not text:
            return None
        user, _, host = text.rpartition("@")
        return _Want(None, user or None, host.lower(), None, "/")


def _path_prefix(prefix: str, path: str) -> bool:
    prefix = "/" + prefix.strip("/")
    path = "/" + path.strip("/")
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _score(entry: Credential, want: _Want) -> int | None:
    """How well ``entry`` fits (bigger is better), None if it does not."""
    match = entry.match
    if "://" in match:
        parts = urlsplit(match)
        user = unquote(parts.username) if parts.username else entry.user
        if (parts.hostname or "").lower() != want.host:
            return None
        if user and want.user and user != want.user:
            return None
        if want.scheme is None:
            # Only user@host known (an SMB mount asks so): the entry must name that user.
            return 2000 if user == want.user else None
        if parts.scheme.lower() != want.scheme:
            return None
        if parts.port is not None and parts.port != want.port:
            return None
        if not _path_prefix(parts.path, want.path):
            return None
        return 3000 + len(parts.path.strip("/"))
    user, at, host = match.rpartition("@")
    if host.lower() != want.host:
        return None
    if at:
        return 2500 if user == want.user else None
    if entry.user and want.user and entry.user != want.user:
        return None
    return 1000


# --------------------------------------------------------------------------
# Loading


def _fs_type(path: str) -> str:
    """The file system type of the mount holding ``path``."""
    mount = mount_holding(read_mountinfo(), os.path.realpath(path))
    return mount.fstype if mount else ""


def check_private(path: str, what: str = "credentials file") -> None:
    """CredentialsError unless only its owner (root or us) can read ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CredentialsError(
            f"{what} {path} does not exist", hint="fix the path or create the file"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"{what} {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077 and st.st_uid in (0, os.geteuid()):
        return
    fstype = _fs_type(path)
    if fstype in NO_UNIX_MODES:
        return  # the mount makes these modes up; nothing to tighten
    if st.st_uid not in (0, os.geteuid()):
        raise CredentialsError(
            f"{what} {path} is owned by uid {st.st_uid}, not by root",
            hint=f"chown root:root {path}",
        )
    how = "readable" if mode & 0o044 else "writable"
    raise CredentialsError(
        f"{what} {path} is {how} by others (mode {mode:04o}); refusing to use it",
        hint=f"chmod 600 {path}: it holds passwords",
    )


def _read_private(path: str, what: str) -> str:
    check_private(path, what)
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc}") from None


def load(path: str) -> Credentials:
    """Read and check one credentials file; CredentialsError says what is wrong."""
    import yaml

    text = _read_private(path, "credentials file")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # Never str(exc): PyYAML quotes the offending line, which may be a password.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise CredentialsError(
            f"credentials file {path}: not valid YAML at {where}: {exc.problem or 'syntax error'}"
        ) from None
    except yaml.YAMLError:
        raise CredentialsError(f"credentials file {path}: not valid YAML") from None
    return parse(data, path)


def parse(data: object, path: str) -> Credentials:
    """Check the plain data of a credentials file (see the module docstring)."""
    if data is None:
        return Credentials(path)
    if not isinstance(data, dict) or set(data) - {"credentials"}:
        raise CredentialsError(
            f"credentials file {path}: expected a mapping with one key, "
            "'credentials', holding a list of entries",
            hint="see the example in profiles/README.md",
        )
    items = data.get("credentials") or []
    if not isinstance(items, list):
        raise CredentialsError(f"credentials file {path}: 'credentials' must be a list")
    base = os.path.dirname(os.path.abspath(path))
    entries = tuple(_entry(item, i, path, base) for i, item in enumerate(items))
    return Credentials(path, entries)


def _entry(item: object, index: int, path: str, base: str) -> Credential:
    where = f"credentials file {path}: entry {index + 1}"
    if not isinstance(item, dict):
        raise CredentialsError(f"{where}: expected a mapping with 'match' and a secret")
    match = item.get("match")
    if isinstance(match, str) and match:
        where += f" ({match})"
    allowed = (*_STRING_KEYS, *_LIST_KEYS, *_INT_KEYS)
    values: dict[str, Any] = {}
    for key, value in item.items():
        if key not in allowed:
            raise CredentialsError(
                f"{where}: unknown key {key!r}", hint=f"allowed: {', '.join(allowed)}"
            )
        if key in _LIST_KEYS:
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CredentialsError(f"{where}: key {key!r} must be a list of strings")
            values[key] = tuple(v.strip() for v in value)
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CredentialsError(f"{where}: key {key!r} must be a whole number of days")
            values[key] = value
        elif not isinstance(value, str):
            # The value is not shown: it may be a password YAML read as a number.
            raise CredentialsError(
                f"{where}: key {key!r} must be a string", hint="put the value in quotes"
            )
        else:
            values[key] = value
    if not values.get("match"):
        raise CredentialsError(
            f"{where}: key 'match' is missing", hint="give user@host, host, or a URL prefix"
        )
    for file_key, secret in _FILE_KEYS.items():
        if file_key not in values:
            continue
        if secret in values:
            raise CredentialsError(f"{where}: give {secret!r} or {file_key!r}, not both")
        name = values.pop(file_key)
        target = name if os.path.isabs(name) else os.path.join(base, name)
        content = _read_private(target, f"{file_key} of {values['match']}:")
        # A password file ends with a newline; a key keeps its text as is.
        values[secret] = content if secret == "ssh_key" else content.rstrip("\r\n")
    for key in values.get("host_keys", ()):
        words = key.split()
        if len(words) < 2 or words[0] not in HOST_KEY_TYPES:
            raise CredentialsError(
                f"{where}: host_keys: {key[:40]!r} is not a public key",
                hint="paste a line of the server's /etc/ssh/ssh_host_*_key.pub (type and key)",
            )
    values["host_keys"] = tuple(" ".join(k.split()[:2]) for k in values.get("host_keys", ()))
    if not any(values.get(k) for k in ("password", "ssh_key", "secret_access_key", "passphrase")):
        raise CredentialsError(
            f"{where}: no secret (password, ssh_key, secret_access_key or passphrase, "
            "or their *_file forms)"
        )
    return Credential(**values)
