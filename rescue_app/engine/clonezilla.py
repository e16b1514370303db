"""Clonezilla image folders, read-only: listed, restored and imported like our own images.

Owns what the files of a Clonezilla image folder (``ocs-sr savedisk``) mean:
``disk``, ``parts``, ``<disk>-pt.sf`` (sfdisk dump), ``<disk>-pt.parted``
(the disk's size), ``<disk>-mbr``, ``<disk>-hidden-data-after-mbr``,
``<disk>-gpt-1st``, ``blkid.list``, ``dev-fs.list``, ``swappt-<part>.info``,
``clonezilla-img`` (the date) and the partclone images
(``engine/partclone_image.py``). It turns a folder into our typed Manifest
(disks, table, partitions with filesystem, UUID and label, used blocks), so
plan, confirmation, safety rules, boot repair and --grow work unchanged.

LVM (``ocs-functions`` save_logv): ``lvm_vg_dev.list`` ("VG /dev/PART
PV-UUID" per PV), ``lvm_logv.list`` ("/dev/VG/LV" and what ``file -Ls`` said
of it), ``lvm_<VG>.conf`` (vgcfgbackup's text) and one image per LV named
after /dev/VG/LV with the slashes as dashes (``vg0-root.ext4-ptcl-img.gz``;
a swap LV: ``swappt-vg0-swap.info``). They become the Manifest's volume
groups, so restore recreates the PVs with their UUIDs and the VG from its
metadata (pvcreate --restorefile, vgcfgrestore) and writes each LV, as for
a liferaft image.

LUKS (``ocs-sr -luks yes``): ``luks-dev.list`` ("/dev/PART LUKS-UUID
ocs_luks_XXX" per opened partition), ``<part>-luksHeader.bin``
(luksHeaderBackup) and the opened volume's image named after its mapping
(``ocs_luks_XXX.ext4-ptcl-img.gz``; a PV inside: ``/dev/mapper/ocs_luks_XXX``
in ``lvm_vg_dev.list``). They become the Manifest's unlocked LUKS volumes:
restore writes the header back, opens the volume with its old passphrase and
writes what was inside into it.

``ClonezillaSource`` stands where restore expects a Repository: it lists the
images of an image root (or one image folder), builds a Manifest by reading
every partclone image through once (every checksum checked; the chunk hashes
computed), and serves the chunks again, in order, from a second read while
the restore writes. Nothing is written to a target before the whole image has
been read and found complete. Never writes to the image folder.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from rescue_app.engine import thinpool
from rescue_app.engine.capture import ChunkTally, commit_image
from rescue_app.engine.chunkio import RESTORE_WORKERS
from rescue_app.engine.extents import Extent, ExtentMap, normalize, total
from rescue_app.engine.keychain import CredentialChain
from rescue_app.engine.luks import LUKS_TYPE, LuksHeader, binary_length, parse_binary
from rescue_app.engine.lvmtext import LvLayout, MetadataError, VgLayout, layout, parse_config
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    ImageSummary,
    LogicalVolumeImage,
    LuksVolumeImage,
    Manifest,
    Method,
    PartitionImage,
    PartitionTable,
    PhysicalVolumeImage,
    Region,
    SavedPartitionImage,
    SegmentImage,
    VolumeGroupImage,
    VolumeGroupSummary,
    partitions_only_line,
)
from rescue_app.engine.ntfsclone_dd import DdReader, NtfscloneReader
from rescue_app.engine.partclone_image import (
    BlockImage,
    ClonezillaImageError,
    open_decompressed,
    open_image,
    volume_names,
)
from rescue_app.engine.partrestore import used_end
from rescue_app.engine.repository import (
    CHUNK_HASH,
    CHUNK_SIZE,
    COMPRESSION,
    REPO_FILE,
    PutResult,
    Repository,
    chunk_digest,
    liferaft_version,
)
from rescue_app.engine.results import CaptureResult
from rescue_app.engine.stores import ByteStream, Store, is_remote, open_store
from rescue_app.engine.stores.local import LocalStore
from rescue_app.engine.table import TableEntry, parse_sfdisk_json, placement, whole_disk_entry
from rescue_app.engine.usedmap import ntfs_backup_boot_sector
from rescue_app.errors import (
    CancelledError,
    ChunkError,
    DiskError,
    ImageNotFoundError,
    RepositoryError,
)
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress

FORMAT = "clonezilla"
_IMAGE_RE = re.compile(r"^(?P<part>[^.]+)\.(?P<fs>[A-Za-z0-9_+-]+)-ptcl-img\.(?P<comp>[a-z0-9]+)")
# ntfsclone's (ocs-sr -q) and dd's (-q1) images: sda1.ntfs-img.aa, sda1.dd-img
_OTHER_RE = re.compile(r"^(?P<part>[^.]+)\.(?P<fs>ntfs|dd)-img(?=\.|$)")
# Clonezilla's file-system names in partclone file names -> lsblk's
_FS_NAMES = {"fat12": "vfat", "fat16": "vfat", "fat32": "vfat", "vfat": "vfat", "exfat": "exfat"}


class ImageFiles:
    """The files of one Clonezilla image folder, read (never written) through a
    store: a local or mounted folder (USB, SMB, NFS), SFTP, S3, or a web server
    that lists its folders. ``names`` is the folder's listing."""

    def __init__(self, store: Store, rel: str, names: Iterable[str]) -> None:
        self.store, self.rel, self.names = store, rel.strip("/"), sorted(names)

    @property
    def name(self) -> str:
        return posixpath.basename(self.rel) or posixpath.basename(self.store.location.rstrip("/"))

    def path(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    def read(self, name: str) -> bytes | None:
        if name not in self.names:  # (no request for a file the listing lacks)
            return None
        try:
            return self.store.read(self.path(name))
        except FileNotFoundError:
            return None

    def open(self, name: str) -> ByteStream:
        return self.store.open_read(self.path(name))

    def modified(self, name: str) -> datetime | None:
        """When a file was last changed, where the store tells (a local folder)."""
        if not isinstance(self.store, LocalStore) or name not in self.names:
            return None
        mtime = os.stat(os.path.join(self.store.root, self.path(name))).st_mtime
        return datetime.fromtimestamp(int(mtime), UTC)

    def fingerprint(self, names: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
        """Size and time of each file, to tell that the image did not change;
        a network store gives sizes (S3, SFTP) or nothing (HTTP)."""
        if isinstance(self.store, LocalStore):
            out = []
            for n in names:
                st = os.stat(os.path.join(self.store.root, self.path(n)))
                out.append((n, st.st_size, st.st_mtime_ns))
            return tuple(out)
        try:
            sizes = self.store.sizes(self.rel)
        except RepositoryError:
            sizes = {}
        return tuple((n, sizes.get(n, -1), 0) for n in names)


def local_files(path: str) -> ImageFiles:
    """A local image folder."""
    path = os.path.abspath(path)
    store = LocalStore(os.path.dirname(path))
    return ImageFiles(store, os.path.basename(path), store.list(os.path.basename(path)))


_HREF = re.compile(r'href="([^"?#]+)"', re.I)


def _listing(store: Store, rel: str) -> list[str]:
    """Names in folder ``rel`` of ``store``; a sub-folder ends with '/' where
    that is known. A web server cannot be listed by our store: its folder page
    (nginx autoindex, Apache, lighttpd) is read instead."""
    if store.can_list:
        return store.list(rel)
    try:
        page = store.read(f"{rel}/" if rel else "")
    except (FileNotFoundError, RepositoryError):
        return []  # (403: the server does not list its folders)
    names = set()
    for href in _HREF.findall(page.decode("utf-8", "replace")):
        n = unquote(href)
        if n.strip("/") and "/" not in n.rstrip("/") and not n.startswith("."):
            names.add(n)
    return sorted(names)


def open_source(
    location: str, credentials: CredentialChain, store: Store | None = None
) -> ClonezillaSource | None:
    """``location`` (any store) as a source of Clonezilla images: one image
    folder or a folder of them; None when it holds none (or is a liferaft
    repository). ``store``: ``location`` already opened by the caller, who
    keeps it (and closes it) unless a ClonezillaSource is returned on it: a
    repository behind it is then opened without asking for a password twice."""
    if not is_remote(location):
        return ClonezillaSource.open_location(location) if looks_like_clonezilla(location) else None
    owned = store is None
    store = store if store is not None else open_store(location, credentials)

    def done() -> None:
        if owned:
            store.close()

    try:
        # A repository (or a store that fails: Repository.open then says
        # why, as it would without Clonezilla) costs one small read more.
        store.read(REPO_FILE)
    except FileNotFoundError:
        pass
    except RepositoryError:
        done()
        return None
    else:
        done()
        return None
    try:
        names = _listing(store, "")
        plain = [n.rstrip("/") for n in names]
        if _is_image(plain):  # one image folder: known by its own name
            one = ImageFiles(store, "", plain)
            return ClonezillaSource(store, {one.name: one})
        folders = {}
        for n in names:
            if not store.can_list and not n.endswith("/"):
                continue  # a file on a web server: not read to see if it is a folder
            try:
                inner = [m.rstrip("/") for m in _listing(store, n.rstrip("/"))]
            except RepositoryError:
                continue  # (a file, over SFTP)
            if _is_image(inner):
                folders[n.rstrip("/")] = ImageFiles(store, n.rstrip("/"), inner)
    except BaseException:
        done()
        raise
    if not folders:
        done()
        return None
    return ClonezillaSource(store, folders)


def image_folder_at(location: str, credentials: CredentialChain) -> ImageFiles:
    """The one Clonezilla image folder at ``location`` (a path or a store URL)."""
    if not is_remote(location):
        files = local_files(location.removeprefix("file://"))
    else:
        store = open_store(location, credentials)
        files = ImageFiles(store, "", [n.rstrip("/") for n in _listing(store, "")])
    if not _is_image(files.names):
        files.store.close()
        raise ClonezillaImageError(
            f"{location} is not a Clonezilla image folder (no 'disk' or 'parts' file)",
            hint="give the folder of one image, e.g. /home/partimag/2024-01-01-img",
        )
    return files


def is_image_folder(path: str) -> bool:
    """A local Clonezilla image folder."""
    try:
        return _is_image(os.listdir(path))
    except OSError:
        return False


def _is_image(names: list[str]) -> bool:
    """A Clonezilla image folder's listing: ``disk`` or ``parts`` and a
    partition table dump or partclone images."""
    if "disk" not in names and "parts" not in names:
        return False
    return "clonezilla-img" in names or any(
        n.endswith("-pt.sf") or "-ptcl-img." in n for n in names
    )


def looks_like_clonezilla(location: str) -> bool:
    """``location`` is a local folder that is a Clonezilla image or holds some,
    and not a liferaft repository."""
    if is_remote(location):
        return False
    path = location.removeprefix("file://")
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "liferaft-repository.json")):
        return False
    if is_image_folder(path):
        return True
    try:
        return any(is_image_folder(os.path.join(path, n)) for n in os.listdir(path))
    except OSError:
        return False


