"""LVM: the one home of every lvm2 command liferaft runs, and of reading its reports.

Reads the layout as typed values (``pvs``/``vgs``/``lvs --reportformat json``,
parsed by pure functions that tests feed recorded output), keeps the
``vgcfgbackup`` text of a volume group, activates a source volume group
read-only for a capture and deactivates exactly what it activated, and
recreates a volume group on a restore's new partitions (``pvcreate --uuid
--restorefile``, ``vgcfgrestore``, ``pvresize``, ``lvextend``). What is
captured or written where is decided by capture.py and restore.py; this
module never reads or writes a logical volume's data.

    physical_volumes(devices) -> list[PhysicalVolume]
    volume_group(name) -> VolumeGroup; logical_volumes(vg) -> list[LogicalVolume]
    segments(vg) -> list[Segment]; backup_metadata(vg) -> str
    with activated(vg, read_only=True): ...       # deactivates what it activated
    create_pv(device, uuid, metadata); restore_vg(vg, metadata, force=...)
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rescue_app.errors import CommandError, DiskError
from rescue_app.run import run

log = logging.getLogger("liferaft.lvm")

PV_TYPE = "LVM2_member"  # blkid's TYPE of a physical volume

# LVs liferaft captures by their contents; the thin pool is recreated by
# vgcfgrestore and its metadata LV written back; anything else (RAID, mirror,
# cache, classic snapshots, VDO) makes the volume group fall back to raw PVs.
SUPPORTED_SEGTYPES = frozenset({"linear", "striped", "thin", "thin-pool"})

# lvm warns about every inherited descriptor; the rescue system's logs do not
# need it. The devices file (lvm 2.03.12+) would hide a disk the rescue system
# has never seen: every command looks at every device.
_CONFIG = "devices { use_devicesfile = 0 }"


def _env() -> dict[str, str]:
    return {"LVM_SUPPRESS_FD_WARNINGS": "1"}


def _lvm(argv: Sequence[str], *, check: bool = True, config: str = "") -> str:
    """Run an lvm command (``config``: settings for this command only)."""
    try:
        proc = run([*argv, "--config", f"{_CONFIG} {config}"], env=_env(), check=check, timeout=300)
    except CommandError as exc:
        raise DiskError(
            f"LVM: {exc.message}", hint=exc.hint or "see the log for lvm's output"
        ) from None
    return proc.stdout


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class PhysicalVolume:
    device: str  # /dev path of the partition or disk
    uuid: str
    vg: str  # "" when in no volume group
    size: int  # bytes LVM uses
    dev_size: int
    pe_start: int  # bytes from the device start to the first extent
    metadata_copies: int


@dataclass(frozen=True)
class VolumeGroup:
    """A volume group as ``vgs`` reports it; what a capture records of it
    (manifest.VolumeGroupImage) adds its PVs, LVs and metadata text."""

    name: str
    uuid: str
    extent_size: int  # bytes
    tags: tuple[str, ...]


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    name: str  # without the brackets lvs puts around hidden LVs
    uuid: str
    size: int
    segtype: str  # of the first segment: linear, striped, thin, thin-pool, ...
    tags: tuple[str, ...]
    pool: str  # the thin pool of a thin LV
    origin: str  # the origin of a snapshot
    hidden: bool  # an LV inside another (a pool's _tmeta/_tdata, the pmspare)
    active: bool
    metadata_size: int  # of a thin pool

    @property
    def dm_path(self) -> str:
        return dm_path(self.vg, self.name)


@dataclass(frozen=True)
class Segment:
    """One segment of an LV: ``extents`` extents from logical extent ``le`` on
    the PV ``device`` starting at its physical extent ``pe``."""

    lv: str
    le: int
    device: str
    pe: int
    extents: int
    segtype: str


def dm_path(vg: str, lv: str) -> str:
    """/dev/mapper name of an active LV (device-mapper doubles every '-')."""
    return f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}"


# ---------------------------------------------------------------- parsing (pure)


def parse_report(text: str, key: str) -> list[dict[str, str]]:
    """Rows of one ``--reportformat json`` report (``key``: pv, vg, lv, seg)."""
    doc = json.loads(text)
    rows: list[dict[str, str]] = []
    for report in doc.get("report", []):
        for row in report.get(key, []):
            rows.append({str(k): str(v) for k, v in row.items()})
    return rows


def _int(value: str) -> int:
    value = value.strip()
    return int(float(value)) if value else 0


def _tags(value: str) -> tuple[str, ...]:
    return tuple(t for t in value.split(",") if t)


def parse_pvs(text: str) -> list[PhysicalVolume]:
    return [
        PhysicalVolume(
            device=r["pv_name"],
            uuid=r["pv_uuid"],
            vg=r.get("vg_name", ""),
            size=_int(r["pv_size"]),
            dev_size=_int(r["dev_size"]),
            pe_start=_int(r["pe_start"]),
            metadata_copies=_int(r.get("pv_mda_count", "1")),
        )
        for r in parse_report(text, "pv")
    ]


def parse_vgs(text: str) -> list[VolumeGroup]:
    return [
        VolumeGroup(
            name=r["vg_name"],
            uuid=r["vg_uuid"],
            extent_size=_int(r["vg_extent_size"]),
            tags=_tags(r.get("vg_tags", "")),
        )
        for r in parse_report(text, "vg")
    ]


def parse_lvs(text: str) -> list[LogicalVolume]:
    """One LogicalVolume per LV. (Asking for ``segtype`` makes lvs print a
    row per segment: an LV over two PVs comes twice; the first row counts.)"""
    out: list[LogicalVolume] = []
    seen: set[str] = set()
    for r in parse_report(text, "lv"):
        if r["lv_uuid"] in seen:
            continue
        seen.add(r["lv_uuid"])
        name = r["lv_name"]
        hidden = name.startswith("[") and name.endswith("]")
        attr = r.get("lv_attr", "")
        out.append(
            LogicalVolume(
                vg=r["vg_name"],
                name=name.strip("[]"),
                uuid=r["lv_uuid"],
                size=_int(r["lv_size"]),
                segtype=r.get("segtype", ""),
                tags=_tags(r.get("lv_tags", "")),
                pool=r.get("pool_lv", "").strip("[]"),
                origin=r.get("origin", "").strip("[]"),
                hidden=hidden,
                active=len(attr) > 4 and attr[4] == "a",
                metadata_size=_int(r.get("lv_metadata_size", "")),
            )
        )
    return out


_DEVICE = re.compile(r"^(?P<dev>.+)\((?P<pe>\d+)\)$")


def parse_segments(text: str) -> list[Segment]:
    """``lvs --segments`` rows. A segment on several devices (striped, RAID)
    gets device "" and pe -1: only single-device segments are placed by offset."""
    out = []
    for r in parse_report(text, "seg"):
        devices = [d for d in r.get("devices", "").split(",") if d]
        match = _DEVICE.match(devices[0]) if len(devices) == 1 else None
        if match and not match.group("dev").startswith("/"):
            match = None  # another LV (a pool's data): not a place on a PV
        out.append(
            Segment(
                lv=r["lv_name"].strip("[]"),
                le=_int(r["seg_start_pe"]),
                device=match.group("dev") if match else "",
                pe=int(match.group("pe")) if match else -1,
                extents=_int(r["seg_size_pe"]),
                segtype=r.get("segtype", ""),
            )
        )
    return out


# ---------------------------------------------------------------- reading


_REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]


def physical_volumes(devices: Sequence[str] = ()) -> list[PhysicalVolume]:
    """The PVs among ``devices`` (all PVs when empty)."""
    fields = "pv_name,pv_uuid,vg_name,pv_size,dev_size,pe_start,pv_mda_count"
    return parse_pvs(_lvm(["pvs", *_REPORT, "-o", fields, *devices]))


def volume_group(name: str) -> VolumeGroup:
    fields = "vg_name,vg_uuid,vg_extent_size,vg_tags"
    found = parse_vgs(_lvm(["vgs", *_REPORT, "-o", fields, name]))
    if not found:
        raise DiskError(f"LVM: no volume group {name}")
    return found[0]


def logical_volumes(vg: str) -> list[LogicalVolume]:
    fields = (
        "vg_name,lv_name,lv_uuid,lv_size,segtype,lv_tags,pool_lv,origin,lv_attr,lv_metadata_size"
    )
    return parse_lvs(_lvm(["lvs", "-a", *_REPORT, "-o", fields, vg]))


def segments(vg: str) -> list[Segment]:
    fields = "lv_name,seg_start_pe,seg_size_pe,segtype,devices"
    return parse_segments(_lvm(["lvs", "-a", "--segments", *_REPORT, "-o", fields, vg]))


def backup_metadata(vg: str) -> str:
    """The volume group's ``vgcfgbackup`` text: what vgcfgrestore needs."""
    with tempfile.TemporaryDirectory(prefix="liferaft-lvm-") as tmp:
        path = os.path.join(tmp, f"{vg}.vg")
        _lvm(["vgcfgbackup", "-f", path, vg])
        with open(path) as f:
            return f.read()


