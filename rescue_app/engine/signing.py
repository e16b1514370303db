"""Signed manifests: who may vouch for an image of an unencrypted repository.

Owns the Ed25519 signature file ``images/<name>/<id>.json.sig`` (docs/FORMAT.md,
"Signatures"): making it at capture (``Signer``) and checking it before an
image is used (``TrustedKeys``). The signature covers the image's name and id
as the path gives them, the capturing host and the SHA-256 of the manifest's
bytes, so a manifest that was changed, renamed, moved to another image name
or given a later id is refused; every chunk is named by its hash in the
manifest, so the signature covers every byte of the image.

Keys are files as ``openssl genpkey -algorithm ed25519`` (PEM) or
``ssh-keygen -t ed25519`` (OpenSSH) write them. Encrypted repositories are
authenticated by their AEAD instead (engine/envelope.py). Pure: reads key
files when asked, never a store.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rescue_app.errors import ManifestError, UsageError

SIGNATURE_FORMAT = "liferaft-signature"
SIGNATURE_VERSION = 1
SCHEME = "ed25519"
SIG_SUFFIX = ".sig"
_DOMAIN = "liferaft-manifest-signature-v1"


class SignatureError(ManifestError):
    """An image's signature is missing, not by a trusted key, or does not match."""


def _refused(message: str, hint: str) -> SignatureError:
    """The error that refuses an image for its signature: it is checked
    before anything is written, and each refusal says so."""
    return SignatureError(f"{message}; nothing was written", hint=hint)


def key_id(key: Ed25519PublicKey) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it (SHA256:...)."""
    wire = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(wire.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def signed_message(name: str, image_id: str, host: str, manifest: bytes) -> bytes:
    """The bytes the signature is over (one line each; no field holds a newline)."""
    digest = hashlib.sha256(manifest).hexdigest()
    return f"{_DOMAIN}\n{name}\n{image_id}\n{host}\n{digest}\n".encode()


@dataclass(frozen=True)
class Signer:
    """A site's private key, for ``liferaft capture --sign-key``."""

    key: Ed25519PrivateKey
    origin: str  # the key file, for messages

    def sign(self, name: str, image_id: str, host: str, manifest: bytes) -> bytes:
        """The signature file for ``manifest``, stored as images/<name>/<id>.json.sig."""
        public = self.key.public_key()
        doc = {
            "format": SIGNATURE_FORMAT,
            "version": SIGNATURE_VERSION,
            "scheme": SCHEME,
            "key_id": key_id(public),
            "name": name,
            "id": image_id,
            "host": host,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "signature": base64.b64encode(
                self.key.sign(signed_message(name, image_id, host, manifest))
            ).decode(),
        }
        return (json.dumps(doc, indent=1) + "\n").encode()


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys an image must be signed by; ``origin`` says where they
    came from (a --trust-key file, the rescue stick's profile)."""

    keys: tuple[Ed25519PublicKey, ...]
    origin: str

    def check(self, name: str, image_id: str, manifest: bytes, sig: bytes | None) -> str:
        """SignatureError unless ``sig`` is a trusted key's signature of
        ``manifest`` found as image ``name@id``; the host it was signed for."""
        ref = f"{name}@{image_id}"
        if sig is None:
            raise _refused(
                f"image {ref} is not signed, and only images signed by a key of "
                f"{self.origin} are accepted",
                "capture it with 'liferaft capture --sign-key', or use a signed image",
            )
        doc = _parse(sig, ref)
        if doc["name"] != name or doc["id"] != image_id:
            raise _refused(
                f"image {ref} carries the signature of image {doc['name']}@{doc['id']}: "
                "a renamed, moved or replayed manifest",
                "restore the image under the name and date it was signed with, "
                "and check who can write to the repository",
            )
        trusted = {key_id(k): k for k in self.keys}
        key = trusted.get(doc["key_id"])
        if key is None:
            raise _refused(
                f"image {ref} is signed by key {doc['key_id']}, which {self.origin} does not trust",
                f"trusted: {', '.join(trusted)}; give the right --trust-key",
            )
        try:
            key.verify(doc["signature"], signed_message(name, image_id, doc["host"], manifest))
        except InvalidSignature:
            raise _refused(
                f"image {ref}: its signature does not match its manifest (the manifest was "
                "changed after it was signed)",
                "use another image or copy of the repository, and check who can write to it",
            ) from None
        return str(doc["host"])


def _parse(sig: bytes, ref: str) -> dict[str, Any]:
    try:
        doc = json.loads(sig)
        ok = (
            isinstance(doc, dict)
            and doc.get("format") == SIGNATURE_FORMAT
            and all(isinstance(doc.get(k), str) for k in ("name", "id", "host", "key_id"))
        )
        if ok and doc.get("scheme") != SCHEME:
            raise _refused(
                f"image {ref} is signed with scheme {doc.get('scheme')!r}, which this liferaft "
                "does not know",
                "use a newer liferaft",
            )
        if ok:
            doc["signature"] = base64.b64decode(doc["signature"], validate=True)
            ok = len(doc["signature"]) == 64
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise _refused(
            f"image {ref}: its signature file is damaged",
            "use another image or copy of the repository",
        )
    return dict(doc)


# -- key files ---------------------------------------------------------------


def load_signer(path: str) -> Signer:
    """The Ed25519 private key in ``path`` (PEM/PKCS#8 or OpenSSH, no passphrase)."""
    data = _read(path, "signing key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # the file is encrypted
        raise UsageError(
            f"signing key {path} has a passphrase",
            hint="liferaft signs unattended: keep the key without a passphrase, "
            "mode 0600, on the capturing machine only",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _not_ed25519(path, "private") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _not_ed25519(path, "private")
    return Signer(key, path)


def parse_public_key(text: str, origin: str) -> Ed25519PublicKey:
    """An Ed25519 public key in PEM or as an OpenSSH line (``ssh-ed25519 AAAA...``)."""
    data = text.strip().encode()
    try:
        if data.startswith(b"ssh-"):
            key: object = serialization.load_ssh_public_key(data)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise _not_ed25519(origin, "public") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _not_ed25519(origin, "public")
    return key


def load_trusted(paths: list[str]) -> TrustedKeys:
    """The public keys in the files ``paths`` (one key per file)."""
    keys = [parse_public_key(_read(p, "trusted key").decode(errors="replace"), p) for p in paths]
    return TrustedKeys(tuple(keys), ", ".join(paths))


def trusted_from_texts(texts: tuple[str, ...], origin: str) -> TrustedKeys | None:
    """Keys written out in a profile; None when there are none."""
    if not texts:
        return None
    return TrustedKeys(tuple(parse_public_key(t, origin) for t in texts), origin)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror or exc}", hint="check the path"
        ) from None


def _not_ed25519(origin: str, kind: str) -> UsageError:
    command = (
        "openssl genpkey -algorithm ed25519 -out site.key"
        if kind == "private"
        else "openssl pkey -in site.key -pubout -out site.pub"
    )
    return UsageError(
        f"{origin} is not an Ed25519 {kind} key (PEM or OpenSSH)",
        hint=f"make one with '{command}' (or ssh-keygen -t ed25519)",
    )