# -- reading the folder --------------------------------------------------------


def _read_text(folder: ImageFiles, name: str) -> str | None:
    raw = folder.read(name)
    return None if raw is None else raw.decode("utf-8", "replace")


def parse_sfdisk_dump(text: str, disk: str) -> tuple[PartitionTable, list[TableEntry], int]:
    """An ``sfdisk --dump`` text (Clonezilla's ``<disk>-pt.sf``) as our table
    model; also returns the sector size. Goes through the same parser as
    capture's ``sfdisk --json``, so both sides agree on kinds and types."""
    header: dict[str, object] = {}
    parts: list[dict[str, object]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if " : " in line:
            node, _, rest = line.partition(" : ")
            entry: dict[str, object] = {"node": node.strip()}
            for field in _split_fields(rest):
                key, eq, value = field.partition("=")
                key = key.strip()
                value = value.strip().strip('"')
                if not eq:
                    if key == "bootable":
                        entry["bootable"] = True
                    continue
                entry[key] = int(value) if key in ("start", "size") else value
            parts.append(entry)
        else:
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    label = str(header.get("label", ""))
    if label not in ("gpt", "dos"):
        raise ClonezillaImageError(
            f"{disk}-pt.sf: partition table type {label!r} is not supported (only GPT and MBR)"
        )
    doc = {
        "partitiontable": {
            "label": label,
            "id": header.get("label-id"),
            "device": header.get("device"),
            "unit": "sectors",
            "firstlba": int(str(header["first-lba"])) if "first-lba" in header else None,
            "lastlba": int(str(header["last-lba"])) if "last-lba" in header else None,
            "sectorsize": int(str(header.get("sector-size", 512))),
            "partitions": parts,
        }
    }
    try:
        table, entries = parse_sfdisk_json(json.dumps(doc))
    except (DiskError, KeyError, ValueError) as exc:
        raise ClonezillaImageError(f"{disk}-pt.sf cannot be read: {exc}") from None
    return table, entries, int(str(header.get("sector-size", 512)))


def _split_fields(text: str) -> list[str]:
    """Split ``a=1, name="x, y", bootable`` on the commas outside quotes."""
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def parse_blkid_list(text: str) -> dict[str, dict[str, str]]:
    """``/dev/sda1: LABEL="x" UUID="y" TYPE="ext4"`` lines by kernel name (sda1)."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        dev, sep, rest = line.partition(": ")
        if not sep or not dev.startswith("/dev/"):
            continue
        out[dev.removeprefix("/dev/")] = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
    return out


def _disk_size(
    folder: ImageFiles, disk: str, ss: int, table: PartitionTable, ends: list[int]
) -> int:
    parted = _read_text(folder, f"{disk}-pt.parted") or ""
    m = re.search(r"^Disk /dev/\S+: (\d+)s$", parted, re.M)
    if m:
        return int(m.group(1)) * ss
    if table.type == "gpt" and table.last_lba:
        return (int(table.last_lba) + 34) * ss
    return max(ends, default=0)


def _image_time(folder: ImageFiles) -> datetime:
    text = _read_text(folder, "clonezilla-img") or ""
    m = re.search(r"saved by Clonezilla at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", text)
    if m:
        return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return folder.modified("disk") or folder.modified("parts") or datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class CzPartition:
    """One partition of the image: its table entry and what Clonezilla kept of it."""

    entry: TableEntry
    kernel_name: str  # sda1, nvme0n1p2, loop6p3
    image: str | None  # partclone image base name, e.g. sda1.ext4-ptcl-img.gz
    fs: str | None
    uuid: str | None
    label: str | None
    method: str

    @property
    def size(self) -> int:
        return self.entry.size


@dataclass(frozen=True)
class CzDisk:
    name: str  # the disk's kernel name when saved (sda)
    table: PartitionTable
    sector_size: int
    size: int
    head: bytes  # the boot code, the table sectors and any hidden data after the MBR
    partitions: tuple[CzPartition, ...]


@dataclass(frozen=True)
class CzLogicalVolume:
    """One LV of a saved volume group and what Clonezilla kept of it."""

    layout: LvLayout
    kernel_name: str  # vg0/root (how messages name it)
    image: str | None  # vg0-root.ext4-ptcl-img.gz
    fs: str | None
    uuid: str | None
    label: str | None
    method: str
    pool: str = ""  # a thin LV's pool
    hidden: bool = False  # a pool's metadata or data LV, the pool's spare
    # A thin pool's metadata LV: where it lies on the PVs, and the metadata
    # to make for it (thinpool.fresh_pool_xml): Clonezilla saves each thin LV,
    # not the pool's metadata.
    segments: tuple[SegmentImage, ...] = ()
    pool_xml: str = ""

    @property
    def size(self) -> int:
        return self.layout.size


@dataclass(frozen=True)
class CzLuksVolume:
    """An opened LUKS partition (``luks-dev.list``): its header as
    ``cryptsetup luksHeaderBackup`` kept it (``<part>-luksHeader.bin``) and
    the volume inside, saved like a partition under the name Clonezilla
    opened it as (``ocs_luks_XXX.ext4-ptcl-img.gz``), or a PV of a VG."""

    partition: str  # the LUKS partition's kernel name (vda2)
    header_file: str  # vda2-luksHeader.bin
    header: LuksHeader
    size: int  # bytes of the opened volume: the partition's, less the header area
    kernel_name: str  # ocs_luks_XXX: its /dev/mapper name when saved
    image: str | None  # ocs_luks_XXX.ext4-ptcl-img.gz
    fs: str | None
    uuid: str | None
    label: str | None
    method: str


CzVolume = CzPartition | CzLogicalVolume | CzLuksVolume


@dataclass(frozen=True)
class CzVolumeGroup:
    layout: VgLayout
    metadata: str  # lvm_<vg>.conf, vgcfgbackup's text
    # (the partition's kernel name, or mapper/ocs_luks_XXX for a PV inside
    # an opened LUKS volume; the PV's UUID)
    pvs: tuple[tuple[str, str], ...]
    lvs: tuple[CzLogicalVolume, ...]


@dataclass(frozen=True)
class CzImage:
    """A Clonezilla image folder as read from its small files (no partclone data)."""

    folder: ImageFiles
    created: datetime
    disks: tuple[CzDisk, ...]
    partitions_only: bool = False  # ocs-sr saveparts: no disk, restored onto partitions
    volume_groups: tuple[CzVolumeGroup, ...] = ()
    luks_volumes: tuple[CzLuksVolume, ...] = ()

    @property
    def name(self) -> str:
        """The folder's name (what Clonezilla's menus show)."""
        return self.folder.name

    @property
    def id(self) -> str:
        return self.created.strftime("%Y%m%dT%H%M%SZ")

    def where(self, part: CzVolume) -> str:
        if isinstance(part, CzLuksVolume):
            what = f"the LUKS volume on {part.partition}"
        else:
            kind = "logical volume" if isinstance(part, CzLogicalVolume) else "partition"
            what = f"{kind} {part.kernel_name}"
        return f"Clonezilla image {self.name}, {what} ({part.image})"

    def volumes(self) -> list[CzVolume]:
        """Every partition, LUKS volume and LV, in the order restore writes them."""
        out: list[CzVolume] = [p for d in self.disks for p in d.partitions]
        out += self.luks_volumes
        return out + [lv for vg in self.volume_groups for lv in vg.lvs]

    def files(self) -> list[str]:
        """Every file the image's data comes from (for the unchanged check)."""
        names = self.folder.names
        out = [v.header_file for v in self.luks_volumes]
        for p in self.volumes():
            if p.image:
                out += [n for n in names if n == p.image or n.startswith(p.image + ".")]
        return out