# ---------------------------------------------------------------- activation


@contextmanager
def activated(vg: str, *, read_only: bool) -> Iterator[list[LogicalVolume]]:
    """The volume group's LVs active for a ``with`` block; afterwards (also on
    failure) the LVs that were inactive before are deactivated again.

    ``read_only``: the LVs' kernel devices refuse writes (read_only_volume_list)
    and lvm may not write metadata (metadata_read_only): a capture only reads.
    Thin pools are the exception: the kernel refuses a read-only thin-pool
    table ("reload ioctl failed: Invalid argument"), and lvm activates a thin
    LV's pool with the LV's own read-only setting. So a pool and its thin LVs
    are activated read-write, nothing writing to them, and each thin LV's
    device is then made read-only (``blockdev --setro``): each that this
    call activated, never one that was active already (the online backup:
    the running system writes to it).
    """
    lvs = logical_volumes(vg)
    before = {lv.name for lv in lvs if lv.active}
    config = ""
    if read_only:
        names = ", ".join(
            f'"{vg}/{lv.name}"'
            for lv in lvs
            if not lv.hidden and lv.segtype not in ("thin-pool", "thin")
        )
        config = (
            f"activation {{ read_only_volume_list = [ {names} ] }} "
            "global { metadata_read_only = 1 }"
        )
    try:
        _lvm(["vgchange", "--activate", "y", "--ignoreactivationskip", vg], config=config)
        now = logical_volumes(vg)
        if read_only:
            for lv in now:
                if lv.segtype == "thin" and lv.active and lv.name not in before:
                    run(["blockdev", "--setro", lv.dm_path])
        yield now
    finally:
        _deactivate(vg, before)


