"""File-level images of mounted filesystems (``Method.FILES``), for the online backup.

Owns the stream a mounted filesystem is captured as, and laying it back. The
stream is a POSIX tar archive (pax headers: nanosecond mtimes, xattrs as
``SCHILY.xattr.NAME``, POSIX ACLs and SELinux labels among them; hard links
as links to the first name) of one filesystem (``-xdev``), cut into chunks so
that an unchanged file gives the same chunks on every run:

- a file larger than ``SMALL`` has its header close the chunk before it and
  its data in chunks of ``CHUNK_SIZE`` from its first byte (the last one
  padded to 512 bytes as tar wants): the data chunks do not move when
  other files change;
- headers and small files are grouped; a group ends after a member whose
  header hashes to 0 mod ``GROUP_DIVISOR`` once the group holds ``GROUP_MIN``
  bytes, or at ``GROUP_MAX`` bytes: a changed file changes its group only.

Each regular file is read through one descriptor, with size, mtime and ctime
compared before and after (``fstat``); a file that changed while read is read
again, up to ``READ_TRIES`` times, and if it still changes its last reading is
kept and the file named in the image (``FileTree.changing``). A file replaced
by a rename (atomic writers) is read whole from the inode that was opened.

Btrfs: every subvolume is captured from a read-only snapshot
(``liferaft-snap-N`` in the top level, deleted after; stale ones from a run
that crashed are deleted first), in one stream, each below its path.

Restore (``write_stream``): the filesystem made anew with the captured
identity (engine/filetree.py), the subvolumes created, the stream fed to GNU
tar. It reads only the mounted tree at capture and writes only the device
given at restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rescue_app.engine import fatattrs, filetree, mounts
from rescue_app.engine.manifest import Filesystem, FileTree, Manifest, PartitionImage
from rescue_app.engine.repository import CHUNK_SIZE, Repository
from rescue_app.errors import CancelledError, CommandError, DiskError, UsageError
from rescue_app.progress import CancelToken
from rescue_app.run import feed, run

log = logging.getLogger("liferaft.filelevel")

STREAM_FORMAT = "tar-pax"
SMALL = 256 * 1024  # files up to this size are grouped with their neighbours
GROUP_MIN = 64 * 1024
GROUP_MAX = CHUNK_SIZE
GROUP_DIVISOR = 16
READ_TRIES = 4
SNAPSHOT_PREFIX = "liferaft-snap-"
BLOCK = tarfile.BLOCKSIZE

# (bytes) -> digest: stores one chunk of the stream (and counts it)
StoreChunk = Callable[[bytes], str]
# (bytes read, path) -> None: progress, and where a rate limit waits
Advance = Callable[[int, str], None]


@dataclass
class _Stream:
    """The tar stream being cut into chunks."""

    store: StoreChunk
    chunks: list[str] = field(default_factory=list)
    group: bytearray = field(default_factory=bytearray)
    length: int = 0
    files: int = 0

    def add(self, data: bytes, *, boundary_key: bytes = b"") -> None:
        """Append to the current group; a member's header may end it."""
        self.group += data
        self.length += len(data)
        key = hashlib.sha256(boundary_key).digest()[0] if boundary_key else 1
        if len(self.group) >= GROUP_MAX or (
            len(self.group) >= GROUP_MIN and key % GROUP_DIVISOR == 0
        ):
            self.cut()

    def cut(self) -> None:
        if self.group:
            self.chunks.append(self.store(bytes(self.group)))
            self.group.clear()

    def whole(self, digests: list[str], length: int) -> None:
        """Chunks already stored (a large file's data) follow the group."""
        self.cut()
        self.chunks += digests
        self.length += length


@dataclass
class _Walk:
    stream: _Stream
    advance: Advance
    cancel: CancelToken | None
    changing: list[str] = field(default_factory=list)
    links: dict[tuple[int, int], str] = field(default_factory=dict)


def _padding(n: int) -> bytes:
    return bytes(-n % BLOCK)


def _member(name: str, st: os.stat_result, path: str) -> tarfile.TarInfo:
    """The tar header of one inode (without its data)."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""  # numeric owners: the restored system's names are its own
    info.mtime = st.st_mtime_ns // 1_000_000_000
    pax = {"mtime": f"{info.mtime}.{st.st_mtime_ns % 1_000_000_000:09d}"}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        names = []
    for attr in sorted(names):
        with contextlib.suppress(OSError):
            value = os.getxattr(path, attr, follow_symlinks=False)
            pax["SCHILY.xattr." + attr] = value.decode("utf-8", "surrogateescape")
    info.pax_headers = pax
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def _read_file(w: _Walk, path: str) -> tuple[os.stat_result, list[bytes] | list[str], int] | None:
    """The file's content as it was while not changing: (its stat, its data
    as bytes pieces when small or as stored chunk digests when large, its
    length). None: the file is gone."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)
    for attempt in range(READ_TRIES):
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return None  # replaced by something else since listed
            size = before.st_size
            pieces: list[bytes] = []
            digests: list[str] = []
            got = 0
            while got < size:
                if w.cancel is not None and w.cancel.cancelled:
                    raise CancelledError("backup cancelled; no image was written")
                piece = os.pread(fd, min(CHUNK_SIZE, size - got), got)
                if not piece:
                    break  # shrank while read: found below
                got += len(piece)
                w.advance(len(piece), path)
                if size > SMALL:
                    if got == size:
                        piece += _padding(size)
                    digests.append(w.stream.store(piece))
                else:
                    pieces.append(piece)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if got == size and _same(before, after):
            return after, (digests if size > SMALL else pieces), size
        log.info("%s changed while read (attempt %d)", path, attempt + 1)
    # Still changing: keep the last reading, made the length the header says.
    w.changing.append(path)
    if size > SMALL:
        if got < size:
            digests += _zero_tail(w, got, size)
        return before, digests, size
    data = b"".join(pieces)
    return before, [data + bytes(size - len(data))], size


