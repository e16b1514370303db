"""LUKS: the one home of every cryptsetup command liferaft runs, and of reading luksDump.

A LUKS volume is captured as it lies on the disk (ciphertext, every byte):
nothing here is needed for that. With ``--unlock`` a capture reads the
header (``luksHeaderBackup``) and the filesystem inside, opened read-only
with the passphrase or key file; a restore writes the header back and opens
the volume to lay the filesystem in. Passphrases reach cryptsetup on its
standard input (``--key-file -``), never on a command line, and are never
logged. What is read or written is decided by capture.py and restore.py.

    parse_dump(text) -> LuksHeader; header(device) -> LuksHeader
    check_key(device, key)                 # one line when it does not open
    with opened(device, key, read_only=True) as node: ...
    backup_header(device) -> bytes; restore_header(device, data)
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rescue_app.errors import CommandError, DiskError
from rescue_app.run import run

log = logging.getLogger("liferaft.luks")

LUKS_TYPE = "crypto_LUKS"  # blkid's TYPE of a LUKS volume
SECTOR = 512
WRONG_KEY_EXIT = 2  # cryptsetup: "No key available with this passphrase."


@dataclass(frozen=True)
class LuksHeader:
    version: int  # 1 or 2
    uuid: str
    data_offset: int  # bytes from the volume's start to the encrypted data
    cipher: str  # "aes-xts-plain64"


# ---------------------------------------------------------------- parsing (pure)


def _value(text: str, name: str) -> str:
    match = re.search(rf"^\s*{re.escape(name)}:\s*(.*?)\s*$", text, re.M)
    return match.group(1) if match else ""


def parse_dump(text: str) -> LuksHeader:
    """``cryptsetup luksDump`` of a LUKS1 or LUKS2 volume (the first data segment)."""
    version = _value(text, "Version")
    if version == "1":
        cipher = f"{_value(text, 'Cipher name')}-{_value(text, 'Cipher mode')}"
        offset = int(_value(text, "Payload offset") or 0) * SECTOR
    elif version == "2":
        segment = re.search(r"^Data segments:\n(.*?)^\S", text, re.M | re.S)
        body = segment.group(1) if segment else ""
        found = re.search(r"offset:\s*(\d+) \[bytes\]", body)
        offset = int(found.group(1)) if found else 0
        cipher = _value(body, "cipher")
    else:
        raise DiskError(f"LUKS: cryptsetup luksDump shows an unknown version {version!r}")
    return LuksHeader(int(version), _value(text, "UUID"), offset, cipher)


# ---------------------------------------------------------------- commands


def _cryptsetup(argv: list[str], *, key: bytes | None = None) -> str:
    try:
        return run(
            ["cryptsetup", *argv], input=key if key is not None else None, timeout=300
        ).stdout
    except CommandError as exc:
        raise DiskError(
            f"LUKS: {exc.message}", hint=exc.hint or "see the log for cryptsetup's output"
        ) from None


def header(device: str) -> LuksHeader:
    return parse_dump(_cryptsetup(["luksDump", device]))


def check_key(device: str, key: bytes) -> None:
    """The passphrase (or key file's bytes) opens ``device``; else one line."""
    proc = run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file", "-", device],
        input=key,
        check=False,
        timeout=300,
    )
    if proc.returncode == WRONG_KEY_EXIT:
        raise DiskError(
            f"the passphrase does not open the LUKS volume {device}; nothing was written",
            hint="give the volume's passphrase or key file (--unlock), or capture it "
            "locked (without --unlock: stored as ciphertext)",
        )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()
        raise DiskError(f"LUKS: {device}: {last[-1] if last else 'cryptsetup failed'}")


@contextmanager
def opened(device: str, key: bytes, *, read_only: bool) -> Iterator[str]:
    """``device`` opened with ``key`` for a ``with`` block (its /dev/mapper
    path yielded), closed after, also on failure."""
    name = f"liferaft-{os.path.basename(device)}"
    check_key(device, key)
    _cryptsetup(
        ["open", *(["--readonly"] if read_only else []), "--key-file", "-", device, name],
        key=key,
    )
    try:
        yield f"/dev/mapper/{name}"
    finally:
        try:
            _cryptsetup(["close", name])
        except DiskError as exc:
            log.warning("%s: %s", name, exc)


def backup_header(device: str) -> bytes:
    """The volume's header and key slots (``luksHeaderBackup``)."""
    with tempfile.TemporaryDirectory(prefix="liferaft-luks-") as tmp:
        path = os.path.join(tmp, "header")
        _cryptsetup(["luksHeaderBackup", device, "--header-backup-file", path])
        with open(path, "rb") as f:
            return f.read()


def restore_header(device: str, data: bytes) -> None:
    """Write a header saved by ``backup_header`` onto ``device`` (the same
    passphrases open it afterwards)."""
    with tempfile.TemporaryDirectory(prefix="liferaft-luks-") as tmp:
        path = os.path.join(tmp, "header")
        with open(path, "wb") as f:
            f.write(data)
        _cryptsetup(["luksHeaderRestore", "-q", device, "--header-backup-file", path])