def _deactivate(vg: str, keep: set[str]) -> None:
    try:
        now = [lv for lv in logical_volumes(vg) if lv.active and not lv.hidden]
    except DiskError as exc:
        log.warning("%s: cannot list its LVs to deactivate them: %s", vg, exc)
        return
    if not keep:
        _lvm(["vgchange", "--activate", "n", vg], check=False)
        return
    # Thin LVs before their pool: a pool with an active thin LV stays up.
    for lv in sorted(now, key=lambda lv: lv.segtype == "thin-pool"):
        if lv.name not in keep:
            _lvm(["lvchange", "--activate", "n", f"{vg}/{lv.name}"], check=False)


def deactivate(vg: str) -> None:
    """Every LV of the volume group off (a restore's end, also on failure)."""
    _lvm(["vgchange", "--activate", "n", vg], check=False)


# ---------------------------------------------------------------- recreating


def create_pv(device: str, uuid: str, metadata: str, metadata_copies: int = 1) -> None:
    """A PV on ``device`` with the old UUID, its extents where the metadata
    says they are (``--restorefile`` takes pe_start from the backup)."""
    with _metadata_file(metadata) as path:
        _lvm(
            [
                "pvcreate",
                "--yes",
                "--force",
                "--uuid",
                uuid,
                "--restorefile",
                path,
                "--pvmetadatacopies",
                str(metadata_copies),
                device,
            ]
        )


