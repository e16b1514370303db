"""Where repositories come from: a small class per kind of source.

A source knows how to describe itself and how to make its repository
reachable (``open``) and unreachable again (``close``). Finding sources is a
class method per kind (``discover``); ``SOURCE_KINDS`` lists the kinds the
Source screen asks. A network source (NFS, SMB, HTTP) is one new subclass
added to that list.

Attached media are scanned read-only: each candidate partition is mounted
``ro`` on a temporary directory, checked for ``liferaft-repository.json`` at
its top or in a ``liferaft/`` folder, and unmounted again at once. Choosing
such a source mounts it again (read-only to restore from, read-write to back
up into) until the source is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rescue_app.engine import REPO_FILE, BlockDisk, Engine, Repository, Role, human_size
from rescue_app.errors import CommandError, LiferaftError, RepositoryError

log = logging.getLogger("liferaft.tui.sources")

# Filesystems worth looking into; the others cannot hold a repository folder.
SCANNED_FS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "exfat", "ntfs")
REPO_SUBDIRS = ("", "liferaft")
CLONEZILLA_SUBDIRS = ("", "partimag")

DiskFilter = Callable[[BlockDisk], bool]


@dataclass(frozen=True)
class ScanContext:
    """What discovery may look at."""

    engine: Engine
    disks: Sequence[BlockDisk]
    default_repository: str | None
    disk_filter: DiskFilter | None = None  # None: every disk but the running system's


class RepositorySource(ABC):
    """One place a repository can be opened from."""

    kind: str = "source"

    @property
    @abstractmethod
    def label(self) -> str:
        """Short text for a list row."""

    @property
    def detail(self) -> str:
        return ""

    @abstractmethod
    def open(self, engine: Engine, *, writable: bool = False) -> Repository:
        """Make the repository reachable and open it (LiferaftError if not)."""

    def close(self) -> None:  # noqa: B027 - most sources have nothing to undo
        """Undo what ``open`` did (unmount...). Safe to call twice."""

    @classmethod
    def discover(cls, ctx: ScanContext) -> list[RepositorySource]:
        return []


class PathSource(RepositorySource):
    """A folder already reachable in this system's tree (typed by the user)."""

    kind = "path"

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def label(self) -> str:
        return self.path

    def open(self, engine: Engine, *, writable: bool = False) -> Repository:
        return engine.open_repository(self.path, create=writable)


class DefaultRepositorySource(PathSource):
    """The repository the rescue stick's profile names."""

    kind = "profile default"

    @property
    def detail(self) -> str:
        return "from the profile"

    @classmethod
    def discover(cls, ctx: ScanContext) -> list[RepositorySource]:
        return [cls(ctx.default_repository)] if ctx.default_repository else []


def find_repository_dirs(root: str, engine: Engine | None = None) -> list[str]:
    """Relative folders under ``root`` holding a repository marker, or (with
    ``engine``) Clonezilla images: at the top of a Clonezilla stick, which
    Clonezilla mounts as /home/partimag, or in a partimag/ folder."""
    found = [sub for sub in REPO_SUBDIRS if os.path.isfile(os.path.join(root, sub, REPO_FILE))]
    if engine is not None:
        found += [
            sub
            for sub in CLONEZILLA_SUBDIRS
            if sub not in found and engine.holds_clonezilla_images(os.path.join(root, sub))
        ]
    return found


