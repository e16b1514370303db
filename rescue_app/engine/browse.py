"""Browse and extract: an image's files, read-only, without restoring it.

Owns the layering of a browse mount and its order of setting up and taking
down (mounts and loop devices themselves are engine/mounts.py's):

    MOUNTPOINT                    FUSE (engine/imagefs.py), served by a thread of its own
    MOUNTPOINT/disk1/p2/p2.img    -> losetup --read-only      (mounts.attach_loop)
    MOUNTPOINT/disk1/p2/files     <- mount -o ro,noload|norecovery of that loop device
    MOUNTPOINT/lvm/vg0/root/root.img, .../files   the same for an LVM logical volume
    MOUNTPOINT/disk1/p3/files     a partition captured file by file (``liferaft
                                  backup``): served by the FUSE thread itself from
                                  its archive (engine/archivetree.py); no image file

The kernel reads a partition's filesystem through the loop device, which
reads p2.img, which the FUSE thread assembles from chunks: the thread that
runs ``mount`` waits on the kernel, never on itself. Taking down runs the
other way: the filesystems, the loop devices, then the FUSE folder (which
ends the FUSE thread). ``unmount_image`` does the same from another process
(``liferaft umount``), also after the mounting process died.

Extract mounts one partition on a temporary folder and copies with
``cp -a --preserve=all`` (modes, owners, times, symlinks, hardlinks, xattrs,
ACLs); from a partition captured file by file, GNU tar unpacks its archive.
Nothing here writes to an image or a repository.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from rescue_app.engine import filelevel, mounts
from rescue_app.engine.archivetree import index_archive
from rescue_app.engine.imagefs import (
    DEFAULT_CACHE_BYTES,
    FUSE_TYPE,
    FuseServer,
    ImageFS,
    VolumeFile,
)
from rescue_app.engine.manifest import LogicalVolumeImage, Manifest, Method, PartitionImage
from rescue_app.engine.repository import Repository
from rescue_app.engine.units import human_size
from rescue_app.errors import (
    CancelledError,
    CommandError,
    DiskError,
    LiferaftError,
    NotRootError,
    UsageError,
)
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from rescue_app.run import run

log = logging.getLogger("liferaft.browse")

# Filesystems whose files a browse mount shows (mounts.mount knows how: the
# kernel, or ntfs-3g and exfat-fuse; vfat needs the kernel's driver).
MOUNTABLE = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "exfat"})


@dataclass(frozen=True)
class BrowsePartition:
    """One volume of an image (a partition, or an LVM logical volume) as a
    browse mount shows it. Paths are relative to the mount point."""

    disk: int  # 1-based, as "disk 1" in the rest of liferaft; 0 for a logical volume
    number: int  # 0: a disk without a partition table, or a logical volume
    fstype: str | None
    label: str | None
    size: int
    used_bytes: int
    folder: str  # "disk1/p2"
    image: str  # "disk1/p2/p2.img"; "" for a partition captured file by file
    files: str | None  # "disk1/p2/files" when its filesystem can be mounted
    swap: bool = False
    lv: str = ""  # "vg0/root" for a logical volume
    volume: VolumeFile | None = None  # what p2.img serves
    archive: PartitionImage | None = None  # captured file by file: its files/ come from here

    def describe(self) -> str:
        fs = self.fstype or "no filesystem"
        label = f" '{self.label}'" if self.label else ""
        return f"{fs}{label}, {human_size(self.size)}, {human_size(self.used_bytes)} used"


def browse_partitions(manifest: Manifest) -> list[BrowsePartition]:
    """The volumes a browse mount shows (pure): partitions in disk order
    (``disk1/p2``; ``disk1/whole`` for a disk without a partition table),
    then LVM logical volumes (``lvm/vg0/root``). An extended partition's
    container and an LVM physical volume hold no data of their own there.
    A partition captured file by file shows its files and no image file."""
    out = []
    ref, cs = manifest.ref, manifest.chunk_size
    for disk in manifest.disks:
        for p in disk.partitions:
            if p.method in (Method.NONE, Method.LVM_PV, Method.MD_MEMBER):
                continue
            folder = f"disk{disk.index + 1}/" + (f"p{p.number}" if p.number else "whole")
            if p.method == Method.FILES:
                out.append(_archived(p, folder, disk.index + 1))
                continue
            name = f"p{p.number}.img" if p.number else "whole.img"
            what = f"partition {p.number}" if p.number else "whole disk"
            where = f"image {ref}, disk {disk.index + 1} {what}"
            out.append(_shown(p, where, cs, folder, name, disk=disk.index + 1, number=p.number))
    for vg in manifest.volume_groups:
        for lv in vg.lvs:
            if lv.hidden or lv.segtype == "thin-pool":
                continue  # a pool's parts, and the pool itself, hold no filesystem
            folder = f"lvm/{vg.name}/{lv.name}"
            where = f"image {ref}, logical volume {vg.name}/{lv.name}"
            out.append(_shown(lv, where, cs, folder, f"{lv.name}.img", lv=f"{vg.name}/{lv.name}"))
    return out


def _shown(
    v: PartitionImage | LogicalVolumeImage,
    where: str,
    chunk_size: int,
    folder: str,
    name: str,
    *,
    disk: int = 0,
    number: int = 0,
    lv: str = "",
) -> BrowsePartition:
    """A captured partition or logical volume as the mount shows it."""
    fstype = v.filesystem.type
    return BrowsePartition(
        disk=disk,
        number=number,
        fstype=fstype,
        label=v.filesystem.label,
        size=v.size,
        used_bytes=v.used_bytes,
        folder=folder,
        image=f"{folder}/{name}",
        files=f"{folder}/files" if fstype in MOUNTABLE else None,
        swap=v.method == Method.SWAP,
        lv=lv,
        volume=VolumeFile(where, v.size, v.used_bytes, v.chunks, chunk_size),
    )


def _archived(p: PartitionImage, folder: str, disk: int) -> BrowsePartition:
    """A partition captured file by file as the mount shows it."""
    return BrowsePartition(
        disk=disk,
        number=p.number,
        fstype=p.filesystem.type,
        label=p.filesystem.label,
        size=p.size,
        used_bytes=p.used_bytes,
        folder=folder,
        image="",
        files=f"{folder}/files",
        archive=p,
    )


def select_partition(
    manifest: Manifest, spec: str | None, parts: Sequence[BrowsePartition] | None = None
) -> BrowsePartition:
    """The partition ``--partition`` names: ``N`` (on the image's only disk,
    or the only disk with a partition N), ``diskD/pN`` or a logical volume
    ``VG/LV``; without a spec, the image's only volume with files."""
    parts = list(parts if parts is not None else browse_partitions(manifest))
    with_files = [p for p in parts if p.files]
    listing = ", ".join(f"{p.folder} ({p.fstype})" for p in with_files) or "none"
    if spec is None:
        if len(with_files) == 1:
            return with_files[0]
        raise UsageError(
            f"image {manifest.ref} has {len(with_files)} partitions with files: {listing}",
            hint="choose one with --partition N (or diskD/pN)",
        )
    text = spec.strip().strip("/")
    if text.isdigit():
        found = [p for p in parts if p.number == int(text) and not p.lv]
    else:
        found = [p for p in parts if text in (p.folder, p.lv)]
    if len(found) > 1:
        raise UsageError(
            f"image {manifest.ref} has a partition {text} on several disks",
            hint=f"name it as diskD/p{text}: {listing}",
        )
    if not found:
        raise UsageError(
            f"image {manifest.ref} has no partition {spec!r}",
            hint=f"partitions with files: {listing}",
        )
    part = found[0]
    if not part.files:
        raise UsageError(
            f"partition {part.folder} of image {manifest.ref} holds "
            f"{part.fstype or 'no filesystem'}, whose files liferaft cannot show",
            hint=f"its raw image is {part.image} in 'liferaft mount'; partitions with files: "
            f"{listing}",
        )
    return part