def active_devices(vg_uuid: str, sys_block: str = "/sys/block") -> list[str]:
    """The device-mapper names of the active LVs (and their hidden layers) of
    the volume group with UUID ``vg_uuid``: their dm UUID begins with
    "LVM-" and the VG UUID without dashes. Read from sysfs."""
    prefix = "LVM-" + vg_uuid.replace("-", "")
    out = []
    for dm in sorted(os.listdir(sys_block)):
        try:
            with open(os.path.join(sys_block, dm, "dm", "uuid")) as f:
                uuid = f.read().strip()
            with open(os.path.join(sys_block, dm, "dm", "name")) as f:
                name = f.read().strip()
        except OSError:
            continue  # (not a device-mapper device)
        if uuid.startswith(prefix):
            out.append(name)
    return out


def restore_vg(vg: str, metadata: str, *, force: bool) -> None:
    """``vgcfgrestore`` the volume group; ``force`` for thin pools, whose
    kernel metadata lvm cannot check (liferaft writes it back verbatim)."""
    with _metadata_file(metadata) as path:
        _lvm(["vgcfgrestore", *(["--force"] if force else []), "-f", path, vg])


def resize_pv(device: str) -> None:
    _lvm(["pvresize", device])


def extend_lv(vg: str, lv: str, keep_free: int = 0) -> None:
    """The LV takes the free extents of its volume group but ``keep_free``:
    the source's free space stays free (room for the snapshots of the
    restored machine's next online backup); the LV grows into the new space."""
    grow = free_extents(vg) - keep_free
    if grow > 0:
        _lvm(["lvextend", "--extents", f"+{grow}", f"{vg}/{lv}"])


def activate(vg: str) -> None:
    _lvm(["vgchange", "--activate", "y", "--ignoreactivationskip", vg])


@contextmanager
def _metadata_file(text: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="liferaft-lvm-") as tmp:
        path = os.path.join(tmp, "metadata.vg")
        with open(path, "w") as f:
            f.write(text)
        yield path


# ---------------------------------------------------------------- snapshots (online backup)

SNAPSHOT_PREFIX = "liferaft-snap-"
# --thin-delta: a thin LV's snapshot kept after a backup, the next one's base
BASE_PREFIX = "liferaft-base-"
# Classic snapshots together take at most this share of the VG's free
# extents: the rest stays free for the running system's own use.
SNAPSHOT_SHARE = 0.5


def snapshot_extents(free_extents: int, origins: Sequence[int]) -> list[int]:
    """The size in extents of a classic snapshot of each origin (its size in
    extents): an equal share of ``SNAPSHOT_SHARE`` of the free extents, never
    more than the origin (a snapshot never needs more). A share under one
    extent is a DiskError: the volume group is too full for snapshots."""
    if not origins:
        return []
    share = int(free_extents * SNAPSHOT_SHARE) // len(origins)
    if share < 1:
        raise DiskError(
            f"LVM: the volume group has {free_extents} free extent(s): too few for "
            f"{len(origins)} snapshot(s) without filling it",
            hint="free some space in the volume group (or add a PV), or back up offline "
            "from the rescue stick",
        )
    return [min(share, size) for size in origins]


def snapshot_name(lv: str) -> str:
    return f"{SNAPSHOT_PREFIX}{lv}"


def snapshot_argv(lv: LogicalVolume, extents: int) -> list[str]:
    """lvcreate for the snapshot of ``lv``: a thin snapshot of a thin LV (no
    size: it shares the pool; activated despite its activation-skip flag),
    else a classic one of ``extents`` extents."""
    argv = ["lvcreate", "--snapshot", "--name", snapshot_name(lv.name)]
    if lv.segtype == "thin":
        argv += ["--setactivationskip", "n"]
    else:
        argv += ["--extents", str(extents)]
    return [*argv, f"{lv.vg}/{lv.name}"]


def base_name(lv: str) -> str:
    return f"{BASE_PREFIX}{lv}"


