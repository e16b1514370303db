"""An image as a read-only FUSE filesystem, fed chunk by chunk from its repository.

Owns the serving of a fixed tree of volume files (engine/browse.py decides
the layout: ``disk1/p2/p2.img``, ``lvm/vg0/root/root.img``, each with an
empty ``files/`` folder that browse mounts the volume's filesystem on) and
the path from a byte range of a volume (a partition, an LVM logical volume)
to the chunks that hold it: zeros where the image holds no data (unused
blocks, swap). A partition captured file by file has no volume file: its
``files/`` folder is served here from its archive's index
(engine/archivetree.py), each file's bytes read from the chunks holding them.

Every chunk comes through ``Repository.get_chunk`` (any store, hash-checked)
into a bounded LRU cache of decompressed chunks; concurrent readers of one
chunk wait for a single fetch. A chunk that cannot be fetched or does not
match its hash fails that read with EIO and one log line naming the image,
the partition and the offset: never wrong bytes, never zeros instead.

The FUSE loop (libfuse 3 through mfusepy, its own worker threads) runs in a
thread of its own, ``FuseServer``: the thread that loop-mounts a partition
file reads through this filesystem and must not be the one serving it.
Mounts nothing itself but its FUSE folder, and never writes.
"""

from __future__ import annotations

import ctypes.util
import errno
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rescue_app.engine.archivetree import ArchiveTree, Entry
from rescue_app.engine.repository import Repository
from rescue_app.errors import LiferaftError, ToolMissingError

log = logging.getLogger("liferaft.imagefs")

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
FUSE_TYPE = "fuse.liferaft"  # the type /proc/self/mountinfo shows for a browse mount
START_TIMEOUT = 15.0
# Fetches run on a few threads of our own: libfuse starts and ends its worker
# threads as load comes and goes, and a network store keeps a connection per
# thread that fetches (HTTP sessions, SFTP channels).
FETCH_THREADS = 4


class ChunkCache:
    """Decompressed, hash-checked chunks, least recently used dropped first
    once more than ``limit`` bytes are held (one chunk is always kept)."""

    def __init__(self, fetch: Callable[[str, str], bytes], limit: int) -> None:
        self._fetch = fetch
        self.limit = limit
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._held = 0
        self._loading: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # chunks fetched from the repository (for tests and the bench)

    def get(self, digest: str, where: str) -> bytes:
        with self._lock:
            data = self._data.get(digest)
            if data is not None:
                self._data.move_to_end(digest)
                return data
            pending = self._loading.get(digest)
            if pending is None:
                mine: Future[bytes] = Future()
                self._loading[digest] = mine
        if pending is not None:
            return pending.result()
        try:
            data = self._fetch(digest, where)
        except BaseException as exc:
            with self._lock:
                del self._loading[digest]
            mine.set_exception(exc)
            raise
        with self._lock:
            del self._loading[digest]
            self.fetches += 1
            self._data[digest] = data
            self._held += len(data)
            while self._held > self.limit and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._held -= len(old)
        mine.set_result(data)
        return data


@dataclass(frozen=True)
class VolumeFile:
    """One stored volume of an image (a partition, a logical volume) as a
    file of its size."""

    where: str  # for log lines: "image web1@..., disk 1 partition 2"
    size: int
    used_bytes: int
    chunks: tuple[str | None, ...]  # chunk i covers [i*chunk_size, ...); None: zeros
    chunk_size: int

    def read(self, cache: ChunkCache, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset+size)`` (cut at the end); ChunkError and the
        stores' RepositoryError pass through."""
        end = min(offset + size, self.size)
        out = bytearray()
        pos = offset
        cs = self.chunk_size
        while pos < end:
            index = pos // cs
            base = index * cs
            stop = min(base + cs, end)
            digest = self.chunks[index] if index < len(self.chunks) else None
            if digest is None:
                out += bytes(stop - pos)
            else:
                data = cache.get(digest, f"{self.where}, offset {base}")
                piece = memoryview(data)[pos - base : stop - base]
                out += piece
                if len(piece) < stop - pos:  # a chunk shorter than the grid: zeros after it
                    out += bytes(stop - pos - len(piece))
            pos = stop
        return bytes(out)


