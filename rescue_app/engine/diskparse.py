"""What the system says about its disks, as text or JSON, turned into models.

Pure functions of their input (no file, no process, no device): the lsblk
JSON plus ``SystemState`` become ``BlockDisk`` values (``parse_lsblk``);
/proc/self/mountinfo, /proc/swaps and ``blkid -o export`` text become
their records. ``diskscan`` reads those texts; tests feed recorded ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rescue_app.engine.diskmodel import (
    REASON_BOOT,
    REASON_READ_ONLY,
    REASON_ROOT,
    BlockDisk,
    BlockPartition,
    Role,
    SystemState,
)

# Kernel names that are never disks a user backs up or restores.
SKIPPED_NAME = re.compile(r"^(ram|zram|sr|fd)\d*")


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


def as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _mountpoints(node: Mapping[str, Any]) -> tuple[str, ...]:
    points = node.get("mountpoints")
    if points is None and node.get("mountpoint"):  # lsblk < 2.37
        points = [node["mountpoint"]]
    return tuple(p for p in (points or []) if p)


def descendants(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for child in node.get("children") or []:
        yield child
        yield from descendants(child)


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


def dev_path(node: Mapping[str, Any]) -> str:
    return _text(node.get("path")) or f"/dev/{node['name']}"


def _use_of(node: Mapping[str, Any], state: SystemState) -> list[str]:
    """Why this device (partition or whole disk) or anything stacked on it is busy."""
    path = dev_path(node)
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
        for dev in (child, *descendants(child)):
            stacked_path = dev_path(dev)
            points = _mountpoints(dev)
            stacked += [
                f"{stacked_path} (on {path}) is mounted on {p}" for p in points if p != "[SWAP]"
            ]
            if stacked_path in state.swaps or "[SWAP]" in points:
                stacked.append(f"swap {stacked_path} (on {path}) is active")
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
        if kind not in ("disk", "loop") or SKIPPED_NAME.match(name):
            continue
        backing = state.backing_files.get(name)
        if kind == "loop" and not backing:
            continue
        path = dev_path(node)
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
            child_path = dev_path(child)
            number, start = state.partition_geometry.get(
                child_name, (_partition_number(child_name), 0)
            )
            partitions.append(
                BlockPartition(
                    path=child_path,
                    number=number,
                    start=start,
                    size=as_int(child.get("size")),
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
                size=as_int(node.get("size")),
                logical_sector_size=as_int(node.get("log-sec"), 512),
                physical_sector_size=as_int(node.get("phy-sec"), 512),
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


# ---------------------------------------------------------------- /proc texts


def unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    majmin: str
    mountpoint: str
    fstype: str
    source: str
    options: str = ""  # the mount's own options: "rw,relatime", "ro,noload"...

    @property
    def read_only(self) -> bool:
        return "ro" in self.options.split(",")


def parse_mountinfo(text: str) -> list[MountEntry]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        mounts.append(
            MountEntry(lf[2], unescape(lf[4]), rf[0], unescape(rf[1]), lf[5] if len(lf) > 5 else "")
        )
    return mounts


def mount_holding(mounts: Iterable[MountEntry], path: str) -> MountEntry | None:
    """The mount whose tree holds ``path`` (a resolved path): the deepest
    mount point, the last mounted of those on the same point."""
    best: MountEntry | None = None
    for m in mounts:
        point = m.mountpoint
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mountpoint)):
            best = m
    return best


def parse_swaps(text: str) -> frozenset[str]:
    """The active swap devices in /proc/swaps, as written there."""
    lines = text.splitlines()[1:]
    return frozenset(unescape(line.split()[0]) for line in lines if line.split())


@dataclass(frozen=True)
class StackedVolume:
    """An md array or an open LUKS (dm-crypt) volume lying on a disk."""

    kind: str  # "md" or "luks"
    device: str  # the array or the mapping: /dev/md0, /dev/mapper/cryptroot
    member: str  # what of the disk it lies on: a partition, or the disk itself
    use: str  # what uses it ("/dev/mapper/vg-root is mounted on /"), "" when nothing


def _stacked_kind(node: Mapping[str, Any]) -> str | None:
    kind = str(node.get("type") or "")
    if kind == "crypt":
        return "luks"
    if kind.startswith("raid") or kind == "linear":
        return "md"
    return None


def stacked_volumes(data: Mapping[str, Any], disk_name: str) -> list[StackedVolume]:
    """The md arrays and open LUKS volumes on the disk ``disk_name`` (its
    partitions or the disk itself) in ``lsblk --json`` output, each with the
    first use found on it or above it (a mount, active swap), in lsblk order."""
    disk = next((n for n in data.get("blockdevices") or [] if n.get("name") == disk_name), None)
    if disk is None:
        return []
    members = [disk, *(c for c in disk.get("children") or [] if c.get("type") == "part")]
    found = []
    for member in members:
        for child in member.get("children") or []:
            kind = _stacked_kind(child)
            if kind is None:
                continue
            uses = [
                f"{dev_path(dev)} is mounted on {p}"
                if p != "[SWAP]"
                else f"{dev_path(dev)} is active swap"
                for dev in (child, *descendants(child))
                for p in _mountpoints(dev)
            ]
            use = uses[0] if uses else ""
            found.append(StackedVolume(kind, dev_path(child), dev_path(member), use))
    return found


def walk(nodes: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every lsblk node in ``nodes`` and below them."""
    for node in nodes:
        yield node
        yield from descendants(node)


def parse_blkid_export(text: str) -> dict[str, str]:
    """``blkid -o export`` lines (``TYPE=ext4``) as a mapping."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values