def ours(lv: LogicalVolume) -> bool:
    """A snapshot of liferaft's (a backup's, or a kept base): not captured."""
    return lv.name.startswith((SNAPSHOT_PREFIX, BASE_PREFIX))


def keep_as_base(vg: str, origin: str) -> None:
    """The backup's snapshot of the thin LV ``origin`` becomes its base for
    the next backup (``liferaft-base-LV``, skipped at activation, inactive);
    the previous base goes."""
    remove_snapshot(vg, base_name(origin))
    _lvm(["lvrename", vg, snapshot_name(origin), base_name(origin)])
    _lvm(["lvchange", "--activate", "n", f"{vg}/{base_name(origin)}"])
    _lvm(["lvchange", "--setactivationskip", "y", f"{vg}/{base_name(origin)}"])


def stale_snapshots(lvs: Sequence[LogicalVolume]) -> list[LogicalVolume]:
    """Snapshots an earlier backup left behind (it crashed or was killed)."""
    return [lv for lv in lvs if lv.name.startswith(SNAPSHOT_PREFIX)]


def free_extents(vg: str) -> int:
    rows = parse_report(_lvm(["vgs", *_REPORT, "-o", "vg_free_count", vg]), "vg")
    return _int(rows[0]["vg_free_count"]) if rows else 0


def remove_stale_snapshots(vg: str) -> None:
    for old in stale_snapshots(logical_volumes(vg)):
        log.warning("removing the stale snapshot %s/%s of an earlier backup", vg, old.name)
        remove_snapshot(vg, old.name)


def remove_snapshot(vg: str, name: str) -> None:
    _lvm(["lvremove", "--yes", f"{vg}/{name}"], check=False)


@contextmanager
def snapshots(
    vg: str, lvs: Sequence[LogicalVolume], keep: bool = False
) -> Iterator[dict[str, LogicalVolume]]:
    """Snapshots of ``lvs`` (of ``vg``, in use) for a ``with`` block: {origin
    name: its snapshot}; removed after, and stale ones from a crashed run
    removed first. ``keep``: a thin LV's snapshot is kept as its base
    (keep_as_base) when the block ends without an error."""
    remove_stale_snapshots(vg)
    extent = volume_group(vg).extent_size
    classic = [lv for lv in lvs if lv.segtype != "thin"]
    sizes = dict(
        zip(
            (lv.name for lv in classic),
            snapshot_extents(free_extents(vg), [lv.size // extent for lv in classic]),
            strict=True,
        )
    )
    made: list[LogicalVolume] = []
    done = False
    try:
        for lv in lvs:
            _lvm(snapshot_argv(lv, sizes.get(lv.name, 0)))
            made.append(lv)
        now = {x.name: x for x in logical_volumes(vg)}
        yield {lv.name: now[snapshot_name(lv.name)] for lv in lvs}
        done = True
    finally:
        for lv in made:
            if done and keep and lv.segtype == "thin":
                try:
                    keep_as_base(vg, lv.name)
                    continue
                except DiskError as exc:  # the next backup reads it whole
                    log.warning("%s/%s: no base kept for the next backup: %s", vg, lv.name, exc)
            remove_snapshot(vg, snapshot_name(lv.name))


@dataclass(frozen=True)
class ThinState:
    """A volume group's thin pools at one moment, as its text metadata
    records them: each pool's transaction id, each thin LV's device id."""

    transactions: dict[str, int]  # pool name -> transaction_id
    devices: dict[str, tuple[str, int]]  # thin LV name -> (its pool, its thin_id there)


def thin_state(vg: str) -> ThinState:
    fields = "lv_name,segtype,pool_lv,transaction_id,thin_id"
    rows = parse_report(_lvm(["lvs", "-a", *_REPORT, "-o", fields, vg]), "lv")
    return ThinState(
        transactions={
            r["lv_name"]: _int(r["transaction_id"]) for r in rows if r["segtype"] == "thin-pool"
        },
        devices={
            r["lv_name"]: (r["pool_lv"].strip("[]"), _int(r["thin_id"]))
            for r in rows
            if r["segtype"] == "thin"
        },
    )
