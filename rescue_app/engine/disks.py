"""Block devices as the engine sees them: probe, describe, find, protect.

Reads the system with ``lsblk --json --bytes`` (and /proc, /sys) into frozen
models. Owns the rule that the disk holding the running system, the boot
medium and any disk with a mounted or in-use partition are never restore
targets. Writes nothing to any disk; the only change it may make is creating
a missing /dev node for a partition the kernel already knows
(``reread_partitions``).

Reading is split in two so the rules test without root: ``read_system_state``
gathers /proc and /sys facts, ``parse_lsblk`` is a pure function of the lsblk
JSON and that state.

    list_disks() -> list[BlockDisk]
    find_disk(spec) -> BlockDisk       # /dev/x, serial:XYZ, wwn:...; DiskError if none
    ensure_restorable(disk) -> None    # TargetRefusedError naming the reason
    reread_partitions(disk_path, expected, timeout=10) -> list[str]
    format_disks_table(disks) -> str   # what `liferaft disks` prints
    disks_to_json(disks) -> list[dict]
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import textwrap
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rescue_app.engine import restoremark
from rescue_app.engine.units import human_size
from rescue_app.errors import CommandError, DiskError, TargetRefusedError
from rescue_app.run import run

# util-linux 2.38 has all of these (PARTN only from 2.39, so the number comes from sysfs).
LSBLK_COLUMNS = (
    "NAME,PATH,TYPE,MODEL,SERIAL,WWN,SIZE,LOG-SEC,PHY-SEC,TRAN,RM,RO,PTTYPE,PTUUID,"
    "FSTYPE,LABEL,UUID,PARTUUID,PARTTYPE,PARTLABEL,MOUNTPOINTS,PKNAME"
)

SYS_BLOCK = "/sys/class/block"
BLKRRPART = 0x125F  # <linux/fs.h> _IO(0x12, 95): re-read partition table

# Kernel names that are never disks a user backs up or restores.
_SKIPPED_NAME = re.compile(r"^(ram|zram|sr|fd)\d*")


class Role(Enum):
    """What a disk is to the running system: policy is decided on these, the
    text (``in_use``) is only for people."""

    RUNNING_SYSTEM = "holds the running system"
    BOOT_MEDIUM = "boot medium"
    READ_ONLY = "is read-only"


REASON_ROOT = Role.RUNNING_SYSTEM.value
REASON_BOOT = Role.BOOT_MEDIUM.value
REASON_READ_ONLY = Role.READ_ONLY.value


@dataclass(frozen=True)
class BlockPartition:
    path: str
    number: int
    start: int  # bytes from disk start
    size: int
    fstype: str | None
    label: str | None
    uuid: str | None
    partuuid: str | None
    parttype: str | None
    partlabel: str | None
    mountpoints: tuple[str, ...]


@dataclass(frozen=True)
class BlockDisk:
    path: str
    name: str
    model: str | None
    serial: str | None
    wwn: str | None
    size: int
    logical_sector_size: int
    physical_sector_size: int
    transport: str  # nvme, sata, usb, virtio, scsi, loop, ...
    removable: bool
    read_only: bool
    pttype: str | None  # "gpt", "dos" or None
    ptuuid: str | None
    fstype: str | None  # filesystem on the whole disk, if any
    partitions: tuple[BlockPartition, ...]
    # Reasons it is not a restore target, e.g. "holds the running system",
    # "boot medium", "/dev/sda1 is mounted on /home", "swap /dev/sda2 is active".
    in_use: tuple[str, ...]
    backing_file: str | None  # loop devices
    # "incomplete restore of web1@... (started ...)": a restore of this disk
    # was interrupted and none has completed since (engine/restoremark.py).
    incomplete_restore: str | None = None
    roles: frozenset[Role] = frozenset()

    @property
    def ours(self) -> bool:
        """The rescue system's own disk or boot medium: never offered for backup."""
        return bool(self.roles & {Role.RUNNING_SYSTEM, Role.BOOT_MEDIUM})

    @property
    def restorable(self) -> bool:
        return not self.in_use

    def describe(self) -> str:
        """One line a user recognises: "QEMU HARDDISK, serial ABC123, 4.0 GiB (/dev/sdb)"."""
        if self.model:
            what = self.model
        elif self.backing_file:
            what = f"loop over {self.backing_file}"
        else:
            what = f"{self.transport} disk"
        parts = [what]
        if self.serial:
            parts.append(f"serial {self.serial}")
        parts.append(human_size(self.size))
        return f"{', '.join(parts)} ({self.path})"


