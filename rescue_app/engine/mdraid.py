"""md RAID: the one home of every mdadm command liferaft runs, and of reading its reports.

Reads an array's layout as a typed value (``mdadm --detail --export`` for
level, members and their roles, UUID and name; the plain ``--detail`` for
what the export leaves out: chunk size, layout, the write-intent bitmap;
``--examine`` of a member for the data offset), parsed by pure functions that
tests feed recorded output. Assembles a source array read-only for a capture
and stops exactly what it assembled; creates an array on a restore's new
partitions with the recorded UUID and name (``create_argv``, pure). What is
read or written on an array is decided by capture.py and restore.py.

    member_uuid(member) -> str; with assembled(members) as node: detail(node) -> MdArray
    create(spec, devices) -> node; stop(node)
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any

from rescue_app.errors import CommandError, DiskError
from rescue_app.run import run

log = logging.getLogger("liferaft.mdraid")

MEMBER_TYPE = "linux_raid_member"  # blkid's TYPE of an md member
SECTOR = 512
# Levels whose arrays liferaft recreates; anything else (containers: IMSM,
# DDF; RAID 0/linear across disks: fine, but untested) is captured raw.
SUPPORTED_LEVELS = frozenset({"raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "linear"})


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class MdMember:
    device: str  # /dev path of the member partition
    role: int  # its slot (RaidDevice); -1 for a spare or a faulty one


@dataclass(frozen=True)
class MdArray:
    """An array as mdadm describes it; what ``create_argv`` needs to repeat it."""

    level: str  # raid1, raid5, ...
    raid_devices: int
    metadata: str  # 1.2, 1.0, 0.90, ...
    uuid: str  # mdadm's form: four groups of 8 hex digits joined by ':'
    name: str  # "host:name" (none for metadata 0.90)
    members: tuple[MdMember, ...]
    chunk_size: int = 0  # bytes; 0 for levels without chunks
    layout: str = ""  # raid5/6/10 layout name ("left-symmetric", "n2")
    bitmap: bool = False  # an internal write-intent bitmap
    data_offset: int = 0  # bytes from a member's start to the data (0: unknown)

    @property
    def missing(self) -> int:
        """Slots without an active member (a degraded array)."""
        return self.raid_devices - len({m.role for m in self.members if m.role >= 0})


def spec_fields(array: object) -> dict[str, Any]:
    """What describes an array but its members (level, UUID, metadata, ...),
    taken by name from ``array``: an MdArray or a captured MdArrayImage,
    which name these alike, so that either is made from the other."""
    return {f.name: getattr(array, f.name) for f in fields(MdArray) if f.name != "members"}


# ---------------------------------------------------------------- parsing (pure)


def parse_export(text: str) -> dict[str, str]:
    """``KEY=value`` lines (``--export``) as a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            out[key] = value
    return out


def parse_detail_export(text: str) -> MdArray:
    """``mdadm --detail --export``: level, members with their roles, UUID, name."""
    values = parse_export(text)
    members = []
    for key, device in values.items():
        match = re.fullmatch(r"MD_DEVICE_(.+)_DEV", key)
        if not match:
            continue
        role = values.get(f"MD_DEVICE_{match.group(1)}_ROLE", "")
        members.append(MdMember(device, int(role) if role.isdigit() else -1))
    try:
        return MdArray(
            level=values["MD_LEVEL"],
            raid_devices=int(values.get("MD_DEVICES", "0")),
            metadata=values["MD_METADATA"],
            uuid=values["MD_UUID"],
            name=values.get("MD_NAME", ""),
            members=tuple(sorted(members, key=lambda m: (m.role < 0, m.role, m.device))),
        )
    except (KeyError, ValueError) as exc:
        raise DiskError(f"md RAID: mdadm --detail --export gave no {exc}") from None


def _field(text: str, name: str) -> str:
    match = re.search(rf"^\s*{re.escape(name)} : (.*)$", text, re.M)
    return match.group(1).strip() if match else ""


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_detail(text: str) -> dict[str, Any]:
    """What the plain ``mdadm --detail`` adds: chunk size (bytes), layout,
    an internal bitmap."""
    chunk = re.fullmatch(r"(\d+)([KMG]?)", _field(text, "Chunk Size"))
    return {
        "chunk_size": int(chunk.group(1)) * _UNITS[chunk.group(2)] if chunk else 0,
        "layout": _field(text, "Layout"),
        "bitmap": _field(text, "Intent Bitmap").lower() == "internal",
    }


def parse_data_offset(text: str) -> int:
    """``mdadm --examine`` of a member: bytes before the data (0: none said,
    as for metadata 0.90 and 1.0, whose superblock is at the end)."""
    match = re.fullmatch(r"(\d+) sectors", _field(text, "Data Offset"))
    return int(match.group(1)) * SECTOR if match else 0


def uuid_hex(uuid: str) -> str:
    """The 32 hex digits of an array UUID, in mdadm's or blkid's spelling."""
    return re.sub(r"[^0-9a-f]", "", uuid.lower())


