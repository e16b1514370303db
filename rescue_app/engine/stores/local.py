"""A repository in a local folder: a USB disk, an internal disk, a mounted share.

Writes go to ``tmp/`` and are renamed into place; ``sync`` is one syncfs of
the folder's filesystem, far cheaper than an fsync per chunk on a USB stick.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
import uuid

from rescue_app.engine.stores import ByteStream, Store
from rescue_app.errors import RepositoryError


def _syncfs(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class LocalStore(Store):
    def __init__(self, path: str) -> None:
        self.root = os.path.abspath(path)
        self.location = self.root
        if os.path.isfile(self.root) or (
            os.path.exists(self.root) and not os.path.isdir(self.root)
        ):
            raise RepositoryError(
                f"{self.location} is a file, not a folder: a repository is a folder",
                hint="give --repo the folder that holds (or is to hold) the repository",
            )

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def error(self, what: str, exc: OSError) -> RepositoryError:
        if exc.errno == errno.EROFS:
            return RepositoryError(
                f"repository {self.location} is read-only: {what}",
                hint="remount it read-write or choose another destination",
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RepositoryError(
                f"repository {self.location} is not readable or writable (permission denied): "
                f"{what}",
                hint="run as root or fix the folder's permissions",
            )
        if exc.errno == errno.ENOSPC:
            return RepositoryError(
                f"repository {self.location} is full: {what}",
                hint="free space or use a larger disk",
            )
        if exc.errno == errno.EFBIG:
            return RepositoryError(f"repository {self.location}: file too large: {what}")
        return RepositoryError(f"repository {self.location}: {what}: {exc.strerror or exc}")

    def read(self, rel: str) -> bytes:
        try:
            with open(self._path(rel), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(rel) from None
        except PermissionError:
            raise RepositoryError(
                f"repository {self.location} is not readable (permission denied)",
                hint="run as root or fix the folder's permissions",
            ) from None
        except OSError as exc:
            raise self.error(f"cannot read {rel}", exc) from None

    def open_read(self, rel: str) -> ByteStream:
        try:
            return open(self._path(rel), "rb")  # noqa: SIM115 (the caller closes it)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(rel) from None
        except OSError as exc:
            raise self.error(f"cannot read {rel}", exc) from None

    def has(self, rel: str) -> bool:
        try:
            # An empty file is what a power cut can leave of an unsynced
            # chunk; it never counts as present.
            return os.stat(self._path(rel)).st_size > 0
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self.error(f"cannot look up {rel}", exc) from None

    def list(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self._path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self.error(f"cannot list {rel}", exc) from None

    def write(self, rel: str, data: bytes, *, durable: bool) -> None:
        final = self._path(rel)
        tmp = os.path.join(self.root, "tmp", f"{os.path.basename(rel)}.{uuid.uuid4().hex[:12]}")
        try:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    if durable:
                        f.flush()
                        os.fsync(f.fileno())
                try:
                    os.rename(tmp, final)
                except FileNotFoundError:
                    os.makedirs(os.path.dirname(final), exist_ok=True)
                    os.rename(tmp, final)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            if durable:
                dfd = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            raise self.error(f"cannot write {rel}", exc) from None

    def delete(self, rel: str) -> None:
        try:
            os.unlink(self._path(rel))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise self.error(f"cannot delete {rel}", exc) from None

    def rename(self, rel: str, new_rel: str) -> None:
        # Within one folder of one filesystem (a chunk and its candidate):
        # atomic, and durable with the next sync.
        try:
            os.rename(self._path(rel), self._path(new_rel))
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(rel) from None
        except OSError as exc:
            raise self.error(f"cannot rename {rel}", exc) from None

    def sizes(self, rel: str) -> dict[str, int]:
        try:
            with os.scandir(self._path(rel)) as it:
                return {e.name: e.stat().st_size for e in it if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            raise self.error(f"cannot list {rel}", exc) from None

    def sync(self) -> None:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                _syncfs(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self.error("cannot flush to stable storage", exc) from None

    def check_writable(self) -> None:
        probe = os.path.join(self.root, "tmp", f".probe-{uuid.uuid4().hex}")
        try:
            os.makedirs(os.path.dirname(probe), exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"x")
            os.unlink(probe)
        except OSError as exc:
            raise self.error("cannot write", exc) from None

    def missing(self, create_hint: bool) -> RepositoryError:
        if not os.path.exists(self.root):
            return RepositoryError(
                f"repository {self.location} does not exist",
                hint="check the path, or mount the disk or share that holds it",
            )
        return RepositoryError(
            f"{self.location} is not a liferaft repository (no liferaft-repository.json)",
            hint="point --repo at the folder that holds liferaft-repository.json",
        )

    def prepare_new(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            if os.listdir(self.root):
                raise RepositoryError(
                    f"{self.location} is not empty and not a liferaft repository",
                    hint="choose an empty or new folder for a new repository",
                )
            for sub in ("chunks", "images", "tmp"):
                os.makedirs(self._path(sub), exist_ok=True)
        except OSError as exc:
            raise self.error("cannot create the repository", exc) from None

    def clean_tmp(self, older_than: float = 3600) -> None:
        now = time.time()
        try:
            for entry in os.scandir(self._path("tmp")):
                if now - entry.stat().st_mtime > older_than:
                    os.unlink(entry.path)
        except OSError:
            pass