@dataclass(frozen=True)
class ArchiveFiles:
    """The files of a partition captured file by file, as its archive's
    index found them."""

    where: str  # for log lines: "image web1@..., disk 1 partition 2"
    chunks: tuple[str | None, ...]  # the archive
    tree: ArchiveTree
    base: int  # added to the tree's inode numbers: unique in the mount

    def chunk(self, cache: ChunkCache, index: int) -> bytes:
        digest = self.chunks[index]
        if digest is None:
            raise LiferaftError(f"{self.where}: archive chunk {index} is not stored")
        return cache.get(digest, f"{self.where}, archive chunk {index}")

    def read(self, cache: ChunkCache, entry: Entry, offset: int, size: int) -> bytes:
        return self.tree.read(entry, offset, size, lambda i: self.chunk(cache, i), self.where)


def _load_fuse() -> Any:
    """mfusepy, bound to libfuse 3 when it is there (it would take libfuse 2,
    which needs the old fusermount, first)."""
    chosen = os.environ.get("FUSE_LIBRARY_PATH") or os.environ.get("FUSE_LIBRARY_NAME")
    if not chosen and ctypes.util.find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy
    except (ImportError, OSError) as exc:
        raise ToolMissingError(
            f"FUSE is not available ({exc})",
            hint="install the Debian package fuse3 and the Python package mfusepy",
        ) from None
    return mfusepy


