"""How a repository's objects look on its store: plain (format 1) or sealed (format 2).

Owns the cryptography of encrypted repositories (docs/FORMAT.md, "Version 2:
encrypted repositories"): the master keys, the key slots that wrap them with a
passphrase (argon2id), the paper key, AES-256-GCM sealing of chunks and
manifests, keyed chunk ids (HMAC-SHA256) and opaque manifest names. The
Repository holds one Envelope and asks it for every chunk id, object name and
object body, so the rest of the engine never knows whether a repository is
encrypted (``Envelope.encrypted`` tells the few places that must).

Pure: reads and writes no files, asks nobody for a passphrase (the Repository
does, through its CredentialChain), logs nothing. A passphrase or key never
appears in an exception or a repr.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from rescue_app.errors import RepositoryError

CIPHER = "aes-256-gcm"
KEYED_CHUNK_ID = "hmac-sha256"
KDF = "argon2id"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
# RFC 9106's second recommended option (for machines without 2 GiB to spare):
# a rescue system may run in 1 GiB of RAM.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_PARALLELISM = 4
SALT_BYTES = 16
KEY_FORMAT = "liferaft-key"
KEY_VERSION = 1
KEYS_DIR = "keys"
SLOT_RE = re.compile(r"^[0-9a-f]{16}$")
PAPER_HEADER = "liferaft paper key"
_AAD_PREFIX = b"liferaft/2\0"


class SealError(Exception):
    """An object failed authentication: damaged, tampered with, or not ours.
    The Repository turns it into a ChunkError or ManifestError naming the object."""


@dataclass(frozen=True)
class MasterKeys:
    """The repository's two random keys; the same for every key slot."""

    encryption: bytes = field(repr=False)  # AES-256-GCM key of every object
    chunk_id: bytes = field(repr=False)  # HMAC-SHA256 key of chunk ids and object names

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(secrets.token_bytes(KEY_BYTES), secrets.token_bytes(KEY_BYTES))

    def to_bytes(self) -> bytes:
        return self.encryption + self.chunk_id

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKeys:
        if len(raw) != 2 * KEY_BYTES:
            raise ValueError("a master key is 64 bytes")
        return cls(raw[:KEY_BYTES], raw[KEY_BYTES:])

    def check_value(self) -> str:
        """What the repository marker records to tell this key from another
        (a paper key of another repository); reveals nothing of the key."""
        return hmac.new(self.chunk_id, b"liferaft key check", hashlib.sha256).hexdigest()


def aad(kind: str, rel: str) -> bytes:
    """Associated data of a sealed object: the format, its kind and its path,
    so an object moved to another name or kind fails to open."""
    return _AAD_PREFIX + kind.encode() + b"\0" + rel.encode()


class Envelope:
    """A plain repository (format 1): SHA-256 chunk ids, objects as they are."""

    encrypted = False
    chunk_hash = "sha256"

    def chunk_id(self, data: bytes | bytearray | memoryview) -> str:
        return hashlib.sha256(data).hexdigest()

    def manifest_rel(self, name: str, image_id: str) -> str:
        return f"images/{name}/{image_id}.json"

    def seal(self, kind: str, rel: str, body: bytes) -> bytes:
        return body

    def open(self, kind: str, rel: str, blob: bytes) -> bytes:
        return blob


PLAIN = Envelope()


class SealedEnvelope(Envelope):
    """An encrypted repository (format 2): keyed chunk ids, opaque manifest
    names, every object ``nonce || AES-256-GCM(body, aad(kind, rel))``."""

    encrypted = True
    chunk_hash = KEYED_CHUNK_ID

    def __init__(self, keys: MasterKeys) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(keys.encryption)
        self._id_key = keys.chunk_id
        self.keys = keys

    def __repr__(self) -> str:
        return "<SealedEnvelope>"

    def chunk_id(self, data: bytes | bytearray | memoryview) -> str:
        return hmac.new(self._id_key, data, hashlib.sha256).hexdigest()

    def manifest_rel(self, name: str, image_id: str) -> str:
        ref = f"liferaft manifest\0{name}@{image_id}".encode()
        return "images/" + hmac.new(self._id_key, ref, hashlib.sha256).hexdigest()

    def seal(self, kind: str, rel: str, body: bytes) -> bytes:
        # 96-bit random nonces: with at most 2^32 objects per key the chance
        # of a repeat stays below 2^-32 (NIST SP 800-38D, 8.3).
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, body, aad(kind, rel))

    def open(self, kind: str, rel: str, blob: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise SealError(f"{rel} is too short to be a sealed object")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad(kind, rel))
        except InvalidTag:
            raise SealError(f"{rel} fails authentication") from None


# --------------------------------------------------------------------------
# Key slots: keys/<slot>.json, the master keys wrapped by one passphrase


def _kek(passphrase: str, salt: bytes, kdf: dict[str, Any]) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    return hash_secret_raw(
        passphrase.encode(),
        salt,
        time_cost=int(kdf["time_cost"]),
        memory_cost=int(kdf["memory_cost"]),
        parallelism=int(kdf["parallelism"]),
        hash_len=KEY_BYTES,
        type=Type.ID,
    )