def create_argv(spec: MdArray, devices: Sequence[str | None], node: str) -> list[str]:
    """The ``mdadm --create`` command that repeats ``spec`` on ``devices``
    (one per slot, in role order; None: the slot stays empty, as it was).

    No ``--assume-clean``: only the used blocks are written, so the members
    differ elsewhere; md computes the mirror or parity itself (docs/FORMAT.md,
    "md RAID"). ``--run``: no question about the devices' old contents;
    ``--homehost=<none>`` keeps a name without a host part as it was.
    """
    argv = [
        "mdadm",
        "--create",
        node,
        "--run",
        f"--metadata={spec.metadata}",
        f"--level={spec.level}",
        f"--raid-devices={spec.raid_devices}",
        f"--uuid={spec.uuid}",
    ]
    if not spec.metadata.startswith("0."):
        argv.append(f"--name={spec.name}")
        if ":" not in spec.name:
            argv.append("--homehost=<none>")
    if spec.chunk_size and spec.level not in ("raid1", "linear"):
        argv.append(f"--chunk={spec.chunk_size // 1024}K")
    if spec.layout and spec.level in ("raid5", "raid6", "raid10"):
        argv.append(f"--layout={spec.layout}")
    if spec.level not in ("raid0", "linear"):
        argv.append(f"--bitmap={'internal' if spec.bitmap else 'none'}")
    if spec.data_offset and spec.metadata.startswith("1.") and spec.metadata != "1.0":
        argv.append(f"--data-offset={spec.data_offset // 1024}K")
    return argv + [d if d is not None else "missing" for d in devices]


# ---------------------------------------------------------------- reading


def _mdadm(argv: Sequence[str], *, check: bool = True) -> str:
    try:
        return run(["mdadm", *argv], check=check, timeout=300).stdout
    except CommandError as exc:
        raise DiskError(
            f"md RAID: {exc.message}", hint=exc.hint or "see the log for mdadm's output"
        ) from None


def member_uuid(member: str) -> str:
    """The UUID of the array ``member`` belongs to ("" when it is none)."""
    return parse_export(_mdadm(["--examine", "--export", member], check=False)).get("MD_UUID", "")


def detail(node: str) -> MdArray:
    """An active array, everything ``create_argv`` needs."""
    spec = parse_detail_export(_mdadm(["--detail", "--export", node]))
    extra = parse_detail(_mdadm(["--detail", node]))
    offset = 0
    if spec.members:
        offset = parse_data_offset(_mdadm(["--examine", spec.members[0].device], check=False))
    return replace(spec, **extra, data_offset=offset)


def holder(member: str) -> str:
    """The active md array that already holds ``member`` ("" when none)."""
    name = os.path.basename(os.path.realpath(member))
    try:
        found = [h for h in os.listdir(f"/sys/class/block/{name}/holders") if h.startswith("md")]
    except OSError:
        return ""
    return f"/dev/{found[0]}" if found else ""


@contextmanager
def assembled(uuid: str, members: Sequence[str]) -> Iterator[str]:
    """The array of ``members`` assembled read-only (``--run``: also when one
    is missing) for a ``with`` block, its device path yielded; stopped after,
    also on failure. An array that was already active is used as it is."""
    active = holder(members[0])
    if active:
        yield active
        return
    node = f"/dev/md/liferaft-{uuid_hex(uuid)[:8]}"
    _mdadm(["--assemble", "--readonly", "--run", node, *members])
    try:
        yield _settled(node)
    finally:
        stop(node)


def _settled(node: str) -> str:
    """The array's kernel device once mdadm (or udev) made ``node``."""
    deadline = time.monotonic() + 10
    while not os.path.exists(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not os.path.exists(node):
        raise DiskError(f"md RAID: {node} did not appear after mdadm started the array")
    return os.path.realpath(node)


def create(spec: MdArray, devices: Sequence[str | None]) -> str:
    """The array on ``devices`` (role order), started; its device path."""
    node = f"/dev/md/liferaft-{uuid_hex(spec.uuid)[:8]}"
    _mdadm(create_argv(spec, devices, node)[1:])
    return _settled(node)


def stop(node: str) -> None:
    _mdadm(["--stop", node], check=False)


def sync_progress(node: str, sys_root: str = "/sys") -> float | None:
    """How far md has resynced (or rebuilt) the array ``node``, 0 to 1, as its
    sysfs says; None when nothing is left to sync (or it cannot be read)."""
    base = os.path.join(sys_root, "block", os.path.basename(os.path.realpath(node)), "md")
    try:
        with open(os.path.join(base, "sync_action")) as f:
            action = f.read().strip()
        with open(os.path.join(base, "sync_completed")) as f:
            completed = f.read().strip()
    except OSError:
        return None
    if action not in ("resync", "recover", "reshape"):
        return None
    done, _, size = completed.partition("/")
    if not done.strip().isdigit() or not size.strip().isdigit() or not int(size):
        return 0.0  # started but not counted yet (sync_completed "none" or "delayed")
    return int(done) / int(size)


def resync_note(label: str, node: str, sys_root: str = "/sys") -> str | None:
    """The restore's word on an array md has not finished resyncing."""
    done = sync_progress(node, sys_root)
    if done is None:
        return None
    return (
        f"{label}: array resyncing, {int(done * 100)}% — do not remove disks until done "
        "(md goes on when the restored system assembles it; see /proc/mdstat)"
    )