class ImageFS:
    """The FUSE operations (mfusepy's Operations protocol): a fixed tree of
    folders and partition files; ``hide`` drops a partition's files/ folder
    when its filesystem could not be mounted; ``add_archive`` serves a
    file-level partition's files/ folder from its archive. Every entry has
    an inode number of its own (hard links of an archive share one), so
    ``cp -a`` and ``du`` see hard links as such."""

    use_ns = True  # times in nanoseconds (mfusepy)

    def __init__(
        self,
        repo: Repository,
        volumes: Sequence[tuple[str, VolumeFile]],
        created: str,
        cache_bytes: int,
    ) -> None:
        """``volumes``: (path in the tree, e.g. ``disk1/p2/p2.img``, the volume);
        ``created``: the image's ISO time, every entry's times."""
        self.repo = repo
        self._fetchers = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="liferaft-fetch")
        self.cache = ChunkCache(self._fetch, cache_bytes)
        self.files: dict[str, VolumeFile] = {}  # "/disk1/p2/p2.img" -> volume
        self.dirs: dict[str, list[str]] = {"/": []}
        self.inos: dict[str, int] = {"/": 1}
        self.archives: dict[str, ArchiveFiles] = {}  # "/disk1/p2/files" -> its files
        self.ready = threading.Event()
        self._bad: set[str] = set()
        self._lock = threading.Lock()
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
            self.time_ns = int(created_at.timestamp()) * 1_000_000_000
        except ValueError:
            self.time_ns = 0
        for path, volume in volumes:
            folder, name = ("/" + path).rsplit("/", 1)
            self._add_dir(folder)
            self.dirs[folder].append(name)
            self.files[f"{folder}/{name}"] = volume
            self.inos[f"{folder}/{name}"] = len(self.inos) + 1

    def _add_dir(self, path: str) -> None:
        if path in self.dirs:
            return
        parent, name = path.rsplit("/", 1)
        parent = parent or "/"
        self._add_dir(parent)
        self.dirs[parent].append(name)
        self.dirs[path] = []
        self.inos[path] = len(self.inos) + 1

    def _fetch(self, digest: str, where: str) -> bytes:
        return self._fetchers.submit(self.repo.get_chunk, digest, where).result()

    def close(self) -> None:
        self._fetchers.shutdown(wait=False, cancel_futures=True)

    def add_files_dir(self, folder: str) -> None:
        """Show ``folder/files`` (``folder`` as "disk1/p2"), the inner mount's point."""
        with self._lock:
            self._add_dir(f"/{folder}/files")

    def add_archive(
        self, folder: str, where: str, chunks: Sequence[str | None], tree: ArchiveTree
    ) -> None:
        """Serve ``folder/files`` from a file-level partition's archive."""
        with self._lock:
            self._add_dir("/" + folder)
            self.dirs["/" + folder].append("files")
            base = (len(self.archives) + 1) << 40
            self.archives[f"/{folder}/files"] = ArchiveFiles(where, tuple(chunks), tree, base)

    def _archive_entry(self, path: str) -> tuple[ArchiveFiles, str, Entry] | None:
        """The archive and entry ``path`` names, if it is inside one."""
        for root, files in self.archives.items():
            if path == root or path.startswith(root + "/"):
                rel = path[len(root) + 1 :]
                entry = files.tree.lookup(rel)
                if entry is None:
                    raise _fuse_error(errno.ENOENT)
                return files, rel, entry
        return None

    def hide(self, folder: str) -> None:
        with self._lock:
            path = f"/{folder}/files"
            if path in self.dirs and not self.dirs[path]:
                del self.dirs[path]
                self.dirs["/" + folder].remove("files")

    # -- FUSE operations (called on libfuse's threads) ----------------------
    def init(self, path: str) -> None:
        self.ready.set()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        found = self._archive_entry(path)
        if found is not None:
            files, _rel, e = found
            return {
                "st_mode": e.mode,
                "st_ino": files.base + e.ino,
                "st_nlink": e.nlink,
                "st_uid": e.uid,
                "st_gid": e.gid,
                "st_size": e.size or len(e.target.encode("utf-8", "surrogateescape")),
                "st_blocks": (e.size + 511) // 512,
                "st_rdev": e.rdev,
                "st_atime": e.mtime_ns,
                "st_mtime": e.mtime_ns,
                "st_ctime": e.mtime_ns,
            }
        times = {"st_atime": self.time_ns, "st_mtime": self.time_ns, "st_ctime": self.time_ns}
        ino = self.inos.get(path)
        if path in self.dirs:
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_ino": ino or 0, **times}
        f = self.files.get(path)
        if f is None or ino is None:
            raise _fuse_error(errno.ENOENT)
        # The raw partition holds every file of it, whoever owns them: root only.
        return {
            "st_mode": stat.S_IFREG | 0o400,
            "st_ino": ino,
            "st_nlink": 1,
            "st_size": f.size,
            "st_blocks": (f.used_bytes + 511) // 512,
            **times,
        }

    def readlink(self, path: str) -> str:
        found = self._archive_entry(path)
        if found is None or not stat.S_ISLNK(found[2].mode):
            raise _fuse_error(errno.EINVAL)
        return found[2].target

    def listxattr(self, path: str) -> list[str]:
        found = self._archive_entry(path)
        return sorted(found[2].xattrs) if found is not None else []

    def getxattr(self, path: str, name: str, *_position: int) -> bytes:
        found = self._archive_entry(path)
        value = found[2].xattrs.get(name) if found is not None else None
        if value is None:
            raise _fuse_error(errno.ENODATA)
        return value

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """The entries with their type and inode number (with use_ino, a name
        without one would be inode 0, which readdir(3) leaves out)."""
        found = self._archive_entry(path)
        if found is not None:
            files, rel, entry = found
            if not stat.S_ISDIR(entry.mode):
                raise _fuse_error(errno.ENOTDIR)
            names = list(files.tree.children.get(rel, []))
        else:
            with self._lock:
                listed = self.dirs.get(path)
                if listed is None:
                    raise _fuse_error(errno.ENOENT)
                names = list(listed)
        out = []
        for name in [".", "..", *names]:
            full = (
                path
                if name == "."
                else os.path.dirname(path)
                if name == ".."
                else path.rstrip("/") + "/" + name
            )
            attrs = self.getattr(full)
            out.append((name, {"st_mode": attrs["st_mode"], "st_ino": attrs["st_ino"]}, 0))
        return out

    def open(self, path: str, flags: int) -> int:
        found = self._archive_entry(path)
        if found is not None and not stat.S_ISREG(found[2].mode):
            raise _fuse_error(errno.EISDIR if stat.S_ISDIR(found[2].mode) else errno.EACCES)
        if found is None and path not in self.files:
            raise _fuse_error(errno.ENOENT)
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise _fuse_error(errno.EROFS)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        found = self._archive_entry(path)
        if found is not None:
            files, rel, entry = found
            where = f"{files.where}, file /{rel}"
            return self._reading(where, offset, lambda: files.read(self.cache, entry, offset, size))
        f = self.files.get(path)
        if f is None:
            raise _fuse_error(errno.ENOENT)
        return self._reading(f.where, offset, lambda: f.read(self.cache, offset, size))

    def _reading(self, where: str, offset: int, read: Callable[[], bytes]) -> bytes:
        """``read()``, or EIO and one log line per bad chunk, however often
        the kernel retries it."""
        try:
            return read()
        except LiferaftError as exc:
            with self._lock:
                first = str(exc) not in self._bad
                self._bad.add(str(exc))
            if first:
                log.error("read of %s at offset %d failed: %s", where, offset, exc)
            raise _fuse_error(errno.EIO) from None

    def statfs(self, path: str) -> dict[str, int]:
        total = sum(f.size for f in self.files.values())
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": total // 4096, "f_namemax": 255}


