"""Asking the running system about its disks: lsblk, blkid, /proc and /sys.

Reads only: runs ``lsblk --json --bytes`` and ``blkid -p`` through
rescue_app.run, walks /sys/class/block and /proc, reads each disk's
incomplete-restore mark, and hands the texts to ``diskparse``. Writes
nothing to any disk (re-reading tables is ``kernel``'s job).

    list_disks() -> list[BlockDisk]
    find_disk(spec) -> BlockDisk       # /dev/x, serial:XYZ, wwn:...; DiskError if none
    mounts_on_disk(name) -> list[MountOnDisk]
    disks_holding_path(path) -> set[str]
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from typing import Any

from rescue_app.engine import restoremark
from rescue_app.engine.diskmodel import BlockDisk, MountOnDisk, SystemState
from rescue_app.engine.diskparse import (
    SKIPPED_NAME,
    MountEntry,
    as_int,
    dev_path,
    parse_blkid_export,
    parse_lsblk,
    parse_mountinfo,
    parse_swaps,
    walk,
)
from rescue_app.errors import CommandError, DiskError
from rescue_app.run import run

# util-linux 2.38 has all of these (PARTN only from 2.39, so the number comes from sysfs).
LSBLK_COLUMNS = (
    "NAME,PATH,TYPE,MODEL,SERIAL,WWN,SIZE,LOG-SEC,PHY-SEC,TRAN,RM,RO,PTTYPE,PTUUID,"
    "FSTYPE,LABEL,UUID,PARTUUID,PARTTYPE,PARTLABEL,MOUNTPOINTS,PKNAME"
)

SYS_BLOCK = "/sys/class/block"


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount this process sees; none when the file cannot be read."""
    return parse_mountinfo(read_text(path) or "")