class MediaSource(RepositorySource):
    """A repository on a partition (or whole-disk filesystem) of an attached disk."""

    kind = "attached media"

    def __init__(
        self,
        device: str,
        fstype: str,
        subdir: str,
        disk: str,
        size: int,
        fs_label: str | None = None,
        mountpoint: str | None = None,
    ) -> None:
        self.device = device
        self.fstype = fstype
        self.subdir = subdir
        self.disk = disk
        self.size = size
        self.fs_label = fs_label
        self.mountpoint = mountpoint  # already mounted by someone else
        self._stack: contextlib.ExitStack | None = None

    @property
    def label(self) -> str:
        where = f"/{self.subdir}" if self.subdir else "/"
        return f"{self.device}:{where}"

    @property
    def detail(self) -> str:
        name = f' "{self.fs_label}"' if self.fs_label else ""
        return f"{self.fstype}{name}, {human_size(self.size)} on {self.disk}"

    def open(self, engine: Engine, *, writable: bool = False) -> Repository:
        self.close()
        if self.mountpoint:
            return engine.open_repository(os.path.join(self.mountpoint, self.subdir))
        stack = contextlib.ExitStack()
        try:
            point = stack.enter_context(engine.mounted(self.device, self.fstype, writable=writable))
            repo = engine.open_repository(os.path.join(point, self.subdir))
        except CommandError as exc:
            stack.close()
            raise RepositoryError(
                f"cannot mount {self.device} ({self.fstype}): {exc.message}",
                hint="check the disk is attached and not damaged",
            ) from exc
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return repo

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @classmethod
    def discover(cls, ctx: ScanContext) -> list[RepositorySource]:
        found: list[RepositorySource] = []
        for disk in ctx.disks:
            if Role.RUNNING_SYSTEM in disk.roles:
                continue
            if ctx.disk_filter is not None and not ctx.disk_filter(disk):
                continue
            volumes = [(p.path, p.fstype, p.size, p.label, p.mountpoints) for p in disk.partitions]
            if not disk.partitions and disk.fstype:
                volumes.append((disk.path, disk.fstype, disk.size, None, ()))
            for device, fstype, size, fs_label, points in volumes:
                if fstype not in SCANNED_FS:
                    continue
                try:
                    subs, mountpoint = cls._scan(ctx.engine, device, fstype, points)
                except LiferaftError as exc:
                    log.info("not scanning %s (%s): %s", device, fstype, exc)
                    continue
                for sub in subs:
                    found.append(cls(device, fstype, sub, disk.path, size, fs_label, mountpoint))
        return found

    @staticmethod
    def _scan(
        engine: Engine, device: str, fstype: str, points: Sequence[str]
    ) -> tuple[list[str], str | None]:
        # Already mounted (the live medium, say): look there instead of mounting twice.
        for point in points:
            if point and point != "[SWAP]" and os.path.isdir(point):
                return find_repository_dirs(point, engine), point
        with engine.mounted(device, fstype) as point:
            return find_repository_dirs(point, engine), None


NETWORK_SCHEMES = ("http", "https", "sftp", "s3", "smb", "nfs")


class NetworkSource(RepositorySource):
    """A repository at a URL typed by the user: http(s)://, sftp://, s3://,
    smb://, nfs://. A password typed in the UI goes to the Engine's credentials
    (this session's typed secrets), never into the URL (which is shown and logged)."""

    kind = "network"

    def __init__(self, url: str, password: str | None = None) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme.lower() not in NETWORK_SCHEMES or not parts.hostname:
            raise RepositoryError(
                f"{url.split('?')[0]!r} is not a repository URL",
                hint="type e.g. https://server/repo, sftp://user@host/path, "
                "smb://user@host/share/path, nfs://host/export or s3://bucket/prefix",
            )
        Engine.reject_password_in_url(f"{parts.scheme}://{parts.hostname}", parts.password)
        self.url = url
        self.scheme = parts.scheme.lower()
        self.who = f"{parts.username}@{parts.hostname}" if parts.username else None
        self.password = password
        self._repo: Repository | None = None

    @property
    def label(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def detail(self) -> str:
        return "read-only" if self.scheme in ("http", "https") else ""

    def open(self, engine: Engine, *, writable: bool = False) -> Repository:
        self.close()
        if self.password is not None and self.who:
            engine.remember_password(self.who, self.password)
        self._repo = engine.open_repository(self.url, create=writable)
        return self._repo

    def close(self) -> None:
        repo, self._repo = self._repo, None
        if repo is not None:
            repo.close()


def url_with_user(url: str, user: str) -> str:
    """``url`` with ``user`` as its user name (replacing one typed in the URL)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    url, user = url.strip(), user.strip()
    if not user or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{host}"))


def source_for_typed(text: str, password: str | None = None) -> RepositorySource:
    """What the user typed in a source or destination field: a URL or a path."""
    text = text.strip()
    if "://" in text and not text.startswith("file://"):
        return NetworkSource(text, password)
    return PathSource(text.removeprefix("file://"))


# The kinds of source the Source screen asks, in display order.
SOURCE_KINDS: list[type[RepositorySource]] = [DefaultRepositorySource, MediaSource]


def discover_sources(ctx: ScanContext) -> list[RepositorySource]:
    sources: list[RepositorySource] = []
    for kind in SOURCE_KINDS:
        try:
            sources += kind.discover(ctx)
        except LiferaftError as exc:
            log.warning("%s: %s", kind.kind, exc)
    return sources