def read_image(folder: ImageFiles | str) -> CzImage:
    """Read and check an image folder's description; ClonezillaImageError names
    the first missing or damaged piece."""
    if isinstance(folder, str):
        folder = local_files(folder)
    name = folder.name
    names = folder.names
    disk_text = _read_text(folder, "disk")
    parts_text = _read_text(folder, "parts")
    saved: list[str] | None = None  # saveparts: the partitions saved
    if disk_text is not None:
        disk_names = disk_text.split()
    elif parts_text is not None:
        saved = parts_text.split()
        disk_names = _disks_of_parts(folder, saved)
    else:
        raise ClonezillaImageError(
            f"Clonezilla image {name} has neither a 'disk' nor a 'parts' file",
            hint="copy the whole image folder again",
        )
    if not disk_names:
        raise ClonezillaImageError(f"Clonezilla image {name}: its 'disk' file is empty")
    opened = _luks_dev_list(folder)
    blkid = parse_blkid_list(_read_text(folder, "blkid.list") or "")
    groups = _volume_groups(folder, blkid)
    pv_parts = {part for vg in groups for part, _uuid in vg.pvs}
    dev_fs: dict[str, str] = {}
    for line in (_read_text(folder, "dev-fs.list") or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/dev/"):
            dev_fs[fields[0].removeprefix("/dev/")] = fields[1]
    disks = []
    for disk in disk_names:
        sf = _read_text(folder, f"{disk}-pt.sf")
        if sf is None:
            raise ClonezillaImageError(
                f"Clonezilla image {name}: {disk}-pt.sf (the partition table) is missing",
                hint="copy the whole image folder again",
            )
        if not sf.strip() and disk in pv_parts:  # an LVM PV on the whole disk
            table, entries, ss = _whole_disk(folder, disk)
        else:
            table, entries, ss = parse_sfdisk_dump(sf, disk)
        parts = tuple(
            _partition(folder, names, e, blkid, dev_fs, name, pv_parts, opened)
            for e in entries
            if saved is None or e.node.removeprefix("/dev/") in saved
        )
        size = _disk_size(folder, disk, ss, table, [e.start + e.size for e in entries])
        disks.append(
            CzDisk(
                name=disk,
                table=table,
                sector_size=ss,
                size=size,
                # (saveparts: the disk's table and boot code are not restored)
                head=_head(folder, disk, table, name) if saved is None else b"",
                partitions=parts,
            )
        )
    lukses = tuple(
        _luks_volume(folder, p, opened[p.kernel_name][1], blkid, dev_fs, pv_parts)
        for d in disks
        for p in d.partitions
        if p.method == Method.LUKS
    )
    found = {p.kernel_name for d in disks for p in d.partitions}
    found |= {f"mapper/{v.kernel_name}" for v in lukses}
    for part in sorted(pv_parts - found):
        raise ClonezillaImageError(
            f"Clonezilla image {name}: the LVM physical volume {part} (lvm_vg_dev.list) is "
            "not on the saved disks (a partition, a whole disk or an opened LUKS volume)",
            hint="restore this image with Clonezilla (ocs-sr restoredisk)",
        )
    return CzImage(
        folder=folder,
        created=_image_time(folder),
        disks=tuple(disks),
        partitions_only=saved is not None,
        volume_groups=groups,
        luks_volumes=lukses,
    )


def _whole_disk(folder: ImageFiles, disk: str) -> tuple[PartitionTable, list[TableEntry], int]:
    """A disk without a partition table (its ``<disk>-pt.sf`` empty; ocs-sr
    saves an LVM PV on the whole disk so): one entry spanning the disk, as
    capture describes such a disk; its size from ``<disk>-pt.parted``."""
    parted = _read_text(folder, f"{disk}-pt.parted") or ""
    size = re.search(r"^Disk /dev/\S+: (\d+)s$", parted, re.M)
    if size is None:
        raise ClonezillaImageError(
            f"Clonezilla image {folder.name}: {disk}-pt.parted (the size of {disk}, an LVM "
            "PV without a partition table) is missing or unreadable",
            hint="copy the whole image folder again",
        )
    sector = re.search(r"^Sector size \(logical/physical\): (\d+)B", parted, re.M)
    ss = int(sector.group(1)) if sector else 512
    entry = whole_disk_entry(int(size.group(1)) * ss, f"/dev/{disk}")
    return PartitionTable(type="none", id=None), [entry], ss


def _disks_of_parts(folder: ImageFiles, saved: list[str]) -> list[str]:
    """The disks whose table dump (``<disk>-pt.sf``: saveparts keeps it too)
    lists the saved partitions, in the order the partitions come."""
    tables: dict[str, set[str]] = {}
    for n in folder.names:
        if n.endswith("-pt.sf"):
            text = _read_text(folder, n) or ""
            nodes = re.findall(r"^\s*/dev/(\S+)\s*:", text, re.M)
            tables[n.removesuffix("-pt.sf")] = set(nodes)
    disks: list[str] = []
    for part in saved:
        owner = next((d for d, nodes in sorted(tables.items()) if part in nodes), None)
        if owner is None:
            raise ClonezillaImageError(
                f"Clonezilla image {folder.name}: partition {part} is in no partition "
                "table file (<disk>-pt.sf)",
                hint="copy the whole image folder again",
            )
        if owner not in disks:
            disks.append(owner)
    return disks


# LV segment types recreated and written back from a Clonezilla image (its
# partclone image of a thin pool or a RAID LV's parts is not a volume liferaft
# can lay back)
_CZ_SEGTYPES = frozenset({"linear", "striped", "thin-pool", "thin"})


def _volume_groups(
    folder: ImageFiles, blkid: dict[str, dict[str, str]]
) -> tuple[CzVolumeGroup, ...]:
    """The volume groups of lvm_vg_dev.list, each with its metadata
    (lvm_<vg>.conf) and the LVs of lvm_logv.list; one line names the first
    missing or unreadable piece."""
    name = folder.name
    pv_lines = [ln.split() for ln in (_read_text(folder, "lvm_vg_dev.list") or "").splitlines()]
    pv_lines = [f for f in pv_lines if f]
    if not pv_lines:
        return ()
    logv = [ln.split() for ln in (_read_text(folder, "lvm_logv.list") or "").splitlines()]
    names = folder.names
    out = []
    for vg_name in dict.fromkeys(f[0] for f in pv_lines):
        if vg_name == "/NOT_FOUND" or any(len(f) < 3 for f in pv_lines):
            raise ClonezillaImageError(
                f"Clonezilla image {name}: lvm_vg_dev.list names a PV without a volume group "
                "or UUID",
                hint="Clonezilla could not save this LVM either; save it again",
            )
        text = _read_text(folder, f"lvm_{vg_name}.conf")
        if text is None:
            raise ClonezillaImageError(
                f"Clonezilla image {name}: lvm_{vg_name}.conf (volume group {vg_name}'s "
                "metadata) is missing",
                hint="copy the whole image folder again",
            )
        try:
            vg = layout(text)
        except MetadataError as exc:
            raise ClonezillaImageError(
                f"Clonezilla image {name}: lvm_{vg_name}.conf: {exc.message}",
                hint="copy the whole image folder again",
            ) from None
        pvs = tuple((f[1].removeprefix("/dev/"), f[2]) for f in pv_lines if f[0] == vg_name)
        unknown = sorted({u for _p, u in pvs} - {pv.uuid for pv in vg.pvs})
        if unknown or vg.name != vg_name:
            raise ClonezillaImageError(
                f"Clonezilla image {name}: lvm_{vg_name}.conf does not describe the PVs "
                f"of lvm_vg_dev.list ({', '.join(unknown) or vg.name})",
                hint="copy the whole image folder again",
            )
        missing = sorted({pv.uuid for pv in vg.pvs} - {u for _p, u in pvs})
        if missing:
            raise ClonezillaImageError(
                f"Clonezilla image {name}: volume group {vg_name} also lies on PVs that were "
                f"not saved ({', '.join(missing)})",
                hint="save every disk of the volume group in one image",
            )
        odd = sorted({lv.segtype for lv in vg.lvs} - _CZ_SEGTYPES)
        if odd:
            raise ClonezillaImageError(
                f"Clonezilla image {name}: LVM volume group {vg_name} has {', '.join(odd)} "
                "logical volumes; liferaft restores linear, striped and thin ones from "
                "Clonezilla images",
                hint="restore this image with Clonezilla (ocs-sr restoredisk)",
            )
        listed = {f[0].removeprefix("/dev/") for f in logv if f and f[0].startswith("/dev/")}
        try:
            thin = _thin_roles(vg, parse_config(text)[vg_name].get("logical_volumes", {}))
        except (KeyError, TypeError, ValueError, AttributeError, MetadataError):
            raise ClonezillaImageError(
                f"Clonezilla image {name}: lvm_{vg_name}.conf: its thin pool is not "
                "described as LVM describes one",
                hint="copy the whole image folder again",
            ) from None
        lvs = tuple(
            _logical_volume(folder, names, vg_name, lv, blkid, thin.get(lv.name))
            for lv in vg.lvs
            if (lv.visible and f"{vg_name}/{lv.name}" in listed) or lv.name in thin
        )
        out.append(CzVolumeGroup(vg, text, pvs, lvs))
    return tuple(out)


@dataclass(frozen=True)
class _ThinRole:
    """What an LV is to a thin pool (``_thin_roles``)."""

    pool: str = ""  # a thin LV: its pool
    hidden: bool = False
    segments: tuple[SegmentImage, ...] = ()  # the metadata LV: where it lies
    pool_xml: str = ""  # the metadata LV: the metadata to make for it


def _thin_roles(vg: VgLayout, lvs: dict[str, Any]) -> dict[str, _ThinRole]:
    """The LVs of ``vg``'s thin pools (``lvs``: the metadata's
    logical_volumes section): each pool, its metadata LV (placed by its
    segments, with fresh metadata naming every thin LV's device id and the
    pool's transaction id), its data LV, the spare, its thin LVs. Empty
    without a thin pool."""
    pv_uuid = {pv.key: pv.uuid for pv in vg.pvs}
    size = {lv.name: lv.size for lv in vg.lvs}
    out: dict[str, _ThinRole] = {}
    for pool, d in lvs.items():
        seg = d.get("segment1", {}) if isinstance(d, dict) else {}
        if seg.get("type") != "thin-pool":
            continue
        meta, data = str(seg["metadata"]), str(seg["pool"])
        thins = {
            name: t["segment1"]
            for name, t in lvs.items()
            if isinstance(t, dict)
            and t.get("segment1", {}).get("type") == "thin"
            and t["segment1"].get("thin_pool") == pool
        }
        devices = {int(t["device_id"]): int(t.get("transaction_id", 0)) for t in thins.values()}
        xml = thinpool.fresh_pool_xml(
            int(seg.get("transaction_id", 0)), int(seg["chunk_size"]), size[data], devices
        )
        placed = []
        for key, part in sorted(lvs[meta].items()):
            if not (key.startswith("segment") and isinstance(part, dict)):
                continue
            stripes = part["stripes"]
            if len(stripes) != 2:
                raise ValueError("the thin pool's metadata LV is not linear")
            placed.append(
                SegmentImage(
                    pv_uuid[str(stripes[0])],
                    int(part["start_extent"]),
                    int(stripes[1]),
                    int(part["extent_count"]),
                )
            )
        out[pool] = _ThinRole()
        out[meta] = _ThinRole(hidden=True, segments=tuple(placed), pool_xml=xml)
        out[data] = _ThinRole(hidden=True)
        out |= {name: _ThinRole(pool=pool) for name in thins}
    if out:  # the pool's spare metadata LV (lvol0_pmspare)
        out |= {
            lv.name: _ThinRole(hidden=True)
            for lv in vg.lvs
            if not lv.visible and lv.name not in out
        }
    return out


def _logical_volume(
    folder: ImageFiles,
    names: list[str],
    vg: str,
    lv: LvLayout,
    blkid: dict[str, dict[str, str]],
    thin: _ThinRole | None = None,
) -> CzLogicalVolume:
    """What Clonezilla kept of an LV: its image is named by to_ocs_dev_img_name
    (/dev/vg0/root -> vg0-root), its swap by swappt-vg0-root.info; ``thin``:
    its part in a thin pool."""
    kname = f"{vg}/{lv.name}"
    mapper = f"mapper/{vg.replace('-', '--')}-{lv.name.replace('-', '--')}"
    info = blkid.get(kname, {}) or blkid.get(mapper, {})
    if thin is not None and thin.pool_xml:  # made, not read: written through the PVs
        return CzLogicalVolume(
            lv, kname, None, None, None, None, Method.RAW, hidden=True,
            segments=thin.segments, pool_xml=thin.pool_xml,
        )  # fmt: skip
    saved = CzLogicalVolume(lv, kname, *_saved_as(folder, names, f"{vg}-{lv.name}", info))
    return saved if thin is None else replace(saved, pool=thin.pool, hidden=thin.hidden)


def _saved_as(
    folder: ImageFiles, names: list[str], base_name: str, info: dict[str, str]
) -> tuple[str | None, str | None, str | None, str | None, str]:
    """(image, file system, UUID, label, method) of a device Clonezilla saved
    under ``base_name`` (an LV, an opened LUKS volume): its partclone image,
    or its swap's ``swappt-<base>.info``, or nothing; ``info``: its blkid."""
    bases = sorted({(b, f) for b, f in _bases_of(names) if b.startswith(base_name + ".")})
    if bases:
        base, fs_from_name = bases[0]
        fs: str | None = info.get("TYPE") or _FS_NAMES.get(fs_from_name, fs_from_name)
        if fs_from_name == "dd":
            fs = info.get("TYPE")
        return base, fs, info.get("UUID"), info.get("LABEL"), Method.USED
    swap_info = _read_text(folder, f"swappt-{base_name}.info")
    if swap_info is not None:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', swap_info))
        return None, "swap", fields.get("UUID"), fields.get("LABEL"), Method.SWAP
    return None, info.get("TYPE"), None, None, Method.NONE


def _luks_dev_list(folder: ImageFiles) -> dict[str, tuple[str, str]]:
    """The LUKS partitions Clonezilla opened (``luks-dev.list``: "/dev/PART
    LUKS-UUID ocs_luks_XXX" each), as {partition: (LUKS UUID, mapper name)};
    each must have its header file, and every header file its line."""
    opened = {}
    for line in (_read_text(folder, "luks-dev.list") or "").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            if len(fields) < 3 or not fields[0].startswith("/dev/"):
                raise ClonezillaImageError(
                    f"Clonezilla image {folder.name}: luks-dev.list has a line that is not "
                    f"'/dev/PARTITION UUID NAME': {line.strip()!r}",
                    hint="copy the whole image folder again",
                )
            opened[fields[0].removeprefix("/dev/")] = (fields[1], fields[2])
    headers = {
        n.removesuffix("-luksHeader.bin") for n in folder.names if n.endswith("-luksHeader.bin")
    }
    for part in sorted(opened.keys() - headers):
        raise ClonezillaImageError(
            f"Clonezilla image {folder.name}: {part}-luksHeader.bin (the LUKS header of "
            f"{part}) is missing",
            hint="copy the whole image folder again",
        )
    for part in sorted(headers - opened.keys()):
        raise ClonezillaImageError(
            f"Clonezilla image {folder.name}: {part}-luksHeader.bin (a LUKS header) is not in "
            "luks-dev.list, so the name its volume was saved under is unknown",
            hint="copy the whole image folder again",
        )
    return opened


def _luks_volume(
    folder: ImageFiles,
    part: CzPartition,
    mapper: str,
    blkid: dict[str, dict[str, str]],
    dev_fs: dict[str, str],
    pv_parts: set[str],
) -> CzLuksVolume:
    """The opened volume of LUKS partition ``part``, saved as ``mapper``: its
    header read from the header file's first bytes (the size inside follows
    from its data offset), its contents as saved (an image, a swap, a PV)."""
    name = f"{part.kernel_name}-luksHeader.bin"
    where = f"Clonezilla image {folder.name}: {name}"
    first = _read_start(folder, name, 16)
    try:
        header = parse_binary(_read_start(folder, name, binary_length(first)))
    except DiskError as exc:
        raise ClonezillaImageError(
            f"{where}: {exc.message}", hint="copy the whole image folder again"
        ) from None
    size = part.entry.size - header.data_offset
    if size <= 0 or header.uuid.lower() != (part.uuid or header.uuid).lower():
        raise ClonezillaImageError(
            f"{where} does not belong to partition {part.kernel_name} (LUKS UUID "
            f"{header.uuid}, data at {header.data_offset} bytes of {part.entry.size})",
            hint="copy the whole image folder again",
        )
    if f"mapper/{mapper}" in pv_parts:  # its volume group is restored from lvm_<vg>.conf
        saved: tuple[str | None, str | None, str | None, str | None, str] = (
            None, "LVM2_member", None, None, Method.LVM_PV,
        )  # fmt: skip
    else:
        info = blkid.get(f"mapper/{mapper}", {})
        if "TYPE" not in info and f"mapper/{mapper}" in dev_fs:
            info = {**info, "TYPE": dev_fs[f"mapper/{mapper}"]}
        saved = _saved_as(folder, folder.names, mapper, info)
    return CzLuksVolume(part.kernel_name, name, header, size, mapper, *saved)


def _read_start(folder: ImageFiles, name: str, n: int) -> bytes:
    """The first ``n`` bytes of a file of the folder (fewer: it is shorter)."""
    stream = folder.open(name)
    try:
        out = b""
        while len(out) < n and (piece := stream.read(n - len(out))):
            out += piece
        return out
    finally:
        stream.close()


def _head(folder: ImageFiles, disk: str, table: PartitionTable, image: str) -> bytes:
    def raw(suffix: str) -> bytes | None:
        return folder.read(f"{disk}-{suffix}")

    if table.type == "none":
        return b""
    if table.type == "gpt":
        first = raw("gpt-1st")
        if first is None:
            raise ClonezillaImageError(
                f"Clonezilla image {image}: {disk}-gpt-1st (the GPT) is missing",
                hint="copy the whole image folder again",
            )
        return first
    mbr = raw("mbr")
    if mbr is None or len(mbr) != 512:
        raise ClonezillaImageError(
            f"Clonezilla image {image}: {disk}-mbr is missing or not 512 bytes",
            hint="copy the whole image folder again",
        )
    return mbr + (raw("hidden-data-after-mbr") or b"")


def _bases_of(names: list[str]) -> list[tuple[str, str]]:
    """(image base name, file system in its name) of every partclone, ntfsclone
    and dd image file."""
    return [
        (m.group(0), m.group("fs"))
        for n in names
        if (m := _IMAGE_RE.match(n) or _OTHER_RE.match(n))
    ]


def _partition(
    folder: ImageFiles,
    names: list[str],
    e: TableEntry,
    blkid: dict[str, dict[str, str]],
    dev_fs: dict[str, str],
    image: str,
    pv_parts: set[str],
    opened: dict[str, tuple[str, str]],
) -> CzPartition:
    kname = e.node.removeprefix("/dev/")
    info = blkid.get(kname, {})
    if kname in pv_parts:  # its volume group is restored from lvm_<vg>.conf
        uuid = info.get("UUID")
        return CzPartition(e, kname, None, info.get("TYPE"), uuid, None, Method.LVM_PV)
    if kname in opened:  # its header and the volume inside: CzImage.luks_volumes
        return CzPartition(e, kname, None, LUKS_TYPE, opened[kname][0], None, Method.LUKS)
    # (base name, file system in the name) of this partition's partclone image
    bases = sorted({(b, f) for b, f in _bases_of(names) if b.startswith(kname + ".")})
    swap_info = _read_text(folder, f"swappt-{kname}.info")
    if e.kind == "extended":
        return CzPartition(e, kname, None, None, None, None, Method.NONE)
    if bases:
        base, fs_from_name = bases[0]
        fs: str | None = info.get("TYPE") or _FS_NAMES.get(fs_from_name, fs_from_name)
        if fs_from_name == "dd":
            fs = info.get("TYPE")
        return CzPartition(e, kname, base, fs, info.get("UUID"), info.get("LABEL"), Method.USED)
    if swap_info is not None or dev_fs.get(kname) == "swap":
        fields = dict(re.findall(r'(\w+)="([^"]*)"', swap_info or ""))
        return CzPartition(
            e,
            kname,
            None,
            "swap",
            fields.get("UUID") or info.get("UUID"),
            fields.get("LABEL") or info.get("LABEL"),
            Method.SWAP,
        )
    other = [n for n in names if n.startswith(kname + ".")]
    if other:
        raise ClonezillaImageError(
            f"Clonezilla image {image}: partition {kname} is saved as {other[0]}, a kind "
            "liferaft does not read (only partclone images)",
            hint="save the image again with partclone (ocs-sr -q2)",
        )
    # Clonezilla kept nothing of it (no filesystem it knew): the partition is
    # recreated empty, as Clonezilla itself does.
    return CzPartition(e, kname, None, info.get("TYPE"), None, None, Method.NONE)


# -- the data --------------------------------------------------------------------


def used_pieces(reader: BlockImage) -> Iterator[tuple[int, memoryview]]:
    """The image's used blocks as (byte offset in the partition, bytes), in order."""
    bs = reader.header.block_size
    for strip in reader.strips():
        pos = 0
        for first, count in strip.runs:
            n = count * bs
            yield first * bs, strip.data[pos : pos + n]
            pos += n


def with_ntfs_backup(
    pieces: Iterable[tuple[int, memoryview | bytes]], size: int, extra: list[Extent]
) -> Iterator[tuple[int, memoryview | bytes]]:
    """``pieces`` and then NTFS's backup boot sector (a copy of the boot sector
    just after the volume's last sector): partclone's bitmap leaves it out and
    ntfsfix/chkdsk reject a volume without it, so it is added as capture adds
    it (usedmap.ntfs_backup_boot_sector). Its extent is appended to ``extra``."""
    boot = b""
    end = 0
    for offset, data in pieces:
        if offset == 0 and not boot:
            boot = bytes(data[:4096])
        end = offset + len(data)
        yield offset, data
    backup = ntfs_backup_boot_sector(boot)
    if backup is not None and backup[0] >= end and backup[0] + backup[1] <= size:
        extra.append(backup)
        yield backup[0], boot[: backup[1]]


def partition_chunks(
    pieces: Iterable[tuple[int, memoryview | bytes]], chunk_size: int, size: int
) -> Iterator[tuple[int, bytes | bytearray]]:
    """The cells of the chunk grid over a partition of ``size`` bytes that
    hold used bytes (``pieces``: (offset, bytes) in order), as (index,
    content): used bytes in place, zeros elsewhere, the last cell cut at the
    partition's end (docs/FORMAT.md)."""
    index = -1
    cell = bytearray()

    def cut(i: int, data: bytearray) -> bytearray:
        end = min(chunk_size, size - i * chunk_size)
        return data if end == chunk_size else data[:end]

    for offset, data in pieces:
        pos, left = 0, len(data)
        while left:
            i = offset // chunk_size
            if i != index:
                if index >= 0:
                    yield index, cut(index, cell)
                index, cell = i, bytearray(chunk_size)
            at = offset - i * chunk_size
            n = min(left, chunk_size - at)
            cell[at : at + n] = data[pos : pos + n]
            pos, offset, left = pos + n, offset + n, left - n
    if index >= 0:
        yield index, cut(index, cell)


_ZEROS = bytes(CHUNK_SIZE)


def _cell_digest(
    data: bytes | bytearray, chunk_id: Callable[[bytes | bytearray], str] = chunk_digest
) -> str | None:
    """None for an all-zero cell (not stored, docs/FORMAT.md), else its id
    (``chunk_id``: the importing repository's, keyed when it is encrypted)."""
    return None if data == _ZEROS[: len(data)] else chunk_id(data)


class _Scan:
    """Counts bytes read through all partclone images for progress."""

    def __init__(self, total_bytes: int, progress: ProgressCallback, phase: str) -> None:
        self.done = 0
        self.total = total_bytes
        self.progress = progress
        self.phase = phase

    def add(self, item: str, n: int) -> None:
        self.done += n
        self.progress(Progress(self.phase, item, self.done, self.total))


def _open_partition(image: CzImage, part: CzVolume, size: int) -> BlockImage:
    assert part.image is not None
    where = image.where(part)
    names, opener = image.folder.names, image.folder.open
    reader: BlockImage
    # dd (old Clonezilla: .dd-img) and partclone.dd (.dd-ptcl-img) write the
    # partition's bytes as they are, no partclone header
    dd = part.image.endswith(".dd-img") or ".dd-ptcl-img." in part.image
    if dd or part.image.endswith(".ntfs-img"):
        stream, _kind = open_decompressed(
            volume_names(names, part.image), where, opener, plain_ok=dd
        )
        try:
            reader = (DdReader if dd else NtfscloneReader)(stream, where, size)
        except BaseException:
            stream.close()
            raise
        return reader
    reader, _kind = open_image(names, part.image, where, opener)
    h = reader.header
    if h.total_blocks * h.block_size > size:
        reader.close()
        raise ClonezillaImageError(
            f"{where}: the filesystem ({h.total_blocks * h.block_size} bytes) is larger "
            f"than its partition ({size} bytes)",
            hint="the image is damaged or its partition table does not belong to it",
        )
    return reader


def _partition_cells(
    image: CzImage,
    part: CzVolume,
    size: int,
    scan: _Scan | None = None,
    cancel: CancelToken | None = None,
    extra: list[Extent] | None = None,
) -> Iterator[tuple[int, bytes | bytearray, BlockImage]]:
    """Open the partition's partclone image and yield its chunk cells, with the
    reader (its used blocks are known once it is open); always closed.
    ``extra``: byte extents written beyond the image's blocks are added here."""
    extra = [] if extra is None else extra
    reader = _open_partition(image, part, size)
    try:
        counted = 0
        yielded = False
        pieces: Iterable[tuple[int, memoryview | bytes]] = used_pieces(reader)
        if part.fs == "ntfs":
            pieces = with_ntfs_backup(pieces, size, extra)
        for index, data in partition_chunks(pieces, CHUNK_SIZE, size):
            if cancel is not None and cancel.cancelled:
                raise CancelledError("cancelled while reading the Clonezilla image")
            if scan is not None:
                # progress over the whole partition: the cells up to this one
                reached = index * CHUNK_SIZE + len(data)
                scan.add(part.kernel_name, reached - counted)
                counted = reached
            yielded = True
            yield index, data, reader
        if scan is not None and size > counted:
            scan.add(part.kernel_name, size - counted)
        if not yielded:  # a filesystem without a used block: the reader alone
            yield -1, b"", reader
    finally:
        reader.close()


def build_manifest(
    image: CzImage,
    *,
    store: Repository | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    phase: str = "check",
) -> tuple[Manifest, dict[str, bytes]]:
    """Read every partclone image of ``image`` through once, every checksum
    checked, and describe the image as our Manifest. ``store``: put each chunk
    there as it is read (import; the manifest's stats count them). Returns the
    manifest and the head chunks (held in memory: they are small)."""
    scan = _Scan(sum(p.size for p in image.volumes() if p.image), progress, phase)
    static: dict[str, bytes] = {}
    tally = ChunkTally()

    def keep(data: bytes | bytearray) -> str | None:
        digest = _cell_digest(data) if store is None else _cell_digest(data, store.chunk_id)
        if digest is not None:
            stored = 0 if store is None else store.put_chunk(bytes(data), digest).stored_bytes
            tally.count(digest, stored)
        return digest

    def region(data: bytes | Iterable[bytes]) -> Region:
        """Bytes made or read whole (a disk's head, a LUKS header, a thin
        pool's metadata; or its pieces of CHUNK_SIZE) as a Region, their
        chunks kept in memory (the zeros not)."""
        pieces = (
            [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
            if isinstance(data, bytes)
            else data
        )
        chunks, length = [], 0
        for piece in pieces:
            digest = keep(piece)
            if digest is not None:
                static[digest] = piece
            chunks.append(digest)
            length += len(piece)
        return Region(offset=0, length=length, chunks=tuple(chunks))

    def lv_contents(lv: CzLogicalVolume) -> tuple[tuple[str | None, ...], ExtentMap]:
        if not lv.pool_xml:
            return _volume_chunks(image, lv, lv.layout.size, keep, scan, cancel)
        with thinpool.fresh_metadata(lv.pool_xml, lv.layout.size) as path, open(path, "rb") as f:
            made = region(iter(lambda: f.read(CHUNK_SIZE), b""))
        return made.chunks, ExtentMap([(0, lv.layout.size)])

    disks = []
    for index, d in enumerate(image.disks):
        parts = []
        for p in d.partitions:
            e = p.entry
            chunks, used_map = _volume_chunks(image, p, e.size, keep, scan, cancel)
            parts.append(
                PartitionImage(
                    **placement(e),
                    **_contents(p, chunks, used_map, "partition", e.kind == "extended"),
                )
            )
        disks.append(
            DiskImage(
                index=index,
                model=None,
                serial=None,
                wwn=None,
                size=d.size,
                logical_sector_size=d.sector_size,
                physical_sector_size=d.sector_size,
                transport=None,
                table=d.table,
                head=region(d.head),
                gpt_backup=None,
                partitions=tuple(parts),
            )
        )
    lukses = tuple(
        LuksVolumeImage(
            **_contents(v, *_volume_chunks(image, v, v.size, keep, scan, cancel), "LUKS volume"),
            disk=place[0],
            partition=place[1],
            uuid=v.header.uuid,
            version=v.header.version,
            header=region(_luks_header_area(image, v)),
            size=v.size,
        )
        for v in image.luks_volumes
        for place in [_places(image)[v.partition]]
    )
    groups = tuple(_volume_group_image(image, vg, lv_contents) for vg in image.volume_groups)
    created = image.created.isoformat().replace("+00:00", "Z")
    saved = (
        tuple(
            SavedPartitionImage(index, pm.number, p.kernel_name, _needed(image, p, pm))
            for index, (d, dm) in enumerate(zip(image.disks, disks, strict=True))
            for p, pm in zip(d.partitions, dm.partitions, strict=True)
        )
        if image.partitions_only
        else ()
    )
    manifest = Manifest(
        name=image.name,
        id=image.id,
        created=created,
        host=f"clonezilla:{image.name}",
        liferaft_version=liferaft_version(),
        chunk_size=CHUNK_SIZE,
        chunk_hash=CHUNK_HASH if store is None else store.envelope.chunk_hash,
        compression=COMPRESSION,
        disks=tuple(disks),
        stats=tally.as_stats(),
        volume_groups=groups,
        luks_volumes=lukses,
        partitions_only=saved,
    )
    return manifest, static


def _places(image: CzImage) -> dict[str, tuple[int, int]]:
    """Each partition's (disk index, partition number), by kernel name."""
    return {
        p.kernel_name: (index, p.entry.number)
        for index, d in enumerate(image.disks)
        for p in d.partitions
    }


def _luks_header_area(image: CzImage, v: CzLuksVolume) -> bytes:
    """The bytes before a LUKS volume's data, from its header file: as long as
    the data offset (a LUKS1 backup stops short of it; zeros follow, as
    luksHeaderRestore leaves them unused)."""
    data = image.folder.read(v.header_file) or b""
    offset = v.header.data_offset
    if len(data) > offset or parse_binary(data[: binary_length(data)]) != v.header:
        raise ClonezillaImageError(
            f"Clonezilla image {image.name}: {v.header_file} changed or is damaged "
            f"({len(data)} bytes for a header area of {offset})",
            hint="copy the whole image folder again",
        )
    return data + bytes(offset - len(data))


def _needed(image: CzImage, p: CzPartition, pm: PartitionImage) -> int:
    """The bytes a saveparts partition's filesystem spans (the smallest
    partition it can be restored onto): its used bytes' end, at least the
    size partclone's header gives it; a swap's whole partition."""
    needed = used_end(pm.used_map)
    if p.image:
        reader = _open_partition(image, p, p.entry.size)
        reader.close()
        needed = max(needed, reader.header.total_blocks * reader.header.block_size)
    elif p.method in (Method.SWAP, Method.LVM_PV):  # (a PV: as large as it was)
        needed = p.entry.size
    return needed


def _contents(
    p: CzVolume,
    chunks: tuple[str | None, ...],
    used_map: ExtentMap,
    what: str,
    container: bool = False,
) -> dict[str, Any]:
    """The fields a partition and an LV share (manifest.Contents)."""
    empty = p.method == Method.NONE and not container
    return {
        "filesystem": Filesystem(type=p.fs, uuid=p.uuid, label=p.label),
        "method": p.method,
        "used_bytes": total(used_map),
        "used_map": used_map,
        "chunks": chunks,
        "note": f"Clonezilla saved no data of this {what}; it is recreated empty" if empty else "",
    }


def _volume_chunks(
    image: CzImage,
    p: CzVolume,
    size: int,
    keep: Callable[[bytes | bytearray], str | None],
    scan: _Scan,
    cancel: CancelToken | None,
) -> tuple[tuple[str | None, ...], ExtentMap]:
    """A partition's or LV's chunk ids (``keep`` each cell) and used bytes."""
    chunks: list[str | None] = [None] * -(-size // CHUNK_SIZE)
    used_map = ExtentMap()
    if p.image:
        extra: list[Extent] = []
        read: BlockImage | None = None
        for i, data, reader in _partition_cells(image, p, size, scan, cancel, extra):
            if i >= 0:
                chunks[i] = keep(data)
            read = reader
        # (after the whole image: ntfsclone's used clusters are known then)
        used_map = read.byte_extents() if read is not None else used_map
        if extra:
            used_map = ExtentMap(normalize([*used_map, *extra]))
    return tuple(chunks), used_map


def _volume_group_image(
    image: CzImage,
    vg: CzVolumeGroup,
    contents: Callable[[CzLogicalVolume], tuple[tuple[str | None, ...], ExtentMap]],
) -> VolumeGroupImage:
    """A saved volume group as the Manifest keeps one: its PVs on the
    partitions lvm_vg_dev.list names, its metadata, each LV with its chunks
    and used bytes (``contents``)."""
    places = _places(image)
    places |= {f"mapper/{v.kernel_name}": places[v.partition] for v in image.luks_volumes}
    by_uuid = {pv.uuid: pv for pv in vg.layout.pvs}
    pvs = tuple(
        PhysicalVolumeImage(
            uuid=uuid,
            disk=places[part][0],
            partition=places[part][1],
            pe_start=by_uuid[uuid].pe_start,
            size=by_uuid[uuid].dev_size,
            luks=part.startswith("mapper/"),
        )
        for part, uuid in vg.pvs
    )
    lvs = []
    for lv in vg.lvs:
        chunks, used_map = contents(lv)
        lvs.append(
            LogicalVolumeImage(
                # (a pool and its hidden LVs hold the thin LVs: no "recreated empty" note)
                **_contents(
                    lv,
                    chunks,
                    used_map,
                    "logical volume",
                    lv.hidden or lv.layout.segtype == "thin-pool",
                ),
                name=lv.layout.name,
                uuid=lv.layout.uuid,
                size=lv.layout.size,
                segtype=lv.layout.segtype,
                tags=lv.layout.tags,
                pool=lv.pool,
                hidden=lv.hidden,
                holds_root=False,
                segments=lv.segments,
            )
        )
    return VolumeGroupImage(
        name=vg.layout.name,
        uuid=vg.layout.uuid,
        extent_size=vg.layout.extent_size,
        tags=vg.layout.tags,
        metadata=vg.metadata,
        pvs=pvs,
        lvs=tuple(lvs),
    )


def summary_of(image: CzImage) -> ImageSummary:
    """What ``liferaft images`` shows, from the small files and the partclone
    headers only (no data is read)."""
    data = 0
    for p in image.volumes():
        if p.image:
            reader = _open_partition(image, p, p.size)
            reader.close()
            data += reader.header.used_bytes
    from rescue_app.engine.units import human_size

    return ImageSummary(
        name=image.name,
        id=image.id,
        created=image.created.isoformat().replace("+00:00", "Z"),
        host="clonezilla",
        disks=tuple(
            partitions_only_line((p.kernel_name for p in d.partitions), d.name)
            if image.partitions_only
            else f"{d.name} ({d.table.type}, {len(d.partitions)} partitions), {human_size(d.size)}"
            for d in image.disks
        ),
        data_bytes=data,
        disk_bytes=sum(d.size for d in image.disks),
        volume_groups=tuple(_group_summary(image, vg) for vg in image.volume_groups),
        luks_volumes=tuple(
            f"disk {place[0] + 1} partition {place[1]}: LUKS{v.header.version} volume "
            f"{v.header.uuid} ({v.fs or 'no filesystem'}), opened by Clonezilla"
            for v in image.luks_volumes
            for place in [_places(image)[v.partition]]
        ),
    )


def _group_summary(image: CzImage, vg: CzVolumeGroup) -> VolumeGroupSummary:
    """disk -> partition -> PV -> VG -> LVs from the small files (no data read)."""
    return VolumeGroupSummary.of(_volume_group_image(image, vg, lambda _lv: ((), ExtentMap())))


# -- the source restore reads from ------------------------------------------------


class ClonezillaSource(Repository):
    """Clonezilla images presented as a read-only repository.

    ``load_manifest`` reads the whole image once (checksums, completeness,
    chunk hashes); ``get_chunk`` then serves chunks from a second, sequential
    read in the order restore asks for them. Writing is refused."""

    format_name = FORMAT
    read_whole_first = True  # (Engine.load_manifest; its files' fingerprint is checked again)
    # Chunks read ahead of what restore asked for: its workers ask slightly
    # out of order, by less than the jobs queued and running at once
    # (chunkio: 2 x workers queued, workers running). 4 MiB each.
    AHEAD = 3 * RESTORE_WORKERS

    def __init__(self, root: Store | str, folders: dict[str, ImageFiles]) -> None:
        super().__init__(LocalStore(root) if isinstance(root, str) else root)
        self.folders = folders  # image name -> its files
        self._loaded: dict[str, tuple[CzImage, Manifest, dict[str, bytes], tuple[object, ...]]] = {}
        self._lock = threading.Lock()
        self._cursor: Iterator[tuple[str, bytes | bytearray]] | None = None
        self._cursor_ref = ""
        self._ahead: OrderedDict[int, tuple[str, bytes | bytearray]] = OrderedDict()
        self._serial = 0

    @classmethod
    def open_location(cls, location: str) -> ClonezillaSource:
        root = os.path.abspath(location.removeprefix("file://"))
        if is_image_folder(root):
            one = local_files(root)
            return cls(one.store, {one.name: one})
        store = LocalStore(root)
        folders = {}
        for n in store.list(""):
            if is_image_folder(os.path.join(root, n)):
                folders[n] = ImageFiles(store, n, store.list(n))
        return cls(store, folders)

    # -- listing
    def manifest_refs(self) -> list[tuple[str, str]]:
        out = []
        for name, folder in self.folders.items():
            try:
                out.append((name, _image_time(folder).strftime("%Y%m%dT%H%M%SZ")))
            except OSError:
                continue
        return out

    def list_images(self) -> list[ImageSummary]:
        out = []
        self.damaged = []
        for name, folder in self.folders.items():
            try:
                out.append(summary_of(read_image(folder)))
            except (RepositoryError, OSError) as exc:
                self.damaged.append(f"Clonezilla image {name}: {exc}")
        out.sort(key=lambda s: (s.created, s.name))
        return out

    def resolve(self, ref: str) -> tuple[str, str]:
        name, _, image_id = ref.partition("@")
        if name not in self.folders:
            raise ImageNotFoundError(
                f"no Clonezilla image named {name!r} in {self.location}",
                hint="run 'liferaft images --repo ...' to list the images",
            )
        return name, image_id

    def image(self, ref: str) -> CzImage:
        name, _ = self.resolve(ref)
        return read_image(self.folders[name])

    def load_manifest(
        self,
        ref: str,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> Manifest:
        """The image as a Manifest, after reading all of it (cached)."""
        name, _ = self.resolve(ref)
        if name in self._loaded:
            return self._loaded[name][1]
        image = read_image(self.folders[name])
        fingerprint = image.folder.fingerprint(image.files())
        manifest, static = build_manifest(image, progress=progress, cancel=cancel)
        self._loaded[name] = (image, manifest, static, fingerprint)
        return manifest

    # -- what restore calls
    def check_chunks_present(self, manifest: Manifest) -> None:
        """The image's files are still those that were read through when the
        manifest was made (the plan may have waited for a confirmation)."""
        image, _m, _s, fingerprint = self._entry(manifest)
        try:
            now: tuple[object, ...] | None = image.folder.fingerprint(image.files())
        except OSError:
            now = None  # a file went away
        if now != fingerprint:
            raise ClonezillaImageError(
                f"Clonezilla image {image.name} changed after it was checked; nothing was written",
                hint="plan the restore again",
            )

    def missing_chunks(self, digests: Iterable[str]) -> set[str]:
        return set()

    def has_chunk(self, digest: str) -> bool:
        return any(digest in entry[2] for entry in self._loaded.values())

    def _entry(
        self, manifest: Manifest
    ) -> tuple[CzImage, Manifest, dict[str, bytes], tuple[object, ...]]:
        for entry in self._loaded.values():
            if entry[1].ref == manifest.ref:
                return entry
        raise ImageNotFoundError(f"Clonezilla image {manifest.ref} was not read first")

    def get_chunk(self, digest: str, where: str = "") -> bytes:
        """Chunk ``digest`` of the image being restored: from the head files,
        or from the partclone images read through in order. A chunk asked for
        again later (a second pass) starts the read anew."""
        with self._lock:
            for entry in self._loaded.values():
                if digest in entry[2]:
                    return entry[2][digest]
            for restarted in (False, True):
                for key, (d, data) in list(self._ahead.items()):
                    if d == digest:
                        del self._ahead[key]
                        return bytes(data)
                if self._cursor is None or restarted:
                    self._restart()
                assert self._cursor is not None
                for d, data in self._cursor:
                    if d == digest:
                        return bytes(data)
                    self._serial += 1
                    self._ahead[self._serial] = (d, data)
                    while len(self._ahead) > self.AHEAD:
                        self._ahead.popitem(last=False)
                self._cursor = None
        raise ChunkError(
            f"chunk {digest[:12]} ({where}) is not in the Clonezilla image",
            hint="the image changed while it was read; plan the restore again",
        )

    def _restart(self) -> None:
        self._ahead.clear()
        if not self._loaded:
            raise ChunkError("no Clonezilla image was read before its chunks were asked for")
        image, manifest, _s, _f = next(reversed(self._loaded.values()))
        self._cursor = self._stream(image, manifest)

    @staticmethod
    def _stream(image: CzImage, manifest: Manifest) -> Iterator[tuple[str, bytes | bytearray]]:
        """The chunks of every partition, then of every LUKS volume, then of
        every LV (restore's order)."""
        volumes: list[tuple[CzVolume, int, tuple[str | None, ...]]] = [
            (p, p.entry.size, pm.chunks)
            for d, dm in zip(image.disks, manifest.disks, strict=True)
            for p, pm in zip(d.partitions, dm.partitions, strict=True)
        ]
        volumes += [
            (v, v.size, vm.chunks)
            for v, vm in zip(image.luks_volumes, manifest.luks_volumes, strict=True)
        ]
        volumes += [
            (lv, lv.layout.size, lvm_.chunks)
            for vg, vgm in zip(image.volume_groups, manifest.volume_groups, strict=True)
            for lv, lvm_ in zip(vg.lvs, vgm.lvs, strict=True)
        ]
        for p, size, chunks in volumes:
            if not p.image:
                continue
            for i, data, _reader in _partition_cells(image, p, size):
                digest = _cell_digest(data) if i >= 0 else None
                if digest is None:
                    continue
                if digest != chunks[i]:
                    raise ChunkError(
                        f"{image.where(p)}: chunk {i} differs from when the image was checked",
                        hint="the image changed while it was read; use a stable copy",
                    )
                yield digest, data

    # -- writing is not ours
    def put_chunk(
        self, data: bytes | bytearray | memoryview, digest: str | None = None
    ) -> PutResult:
        raise self.read_only_error()

    def commit_manifest(self, manifest: Manifest) -> None:
        raise self.read_only_error()

    def ensure_writable(self) -> None:
        raise self.read_only_error()

    def create_now(self) -> None:
        raise self.read_only_error()

    def local_path(self) -> str | None:
        return self.store.location if isinstance(self.store, LocalStore) else None

    def read_only_error(self) -> RepositoryError:
        return RepositoryError(
            f"{self.location} holds Clonezilla images, which liferaft only reads",
            hint="back up into a liferaft repository folder of its own (e.g. a liferaft/ "
            "folder beside them), or 'liferaft import' an image into one",
        )


# -- import ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult(CaptureResult):
    source: str = field(kw_only=True)  # the Clonezilla image's name


def import_image(
    repo: Repository,
    folder: ImageFiles | str,
    name: str | None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> ImportResult:
    """Convert the Clonezilla image in ``folder`` into an image of ``repo``:
    used blocks only, deduplicated chunks, every partclone checksum checked.
    The manifest is committed last, so a damaged image leaves no image. A
    saveparts image stays one of partitions only (``partitions_only``):
    restored onto partitions the user names, as from its folder."""
    from rescue_app.engine.repository import validate_name

    started = time.monotonic()
    if isinstance(folder, str):
        folder = image_folder_at(folder, CredentialChain())
    image = read_image(folder)
    target = validate_name(name or _safe_name(image.name))
    repo.ensure_writable()
    if image.luks_volumes and not repo.encrypted:
        parts = ", ".join(v.partition for v in image.luks_volumes)
        raise ClonezillaImageError(
            f"Clonezilla image {image.name} holds what was inside the LUKS volume(s) on "
            f"{parts}, unencrypted: it may only go into an encrypted repository, and "
            f"{repo.location} is not encrypted; nothing was written",
            hint="import it into a repository made with 'liferaft init --encrypt'",
        )
    image_id, _now = repo.new_image_id(target)
    built, _static = build_manifest(
        image, store=repo, progress=progress, cancel=cancel, phase="import"
    )
    manifest = replace(built, name=target, id=image_id)
    return ImportResult(**asdict(commit_image(repo, manifest, started)), source=image.name)


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")
    return (cleaned or "clonezilla")[:64]
