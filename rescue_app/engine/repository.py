"""A liferaft repository on a filesystem: layout, chunk store, manifests.

Owns everything under a repository directory (docs/FORMAT.md). Writes go to
``tmp/`` first and are renamed into place, so a reader or a crash never sees
a half-written chunk or manifest; a manifest is written only after every
chunk it names is on stable storage. Never touches a disk device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import zstandard

from rescue_app import __version__
from rescue_app.engine.manifest import ImageSummary, Manifest, parse_manifest
from rescue_app.errors import (
    ChunkError,
    ImageNotFoundError,
    ManifestError,
    RepositoryError,
)

REPO_FORMAT = "liferaft-repository"
REPO_VERSION = 1
REPO_FILE = "liferaft-repository.json"
CHUNK_SIZE = 4 * 1024 * 1024
CHUNK_HASH = "sha256"
COMPRESSION = "zstd"
ZSTD_LEVEL = 3

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ID_RE = re.compile(r"^\d{8}T\d{6}Z$")

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def chunk_digest(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RepositoryError(
            f"image name {name!r} is not allowed",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def _syncfs(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass(frozen=True)
class PutResult:
    digest: str
    stored_bytes: int  # compressed bytes newly written; 0 if the chunk was already there


class Repository:
    """A repository directory. Open with ``Repository.open``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.location = root

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(cls, location: str, *, create: bool = False) -> Repository:
        if "://" in location and not location.startswith("file://"):
            scheme = location.split("://", 1)[0]
            raise RepositoryError(
                f"repository {location}: {scheme}:// repositories are not supported yet",
                hint="use a local path or a mounted share",
            )
        root = os.path.abspath(location.removeprefix("file://"))
        repo = cls(root)
        marker = os.path.join(root, REPO_FILE)
        try:
            os.stat(marker)
            repo._check_marker(marker)
            return repo
        except PermissionError:
            raise RepositoryError(
                f"repository {root} is not readable (permission denied)",
                hint="run as root or fix the folder's permissions",
            ) from None
        except (FileNotFoundError, NotADirectoryError):
            pass
        if not create:
            if not os.path.exists(root):
                raise RepositoryError(
                    f"repository {root} does not exist",
                    hint="check the path, or mount the disk or share that holds it",
                )
            raise RepositoryError(
                f"{root} is not a liferaft repository (no {REPO_FILE})",
                hint="point --repo at the folder that holds liferaft-repository.json",
            )
        repo._create()
        return repo

    def _check_marker(self, marker: str) -> None:
        try:
            with open(marker, "rb") as f:
                doc = json.load(f)
        except PermissionError:
            raise RepositoryError(f"repository {self.root} is not readable") from None
        except (OSError, ValueError) as exc:
            raise RepositoryError(
                f"repository {self.root}: {REPO_FILE} is damaged: {exc}"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != REPO_FORMAT:
            raise RepositoryError(f"{marker} is not a liferaft repository file")
        if not isinstance(doc.get("version"), int) or doc["version"] > REPO_VERSION:
            raise RepositoryError(
                f"repository {self.root} has format version {doc.get('version')!r}",
                hint=f"this liferaft reads version {REPO_VERSION}; use a newer liferaft",
            )

    def _create(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            if os.listdir(self.root):
                raise RepositoryError(
                    f"{self.root} is not empty and not a liferaft repository",
                    hint="choose an empty or new folder for a new repository",
                )
            for sub in ("chunks", "images", "tmp"):
                os.makedirs(os.path.join(self.root, sub), exist_ok=True)
            doc = {
                "format": REPO_FORMAT,
                "version": REPO_VERSION,
                "chunk_size": CHUNK_SIZE,
                "chunk_hash": CHUNK_HASH,
                "compression": COMPRESSION,
                "created": _utc_now().isoformat().replace("+00:00", "Z"),
            }
            self._write_atomic(REPO_FILE, (json.dumps(doc, indent=1) + "\n").encode())
        except OSError as exc:
            raise self._os_error("cannot create the repository", exc) from None

    def _os_error(self, what: str, exc: OSError) -> RepositoryError:
        if exc.errno in (errno.EROFS,):
            return RepositoryError(
                f"repository {self.root} is read-only: {what}",
                hint="remount it read-write or choose another destination",
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RepositoryError(f"repository {self.root}: permission denied: {what}")
        if exc.errno == errno.ENOSPC:
            return RepositoryError(
                f"repository {self.root} is full: {what}", hint="free space or use a larger disk"
            )
        if exc.errno == errno.EFBIG:
            return RepositoryError(f"repository {self.root}: file too large: {what}")
        return RepositoryError(f"repository {self.root}: {what}: {exc.strerror or exc}")

    def ensure_writable(self) -> None:
        """Fail early, before reading any disk, if we cannot write here."""
        probe = os.path.join(self.root, "tmp", f".probe-{uuid.uuid4().hex}")
        try:
            os.makedirs(os.path.dirname(probe), exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"x")
            os.unlink(probe)
        except OSError as exc:
            raise self._os_error("cannot write", exc) from None

    # -- chunks ----------------------------------------------------------
    def chunk_path(self, digest: str) -> str:
        return os.path.join(self.root, "chunks", digest[:2], digest)

    def has_chunk(self, digest: str) -> bool:
        try:
            # An empty file is what a power cut can leave of an unsynced
            # chunk; it never counts as present.
            return os.stat(self.chunk_path(digest)).st_size > 0
        except FileNotFoundError:
            return False

    def put_chunk(
        self, data: bytes | bytearray | memoryview, digest: str | None = None
    ) -> PutResult:
        """Store one chunk unless an identical one is already there."""
        digest = digest or chunk_digest(data)
        if self.has_chunk(digest):
            return PutResult(digest, 0)
        blob = _compressor().compress(data)
        rel = os.path.join("chunks", digest[:2], digest)
        try:
            self._write_atomic(rel, blob, fsync=False)
        except OSError as exc:
            raise self._os_error(f"cannot write chunk {digest[:12]}", exc) from None
        return PutResult(digest, len(blob))

    def get_chunk(self, digest: str, where: str = "") -> bytes:
        """Read, decompress and check one chunk; ChunkError names ``where``."""
        place = f" ({where})" if where else ""
        try:
            with open(self.chunk_path(digest), "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise ChunkError(
                f"chunk {digest[:12]}{place} is missing from repository {self.root}",
                hint="the repository is incomplete; run 'liferaft verify' and use another image",
            ) from None
        except OSError as exc:
            raise self._os_error(f"cannot read chunk {digest[:12]}{place}", exc) from None
        try:
            data = _decompressor().decompress(blob)
        except zstandard.ZstdError:
            data = b""
        if chunk_digest(data) != digest:
            raise ChunkError(
                f"chunk {digest[:12]}{place} is damaged: its content does not match its hash",
                hint="the repository's medium may be failing; use another copy of the image",
            )
        return data

    # -- manifests -------------------------------------------------------
    def manifest_path(self, name: str, image_id: str) -> str:
        return os.path.join(self.root, "images", name, f"{image_id}.json")

    def new_image_id(self, name: str) -> tuple[str, datetime]:
        while True:
            now = _utc_now()
            image_id = now.strftime("%Y%m%dT%H%M%SZ")
            if not os.path.exists(self.manifest_path(name, image_id)):
                return image_id, now
            time.sleep(0.2)

    def commit_manifest(self, manifest: Manifest) -> None:
        """Make an image exist: sync its chunks, then write the manifest atomically."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                _syncfs(fd)
            finally:
                os.close(fd)
            rel = os.path.join("images", manifest.name, f"{manifest.id}.json")
            os.makedirs(os.path.join(self.root, "images", manifest.name), exist_ok=True)
            self._write_atomic(rel, manifest.to_json().encode())
            self._write_index()
        except OSError as exc:
            raise self._os_error("cannot write the manifest", exc) from None

    def _write_index(self) -> None:
        """index.json lists every image, for readers that cannot list folders (HTTP)."""
        entries = []
        for name, image_id in self._manifest_files():
            entries.append({"name": name, "id": image_id,
                            "path": f"images/{name}/{image_id}.json"})
        doc = {"format": "liferaft-index", "version": 1, "images": entries}
        self._write_atomic("index.json", (json.dumps(doc, indent=1) + "\n").encode())

    def _manifest_files(self) -> list[tuple[str, str]]:
        out = []
        images = os.path.join(self.root, "images")
        try:
            names = sorted(os.listdir(images))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._os_error("cannot list images", exc) from None
        for name in names:
            folder = os.path.join(images, name)
            if not NAME_RE.match(name) or not os.path.isdir(folder):
                continue
            for fname in sorted(os.listdir(folder)):
                stem = fname.removesuffix(".json")
                if fname.endswith(".json") and ID_RE.match(stem):
                    out.append((name, stem))
        return out

    def list_images(self) -> list[ImageSummary]:
        """Every complete image, oldest first. A damaged manifest is skipped
        here (``verify`` and ``restore`` report it)."""
        out = []
        for name, image_id in self._manifest_files():
            try:
                out.append(ImageSummary.of(self._read_manifest(name, image_id)))
            except ManifestError:
                continue
        out.sort(key=lambda s: (s.created, s.name))
        return out

    def resolve(self, ref: str) -> tuple[str, str]:
        """``name`` (newest image of that name) or ``name@id`` -> (name, id)."""
        name, _, image_id = ref.partition("@")
        ids = [i for n, i in self._manifest_files() if n == name]
        if image_id:
            if image_id not in ids:
                raise ImageNotFoundError(
                    f"image {ref} is not in repository {self.root}",
                    hint="run 'liferaft images --repo ...' to list the images",
                )
            return name, image_id
        if not ids:
            raise ImageNotFoundError(
                f"no image named {name!r} in repository {self.root}",
                hint="run 'liferaft images --repo ...' to list the images",
            )
        return name, max(ids)

    def load_manifest(self, ref: str) -> Manifest:
        name, image_id = self.resolve(ref)
        return self._read_manifest(name, image_id)

    def _read_manifest(self, name: str, image_id: str) -> Manifest:
        path = self.manifest_path(name, image_id)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as exc:
            raise self._os_error(f"cannot read manifest {name}@{image_id}", exc) from None
        return parse_manifest(text, f"{name}@{image_id}")

    # -- plumbing --------------------------------------------------------
    def _write_atomic(self, rel: str, data: bytes, *, fsync: bool = True) -> None:
        final = os.path.join(self.root, rel)
        tmp = os.path.join(self.root, "tmp", f"{os.path.basename(rel)}.{uuid.uuid4().hex[:12]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if fsync:
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
        if fsync:
            dfd = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def clean_tmp(self, older_than: float = 3600) -> None:
        """Remove temporary files that an interrupted capture left behind."""
        folder = os.path.join(self.root, "tmp")
        now = time.time()
        try:
            for entry in os.scandir(folder):
                if now - entry.stat().st_mtime > older_than:
                    os.unlink(entry.path)
        except OSError:
            pass


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def host_name() -> str:
    return socket.gethostname()


def liferaft_version() -> str:
    return __version__