def _slot_aad(repo_id: str, slot: str) -> bytes:
    return aad("key", f"{repo_id}/{KEYS_DIR}/{slot}")


def slot_rel(slot: str) -> str:
    return f"{KEYS_DIR}/{slot}.json"


def new_slot_id() -> str:
    return secrets.token_hex(8)


def wrap(keys: MasterKeys, passphrase: str, repo_id: str, slot: str, created: str) -> bytes:
    """A key slot file: ``keys`` sealed with a key argon2id derives from ``passphrase``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt = secrets.token_bytes(SALT_BYTES)
    kdf: dict[str, Any] = {
        "name": KDF,
        "time_cost": ARGON2_TIME_COST,
        "memory_cost": ARGON2_MEMORY_KIB,
        "parallelism": ARGON2_PARALLELISM,
        "salt": base64.b64encode(salt).decode(),
    }
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(_kek(passphrase, salt, kdf)).encrypt(
        nonce, keys.to_bytes(), _slot_aad(repo_id, slot)
    )
    doc = {
        "format": KEY_FORMAT,
        "version": KEY_VERSION,
        "slot": slot,
        "created": created,
        "kdf": kdf,
        "cipher": CIPHER,
        "nonce": base64.b64encode(nonce).decode(),
        "wrapped": base64.b64encode(sealed).decode(),
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


@dataclass(frozen=True)
class KeySlot:
    slot: str
    created: str
    doc: dict[str, Any] = field(repr=False)


def parse_slot(raw: bytes, rel: str) -> KeySlot:
    """A key slot file's fields; RepositoryError if it is not one."""
    try:
        doc = json.loads(raw)
        ok = (
            isinstance(doc, dict)
            and doc.get("format") == KEY_FORMAT
            and doc.get("kdf", {}).get("name") == KDF
            and doc.get("cipher") == CIPHER
        )
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise RepositoryError(f"key slot {rel} is damaged or of an unknown kind")
    if doc.get("version") != KEY_VERSION:
        raise RepositoryError(
            f"key slot {rel} has version {doc.get('version')!r}", hint="use a newer liferaft"
        )
    return KeySlot(str(doc.get("slot")), str(doc.get("created", "")), doc)


def unwrap(slot: KeySlot, passphrase: str, repo_id: str) -> MasterKeys | None:
    """The master keys if ``passphrase`` opens ``slot``, else None."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    doc = slot.doc
    try:
        salt = base64.b64decode(doc["kdf"]["salt"])
        nonce = base64.b64decode(doc["nonce"])
        sealed = base64.b64decode(doc["wrapped"])
        kek = _kek(passphrase, salt, doc["kdf"])
        return MasterKeys.from_bytes(
            AESGCM(kek).decrypt(nonce, sealed, _slot_aad(repo_id, slot.slot))
        )
    except InvalidTag:
        return None
    except (KeyError, TypeError, ValueError):
        raise RepositoryError(f"key slot {slot_rel(slot.slot)} is damaged") from None


# --------------------------------------------------------------------------
# The paper key: the master keys as text a person can type back


def _checksum(raw: bytes) -> str:
    return base64.b32encode(hashlib.sha256(b"liferaft paper key\0" + raw).digest()[:5]).decode()


def _groups(text: str, size: int = 4) -> str:
    return "-".join(text[i : i + size] for i in range(0, len(text), size))


def paper_key(keys: MasterKeys, repo_id: str) -> str:
    """The master keys as base32 in groups of four, then a checksum line."""
    body = base64.b32encode(keys.to_bytes()).decode().rstrip("=")
    lines = [_groups(body[i : i + 32]) for i in range(0, len(body), 32)]
    return "\n".join(
        [
            f"{PAPER_HEADER} for repository {repo_id}",
            *lines,
            f"check: {_groups(_checksum(keys.to_bytes()))}",
        ]
    )


def read_paper_key(text: str) -> MasterKeys:
    """The master keys from a paper key's text (case, spaces and dashes do not
    matter); RepositoryError naming what is wrong."""
    body: list[str] = []
    check = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.lower().startswith(PAPER_HEADER):
            continue
        if line.lower().startswith("check:"):
            check = line.partition(":")[2]
            continue
        body.append(line)
    letters = re.sub(r"[\s-]", "", "".join(body)).upper()
    check = re.sub(r"[\s-]", "", check).upper()
    hint = "type the key again exactly as 'liferaft key export --paper' printed it"
    try:
        raw = base64.b32decode(letters + "=" * (-len(letters) % 8))
    except ValueError:
        raise RepositoryError("the paper key holds characters base32 does not", hint=hint) from None
    if len(raw) != 2 * KEY_BYTES:
        raise RepositoryError(
            f"the paper key has {len(letters)} letters, not {len(paper_letters())}", hint=hint
        )
    if not check:
        raise RepositoryError("the paper key's 'check:' line is missing", hint=hint)
    if not hmac.compare_digest(check, _checksum(raw)):
        raise RepositoryError("the paper key does not match its checksum (a typo?)", hint=hint)
    return MasterKeys.from_bytes(raw)


def paper_letters() -> str:
    return base64.b32encode(bytes(2 * KEY_BYTES)).decode().rstrip("=")


def new_repository_id() -> str:
    return os.urandom(16).hex()
