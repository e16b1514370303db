"""Where a repository's files live: a local folder, a web server, a bucket...

A Store moves whole files by relative path (``chunks/ab/ab12...``,
``images/web1/20261125T101500Z.json``); the Repository on top knows what the
files mean. Adding a kind of store is one new class and one line in
``SCHEMES``. Stores never put credentials in ``location`` (it is shown and
logged) and raise only FileNotFoundError (the file is not there) or a
RepositoryError that says what failed and what to check.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, urlsplit

from rescue_app.engine.stores.retry import Watch
from rescue_app.errors import RepositoryError

if TYPE_CHECKING:
    from rescue_app.engine.keychain import CredentialChain


class ByteStream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class ReadStream(io.RawIOBase):
    """A store's file read from its start (``Store.open_read``): a failure of
    the connection while reading becomes one RepositoryError naming the file."""

    def __init__(self, raw: ByteStream, location: str, rel: str) -> None:
        super().__init__()
        self.raw, self.where, self.rel = raw, location, rel

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self.raw.read(n)
        except RepositoryError:
            raise
        except Exception as exc:  # requests, urllib3, paramiko, botocore: each its own
            reason = (str(exc) or exc.__class__.__name__).splitlines()[0]
            raise RepositoryError(
                f"repository {self.where}: reading {self.rel} failed: {reason}",
                hint="check the connection to the server and run it again",
            ) from None

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


class Store(ABC):
    location: str  # for people and logs: no passwords, no keys
    can_list = True  # False: folders cannot be listed (plain HTTP); use index.json
    # Who hears about retries and may cancel them (the running operation);
    # the Engine sets it for a capture, restore or verify.
    watch: Watch = Watch()

    @abstractmethod
    def read(self, rel: str) -> bytes:
        """The whole file; FileNotFoundError if it is not there."""

    def open_read(self, rel: str) -> ByteStream:
        """The file as a stream read from its start, for files too large to
        hold in memory (a Clonezilla image's volumes); FileNotFoundError if it
        is not there. This default reads the whole file first."""
        return io.BytesIO(self.read(rel))

    @abstractmethod
    def has(self, rel: str) -> bool:
        """True if a complete, non-empty file is there."""

    @abstractmethod
    def list(self, rel: str) -> list[str]:
        """Names in a folder, [] if the folder is not there."""

    @abstractmethod
    def write(self, rel: str, data: bytes, *, durable: bool) -> None:
        """Put a file atomically: readers see all of it or nothing.
        ``durable``: on stable storage when this returns."""

    @abstractmethod
    def sync(self) -> None:
        """Everything written so far is on stable storage."""

    @abstractmethod
    def check_writable(self) -> None:
        """RepositoryError now, before any work, if writes will fail."""

    @abstractmethod
    def missing(self, create_hint: bool) -> RepositoryError:
        """The error for 'there is no repository here'."""

    # -- what forget and prune need (engine/prune.py); a store that cannot
    # change files keeps these refusals
    def delete(self, rel: str) -> None:
        """Remove a file; nothing if it is not there."""
        raise self.cannot_change()

    def rename(self, rel: str, new_rel: str) -> None:
        """Move a file, replacing ``new_rel`` atomically; FileNotFoundError if
        ``rel`` is not there."""
        raise self.cannot_change()

    def sizes(self, rel: str) -> dict[str, int]:
        """Each file in a folder and its size; {} if the folder is not there."""
        raise self.cannot_change()

    def locked_until(self, rel: str) -> datetime | None:
        """Until when the store refuses to delete the file (S3 Object Lock);
        None when it may be deleted now."""
        return None

    def check_can_delete(self) -> None:
        """RepositoryError now, before forget or prune change anything, if
        files cannot be deleted and renamed here."""
        self.check_writable()

    def cannot_change(self) -> RepositoryError:
        return RepositoryError(
            f"repository {self.location} cannot delete or rename files",
            hint="run forget and prune where the repository is writable",
        )

    def prepare_new(self) -> None:
        """Make ready for a new repository (create the folder); RepositoryError
        if something that is not a repository is already there."""
        return None

    def clean_tmp(self) -> None:
        """Remove what interrupted writers left behind, if the store keeps any."""
        return None

    def close(self) -> None:
        """Release connections and mounts."""
        return None


# (location, the opening Engine's credentials) -> a store
StoreFactory = Callable[[str, "CredentialChain"], Store]
SCHEMES: dict[str, StoreFactory] = {}


def register(scheme: str, factory: StoreFactory) -> None:
    SCHEMES[scheme] = factory


def is_remote(location: str) -> bool:
    """``location`` is a URL of a network store (not a path or file://)."""
    return "://" in location and not location.startswith("file://")


def open_store(location: str, credentials: CredentialChain) -> Store:
    """The store for ``location``; a network store asks ``credentials`` for its secrets."""
    from rescue_app.engine.stores.local import LocalStore

    if not is_remote(location):
        return LocalStore(location.removeprefix("file://"))
    scheme = location.split("://", 1)[0].lower()
    factory = SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(["file", *SCHEMES])) + " or a local path"
        raise RepositoryError(
            f"repository {scheme}://...: this kind of repository is not supported",
            hint=f"use {known}",
        )
    _check_url(location)
    return factory(location, credentials)


def _check_url(location: str) -> None:
    """The URL shapes every store shares: a parseable host and a numeric port.
    Each store checks what is its own (a bucket, an endpoint, a share)."""
    shown = location.split("?", 1)[0]
    try:
        parts = urlsplit(location)
        port = parts.port
    except ValueError as exc:
        raise RepositoryError(
            f"repository URL {shown!r} is malformed ({exc})",
            hint="write it as SCHEME://[USER@]HOST[:PORT]/PATH, the port a number",
        ) from None
    if port == 0:
        raise RepositoryError(
            f"repository URL {shown!r} has port 0",
            hint="give the server's port, or leave it out for the default",
        )


def split_url(url: str, host_word: str, form: str) -> tuple[SplitResult, str]:
    """The parts of a network store's URL and its host; one line naming what
    is missing (``host_word``: "host name", "bucket") and the form to write."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise RepositoryError(
            f"repository URL {url.split('?')[0]!r} has no {host_word}", hint=f"write it as {form}"
        )
    return parts, parts.hostname


# -- credentials ---------------------------------------------------------
# Passwords never travel in a URL (it is shown, logged and visible in process
# listings). A network store gets the CredentialChain of the Engine that opens
# it (rescue_app.engine.keychain) and asks it; no secret lives in this module.


def reject_password_in_url(location: str, password: str | None) -> None:
    if password is not None:
        raise RepositoryError(
            f"repository {location}: the URL holds a password",
            hint="leave it out of the URL and put it in the credentials file "
            "(/etc/liferaft/credentials.yaml), set LIFERAFT_PASSWORD or type it when "
            "asked (a URL is shown in logs and process listings)",
        )


def _register_builtin() -> None:
    """Network stores import their client libraries only when first used."""

    def lazy(module: str, cls: str) -> StoreFactory:
        def factory(location: str, credentials: CredentialChain) -> Store:
            import importlib

            kind: StoreFactory = getattr(importlib.import_module(module), cls)
            return kind(location, credentials)

        return factory

    base = "rescue_app.engine.stores."
    register("http", lazy(base + "http", "HttpStore"))
    register("https", lazy(base + "http", "HttpStore"))
    register("sftp", lazy(base + "sftp", "SftpStore"))
    register("s3", lazy(base + "s3", "S3Store"))
    register("smb", lazy(base + "mount", "MountStore"))
    register("nfs", lazy(base + "mount", "MountStore"))


_register_builtin()