def check_mount_point(point: str) -> str:
    """The absolute path of ``point`` if a browse mount may go there: an
    existing, empty folder that is not mounted on. One clear error if not."""
    path = os.path.realpath(point)  # as /proc/self/mountinfo will show it
    if not os.path.lexists(path):
        raise UsageError(
            f"mount point {point} does not exist", hint=f"create it first: mkdir -p {point}"
        )
    if not os.path.isdir(path):
        raise UsageError(f"mount point {point} is not a folder", hint="give an empty folder")
    if mounts.is_mount_point(path):
        raise UsageError(
            f"something is already mounted on {point}",
            hint=f"unmount it first (liferaft umount {point}) or choose another folder",
        )
    if os.listdir(path):
        raise UsageError(
            f"mount point {point} is not empty", hint="give an empty folder, e.g. mkdir /mnt/image"
        )
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            f"{what} needs root (FUSE, loop devices and mounts)",
            hint="run it with sudo, or as root",
        )


@dataclass(frozen=True)
class DirEntry:
    name: str
    kind: str  # "dir", "file", "symlink" or "other"
    size: int
    mode: int
    mtime: float


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "other"


class ImageMount:
    """A live browse mount; ``close()`` (or leaving the ``with``) takes it down."""

    def __init__(self, repo: Repository, manifest: Manifest, point: str, cache_bytes: int) -> None:
        self.repo = repo
        self.manifest = manifest
        self.point = point
        self.partitions = browse_partitions(manifest)
        self.fs = ImageFS(
            repo,
            [(p.image, p.volume) for p in self.partitions if p.volume is not None],
            manifest.created,
            cache_bytes,
        )
        self.server = FuseServer(self.fs, point)
        self.loops: list[str] = []
        self.mounted: dict[str, str] = {}  # partition folder -> its files/ on this machine
        self.notes: list[str] = []  # partitions whose files could not be shown, and why
        self._closed = False
        self._lock = threading.Lock()

    # -- setting up --------------------------------------------------------
    def _start(self, only: Sequence[BrowsePartition] | None) -> None:
        wanted = [p for p in (only if only is not None else self.partitions) if p.files]
        archived = [p for p in wanted if p.archive is not None]
        wanted = [p for p in wanted if p.archive is None]
        archived = [p for p in archived if self._index_archive(p)]
        for p in wanted:
            self.fs.add_files_dir(p.folder)
        try:
            self.server.start()
        except LiferaftError:
            if mounts.is_mount_point(self.point):
                mounts.umount(self.point)
            raise
        for p in wanted:
            self._mount_files(p)
        for p in archived:
            self.mounted[p.folder] = os.path.join(self.point, f"{p.folder}/files")

    def _index_archive(self, p: BrowsePartition) -> bool:
        """Read the headers of a file-level partition's archive; its files/
        folder is then served from them (engine/archivetree.py). False (and
        a note) if the archive cannot be read."""
        assert p.archive is not None
        where = f"image {self.manifest.ref}, disk {p.disk} partition {p.number}"
        chunks = p.archive.chunks
        started = time.monotonic()

        def get(i: int) -> bytes:
            digest = chunks[i]
            if digest is None:
                raise DiskError(f"{where}: archive chunk {i} is not stored")
            return self.fs.cache.get(digest, f"{where}, archive chunk {i}")

        try:
            tree = index_archive(chunks, get)
        except LiferaftError as exc:
            self.notes.append(f"{p.folder} ({p.fstype}): its files cannot be shown ({exc.message})")
            log.info("%s", self.notes[-1])
            return False
        log.info(
            "%s: %d entries indexed from %d of %d archive chunks in %.1f s",
            where, len(tree.entries), tree.fetched, len(chunks), time.monotonic() - started,
        )  # fmt: skip
        self.fs.add_archive(p.folder, where, chunks, tree)
        return True

    def _mount_files(self, p: BrowsePartition) -> None:
        assert p.files is not None
        loop = None
        try:
            loop = mounts.attach_loop(os.path.join(self.point, p.image))
            self.loops.append(loop)
            target = os.path.join(self.point, p.files)
            mounts.mount(loop, target, fstype=p.fstype, options=mounts.options_for(p.fstype, False))
            self.mounted[p.folder] = target
        except LiferaftError as exc:
            why = exc.message
            if isinstance(exc, CommandError) and exc.stderr.strip():
                # "mount: /mnt/x/disk1/p3/files: unknown filesystem type 'vfat'." and
                # then a line about dmesg: the first line, without the prefix.
                why = exc.stderr.strip().splitlines()[0].strip()
                why = why.split(f"{os.path.join(self.point, p.files)}: ", 1)[-1].rstrip(".")
            self.notes.append(
                f"{p.folder} ({p.fstype}): its files cannot be shown ({why}); {p.image} is there"
            )
            log.info("%s", self.notes[-1])  # the caller shows the notes
            if loop is not None:
                mounts.detach_loop(loop)
                self.loops.remove(loop)
            self.fs.hide(p.folder)

    # -- using -------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """The FUSE folder is still served (False once someone unmounted it)."""
        return self.server.alive

    def files_root(self, part: BrowsePartition) -> str:
        root = self.mounted.get(part.folder)
        if root is None:
            raise UsageError(
                f"the files of {part.folder} ({part.fstype or 'no filesystem'}) of image "
                f"{self.manifest.ref} are not available",
                hint="; ".join(n for n in self.notes if n.startswith(part.folder + " "))
                or "only its raw image can be read",
            )
        return root

    def list_dir(self, part: BrowsePartition, rel: str = "") -> list[DirEntry]:
        """The entries of the folder ``rel`` of a partition, folders first."""
        root = self.files_root(part)
        folder = os.path.realpath(_inside(root, rel, part, self.manifest, follow=True))
        out = []
        try:
            with os.scandir(folder) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    out.append(
                        DirEntry(e.name, _kind(st.st_mode), st.st_size, st.st_mode, st.st_mtime)
                    )
        except OSError as exc:
            raise LiferaftError(
                f"cannot list {rel or '/'} of {part.folder}: {exc.strerror}",
                hint="an input/output error means a damaged or unreachable chunk (see the log)"
                if exc.errno == errno.EIO
                else "",
            ) from None
        return sorted(out, key=lambda d: (d.kind != "dir", d.name))

    def copy_out(
        self,
        part: BrowsePartition,
        paths: Sequence[str],
        to: str,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> ExtractResult:
        """Copy ``paths`` of ``part`` (``/etc/fstab``) into the folder ``to``
        with all their metadata, from this mount (the UI's "Copy marked files":
        no second mount of the same filesystems, which XFS would refuse)."""
        if not paths:
            raise UsageError("no path to copy", hint="name files or folders of the partition")
        started = time.monotonic()
        root = self.files_root(part)
        sources = [_inside(root, p, part, self.manifest) for p in paths]
        _copy_names(paths)
        dest = check_destination(to, "destination")
        total = sum(_tree_bytes(s) for s in sources)
        os.makedirs(dest, exist_ok=True)
        done = 0
        for given, source in zip(paths, sources, strict=True):
            if cancel is not None and cancel.cancelled:
                raise CancelledError(f"extract cancelled; {given} and later paths not copied")
            size = _tree_bytes(source)
            copied = os.path.join(dest, os.path.basename(source))
            with _watching_copy(copied, given, done, total, size, progress):
                # -a: recursive, symlinks as symlinks, hardlinks kept among
                # what one call copies; --preserve=all adds xattrs and ACLs.
                try:
                    run(["cp", "-a", "--preserve=all", "--", source, dest + "/"], cancel=cancel)
                except CommandError:
                    # Ctrl-C reaches cp too (and the UI's cancel stops it):
                    # say cancelled, not that cp failed.
                    if cancel is not None and cancel.cancelled:
                        raise CancelledError(
                            f"extract cancelled; {given} is only partly copied to {dest}"
                        ) from None
                    raise
            done += size
            progress(Progress("extract", given, done, total, size, size))
        return ExtractResult(
            partition=part.folder,
            copied=tuple(paths),
            to=dest,
            bytes=done,
            seconds=time.monotonic() - started,
        )

    def tree_bytes(self, part: BrowsePartition, rel: str) -> int:
        """The bytes of the regular files at or below ``rel`` of ``part``."""
        return _tree_bytes(_inside(self.files_root(part), rel, part, self.manifest))

    def wait(self, stop: threading.Event) -> None:
        """Until ``stop`` is set or the mount is ended from outside."""
        while not stop.wait(0.5) and self.alive:
            pass

    # -- taking down -------------------------------------------------------
    def close(self) -> None:
        """Take the mount down; a second caller (the UI's exit while its worker
        is closing) returns once it is down, not before."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            take_down(self.point, self.loops)
            self.server.join(10.0)
            self.fs.close()

    def __enter__(self) -> ImageMount:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def mount_image(
    repo: Repository,
    manifest: Manifest,
    point: str,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    only: Sequence[BrowsePartition] | None = None,
) -> ImageMount:
    """Mount ``manifest``'s image read-only on the empty folder ``point``;
    ``only``: mount the files of these partitions (default every one)."""
    require_root("mounting an image")
    path = check_mount_point(point)
    if cache_bytes < manifest.chunk_size:
        raise UsageError(
            f"a cache of {human_size(cache_bytes)} cannot hold one chunk "
            f"({human_size(manifest.chunk_size)})",
            hint=f"give a cache of at least {manifest.chunk_size >> 20} MiB",
        )
    m = ImageMount(repo, manifest, path, cache_bytes)
    try:
        m._start(only)
    except BaseException:
        m.close()
        raise
    return m


def take_down(point: str, loops: Sequence[str] = ()) -> None:
    """Unmount everything of a browse mount on ``point``: the filesystems
    below it, the loop devices over its files, the FUSE folder."""
    for inner in mounts.mounts_under(point):
        if inner != point:
            mounts.umount(inner)
    for loop in sorted({*loops, *mounts.loops_backed_under(point)}):
        mounts.detach_loop(loop)
    if mounts.is_mount_point(point):
        mounts.umount(point)


def unmount_image(point: str) -> None:
    """End the browse mount on ``point`` (``liferaft umount``), whichever
    process serves it, or clean up after one that died."""
    require_root("unmounting an image")
    path = os.path.realpath(point)
    kind = mounts.fstype_of(path)
    if kind is None:
        raise UsageError(f"nothing is mounted on {point}", hint="give the folder of a browse mount")
    if kind != FUSE_TYPE:
        raise UsageError(
            f"{point} is not a liferaft image mount (it holds {kind})",
            hint="unmount it with umount",
        )
    take_down(path)
    # The serving process sees its FUSE folder go and ends by itself.
    for _ in range(50):
        if not mounts.is_mount_point(path):
            return
        time.sleep(0.1)


# -- extract ---------------------------------------------------------------


@dataclass(frozen=True)
class ExtractResult:
    partition: str  # "disk1/p2"
    copied: tuple[str, ...]  # the paths as given
    to: str
    bytes: int
    seconds: float


def extract(
    repo: Repository,
    manifest: Manifest,
    paths: Sequence[str],
    to: str,
    *,
    partition: str | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> ExtractResult:
    """Copy ``paths`` (inside the partition, e.g. ``/etc/fstab``) into the
    folder ``to`` with all their metadata. A path that is not there: one
    error naming it and the partition, nothing written."""
    require_root("extracting files from an image")
    if not paths:
        raise UsageError("no path to extract", hint="name files or folders of the partition")
    part = select_partition(manifest, partition)
    if part.archive is not None:  # GNU tar reads its archive once: faster, every hard link
        return _extract_archive(repo, manifest, part.folder, part.archive, paths, to, progress,
                                cancel)  # fmt: skip
    dest = check_destination(to)
    point = tempfile.mkdtemp(prefix="liferaft-extract-")
    try:
        with mount_image(repo, manifest, point, cache_bytes=cache_bytes, only=[part]) as m:
            return m.copy_out(part, paths, dest, progress=progress, cancel=cancel)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(point)


def _extract_archive(
    repo: Repository,
    manifest: Manifest,
    folder: str,
    p: PartitionImage,
    paths: Sequence[str],
    to: str,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> ExtractResult:
    """Extract from a partition captured file by file: its archive is read
    once through GNU tar into a folder made in ``to``, then each path moved
    into ``to`` (nothing is left there when a path is missing or on cancel)."""
    started = time.monotonic()
    _copy_names(paths)
    dest = check_destination(to)
    rels = [os.path.normpath("/" + given).lstrip("/") for given in paths]
    if "" in rels:
        raise UsageError("extract copies files and folders of a partition, not its top",
                         hint="name the folders below / to copy")  # fmt: skip
    for rel in rels:
        if os.path.lexists(os.path.join(dest, os.path.basename(rel))):
            raise UsageError(
                f"{os.path.join(dest, os.path.basename(rel))} exists already",
                hint="extract into a folder that does not hold it",
            )
    where = f"partition {folder} ({p.filesystem.type}) of image {manifest.ref}"
    length = p.tree.length if p.tree else 0
    done = 0

    def read(n: int, _where: str) -> None:
        nonlocal done
        done += n
        progress(Progress("extract", where, done, length, done, length))

    os.makedirs(dest, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".liferaft-extract-", dir=dest)
    try:
        members = [f"./{rel}" for rel in rels]
        filelevel.extract_members(repo, p, where, members, staging, read=read, cancel=cancel)
        size = _tree_bytes(staging)
        for rel in rels:
            os.replace(os.path.join(staging, rel), os.path.join(dest, os.path.basename(rel)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExtractResult(folder, tuple(paths), dest, size, time.monotonic() - started)


def _copy_names(paths: Sequence[str]) -> None:
    """Each path is copied under its last name: two with the same one clash."""
    names: dict[str, str] = {}
    for given in paths:
        name = os.path.basename(os.path.normpath("/" + given))
        if name in names:
            raise UsageError(
                f"{names[name]} and {given} would both be copied as {name}",
                hint="copy them in two goes, or into two folders",
            )
        names[name] = given


@contextlib.contextmanager
def _watching_copy(
    copied: str, item: str, before: int, total: int, size: int, progress: ProgressCallback
) -> Iterator[None]:
    """While cp copies one path: its bytes so far (what has arrived at
    ``copied``), reported every second."""
    stop = threading.Event()

    def watch() -> None:
        progress(Progress("extract", item, before, total, 0, size))
        while not stop.wait(1.0):
            now = 0
            with contextlib.suppress(OSError):  # not there yet
                now = min(size, _tree_bytes(copied))
            progress(Progress("extract", item, before + now, total, now, size))

    watcher = threading.Thread(target=watch, name="liferaft-extract-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def check_destination(to: str, what: str = "--to") -> str:
    """``to`` as an absolute path if files can be copied there (``what``
    names it in the error: the CLI's option, the UI's "destination")."""
    if not to.strip():
        raise UsageError(f"{what} is empty", hint="give a folder to copy into")
    dest = os.path.abspath(to)
    if os.path.lexists(dest):
        if not os.path.isdir(dest):
            raise UsageError(f"{what} {to} is not a folder", hint="give a folder to copy into")
        if not os.access(dest, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {to} is not writable", hint="choose another folder")
        return dest
    parent = dest
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{what} {to} cannot be created ({parent} is not a writable folder)",
            hint="choose another folder",
        )
    return dest


def _inside(
    root: str, given: str, part: BrowsePartition, manifest: Manifest, *, follow: bool = False
) -> str:
    """``given`` (a path of the partition) on this machine, below ``root``;
    a symlink on the way (and, with ``follow``, the path itself) must not
    lead out of the partition."""
    rel = os.path.normpath("/" + given).lstrip("/")
    where = f"partition {part.folder} ({part.fstype}) of image {manifest.ref}"
    if not rel:
        return root
    path = os.path.join(root, rel)
    resolved = os.path.realpath(path if follow else os.path.dirname(path))
    if resolved != root and not resolved.startswith(root + "/"):
        raise UsageError(
            f"{given}: a symlink on the way leads out of {where}",
            hint="give the path the symlink points to",
        )
    if not os.path.lexists(path):
        raise UsageError(
            f"{given} is not in {where}", hint="look with 'liferaft mount', or check the spelling"
        )
    return path


def _tree_bytes(path: str) -> int:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                s = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(s.st_mode):
                    total += s.st_size
    return total
