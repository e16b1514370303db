"""Single-device look-ups through blkid: what is on a device, which device has a tag.

For a whole picture of the disks use diskscan.list_disks(); these answer one
question about one device, without udev's database (blkid reads the device).
"""

from __future__ import annotations

from rescue_app.errors import CommandError
from rescue_app.run import run


def filesystem_type(node: str) -> str | None:
    """``vfat``, ``ext4``... of ``node``, or None when blkid finds nothing."""
    try:
        proc = run(["blkid", "-p", "-o", "value", "-s", "TYPE", node], check=False, timeout=30)
    except CommandError:
        return None
    return proc.stdout.strip() or None


def device_with_tag(key: str, value: str) -> str | None:
    """The device whose ``key`` (LABEL, UUID, PARTUUID, PARTLABEL) is ``value``."""
    try:
        proc = run(["blkid", "-o", "device", "-t", f"{key}={value}"], check=False, timeout=30)
    except CommandError:
        return None
    devices = proc.stdout.split()
    return devices[0] if proc.returncode == 0 and devices else None


def identify(node: str) -> dict[str, str]:
    """What blkid finds on ``node`` (TYPE, UUID, LABEL...; empty when nothing)."""
    try:
        proc = run(["blkid", "-p", "-o", "export", node], check=False, timeout=30)
    except CommandError:
        return {}
    values = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values