def _fuse_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class FuseServer:
    """Serves ``ops`` on ``point`` from a thread of its own until the folder
    is unmounted (``umount``, ``fusermount3 -u``)."""

    def __init__(self, ops: ImageFS, point: str) -> None:
        self.ops = ops
        self.point = point
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        mfusepy = _load_fuse()
        self._thread = threading.Thread(
            target=self._serve, args=(mfusepy,), name="liferaft-fuse", daemon=True
        )
        self._thread.start()
        waited = 0.0
        while not self.ops.ready.wait(0.05):
            waited += 0.05
            if self.ended.is_set() or waited > START_TIMEOUT:
                raise LiferaftError(
                    f"could not mount the image on {self.point} through FUSE ({self.error})",
                    hint="check that /dev/fuse exists (modprobe fuse) and the folder is free",
                )

    def _serve(self, mfusepy: Any) -> None:
        # libfuse installs its own SIGINT/SIGTERM/SIGHUP handlers only where a
        # signal still has the default action; the CLI sets its handlers
        # first, so a signal reaches the main thread, which unmounts in order.
        try:
            mfusepy.FUSE(
                self.ops,
                self.point,
                foreground=True,
                ro=True,
                allow_other=True,
                default_permissions=True,
                kernel_cache=True,
                fsname="liferaft",
                subtype="liferaft",
                # libfuse 3.14.0 passes its "unset" idle-thread count (UINT_MAX)
                # on and prints "Ignoring invalid max threads value 4294967295"
                # on the user's terminal at every mount (libfuse issue 1003);
                # an explicit value, libfuse 2's and 3's usual 10, avoids it.
                max_idle_threads=10,
                use_ino=True,  # ImageFS gives every entry its own (hard links share one)
            )
        except BaseException as exc:  # reported by start() or alive
            self.error = exc
            log.debug("FUSE loop on %s ended with %r", self.point, exc)
        finally:
            self.ended.set()

    @property
    def alive(self) -> bool:
        return not self.ended.is_set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
