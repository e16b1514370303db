"""LUKS: the one home of every cryptsetup command liferaft runs, and of reading luksDump.

A LUKS volume is captured as it lies on the disk (ciphertext, every byte):
nothing here is needed for that. With ``--unlock`` a capture keeps the
header area (the bytes before the data segment: what ``luksHeaderBackup``
saves) and reads the filesystem inside, opened read-only with the
passphrase or key file; a restore writes the header area back and opens the
volume to lay the filesystem in. Passphrases reach cryptsetup on its
standard input (``--key-file -``), never on a command line, and are never
logged. What is read or written is decided by capture.py and restore.py.

    parse_dump(text) -> LuksHeader; header(device) -> LuksHeader
    parse_binary(first_bytes) -> LuksHeader   # a header (file) read without cryptsetup
    check_key(device, key)                 # one line when it does not open
    with opened(device, key, read_only=True) as node: ...
    check_header_key(header_bytes, key, shown)   # before a restore writes
    resize(node, key)                      # an opened volume to its device's end
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rescue_app.errors import CommandError, DiskError
from rescue_app.run import run

log = logging.getLogger("liferaft.luks")

LUKS_TYPE = "crypto_LUKS"  # blkid's TYPE of a LUKS volume
SECTOR = 512
WRONG_KEY_EXIT = 2  # cryptsetup: "No key available with this passphrase."

# The key of a LUKS volume: (its device, for messages; its LUKS UUID) -> the
# passphrase's or key file's bytes. The Engine makes one from --unlock-key-file
# or its credential chain; a source that cannot answer raises a LiferaftError.
KeySource = Callable[[str, str], bytes]


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


MAGIC = b"LUKS\xba\xbe"
BINARY_HEADER = 4096  # LUKS2: the binary header before its JSON area


def parse_binary(data: bytes) -> LuksHeader:
    """A LUKS1 or LUKS2 header from its first bytes (LUKS2: up to the end of
    its JSON area, ``binary_length``), as ``luksHeaderBackup`` writes them:
    read without cryptsetup, so a header file on any store can be planned
    with. DiskError when the bytes are not a LUKS header."""
    if len(data) < 592 or data[:6] != MAGIC:
        raise DiskError("not a LUKS header (no LUKS magic at its start)")
    version = int.from_bytes(data[6:8], "big")
    uuid = data[168:208].split(b"\0")[0].decode("ascii", "replace")
    if version == 1:
        name, mode = (data[a : a + 32].split(b"\0")[0].decode("ascii", "replace") for a in (8, 40))
        offset = int.from_bytes(data[104:108], "big") * SECTOR
        return LuksHeader(1, uuid, offset, f"{name}-{mode}")
    if version != 2:
        raise DiskError(f"LUKS header of unknown version {version}")
    end = binary_length(data)
    if len(data) < end:
        raise DiskError(f"LUKS2 header cut short ({len(data)} of {end} bytes)")
    try:
        doc = json.loads(data[BINARY_HEADER:end].split(b"\0")[0])
        segment = min(doc["segments"].items(), key=lambda kv: int(kv[0]))[1]
        return LuksHeader(2, uuid, int(segment["offset"]), str(segment.get("encryption", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DiskError("LUKS2 header whose JSON area has no data segment") from None


def binary_length(first: bytes) -> int:
    """How many bytes ``parse_binary`` needs, from the header's first 16."""
    if first[6:8] == b"\0\2":
        return int.from_bytes(first[8:16], "big")
    return 592


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


CAPTURE_HINT = (
    "give the volume's passphrase or key file (--unlock), or capture it locked "
    "(without --unlock: stored as ciphertext)"
)


def check_key(device: str, key: bytes, shown: str = "", hint: str = CAPTURE_HINT) -> None:
    """The passphrase (or key file's bytes) opens ``device`` (a volume or a
    header file: ``shown`` names it then); else one line with ``hint``."""
    shown = shown or device
    proc = run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file", "-", device],
        input=key,
        check=False,
        timeout=300,
    )
    if proc.returncode == WRONG_KEY_EXIT:
        raise DiskError(
            f"the passphrase does not open the LUKS volume {shown}; nothing was written",
            hint=hint,
        )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()
        raise DiskError(f"LUKS: {shown}: {last[-1] if last else 'cryptsetup failed'}")


def check_header_key(header: bytes, key: bytes, shown: str) -> None:
    """The key opens a header kept by ``backup_header`` (a restore asks
    before it writes anything)."""
    with tempfile.TemporaryDirectory(prefix="liferaft-luks-") as tmp:
        path = os.path.join(tmp, "header")
        with open(path, "wb") as f:
            f.write(header)
        check_key(
            path,
            key,
            shown,
            hint="give a passphrase or key file the volume had when it was captured "
            "(LIFERAFT_LUKS_PASSPHRASE or --unlock-key-file)",
        )


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


def resize(node: str, key: bytes) -> None:
    """The opened volume ``node`` (/dev/mapper/NAME) to the end of its
    device, after its partition grew. Only a LUKS2 volume whose header gives
    its data segment a fixed length needs it (LUKS1 payloads and LUKS2
    "dynamic" segments span the device when opened); cryptsetup refuses
    that fixed length, which then stays. The key: LUKS2 volumes keep their
    volume key in the kernel keyring, and resize asks for it again."""
    _cryptsetup(["resize", "--key-file", "-", os.path.basename(node)], key=key)
