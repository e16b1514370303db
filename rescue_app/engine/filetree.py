"""A file tree written onto a new filesystem: liferaft's file-level path.

Owns making a filesystem with a given identity (type, UUID, label and the
features recorded in the source's superblock: ext2/3/4 features, inode and
block size; XFS's v5 features; Btrfs's node size and features; a FAT's
type, sector and cluster size from its boot sector), and filling it with a
tree of files with every piece of their metadata (a FAT: through mtools,
unmounted). Mounts go through
engine/mounts.py, commands through run.py; it writes only to the device it is
given. Used by restore onto a smaller disk (engine/restore.py: the tree is an
image partition's files, read-only through a browse mount of the image) and
meant for file-level images (issue 14).

    ident = read_identity(image_file, Filesystem("ext4", uuid, label))
    with image_tree(image_file, "ext4") as tree:      # read-only, Btrfs from its top
        write_tree(tree, "/dev/sdb2", ident)          # mkfs, mount, copy, unmount
    finish_identity("/dev/sdb2", ident)               # Btrfs: its UUID, source gone

The copy is ``cp -a --preserve=all`` (owners, modes, times, hardlinks within
the tree, sparse files, device nodes, symlinks, xattrs, POSIX ACLs, SELinux
labels as their security.selinux xattr): the same tool extract uses, on the
host and in the rescue system (rsync is on neither). Btrfs subvolumes are made
before the copy (cp then fills them), read-only ones are flagged after it,
and the default subvolume is set as the source's. Snapshots share no extents
in the copy: each holds its own data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from rescue_app.engine import fatattrs, mounts
from rescue_app.engine.manifest import Filesystem
from rescue_app.errors import CancelledError, CommandError, DiskError, VerifyError
from rescue_app.progress import CancelToken
from rescue_app.run import run

log = logging.getLogger("liferaft.filetree")

# mtools on a device or image file: no drive geometry to check
_MTOOLS = fatattrs.MTOOLS_ENV

SUPPORTED = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"})
# ext features mke2fs cannot be asked for: states, not choices
_EXT_STATES = {"needs_recovery", "orphan_present"}
# XFS version tokens (xfs_db "version") -> mkfs.xfs -m options (v5 only)
_XFS_META = {
    "FINOBT": "finobt",
    "REFLINK": "reflink",
    "RMAPBT": "rmapbt",
    "INOBTCNT": "inobtcount",
    "BIGTIME": "bigtime",
}
# Btrfs superblock flags -> mkfs.btrfs -O features it can be asked for
_BTRFS_FEATURES = {
    "EXTENDED_IREF": "extref",
    "SKINNY_METADATA": "skinny-metadata",
    "NO_HOLES": "no-holes",
    "MIXED_GROUPS": "mixed-bg",
    "RAID56": "raid56",
    "RAID1C34": "raid1c34",
}


@dataclass(frozen=True)
class FsIdentity:
    """What a new filesystem must share with the one it replaces."""

    type: str
    uuid: str | None
    label: str | None
    options: tuple[str, ...] = ()  # mkfs options for the source's features and sizes


@dataclass(frozen=True)
class Subvolume:
    path: str  # relative to the filesystem's top level
    read_only: bool


def read_identity(device: str, fs: Filesystem, size: int | None = None) -> FsIdentity:
    """The identity of the filesystem on ``device`` (a device or an image
    file, read only): type, UUID and label as captured, features from its
    superblock; ``size``: the smaller partition a FAT is made anew on (see
    fat_options)."""
    kind = fs.type or ""
    if kind not in SUPPORTED:
        raise DiskError(f"{kind or 'no filesystem'} cannot be made anew and filled with files")
    if kind == "xfs":
        options = _xfs_options(device)
    elif kind == "vfat":
        with open(device, "rb") as f:
            options = fat_options(f.read(512), size)
    elif kind == "btrfs":
        options = _btrfs_options(device)
    else:
        options = _ext_options(device)
    return FsIdentity(kind, fs.uuid, fs.label, options)


def _ext_options(device: str) -> tuple[str, ...]:
    fields = {}
    for line in run(["dumpe2fs", "-h", device]).stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    features = [f for f in fields.get("Filesystem features", "").split() if f not in _EXT_STATES]
    out = ["-O", ",".join(["none", *features])]
    if "Block size" in fields:
        out += ["-b", fields["Block size"]]
    if "Inode size" in fields:
        out += ["-I", fields["Inode size"]]
    return tuple(out)


def _xfs_options(device: str) -> tuple[str, ...]:
    text = run(["xfs_db", "-r", "-c", "version", "-c", "sb 0", "-c", "p blocksize", device]).stdout
    match = re.search(r"versionnum \[[^\]]*\] = (\S+)", text)
    tokens = set(match.group(1).split(",")) if match else set()
    size = re.search(r"blocksize = (\d+)", text)
    out = ["-b", f"size={size.group(1)}"] if size else []
    if "CRC" not in tokens:  # a v4 filesystem: none of the v5 features
        return (*out, "-m", "crc=0", "-n", f"ftype={int('FTYPE' in tokens)}")
    meta = ",".join(f"{opt}={int(tok in tokens)}" for tok, opt in _XFS_META.items())
    return (
        *out,
        "-m",
        f"crc=1,{meta}",
        "-n",
        f"ftype={int('FTYPE' in tokens)}",
        "-i",
        f"sparse={int('SPARSE_INODES' in tokens)}",
    )


def fat_options(boot_sector: bytes, size: int | None = None) -> tuple[str, ...]:
    """mkfs.fat options for the FAT whose boot sector (its first 512 bytes)
    is given: FAT type, sector and cluster size, reserved sectors, number of
    FATs, root directory entries (FAT12/16). ``size``: the bytes of a smaller
    partition it is made on; the cluster size is then the largest (up to the
    source's) that keeps the FAT type (an EFI system partition stays FAT32)."""
    if len(boot_sector) < 512 or boot_sector[510:512] != b"\x55\xaa":
        raise DiskError("no FAT boot sector (its 0x55AA signature is missing)")

    def number(start: int, end: int) -> int:
        return int.from_bytes(boot_sector[start:end], "little")

    sector, per_cluster, reserved = number(11, 13), boot_sector[13], number(14, 16)
    fats, root_entries = boot_sector[16], number(17, 19)
    total = number(19, 21) or number(32, 36)  # sectors
    fat_size = number(22, 24) or number(36, 40)  # sectors of one FAT
    if not (sector and per_cluster and fats):
        raise DiskError("the FAT boot sector is damaged (a zero sector or cluster size)")
    root_sectors = (root_entries * 32 + sector - 1) // sector
    clusters = (total - reserved - fats * fat_size - root_sectors) // per_cluster
    # the FAT type is the count of clusters (Microsoft's FAT specification)
    bits = 12 if clusters < 4085 else 16 if clusters < 65525 else 32
    if size is not None:
        per_cluster = _fat_cluster(bits, size // sector, sector, per_cluster, reserved,
                                   fats * bits / 8, root_sectors)  # fmt: skip
    out = ["-F", str(bits), "-S", str(sector), "-s", str(per_cluster), "-R", str(reserved),
           "-f", str(fats)]  # fmt: skip
    return (*out, "-r", str(root_entries)) if bits != 32 else tuple(out)


# The fewest clusters mkfs.fat makes a FAT16 / FAT32 of (MIN_CLUST_16/32 in
# dosfstools), with a margin for its alignment of the data area to a cluster.
_FAT_LEAST = {16: 4087 + 64, 32: 65529 + 64}


def _fat_cluster(
    bits: int, sectors: int, sector: int, most: int, reserved: int, fat_bytes: float, root: int
) -> int:
    """Sectors per cluster for a FAT``bits`` of ``sectors``: the largest power
    of two up to ``most`` that leaves it enough clusters to stay that type
    (``fat_bytes``: bytes of FAT per cluster, all FATs). DiskError if none."""
    per_cluster = most
    while per_cluster >= 1:
        room = (sectors - reserved - root - per_cluster) * sector  # bytes of FAT and data
        clusters = room // (per_cluster * sector + fat_bytes)
        if clusters >= _FAT_LEAST.get(bits, 0):
            return per_cluster
        per_cluster //= 2
    raise DiskError(
        f"a FAT{bits} cannot be made in {sectors * sector} bytes: too few clusters even "
        f"of {sector} bytes",
        hint="choose a larger disk, or let the vfat partition keep its size",
    )


def _btrfs_options(device: str) -> tuple[str, ...]:
    text = run(["btrfs", "inspect-internal", "dump-super", device]).stdout
    flags = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b", text))
    out = []
    for key in ("nodesize", "sectorsize"):
        match = re.search(rf"^{key}\s+(\d+)", text, re.MULTILINE)
        if match:
            out += [f"--{key}", match.group(1)]
    features = [name if flag in flags else f"^{name}" for flag, name in _BTRFS_FEATURES.items()]
    # zoned and raid features cannot be turned off explicitly on every version
    features = [f for f in features if f not in ("^raid56", "^raid1c34")]
    out += ["--features", ",".join(features)]
    fst = "FREE_SPACE_TREE" in flags
    out += ["--runtime-features", "free-space-tree" if fst else "^free-space-tree"]
    return tuple(out)


def make_filesystem(node: str, ident: FsIdentity, uuid: str | None = None) -> None:
    """A new, empty filesystem of ``ident`` on ``node`` (erases it); ``uuid``
    instead of ``ident.uuid`` when given."""
    fs_uuid = uuid or ident.uuid
    label = ident.label
    if ident.type in ("ext2", "ext3", "ext4"):
        argv = ["mke2fs", "-F", "-q", "-t", ident.type, *ident.options]
        argv += ["-U", fs_uuid] if fs_uuid else []
        argv += ["-L", label] if label else []
    elif ident.type == "xfs":
        argv = ["mkfs.xfs", "-f", "-q", *ident.options]
        argv += ["-m", f"uuid={fs_uuid}"] if fs_uuid else []
        argv += ["-L", label] if label else []
    elif ident.type == "btrfs":
        argv = ["mkfs.btrfs", "-f", "-q", *ident.options]
        argv += ["-U", fs_uuid] if fs_uuid else []
        argv += ["-L", label] if label else []
    elif ident.type == "vfat":
        # the volume ID as blkid shows it (ABCD-1234) is what -i takes without the dash
        argv = ["mkfs.fat", *ident.options]
        argv += ["-i", fs_uuid.replace("-", "")] if fs_uuid else []
        argv += ["-n", label] if label else []
    else:
        raise DiskError(f"{ident.type} cannot be made anew and filled with files")
    run([*argv, node])


@contextlib.contextmanager
def image_tree(image_file: str, fstype: str) -> Iterator[str]:
    """The files of the filesystem in ``image_file``, read-only on a
    temporary folder (Btrfs from its top level: every subvolume below it). A
    FAT is not mounted (the kernel may have no vfat driver): mtools copies
    its files into a temporary folder (an EFI system partition's few MiB)."""
    if fstype == "vfat":
        with tempfile.TemporaryDirectory(prefix="liferaft-fat-") as folder:
            run(["mcopy", "-s", "-m", "-Q", "-i", image_file, "::", folder], env=_MTOOLS)
            yield folder
        return
    loop = mounts.attach_loop(image_file)
    try:
        extra = ["subvolid=5"] if fstype == "btrfs" else []
        with mounts.mounted(loop, fstype, options=extra, prefix="liferaft-tree-") as point:
            yield point
    finally:
        mounts.detach_loop(loop)


def write_tree(
    source: str,
    node: str,
    ident: FsIdentity,
    *,
    cancel: CancelToken | None = None,
    fat_attributes: Mapping[str, int] | None = None,
) -> int:
    """Make ``ident`` anew on ``node`` and copy the tree at ``source`` into it
    with all its metadata; returns the bytes the new filesystem uses. A Btrfs
    gets a temporary UUID here (the kernel keeps one filesystem per UUID, and
    the source may be mounted with it): ``finish_identity`` gives it the real
    one once the source is gone. A FAT's entries then get ``fat_attributes``
    (fatattrs.from_image: a folder drops them)."""
    subvolumes: list[Subvolume] = []
    default: str | None = None
    if ident.type == "vfat":  # the tree is a temporary folder already (image_tree)
        make_filesystem(node, ident)
        return _fill_fat(node, source, fat_attributes or {})
    if ident.type == "btrfs":
        subvolumes, default = btrfs_subvolumes(source)
    return write_files(
        node, ident, subvolumes, default, lambda point: copy_tree(source, point, cancel=cancel)
    )


def write_files(
    node: str,
    ident: FsIdentity,
    subvolumes: Sequence[Subvolume],
    default: str | None,
    fill: Callable[[str], None],
    fat_attributes: Mapping[str, int] | None = None,
) -> int:
    """Make ``ident`` anew on ``node``, its Btrfs subvolumes in it, and let
    ``fill`` write the files into the folder it is mounted on (write_tree
    copies a tree, engine/filelevel.py unpacks a file-level image); returns
    the bytes the new filesystem uses; a FAT's entries get ``fat_attributes``."""
    if ident.type == "vfat":
        return _write_fat(node, ident, fill, fat_attributes or {})
    make_filesystem(node, ident, str(uuidlib.uuid4()) if ident.type == "btrfs" else None)
    # nouuid: the source XFS, mounted from the image, has the same UUID
    extra = ["nouuid"] if ident.type == "xfs" else []
    with mounts.mounted(
        node, ident.type, writable=True, options=extra, prefix="liferaft-files-"
    ) as point:
        for sub in sorted(subvolumes, key=lambda s: s.path.count("/")):
            where = os.path.join(point, sub.path)
            os.makedirs(os.path.dirname(where), exist_ok=True)
            run(["btrfs", "subvolume", "create", where])
        fill(point)
        for sub in subvolumes:
            if sub.read_only:
                run(
                    ["btrfs", "property", "set", "-ts", os.path.join(point, sub.path), "ro", "true"]
                )
        if default is not None:
            ids = {path: sid for sid, path in _subvolume_list(point)}
            run(["btrfs", "subvolume", "set-default", ids[default], point])
        run(["sync", "-f", point])
        st = os.statvfs(point)
        return (st.f_blocks - st.f_bfree) * st.f_frsize


def _write_fat(
    node: str, ident: FsIdentity, fill: Callable[[str], None], attributes: Mapping[str, int]
) -> int:
    """A FAT (an EFI system partition) made anew and filled without mounting
    it: ``fill`` writes the files into a temporary folder, mtools copies them
    in (names, directories, modification times; a FAT has no owners, modes or
    links), then the DOS attributes set. A kernel without vfat writes it as
    well. Returns the bytes used."""
    make_filesystem(node, ident)
    with tempfile.TemporaryDirectory(prefix="liferaft-fat-") as folder:
        fill(folder)
        return _fill_fat(node, folder, attributes)


def _fill_fat(node: str, folder: str, attributes: Mapping[str, int]) -> int:
    """The files below ``folder`` copied onto the new FAT on ``node`` with
    mtools, their DOS attributes set; returns the bytes it uses."""
    top = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    if top:
        run(["mcopy", "-s", "-m", "-Q", "-i", node, *top, "::/"], env=_MTOOLS)
    fatattrs.apply(node, attributes)
    text = run(["fsck.fat", "-n", "-v", node], check=False).stdout
    used = re.search(r"(\d+)/\d+ clusters", text)
    size = re.search(r"(\d+) bytes per cluster", text)
    return int(used.group(1)) * int(size.group(1)) if used and size else 0


def copy_tree(source: str, dest: str, *, cancel: CancelToken | None = None) -> None:
    """Everything below ``source`` into the folder ``dest`` (merged with what
    is there), with owners, modes, times, hardlinks, holes, device nodes,
    xattrs, ACLs and SELinux labels; ``dest`` itself takes ``source``'s."""
    cancelled = CancelledError(
        f"restore cancelled while copying files into {dest}: the disk is only "
        "partly written and will not work",
        hint="run the restore again before using this disk",
    )
    if cancel is not None and cancel.cancelled:
        raise cancelled
    try:
        run(["cp", "-a", "--preserve=all", "--", source + "/.", dest + "/"], cancel=cancel)
    except CommandError as exc:
        if cancel is not None and cancel.cancelled:  # cp was killed for it
            raise cancelled from None
        raise DiskError(
            f"copying the files onto the new filesystem failed: {exc.stderr.strip() or exc}",
            hint="the target disk may be failing or full; run the restore again",
        ) from None


def check_filesystem(node: str, fstype: str) -> None:
    """The filesystem's own checker, changing nothing (a file-level restore's
    read-back: its blocks differ from the image's, its files were copied by
    cp, which stops at the first read or write error); VerifyError if unclean."""
    checker = {
        "xfs": ["xfs_repair", "-n", node],
        "btrfs": ["btrfs", "check", "--readonly", node],
        "vfat": ["fsck.fat", "-n", node],
    }.get(fstype, ["e2fsck", "-f", "-n", node])
    proc = run(checker, check=False)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        raise VerifyError(
            f"verification failed: {checker[0]} finds the new {fstype} on {node} unclean"
            + (f" ({lines[-1].strip()})" if lines else ""),
            hint="the target disk may be failing; restore again or use another disk",
        )


def finish_identity(node: str, ident: FsIdentity) -> None:
    """Give the filesystem on ``node`` its real UUID where write_tree could
    not (Btrfs); nothing for the others. The source must be unmounted."""
    if ident.type != "btrfs" or not ident.uuid:
        return
    run(["btrfs", "device", "scan", "--forget", node], check=False)
    # btrfstune asks libblkid whether another device holds the UUID; libblkid
    # trusts its cache file for two seconds, which still lists the image's
    # loop device (detached a moment ago): no cache file, only devices now.
    run(["btrfstune", "-f", "-U", ident.uuid, node], env={"BLKID_FILE": "/dev/null"})


def btrfs_subvolumes(root: str) -> tuple[list[Subvolume], str | None]:
    """The subvolumes below ``root`` (a Btrfs mounted at its top level) and
    the path of the default one (None: the top level itself)."""
    every = _subvolume_list(root)
    read_only = {path for _, path in _subvolume_list(root, "-r")}
    subs = [Subvolume(path, path in read_only) for _, path in every]
    text = run(["btrfs", "subvolume", "get-default", root]).stdout
    match = re.search(r" path (.+)$", text.strip())
    return subs, match.group(1) if match else None


def _subvolume_list(root: str, *flags: str) -> list[tuple[str, str]]:
    """(ID, path) of the subvolumes ``btrfs subvolume list`` shows."""
    out = []
    for line in run(["btrfs", "subvolume", "list", *flags, root]).stdout.splitlines():
        match = re.match(r"ID (\d+) .* path (.+)$", line.strip())
        if match:
            out.append((match.group(1), match.group(2)))
    return out


__all__ = [
    "SUPPORTED",
    "FsIdentity",
    "Subvolume",
    "btrfs_subvolumes",
    "check_filesystem",
    "copy_tree",
    "finish_identity",
    "image_tree",
    "make_filesystem",
    "read_identity",
    "write_files",
    "write_tree",
]