def _majmin_of_path(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def _disks_below(majmin: str, depth: int = 0) -> set[str]:
    """Top-level disks a device sits on: partition -> disk, dm/md -> their slaves."""
    link = f"/sys/dev/block/{majmin}"
    if depth > 8 or not os.path.exists(link):
        return set()
    real = os.path.realpath(link)
    name = os.path.basename(real)
    if os.path.exists(os.path.join(real, "partition")):
        return {os.path.basename(os.path.dirname(real))}
    slaves_dir = os.path.join(real, "slaves")
    slaves = os.listdir(slaves_dir) if os.path.isdir(slaves_dir) else []
    if not slaves:
        return {name}
    found: set[str] = set()
    for slave in slaves:
        dev = read_text(os.path.join(SYS_BLOCK, slave, "dev"))
        if dev:
            found |= _disks_below(dev, depth + 1)
    return found


def _disks_of_mount(mount: MountEntry) -> set[str]:
    # btrfs and overlay report an anonymous 0:N; the source names the device then.
    if not mount.majmin.startswith("0:"):
        return _disks_below(mount.majmin)
    if mount.source.startswith("/dev/"):
        majmin = _majmin_of_path(mount.source)
        if majmin:
            return _disks_below(majmin)
    return set()


def mounts_on_disk(disk_name: str) -> list[MountOnDisk]:
    """What is mounted from the disk ``disk_name`` (kernel name, e.g. "sda")."""
    return [
        MountOnDisk(m.source, m.mountpoint, m.read_only)
        for m in read_mountinfo()
        if disk_name in _disks_of_mount(m)
    ]


def disks_holding_path(path: str) -> set[str]:
    """Kernel names of the disks that hold the folder ``path`` (or, if it does
    not exist yet, its nearest existing parent): where writes to it would land."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    majmin = _majmin_of_path(probe)
    found = _disks_below(majmin) if majmin and not majmin.startswith("0:") else set()
    # FUSE (ntfs-3g, exfat-fuse) and btrfs report an anonymous device: the
    # mount that holds the path names the real one.
    real = os.path.realpath(probe)
    holding = [
        m
        for m in read_mountinfo()
        if real == m.mountpoint or real.startswith(m.mountpoint.rstrip("/") + "/")
    ]
    if holding:
        found |= _disks_of_mount(max(holding, key=lambda m: len(m.mountpoint)))
    return found


def _boot_media(mounts: list[MountEntry]) -> set[str]:
    media: set[str] = set()
    for mount in mounts:
        if mount.mountpoint in ("/run/live/medium", "/lib/live/mount/medium"):
            media |= _disks_of_mount(mount)
        if mount.fstype == "squashfs" and mount.source.startswith("/dev/loop"):
            loop = os.path.basename(mount.source)
            media.add(loop)
            backing = read_text(f"{SYS_BLOCK}/{loop}/loop/backing_file")
            if backing:
                majmin = _majmin_of_path(backing.removesuffix(" (deleted)"))
                if majmin:
                    media |= _disks_below(majmin)
    return media


def _swaps(path: str = "/proc/swaps") -> frozenset[str]:
    return frozenset(os.path.realpath(p) for p in parse_swaps(read_text(path) or ""))


def _probe(path: str) -> dict[str, str]:
    """``blkid -p`` of one device: what lsblk shows when udev has a database."""
    try:
        proc = run(["blkid", "-p", "-o", "export", path], check=False, timeout=30)
    except CommandError:
        return {}
    return parse_blkid_export(proc.stdout)


def read_system_state(data: Mapping[str, Any]) -> SystemState:
    """Facts from /proc and /sys about the devices in ``data`` (lsblk JSON)."""
    mounts = read_mountinfo()
    root_disks: set[str] = set()
    for mount in mounts:
        if mount.mountpoint == "/":
            root_disks |= _disks_of_mount(mount)
    swaps = _swaps()
    holders: dict[str, tuple[str, ...]] = {}
    geometry: dict[str, tuple[int, int]] = {}
    backing: dict[str, str] = {}
    mount_fstypes = {m.source: m.fstype for m in mounts if m.source.startswith("/dev/")}
    probes: dict[str, dict[str, str]] = {}
    marks: dict[str, str] = {}
    for node in walk(data.get("blockdevices") or []):
        name = str(node["name"])
        sys_dir = os.path.join(SYS_BLOCK, name)
        try:
            held = tuple(sorted(os.listdir(os.path.join(sys_dir, "holders"))))
        except OSError:
            held = ()
        if held:
            holders[name] = held
        number, start = read_text(os.path.join(sys_dir, "partition")), read_text(f"{sys_dir}/start")
        if number and start:
            geometry[name] = (int(number), int(start) * 512)
        file = read_text(os.path.join(sys_dir, "loop", "backing_file"))
        if file:
            backing[name] = file
        # Without udev (as on a bare host) lsblk leaves FSTYPE, LABEL, PTTYPE,
        # UUIDs... empty. Probe those devices directly (blkid -p only reads, so
        # mounted ones too: their labels are what a user recognises them by).
        unknown = all(node.get(k) is None for k in ("fstype", "pttype", "uuid", "partuuid"))
        path = dev_path(node)
        if node.get("type") in ("disk", "loop", "part"):
            if node.get("type") == "loop" and not file:
                continue
            if SKIPPED_NAME.match(name) or as_int(node.get("size")) <= 0:
                continue
            if unknown and path not in swaps:
                probes[path] = _probe(path)
            if node.get("type") in ("disk", "loop"):
                mark = restoremark.read(path)
                if mark:
                    marks[path] = mark
    return SystemState(
        root_disks=frozenset(root_disks),
        boot_media=frozenset(_boot_media(mounts)),
        swaps=swaps,
        holders=holders,
        partition_geometry=geometry,
        backing_files=backing,
        mount_fstypes=mount_fstypes,
        probes=probes,
        restore_marks=marks,
    )


def read_lsblk() -> dict[str, Any]:
    proc = run(["lsblk", "--json", "--bytes", "-o", LSBLK_COLUMNS], timeout=60)
    try:
        data: dict[str, Any] = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise DiskError(f"cannot parse the output of lsblk: {exc}") from exc
    return data


def list_disks() -> list[BlockDisk]:
    """Every disk of this machine (and attached loop devices), with why it is busy."""
    data = read_lsblk()
    return parse_lsblk(data, read_system_state(data))


# ---------------------------------------------------------------- finding


def find_disk(spec: str, disks: list[BlockDisk] | None = None) -> BlockDisk:
    """The disk named by a /dev path, ``serial:XYZ`` or ``wwn:...``."""
    if disks is None:
        disks = list_disks()
    hint = "run `liferaft disks` to see the disks of this machine"
    kind, sep, value = spec.partition(":")
    if sep and kind in ("serial", "wwn"):
        wanted = value.strip().lower()
        if kind == "wwn":
            wanted = wanted.removeprefix("0x")
        matches = [
            d
            for d in disks
            if (getattr(d, kind) or "").lower().removeprefix("0x" if kind == "wwn" else "")
            == wanted
        ]
        if len(matches) > 1:
            paths = ", ".join(d.path for d in matches)
            raise DiskError(f"{spec} matches several disks: {paths}", hint="name one by path")
        if not matches:
            raise DiskError(f"no disk with {kind} {value}", hint=hint)
        return matches[0]
    path = os.path.realpath(spec)
    for disk in disks:
        if path in (disk.path, os.path.realpath(disk.path)):
            return disk
    for disk in disks:
        for part in disk.partitions:
            if path == part.path:
                raise DiskError(
                    f"{spec} is a partition, not a disk", hint=f"name the disk {disk.path}"
                )
    raise DiskError(f"no disk {spec}", hint=hint)