@dataclass(frozen=True)
class SystemState:
    """What /proc and /sys say, beyond lsblk. Kernel names (``sda``), not paths, as keys."""

    root_disks: frozenset[str] = frozenset()  # disks under / (through partitions, dm, md)
    boot_media: frozenset[str] = frozenset()  # live medium and loops behind its squashfs
    swaps: frozenset[str] = frozenset()  # active swap devices, as /dev paths
    holders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    partition_geometry: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # number, start
    backing_files: Mapping[str, str] = field(default_factory=dict)  # loop name -> file
    mount_fstypes: Mapping[str, str] = field(default_factory=dict)  # /dev path -> fstype
    # ``blkid -p`` results for devices lsblk knew nothing about (no udev database).
    probes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    restore_marks: Mapping[str, str] = field(default_factory=dict)  # disk path -> text


# ---------------------------------------------------------------- pure parsing


def _flag(value: Any) -> bool:
    # lsblk >= 2.37 emits JSON booleans; older ones "0"/"1".
    if isinstance(value, str):
        return value.strip() not in ("", "0")
    return bool(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _mountpoints(node: Mapping[str, Any]) -> tuple[str, ...]:
    points = node.get("mountpoints")
    if points is None and node.get("mountpoint"):  # lsblk < 2.37
        points = [node["mountpoint"]]
    return tuple(p for p in (points or []) if p)


def _descendants(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for child in node.get("children") or []:
        yield child
        yield from _descendants(child)


def _transport(node: Mapping[str, Any], name: str) -> str:
    tran = _text(node.get("tran"))
    if tran:
        return tran
    if name.startswith("loop"):
        return "loop"
    if name.startswith("vd"):
        return "virtio"
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("mmcblk"):
        return "mmc"
    return "unknown"


def _probed(
    state: SystemState, path: str, node: Mapping[str, Any], key: str, tag: str
) -> str | None:
    value = _text(node.get(key))
    if value is None:
        value = _text(state.probes.get(path, {}).get(tag))
    return value


def _partition_number(name: str) -> int:
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


def _dev_path(node: Mapping[str, Any]) -> str:
    return _text(node.get("path")) or f"/dev/{node['name']}"


def _use_of(node: Mapping[str, Any], state: SystemState) -> list[str]:
    """Why this device (partition or whole disk) or anything stacked on it is busy."""
    path = _dev_path(node)
    points = _mountpoints(node)
    reasons = [f"{path} is mounted on {p}" for p in points if p != "[SWAP]"]
    if path in state.swaps or "[SWAP]" in points:
        reasons.append(f"swap {path} is active")
    stacked = []
    for child in node.get("children") or []:
        if child.get("type") == "part":
            reasons += _use_of(child, state)
            continue
        # dm, md, crypt, lvm: name the device the user mounted and what it sits on.
        for dev in (child, *_descendants(child)):
            dev_path = _dev_path(dev)
            points = _mountpoints(dev)
            stacked += [
                f"{dev_path} (on {path}) is mounted on {p}" for p in points if p != "[SWAP]"
            ]
            if dev_path in state.swaps or "[SWAP]" in points:
                stacked.append(f"swap {dev_path} (on {path}) is active")
    holders = state.holders.get(str(node["name"]), ())
    if holders and not stacked:
        stacked.append(f"{path} is held by {', '.join(holders)}")
    return reasons + stacked


def parse_lsblk(data: Mapping[str, Any], state: SystemState) -> list[BlockDisk]:
    """Turn ``lsblk --json --bytes`` output plus system facts into disks. No I/O."""
    disks = []
    for node in data.get("blockdevices") or []:
        name = str(node["name"])
        kind = node.get("type")
        if kind not in ("disk", "loop") or _SKIPPED_NAME.match(name):
            continue
        backing = state.backing_files.get(name)
        if kind == "loop" and not backing:
            continue
        path = _dev_path(node)
        partitions = []
        in_use: list[str] = []
        roles: set[Role] = set()
        if name in state.root_disks:
            roles.add(Role.RUNNING_SYSTEM)
            in_use.append(REASON_ROOT)
        if name in state.boot_media:
            roles.add(Role.BOOT_MEDIUM)
            in_use.append(REASON_BOOT)
        for child in node.get("children") or []:
            if child.get("type") != "part":
                continue  # dm/md straight on the disk: counted by _use_of below
            child_name = str(child["name"])
            child_path = _dev_path(child)
            number, start = state.partition_geometry.get(
                child_name, (_partition_number(child_name), 0)
            )
            partitions.append(
                BlockPartition(
                    path=child_path,
                    number=number,
                    start=start,
                    size=_int(child.get("size")),
                    fstype=_probed(state, child_path, child, "fstype", "TYPE")
                    or state.mount_fstypes.get(child_path),
                    label=_probed(state, child_path, child, "label", "LABEL"),
                    uuid=_probed(state, child_path, child, "uuid", "UUID"),
                    partuuid=_probed(state, child_path, child, "partuuid", "PART_ENTRY_UUID"),
                    parttype=_probed(state, child_path, child, "parttype", "PART_ENTRY_TYPE"),
                    partlabel=_probed(state, child_path, child, "partlabel", "PART_ENTRY_NAME"),
                    mountpoints=_mountpoints(child),
                )
            )
        in_use += _use_of(node, state)
        ro = _flag(node.get("ro"))
        if ro:
            roles.add(Role.READ_ONLY)
            in_use.append(REASON_READ_ONLY)
        pttype = _probed(state, path, node, "pttype", "PTTYPE")
        disks.append(
            BlockDisk(
                path=path,
                name=name,
                model=_text(node.get("model")),
                serial=_text(node.get("serial")),
                wwn=_text(node.get("wwn")),
                size=_int(node.get("size")),
                logical_sector_size=_int(node.get("log-sec"), 512),
                physical_sector_size=_int(node.get("phy-sec"), 512),
                transport=_transport(node, name),
                removable=_flag(node.get("rm")),
                read_only=ro,
                pttype=pttype,
                ptuuid=_probed(state, path, node, "ptuuid", "PTUUID"),
                fstype=None
                if pttype
                else (
                    _probed(state, path, node, "fstype", "TYPE") or state.mount_fstypes.get(path)
                ),
                partitions=tuple(sorted(partitions, key=lambda p: p.number)),
                in_use=tuple(dict.fromkeys(in_use)),
                backing_file=backing,
                incomplete_restore=state.restore_marks.get(path),
                roles=frozenset(roles),
            )
        )
    return disks


# ---------------------------------------------------------------- reading the system


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


@dataclass(frozen=True)
class _Mount:
    majmin: str
    mountpoint: str
    fstype: str
    source: str
    options: str = ""  # the mount's own options: "rw,relatime", "ro,noload"...

    @property
    def read_only(self) -> bool:
        return "ro" in self.options.split(",")


def _mountinfo(path: str = "/proc/self/mountinfo") -> list[_Mount]:
    mounts = []
    for line in (_read(path) or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        mounts.append(
            _Mount(lf[2], _unescape(lf[4]), rf[0], _unescape(rf[1]), lf[5] if len(lf) > 5 else "")
        )
    return mounts


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
        dev = _read(os.path.join(SYS_BLOCK, slave, "dev"))
        if dev:
            found |= _disks_below(dev, depth + 1)
    return found


def _disks_of_mount(mount: _Mount) -> set[str]:
    # btrfs and overlay report an anonymous 0:N; the source names the device then.
    if not mount.majmin.startswith("0:"):
        return _disks_below(mount.majmin)
    if mount.source.startswith("/dev/"):
        majmin = _majmin_of_path(mount.source)
        if majmin:
            return _disks_below(majmin)
    return set()


@dataclass(frozen=True)
class MountOnDisk:
    """A filesystem mounted from a disk (a partition, the whole disk, or a
    device stacked on it)."""

    source: str
    mountpoint: str
    read_only: bool


def mounts_on_disk(disk_name: str) -> list[MountOnDisk]:
    """What is mounted from the disk ``disk_name`` (kernel name, e.g. "sda")."""
    return [
        MountOnDisk(m.source, m.mountpoint, m.read_only)
        for m in _mountinfo()
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
        for m in _mountinfo()
        if real == m.mountpoint or real.startswith(m.mountpoint.rstrip("/") + "/")
    ]
    if holding:
        found |= _disks_of_mount(max(holding, key=lambda m: len(m.mountpoint)))
    return found


def _boot_media(mounts: list[_Mount]) -> set[str]:
    media: set[str] = set()
    for mount in mounts:
        if mount.mountpoint in ("/run/live/medium", "/lib/live/mount/medium"):
            media |= _disks_of_mount(mount)
        if mount.fstype == "squashfs" and mount.source.startswith("/dev/loop"):
            loop = os.path.basename(mount.source)
            media.add(loop)
            backing = _read(f"{SYS_BLOCK}/{loop}/loop/backing_file")
            if backing:
                majmin = _majmin_of_path(backing.removesuffix(" (deleted)"))
                if majmin:
                    media |= _disks_below(majmin)
    return media


def _swaps(path: str = "/proc/swaps") -> frozenset[str]:
    lines = (_read(path) or "").splitlines()[1:]
    return frozenset(os.path.realpath(_unescape(line.split()[0])) for line in lines if line.split())


def _walk(nodes: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for node in nodes:
        yield node
        yield from _descendants(node)


def _probe(path: str) -> dict[str, str]:
    """``blkid -p`` of one device: what lsblk shows when udev has a database."""
    try:
        proc = run(["blkid", "-p", "-o", "export", path], check=False, timeout=30)
    except CommandError:
        return {}
    values = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def read_system_state(data: Mapping[str, Any]) -> SystemState:
    """Facts from /proc and /sys about the devices in ``data`` (lsblk JSON)."""
    mounts = _mountinfo()
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
    for node in _walk(data.get("blockdevices") or []):
        name = str(node["name"])
        sys_dir = os.path.join(SYS_BLOCK, name)
        try:
            held = tuple(sorted(os.listdir(os.path.join(sys_dir, "holders"))))
        except OSError:
            held = ()
        if held:
            holders[name] = held
        number, start = _read(os.path.join(sys_dir, "partition")), _read(f"{sys_dir}/start")
        if number and start:
            geometry[name] = (int(number), int(start) * 512)
        file = _read(os.path.join(sys_dir, "loop", "backing_file"))
        if file:
            backing[name] = file
        # Without udev (as on a bare host) lsblk leaves FSTYPE, LABEL, PTTYPE,
        # UUIDs... empty. Probe those devices directly (blkid -p only reads, so
        # mounted ones too: their labels are what a user recognises them by).
        unknown = all(node.get(k) is None for k in ("fstype", "pttype", "uuid", "partuuid"))
        path = _dev_path(node)
        if node.get("type") in ("disk", "loop", "part"):
            if node.get("type") == "loop" and not file:
                continue
            if _SKIPPED_NAME.match(name) or _int(node.get("size")) <= 0:
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


# ---------------------------------------------------------------- finding and refusing


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


def ensure_restorable(disk: BlockDisk) -> None:
    if disk.in_use:
        raise TargetRefusedError(
            f"refusing to write to {disk.describe()}: {'; '.join(disk.in_use)}",
            hint="choose another disk, or unmount and stop what uses it",
        )


# ---------------------------------------------------------------- partition nodes


def _partition_nodes(disk_name: str) -> list[tuple[int, str]]:
    sys_dir = os.path.join(SYS_BLOCK, disk_name)
    nodes = []
    try:
        entries = os.listdir(sys_dir)
    except OSError as exc:
        raise DiskError(f"/dev/{disk_name} vanished") from exc
    for entry in entries:
        number = _read(os.path.join(sys_dir, entry, "partition"))
        if number and entry.startswith(disk_name):
            nodes.append((int(number), entry))
    return sorted(nodes)


def _ensure_node(name: str) -> bool:
    """True once /dev/<name> is the block device sysfs describes; mknod it if missing."""
    dev = _read(os.path.join(SYS_BLOCK, name, "dev"))
    if not dev:
        return False
    major, minor = (int(x) for x in dev.split(":"))
    path = f"/dev/{name}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        # devtmpfs normally creates it; without udev a race or an old /dev may not.
        try:
            os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        except FileExistsError:
            pass
        st = os.stat(path)
    return stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor)


def _rescan(disk_path: str) -> None:
    try:
        run(["partprobe", disk_path], timeout=60)
        return
    except CommandError:
        pass
    # partprobe refuses some cases (busy partitions it cannot resize); try the plain ioctl.
    fd = os.open(disk_path, os.O_RDONLY)
    try:
        for _ in range(10):
            try:
                fcntl.ioctl(fd, BLKRRPART)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise DiskError(f"the kernel cannot re-read {disk_path}: {exc}") from exc
                time.sleep(0.2)
        raise DiskError(f"the kernel cannot re-read {disk_path}: device busy")
    finally:
        os.close(fd)


def reread_partitions(disk_path: str, expected: int, timeout: float = 10) -> list[str]:
    """Make the kernel see the new table and wait for ``expected`` partition nodes.

    There is no udev on the host to settle on, so poll sysfs and /dev ourselves.
    ``expected`` counts every node the kernel makes, an msdos extended partition
    included. Returns the /dev paths ordered by partition number.
    """
    name = os.path.basename(os.path.realpath(disk_path))
    _rescan(disk_path)
    deadline = time.monotonic() + timeout
    while True:
        nodes = _partition_nodes(name)
        if len(nodes) == expected and all(_ensure_node(n) for _, n in nodes):
            return [f"/dev/{n}" for _, n in nodes]
        if time.monotonic() > deadline:
            seen = ", ".join(n for _, n in nodes) or "none"
            raise DiskError(
                f"{disk_path}: expected {expected} partitions after re-reading, "
                f"the kernel shows {len(nodes)} ({seen})"
            )
        time.sleep(0.05)


# ---------------------------------------------------------------- presenting


def _cut(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "~"


def format_disks_table(disks: Iterable[BlockDisk]) -> str:
    """The table of `liferaft disks`, 80 columns wide."""
    lines = [f"{'DISK':<14} {'MODEL':<22} {'SERIAL':<16} {'SIZE':>10} {'TRAN':<6} {'TABLE':<5}"]
    for disk in disks:
        lines.append(
            f"{_cut(disk.path, 14):<14} {_cut(disk.model, 22):<22} {_cut(disk.serial, 16):<16} "
            f"{human_size(disk.size):>10} {_cut(disk.transport, 6):<6} "
            f"{_cut(disk.pttype or disk.fstype, 5)}"
        )
        if disk.backing_file:
            lines.append(f"  {_cut('file ' + disk.backing_file, 76)}")
        if disk.incomplete_restore:
            # wrapped, never cut: the image and the time are what the user needs
            lines += textwrap.wrap(
                "WARNING: " + disk.incomplete_restore,
                78,
                initial_indent="  ",
                subsequent_indent="    ",
            )
        if disk.in_use:
            lines.append(f"  {_cut('IN USE: ' + '; '.join(disk.in_use), 76)}")
        for part in disk.partitions:
            mounts = ", ".join(part.mountpoints)
            lines.append(
                f"  {_cut(part.path, 16):<16} {_cut(part.fstype, 8):<8} "
                f"{_cut(part.label or part.partlabel, 16):<16} {human_size(part.size):>10} "
                f"{_cut(mounts, 22) if mounts else ''}".rstrip()
            )
    return "\n".join(lines)


def disks_to_json(disks: Iterable[BlockDisk]) -> list[dict[str, Any]]:
    """Plain data for `liferaft disks --json`."""
    out = []
    for disk in disks:
        item: dict[str, Any] = {
            k: v for k, v in vars(disk).items() if k not in ("partitions", "in_use", "roles")
        }
        item["in_use"] = list(disk.in_use)
        item["roles"] = sorted(r.name.lower() for r in disk.roles)
        item["restorable"] = disk.restorable
        item["partitions"] = [
            {**vars(p), "mountpoints": list(p.mountpoints)} for p in disk.partitions
        ]
        out.append(item)
    return out