def _zero_tail(w: _Walk, got: int, size: int) -> list[str]:
    """Chunks of zeros completing a large file that shrank while read (its
    chunk grid continues from ``got``, which is a whole number of chunks)."""
    out = []
    while got < size:
        n = min(CHUNK_SIZE, size - got)
        got += n
        out.append(w.stream.store(bytes(n) + (_padding(size) if got == size else b"")))
    return out


def _walk(w: _Walk, root: str, prefix: str, skip: Callable[[str], bool] = lambda _: False) -> None:
    """Every inode below ``root`` on its filesystem into the stream, named
    ``prefix``/path, in name order."""
    device = os.lstat(root).st_dev
    stack = [(root, prefix)]
    while stack:
        path, name = stack.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            continue  # recreated by whoever listens on it
        if stat.S_ISREG(st.st_mode):
            _add_file(w, path, name, st)
            continue
        w.stream.add(_header(_member(name, st, path)), boundary_key=name.encode())
        w.stream.files += 1
        if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
            try:
                entries = sorted(os.listdir(path), reverse=True)
            except FileNotFoundError:
                continue
            stack += [
                (os.path.join(path, e), f"{name}/{e}")
                for e in entries
                if not (path == root and skip(e))
            ]


def _add_file(w: _Walk, path: str, name: str, st: os.stat_result) -> None:
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in w.links:
        info = _member(name, st, path)
        info.type, info.size, info.linkname = tarfile.LNKTYPE, 0, w.links[key]
        w.stream.add(_header(info), boundary_key=name.encode())
        return
    read = _read_file(w, path)
    if read is None:
        return
    now, data, size = read
    if now.st_nlink > 1:
        w.links[(now.st_dev, now.st_ino)] = name
    header = _header(_member(name, now, path))
    w.stream.files += 1
    if size > SMALL:
        w.stream.add(header)
        w.stream.whole([str(d) for d in data], size + len(_padding(size)))
    else:
        body = b"".join(d for d in data if isinstance(d, bytes))
        w.stream.add(header + body + _padding(size), boundary_key=header)


def capture_tree(
    mountpoint: str,
    device: str,
    fs: Filesystem,
    store: StoreChunk,
    advance: Advance,
    cancel: CancelToken | None = None,
) -> tuple[list[str], FileTree]:
    """The mounted filesystem of ``device`` at ``mountpoint`` as a stream of
    chunks, and what restore needs besides (identity, subvolumes, the files
    that kept changing)."""
    ident = filetree.read_identity(device, fs)
    w = _Walk(_Stream(store), advance, cancel)
    subvolumes: list[filetree.Subvolume] = []
    default = None
    if fs.type == "btrfs":
        with btrfs_snapshots(device) as (snaps, subvolumes, default):
            for path, snap in snaps:
                _walk(w, snap, "./" + path if path else ".", _snapshot_name)
    else:
        _walk(w, mountpoint, ".")
    w.stream.add(bytes(2 * BLOCK))  # the end of the archive
    w.stream.cut()
    return w.stream.chunks, FileTree(
        format=STREAM_FORMAT,
        length=w.stream.length,
        files=w.stream.files,
        options=ident.options,
        subvolumes=tuple(s.path for s in subvolumes),
        read_only=tuple(s.path for s in subvolumes if s.read_only),
        default_subvolume=default,
        changing=tuple(os.path.relpath(p, mountpoint) for p in w.changing),
        # a tar archive has no place for a FAT's DOS attributes (hidden, system, ...)
        fat_attributes=fatattrs.to_text(fatattrs.from_mounted(mountpoint))
        if fs.type == "vfat"
        else (),
    )


def _snapshot_name(entry: str) -> bool:
    return entry.startswith(SNAPSHOT_PREFIX)


