"""A fake Engine with fixed disks and images, for snapshot tests ONLY.

It never touches a disk: tests that write disks use the real Engine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rescue_app.engine import DirEntry, Engine
from rescue_app.engine.diskmodel import BlockDisk, BlockPartition, Role
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.luks import KeySource
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    ImageSummary,
    Manifest,
    Method,
    PartitionImage,
    PartitionTable,
    Region,
)
from rescue_app.engine.network import Address, Interface, NetworkStatus
from rescue_app.engine.plan import RestoreChoices, RestorePlan, make_restore_plan
from rescue_app.engine.results import RestoreResult
from rescue_app.errors import CancelledError
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from tests.enginekit import block_disk

GIB = 1024**3
MIB = 1024**2


def _part(
    disk: str,
    n: int,
    start: int,
    size: int,
    fs: str | None,
    label: str | None,
    mounts: tuple[str, ...] = (),
) -> BlockPartition:
    return BlockPartition(f"{disk}{n}", n, start, size, fs, label, None, None, None, None, mounts)


def _disk(
    path: str,
    model: str,
    serial: str,
    size: int,
    parts: tuple[BlockPartition, ...],
    in_use: tuple[str, ...] = (),
    roles: frozenset[Role] = frozenset(),
) -> BlockDisk:
    return block_disk(
        path,
        size,
        model=model,
        serial=serial,
        pttype="gpt",
        partitions=parts,
        in_use=in_use,
        roles=roles,
    )


DISKS = [
    _disk(
        "/dev/sda",
        "SAMSUNG SSD 870",
        "S5Y1NX0R",
        250 * GIB,
        (
            _part("/dev/sda", 1, MIB, 512 * MIB, "vfat", "EFI"),
            _part("/dev/sda", 2, 513 * MIB, 249 * GIB, "ext4", "root"),
        ),
    ),
    _disk(
        "/dev/sdb",
        "Cruzer Blade",
        "4C530001",
        16 * GIB,
        (
            _part(
                "/dev/sdb", 1, MIB, 16 * GIB - 2 * MIB, "iso9660", "LIFERAFT", ("/run/live/medium",)
            ),
        ),
        in_use=("boot medium", "/dev/sdb1 is mounted on /run/live/medium"),
        roles=frozenset({Role.BOOT_MEDIUM}),
    ),
    _disk(
        "/dev/sdc",
        "WD Elements",
        "WX11A",
        1024 * GIB,
        (_part("/dev/sdc", 1, MIB, 1024 * GIB - 2 * MIB, "ext4", "backups"),),
    ),
]


def _pimg(
    n: int, start: int, size: int, fs: str, label: str, used: int, method: str = Method.USED
) -> PartitionImage:
    return PartitionImage(
        n,
        start,
        size,
        "gpt",
        None,
        None,
        label,
        None,
        False,
        Filesystem(fs, None, label),
        method,
        used,
        ExtentMap(),
        (),
    )


MANIFEST = Manifest(
    name="web1",
    id="20261125T101500Z",
    created="2026-11-25T10:15:00Z",
    host="web1",
    liferaft_version="0.1.0",
    chunk_size=4 * MIB,
    chunk_hash="sha256",
    compression="zstd",
    disks=(
        DiskImage(
            index=0,
            model="SAMSUNG SSD 870",
            serial="S5Y1NX0R",
            wwn=None,
            size=250 * GIB,
            logical_sector_size=512,
            physical_sector_size=512,
            transport="sata",
            table=PartitionTable("gpt", "8F3A"),
            head=Region(0, MIB, ()),
            gpt_backup=None,
            partitions=(
                _pimg(1, MIB, 512 * MIB, "vfat", "EFI", 31 * MIB),
                _pimg(2, 513 * MIB, 245 * GIB, "ext4", "root", 12 * GIB),
                _pimg(3, 513 * MIB + 245 * GIB, 4 * GIB, "swap", "swap", 0, Method.SWAP),
            ),
        ),
    ),
)

IMAGES = [
    ImageSummary(
        "web1",
        "20261101T020000Z",
        "2026-11-01T02:00:00Z",
        "web1",
        ("SAMSUNG SSD 870, serial S5Y1NX0R, 250.0 GiB",),
        11 * GIB,
        250 * GIB,
    ),
    ImageSummary.of(MANIFEST),
]


NETWORK = NetworkStatus(
    interfaces=(
        Interface(
            "enp3s0",
            "52:54:00:12:34:56",
            "up",
            True,
            (Address("192.168.10.57", 24, "inet", "global", True),),
            "192.168.10.1",
            ("192.168.10.1",),
            "configured",
        ),
        Interface("enp4s0", "52:54:00:12:34:57", "down", False, (), None, (), "configuring"),
    ),
    dns=("192.168.10.1",),
)


class FakeRepo:
    location = "/media/backups/liferaft"
    format_name = "liferaft"


class FakeEngine(Engine):
    def __init__(self, *, block: bool = False) -> None:
        super().__init__()
        self.block = block

    def list_disks(self) -> list[BlockDisk]:
        return list(DISKS)

    def find_disk(self, spec: str) -> BlockDisk:
        return next(d for d in DISKS if d.path == spec)

    def open_repository(self, location: str, *, create: bool = False, unlock: bool = True) -> Any:
        return FakeRepo()

    def list_images(self, repo: Any) -> list[ImageSummary]:
        return list(IMAGES)

    def load_manifest(
        self, repo: Any, ref: str, progress: Any = None, cancel: Any = None
    ) -> Manifest:
        return MANIFEST

    def plan_restore(
        self,
        repo: Any,
        ref: str,
        targets: Sequence[str],
        choices: RestoreChoices | None = None,
    ) -> RestorePlan:
        disks = [self.find_disk(t) for t in targets]
        return make_restore_plan(repo, MANIFEST, disks, choices or RestoreChoices())

    def restore(
        self,
        plan: RestorePlan,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        verify: bool = False,
        luks_key: KeySource | None = None,
    ) -> RestoreResult:
        total = plan.write_bytes
        progress(
            Progress("restore", "disk 1 partition 2 (ext4)", total // 3, total, 4 * GIB, 12 * GIB)
        )
        if self.block:
            for _ in range(100):
                if cancel is not None and cancel.cancelled:
                    raise CancelledError("restore cancelled")
                time.sleep(0.05)
        return RestoreResult(
            MANIFEST.ref, ("/dev/sda",), total, True, fetched_bytes=total, seconds=754.0
        )

    def network_status(self) -> NetworkStatus:
        return NETWORK


class FakeImageMount:
    """What the Browse files screen reads of a live browse mount, mounting nothing:
    partition 2 (ext4) has files, the vfat and swap partitions do not."""

    def __init__(self, point: str) -> None:
        from rescue_app.engine.browse import browse_partitions

        self.point = point
        self.manifest = MANIFEST
        self.partitions = browse_partitions(MANIFEST)
        self.mounted = {"disk1/p2": f"{point}/disk1/p2/files"}

    def list_dir(self, part: Any, rel: str = "") -> list[DirEntry]:
        when = 1_764_000_000.0  # 2025-11-24
        if rel.strip("/"):
            return [
                DirEntry("fstab", "file", 1_234, 0o100644, when),
                DirEntry("hosts", "file", 220, 0o100644, when),
                DirEntry("passwd", "file", 2_048, 0o100644, when),
            ]
        return [
            DirEntry("etc", "dir", 4096, 0o40755, when),
            DirEntry("home", "dir", 4096, 0o40755, when),
            DirEntry("vmlinuz", "symlink", 30, 0o120777, when),
            DirEntry("swapfile", "file", 2 * GIB, 0o100600, when),
        ]

    def close(self) -> None:
        pass


class FakeBrowseEngine(FakeEngine):
    def mount_image(self, repo: Any, ref: str, point: str, **_: Any) -> Any:
        return FakeImageMount(point)