@contextlib.contextmanager
def btrfs_snapshots(
    device: str,
) -> Iterator[tuple[list[tuple[str, str]], list[filetree.Subvolume], str | None]]:
    """Read-only snapshots of the top level and of every subvolume of the
    Btrfs on ``device``: ([(subvolume path, snapshot folder)], the
    subvolumes, the default one); deleted after, whatever happens."""
    with mounts.mounted(
        device, "btrfs", writable=True, options=["subvolid=5"], prefix="liferaft-top-"
    ) as top:
        remove_stale_snapshots(top)
        subvolumes, default = filetree.btrfs_subvolumes(top)
        made: list[str] = []
        try:
            pairs = []
            for i, path in enumerate(["", *(s.path for s in subvolumes)]):
                snap = os.path.join(top, f"{SNAPSHOT_PREFIX}{i}")
                run(["btrfs", "subvolume", "snapshot", "-r", os.path.join(top, path), snap])
                made.append(snap)
                pairs.append((path, snap))
            yield pairs, subvolumes, default
        finally:
            for snap in made:
                run(["btrfs", "subvolume", "delete", snap], check=False)


def remove_stale_snapshots(top: str) -> list[str]:
    """Delete ``liferaft-snap-*`` subvolumes a crashed run left in the top
    level mounted at ``top``; their names."""
    stale = sorted(e for e in os.listdir(top) if _snapshot_name(e))
    for name in stale:
        log.warning("deleting the stale snapshot %s of an earlier backup", name)
        run(["btrfs", "subvolume", "delete", os.path.join(top, name)])
    return stale


# GNU tar unpacking an archive of ours (from stdin) with every piece of metadata
_UNTAR = ["tar", "-x", "-f", "-", "--numeric-owner", "--same-owner", "-p", "--xattrs",
          "--xattrs-include=*", "--delay-directory-restore"]  # fmt: skip


def _archive(
    repo: Repository,
    p: PartitionImage,
    where: str,
    cancel: CancelToken | None,
    stopped: CancelledError,
    read: Advance | None = None,
) -> Iterator[bytes]:
    """The partition's archive, chunk by chunk from the repository (``stopped``
    raised once ``cancel`` is set; ``read`` told each chunk's length)."""
    for i, digest in enumerate(p.chunks):
        if cancel is not None and cancel.cancelled:
            raise stopped
        if digest is not None:
            data = repo.get_chunk(digest, f"{where} stream chunk {i}")
            if read is not None:
                read(len(data), where)
            yield data


def extract_members(
    repo: Repository,
    p: PartitionImage,
    where: str,
    members: list[str],
    into: str,
    *,
    read: Advance | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Unpack ``members`` of the partition's archive (``./etc/fstab``; a folder
    with everything below it; ``.`` for all) into the folder ``into``: the
    archive is read once, through GNU tar. A member the archive does not
    hold: one error naming it."""
    tree = p.tree
    if tree is None or tree.format != STREAM_FORMAT:
        raise DiskError(f"{where}: not a file-level image this liferaft can read")
    stopped = CancelledError(f"extract cancelled while reading {where}; nothing was copied")
    try:
        feed([*_UNTAR, "-C", into, "--", *members], _archive(repo, p, where, cancel, stopped, read))
    except CommandError as exc:
        missing = re.findall(r"tar: \./?(.*): Not found in archive", exc.stderr)
        if missing:
            raise UsageError(
                f"/{missing[0]} is not in {where}",
                hint="check the spelling: paths as on the machine backed up, e.g. /etc/fstab",
            ) from None
        raise DiskError(f"reading the files of {where} failed: {exc}") from None


def identity(p: PartitionImage) -> filetree.FsIdentity:
    assert p.tree is not None
    fs = p.filesystem
    return filetree.FsIdentity(fs.type or "", fs.uuid, fs.label, p.tree.options)


def write_stream(
    repo: Repository,
    m: Manifest,
    p: PartitionImage,
    node: str,
    where: str,
    cancel: CancelToken | None = None,
) -> tuple[filetree.FsIdentity, int]:
    """Make the partition's filesystem anew on ``node`` and lay its files
    back: the identity to finish (filetree.finish_identity) once done, and
    the bytes the new filesystem uses."""
    tree = p.tree
    if tree is None or tree.format != STREAM_FORMAT:
        raise DiskError(f"{where}: not a file-level image this liferaft can lay back")
    ident = identity(p)
    subvolumes = [filetree.Subvolume(s, s in tree.read_only) for s in tree.subvolumes]
    stopped = CancelledError(
        f"restore cancelled while writing the files of {node}: the disk is "
        "only partly written and will not work",
        hint="run the restore again before using this disk",
    )

    def fill(point: str) -> None:
        try:
            feed(_UNTAR + ["-C", point], _archive(repo, p, where, cancel, stopped))
        except CommandError as exc:
            raise DiskError(
                f"writing the files of {where} onto {node} failed: {exc}",
                hint="the target disk may be failing or full; run the restore again",
            ) from None

    attributes = fatattrs.from_text(tree.fat_attributes)
    written = filetree.write_files(
        node, ident, subvolumes, tree.default_subvolume, fill, attributes
    )
    return ident, written


__all__ = [
    "SNAPSHOT_PREFIX",
    "STREAM_FORMAT",
    "btrfs_snapshots",
    "capture_tree",
    "extract_members",
    "identity",
    "remove_stale_snapshots",
    "write_stream",
]
