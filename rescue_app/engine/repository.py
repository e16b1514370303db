"""A liferaft repository: its layout, chunk store and manifests (docs/FORMAT.md).

Owns what the files of a repository mean; where they live (a folder, a web
server, a bucket) is a Store's business (rescue_app.engine.stores). A
manifest is written only after every chunk it names is on stable storage, and
every write is atomic, so a reader or a crash never sees a half-written chunk
or image. Never touches a disk device.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import zstandard

from rescue_app import __version__
from rescue_app.engine.envelope import PLAIN, Envelope, SealError
from rescue_app.engine.keychain import CredentialChain
from rescue_app.engine.manifest import ImageSummary, Manifest, parse_manifest
from rescue_app.engine.signing import SIG_SUFFIX, SignatureError, Signer, TrustedKeys
from rescue_app.engine.spool import ChunkSpool
from rescue_app.engine.stores import Store, open_store
from rescue_app.errors import ChunkError, ImageNotFoundError, ManifestError, RepositoryError
from rescue_app.progress import CancelToken, ProgressCallback, no_progress

REPO_FORMAT = "liferaft-repository"
# The newest version this liferaft reads; a repository is written with the
# lowest that describes it: 1 plain, 2 encrypted (docs/FORMAT.md).
REPO_VERSION = 2
REPO_FILE = "liferaft-repository.json"
INDEX_FILE = "index.json"
CHUNK_SIZE = 4 * 1024 * 1024
CHUNK_HASH = "sha256"
COMPRESSION = "zstd"
ZSTD_LEVEL = 3
# A chunk that prune has marked (engine/prune.py, docs/FORMAT.md "Prune"):
# absent for writers, still readable for readers until prune deletes it.
CANDIDATE_SUFFIX = ".candidate"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ID_RE = re.compile(r"^\d{8}T\d{6}Z$")

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def chunk_digest(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_rel(digest: str) -> str:
    return f"chunks/{digest[:2]}/{digest}"


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RepositoryError(
            f"image name {name!r} is not allowed",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class PutResult:
    digest: str
    stored_bytes: int  # compressed bytes newly written; 0 if the chunk was already there


class Repository:
    """A repository in a Store. Open with ``Repository.open``."""

    # what 'liferaft images' shows in its FORMAT column (Clonezilla images:
    # engine/clonezilla.py's read-only subclass)
    format_name = "liferaft"
    # Read whole and checked before a restore is planned (a Clonezilla image):
    # the restore need not check its chunks again before writing.
    read_whole_first = False

    def __init__(self, store: Store) -> None:
        self.store = store
        self.location = store.location
        # Asked to create, but nothing written yet: the repository is made when
        # its first file is about to be written, so a capture that fails first
        # (a wrong device, a mounted disk) leaves no folder at a mistyped --repo.
        self._create_pending = False
        self._create_lock = threading.Lock()
        self.damaged: list[str] = []  # manifests list_images() skipped, as messages
        self.untrusted: list[str] = []  # images skipped for want of a trusted signature
        # How objects are named and sealed: PLAIN, or (encrypted) the envelope
        # of the unlocked master keys (engine/keys.py unlocks and creates).
        self.envelope: Envelope = PLAIN
        self.marker: dict[str, Any] = {}  # liferaft-repository.json as read (or to write)
        # The key slot the passphrase opened ("": none, or not encrypted):
        # changing a passphrase is a new slot, then this one removed.
        self.key_slot = ""
        self.first_files: list[tuple[str, bytes]] = []  # written before a new marker
        self.unreadable: list[str] = []  # sealed manifests manifest_refs() could not open
        self._opened: dict[str, Manifest] = {}  # sealed manifests by object name
        # Signatures of an unencrypted repository's manifests (engine/signing.py):
        # the key capture signs with, and the keys a reader requires.
        self.signer: Signer | None = None
        self.trusted: TrustedKeys | None = None
        self._sealed_listed: list[str] = []  # every sealed manifest's name, opened or not
        # Chunks a restore checked before writing, kept for get_chunk (engine/spool.py)
        self.spool: ChunkSpool | None = None

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(
        cls,
        location: str,
        *,
        credentials: CredentialChain,
        create: bool = False,
        unlock: bool = True,
        store: Store | None = None,
    ) -> Repository:
        """``credentials``: where a network store gets its secrets (the Engine's)
        and an encrypted repository its passphrase; ``unlock=False`` leaves an
        encrypted one locked (key management); ``store``: ``location`` already
        opened (the repository takes it over)."""
        if store is None:
            store = open_store(location, credentials)
        repo = cls(store)
        try:
            marker = store.read(REPO_FILE)
        except FileNotFoundError:
            if not create:
                raise store.missing(create_hint=False) from None
            repo._create_pending = True
            return repo
        repo._check_marker(marker)
        from rescue_app.engine import keys

        if repo.encrypted:
            repo.envelope = keys.LOCKED
            if unlock:
                keys.unlock(repo, credentials)
        else:
            keys.refuse_downgrade(repo, credentials)
        return repo

    @property
    def encrypted(self) -> bool:
        """Whether the store sees only sealed objects (format 2): where an
        unlocked LUKS volume's contents may be captured."""
        return "encryption" in self.marker

    def manifest_rel(self, name: str, image_id: str) -> str:
        return self.envelope.manifest_rel(name, image_id)

    def _check_marker(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise RepositoryError(
                f"repository {self.location}: {REPO_FILE} is damaged (not valid JSON: {exc})",
                hint=f"the medium may be failing; restore {REPO_FILE} from a copy of the "
                "repository, or write a new one as docs/FORMAT.md describes",
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != REPO_FORMAT:
            raise RepositoryError(f"{self.location}/{REPO_FILE} is not a liferaft repository file")
        if not isinstance(doc.get("version"), int) or doc["version"] > REPO_VERSION:
            raise RepositoryError(
                f"repository {self.location} has format version {doc.get('version')!r}",
                hint=f"this liferaft reads version {REPO_VERSION}; use a newer liferaft",
            )
        self.marker = doc

    def _create(self) -> None:
        self.store.prepare_new()
        doc = {
            "format": REPO_FORMAT,
            "version": REPO_VERSION,
            "chunk_size": CHUNK_SIZE,
            "chunk_hash": self.envelope.chunk_hash,
            "compression": COMPRESSION,
            "created": _utc_now().isoformat().replace("+00:00", "Z"),
            **self.marker,
        }
        for rel, raw in self.first_files:  # an encrypted repository's first key slot
            self.store.write(rel, raw, durable=True)
        self.store.write(REPO_FILE, (json.dumps(doc, indent=1) + "\n").encode(), durable=True)
        self.marker = doc

    def local_path(self) -> str | None:
        """The repository's folder when it is on this machine's own disks, else
        None (a server's share, a bucket: nothing of it lives on a local disk)."""
        from rescue_app.engine.stores.local import LocalStore

        return self.store.root if type(self.store) is LocalStore else None

    def ensure_writable(self) -> None:
        """Fail early, before reading any disk, if we cannot write here; a
        repository still to be created is checked without creating anything."""
        if self._create_pending:
            local = self.local_path()
            if local is not None:
                _check_creatable(local)
                return
            self._materialise()
        self.store.check_writable()

    @property
    def create_pending(self) -> bool:
        """Asked to create, and nothing written yet."""
        return self._create_pending

    def create_now(self) -> None:
        """Write the new repository's marker now rather than with its first data
        (an empty repository for a medium being prepared)."""
        if self._create_pending:
            self._materialise()

    def _materialise(self) -> None:
        with self._create_lock:
            if self._create_pending:
                self._create()
                self._create_pending = False

    # -- chunks ----------------------------------------------------------
    def chunk_id(self, data: bytes | bytearray | memoryview) -> str:
        """The id this repository gives a chunk's bytes, what its manifests name.

        The one place a caller outside this module turns bytes into an id (a
        seed restore hashes the target's bytes with it, verify the read-back):
        SHA-256, or HMAC-SHA256 in an encrypted repository (its envelope's)."""
        return self.envelope.chunk_id(data)

    def has_chunk(self, digest: str) -> bool:
        """Whether a writer may count on the chunk being there. A prune
        candidate is not: prune may delete it, so it is stored again."""
        return self.store.has(chunk_rel(digest))

    def put_chunk(
        self, data: bytes | bytearray | memoryview, digest: str | None = None
    ) -> PutResult:
        """Store one chunk unless an identical one is already there."""
        digest = digest or self.chunk_id(data)
        if self._create_pending:
            self._materialise()
        if self.has_chunk(digest):
            return PutResult(digest, 0)
        rel = chunk_rel(digest)
        blob = self.envelope.seal("chunk", rel, _compressor().compress(data))
        self.store.write(rel, blob, durable=False)
        return PutResult(digest, len(blob))

    def missing_chunks(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the store does not hold: one listing per chunk
        folder where the store can list, else parallel look-ups (HTTP HEAD)."""
        wanted = set(digests)
        if self.local_path() is not None or not self.store.can_list:
            # stat() is as cheap as a listing locally, and also sees the empty
            # file a power cut leaves of an unsynced chunk.
            with ThreadPoolExecutor(max_workers=16, thread_name_prefix="liferaft-has") as pool:
                present = dict(zip(wanted, pool.map(self._readable, wanted), strict=True))
            return {d for d, ok in present.items() if not ok}
        folders: dict[str, set[str]] = {}
        for d in wanted:
            folders.setdefault(d[:2], set()).add(d)

        def listed(prefix: str) -> set[str]:
            return set(self.store.list(f"chunks/{prefix}"))

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="liferaft-list") as pool:
            names = dict(zip(folders, pool.map(listed, folders), strict=True))
        return {
            d
            for prefix, ds in folders.items()
            for d in ds
            if d not in names[prefix] and d + CANDIDATE_SUFFIX not in names[prefix]
        }

    def _readable(self, digest: str) -> bool:
        rel = chunk_rel(digest)
        return self.store.has(rel) or self.store.has(rel + CANDIDATE_SUFFIX)

    def check_chunks_present(self, manifest: Manifest) -> None:
        """RepositoryError before anything is written when chunks are missing,
        naming how many and every image that needs them."""
        missing = self.missing_chunks(d for d, _, _ in manifest.chunk_refs())
        if not missing:
            return
        affected = {manifest.ref}
        for name, image_id in self.manifest_refs():
            try:
                other = self._read_manifest(name, image_id)
            except RepositoryError:
                continue
            if any(d in missing for d, _, _ in other.chunk_refs()):
                affected.add(other.ref)
        raise ChunkError(
            f"{len(missing)} chunk(s) that image {manifest.ref} needs are missing from "
            f"repository {self.location} (images affected: {', '.join(sorted(affected))}); "
            "nothing was written",
            hint="restore another image or from another copy of the repository; "
            "'liferaft verify' checks every image",
        )

    def get_chunk(self, digest: str, where: str = "") -> bytes:
        """Read, decompress and check one chunk; ChunkError names ``where``.
        A chunk a restore's check kept in ``spool`` is taken from there: as
        the check left it (see spool.py), else as stored and checked again."""
        place = f" ({where})" if where else ""
        blob = None
        if self.spool is not None:
            data = self.spool.take_checked(digest)
            if data is not None:
                return data
            blob = self.spool.take(digest)
        return self._unseal(digest, blob or self._fetch_chunk(digest, place), place)

    def check_chunk(self, digest: str, where: str = "", keep: ChunkSpool | None = None) -> int:
        """Read and check one chunk as ``get_chunk`` does, without returning
        it; it goes to ``keep`` when given (and not full): the checked bytes
        of a plain repository, the stored (sealed) form of an encrypted one,
        whose plaintext never goes to the temporary folder (a disk on an
        installed system). The chunk's length; ChunkError names ``where``."""
        place = f" ({where})" if where else ""
        blob = self._fetch_chunk(digest, place)
        data = self._unseal(digest, blob, place)
        if keep is not None:
            keep.keep(digest, blob, None if self.envelope.encrypted else data)
        return len(data)

    def _fetch_chunk(self, digest: str, place: str) -> bytes:
        try:
            return self._read_chunk_file(digest)
        except FileNotFoundError:
            raise ChunkError(
                f"chunk {digest[:12]}{place} is missing from repository {self.location}",
                hint="the repository is incomplete; run 'liferaft verify' and use another image",
            ) from None

    def _unseal(self, digest: str, blob: bytes, place: str) -> bytes:
        try:
            blob = self.envelope.open("chunk", chunk_rel(digest), blob)
        except SealError:
            raise ChunkError(
                f"chunk {digest[:12]}{place} was tampered with or is damaged: "
                "it fails authentication",
                hint="someone or something changed the repository; use another copy of the image",
            ) from None
        try:
            data = _decompressor().decompress(blob)
        except zstandard.ZstdError:
            data = b""
        if self.chunk_id(data) != digest:
            raise ChunkError(
                f"chunk {digest[:12]}{place} is damaged: its content does not match its hash",
                hint="the repository's medium may be failing; use another copy of the image",
            )
        return data

    def _read_chunk_file(self, digest: str) -> bytes:
        """The chunk, or else its prune candidate: an image whose capture found
        the chunk just before prune marked it needs it until prune's next run
        renames it back."""
        rel = chunk_rel(digest)
        try:
            return self.store.read(rel)
        except FileNotFoundError:
            try:
                return self.store.read(rel + CANDIDATE_SUFFIX)
            except FileNotFoundError:
                # renamed back meanwhile, or really missing
                return self.store.read(rel)

    # -- manifests -------------------------------------------------------
    def new_image_id(self, name: str) -> tuple[str, datetime]:
        while True:
            now = _utc_now()
            image_id = now.strftime("%Y%m%dT%H%M%SZ")
            if not self.store.has(self.manifest_rel(name, image_id)):
                return image_id, now
            time.sleep(0.2)

    def commit_manifest(self, manifest: Manifest) -> None:
        """Make an image exist: sync its chunks, then write the manifest atomically."""
        if self._create_pending:
            self._materialise()
        self.store.sync()
        rel = self.manifest_rel(manifest.name, manifest.id)
        body = self.envelope.seal("manifest", rel, manifest.to_json().encode())
        self._sign(manifest, rel, body)
        self.store.write(rel, body, durable=True)
        self._write_index(added=(manifest.name, manifest.id))

    def remove_images(self, refs: Iterable[tuple[str, str]]) -> None:
        """Forget images: each manifest is deleted (one atomic delete: the
        image is there whole or not at all), its signature after it, then
        index.json is rewritten. Chunks stay until ``prune``."""
        for name, image_id in refs:
            rel = self.manifest_rel(name, image_id)
            self.store.delete(rel)
            self.store.delete(rel + ".sig")
        self._write_index()

    def write_index(self, slot: str | None = None) -> None:
        """``slot``: a key slot just written (see ``_write_index``)."""
        self._write_index(slot=slot)

    def _write_index(self, added: tuple[str, str] | None = None, slot: str | None = None) -> None:
        """index.json lists every image, for readers that cannot list folders
        (HTTP). ``added``, ``slot``: the image just committed, the key slot
        just written, which a store that cannot list (an append-only web
        server) knows only from index.json."""
        refs = self.manifest_refs()
        if added is not None and added not in refs:
            refs = sorted([*refs, added])
        entries: list[dict[str, str]] = [
            {"name": name, "id": image_id, "path": self.manifest_rel(name, image_id)}
            for name, image_id in refs
        ]
        doc: dict[str, Any] = {"format": "liferaft-index", "version": 1, "images": entries}
        if self.envelope.encrypted:
            # the paths only: names and ids are secret; and the key slots, for
            # readers that cannot list keys/
            from rescue_app.engine import keys

            slots = {s.slot for s in keys.slots(self)} | ({slot} if slot else set())
            doc = {"format": "liferaft-index", "version": 2, "images": [
                {"path": p} for p in sorted({*self._sealed_listed, *(e["path"] for e in entries)})
            ], "keys": sorted(slots)}  # fmt: skip
        self.store.write(INDEX_FILE, (json.dumps(doc, indent=1) + "\n").encode(), durable=True)

    def manifest_refs(self) -> list[tuple[str, str]]:
        """(name, id) of every manifest, by name then id."""
        if self.envelope.encrypted:
            return self._sealed_refs()
        if not self.store.can_list:
            return self._refs_from_index()
        out = []
        for name in self.store.list("images"):
            if not NAME_RE.match(name):
                continue
            for fname in self.store.list(f"images/{name}"):
                stem = fname.removesuffix(".json")
                if fname.endswith(".json") and ID_RE.match(stem):
                    out.append((name, stem))
        return out

    def _refs_from_index(self) -> list[tuple[str, str]]:
        try:
            doc = json.loads(self.store.read(INDEX_FILE))
            refs = [(str(e["name"]), str(e["id"])) for e in doc["images"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError):
            raise RepositoryError(f"repository {self.location}: {INDEX_FILE} is damaged") from None
        return sorted((n, i) for n, i in refs if NAME_RE.match(n) and ID_RE.match(i))

    def _sealed_refs(self) -> list[tuple[str, str]]:
        """An encrypted repository's manifests are opened to learn their names;
        one that fails to open is left out and named in ``unreadable``."""
        if self.store.can_list:
            rels = [f"images/{n}" for n in self.store.list("images") if _SEALED_RE.match(n)]
        else:
            try:
                doc = json.loads(self.store.read(INDEX_FILE))
                rels = [str(e["path"]) for e in doc["images"]]
            except FileNotFoundError:
                rels = []
            except (ValueError, KeyError, TypeError):
                raise RepositoryError(
                    f"repository {self.location}: {INDEX_FILE} is damaged"
                ) from None
            rels = [r for r in rels if _SEALED_RE.match(r.removeprefix("images/"))]
        self.unreadable = []
        self._sealed_listed = sorted(set(rels))
        for rel in set(self._opened) - set(rels):
            del self._opened[rel]
        for rel in rels:
            if rel not in self._opened:
                try:
                    self._opened[rel] = self._open_sealed(rel, rel)
                except (ManifestError, FileNotFoundError) as exc:
                    if isinstance(exc, ManifestError):
                        self.unreadable.append(exc.message)
        return sorted((m.name, m.id) for m in self._opened.values())

    def _open_sealed(self, rel: str, shown: str) -> Manifest:
        try:
            text = self.envelope.open("manifest", rel, self.store.read(rel))
        except SealError:
            raise ManifestError(
                f"manifest {shown} was tampered with or is damaged: it fails authentication",
                hint="someone or something changed the repository; use another image or copy",
            ) from None
        manifest = parse_manifest(text, shown)
        if self.manifest_rel(manifest.name, manifest.id) != rel:
            raise ManifestError(f"manifest {shown} holds another image ({manifest.ref})")
        return manifest

    def list_images(self) -> list[ImageSummary]:
        """Every complete image, oldest first. A damaged manifest is skipped
        here (``verify`` and ``restore`` report it)."""
        out: list[ImageSummary] = []
        self.damaged = []
        self.untrusted = []
        if self._create_pending:
            return out
        for name, image_id in self.manifest_refs():
            try:
                out.append(ImageSummary.of(self._read_manifest(name, image_id)))
            except SignatureError as exc:
                self.untrusted.append(exc.message)
            except ManifestError as exc:
                self.damaged.append(exc.message)
        self.damaged.extend(self.unreadable)
        out.sort(key=lambda s: (s.created, s.name))
        return out

    def resolve(self, ref: str) -> tuple[str, str]:
        """``name`` (newest image of that name) or ``name@id`` -> (name, id)."""
        name, _, image_id = ref.partition("@")
        ids = [i for n, i in self.manifest_refs() if n == name]
        # an encrypted repository cannot tell whose a manifest that fails to open was
        hidden = f"; {self.unreadable[0]}" if self.unreadable else ""
        if image_id:
            if image_id not in ids:
                raise ImageNotFoundError(
                    f"image {ref} is not in repository {self.location}{hidden}",
                    hint="run 'liferaft images --repo ...' to list the images",
                )
            return name, image_id
        if not ids:
            raise ImageNotFoundError(
                f"no image named {name!r} in repository {self.location}{hidden}",
                hint="run 'liferaft images --repo ...' to list the images",
            )
        return name, max(ids)

    def load_manifest(
        self, ref: str, progress: ProgressCallback = no_progress, cancel: CancelToken | None = None
    ) -> Manifest:
        """Image ``ref``'s manifest: one file here. ``progress`` and ``cancel``
        are for sources that read a whole image to know it (ClonezillaSource)."""
        name, image_id = self.resolve(ref)
        return self._read_manifest(name, image_id)

    def _read_manifest(self, name: str, image_id: str) -> Manifest:
        rel = self.manifest_rel(name, image_id)
        if self.envelope.encrypted:
            if rel in self._opened:
                return self._opened[rel]
            try:
                return self._open_sealed(rel, f"{name}@{image_id}")
            except FileNotFoundError:
                raise ImageNotFoundError(
                    f"image {name}@{image_id} is listed but its manifest is missing "
                    f"from {self.location}"
                ) from None
        try:
            text = self.store.read(rel)
        except FileNotFoundError:
            raise ImageNotFoundError(
                f"image {name}@{image_id} is listed but its manifest is missing "
                f"from {self.location}"
            ) from None
        host = self._check_signature(name, image_id, rel, text)
        manifest = parse_manifest(text, f"{name}@{image_id}")
        if host is not None and (manifest.name, manifest.id, manifest.host) != (
            name,
            image_id,
            host,
        ):
            raise SignatureError(
                f"image {name}@{image_id}: its manifest says {manifest.name}@{manifest.id} "
                f"of host {manifest.host}, its signature {name}@{image_id} of host {host}; "
                "nothing was written",
                hint="use another image, and check who can write to the repository",
            )
        return manifest

    # -- signatures (engine/signing.py; encrypted repositories have their AEAD)
    def _sign(self, manifest: Manifest, rel: str, body: bytes) -> None:
        """The signature goes first: a reader that requires one never sees
        the manifest without it."""
        if self.signer is not None and not self.envelope.encrypted:
            sig = self.signer.sign(manifest.name, manifest.id, manifest.host, body)
            self.store.write(rel + SIG_SUFFIX, sig, durable=True)

    def _check_signature(self, name: str, image_id: str, rel: str, text: bytes) -> str | None:
        """The host a trusted key signed the manifest for; None when no
        signature is required. SignatureError otherwise."""
        if self.trusted is None:
            return None
        try:
            sig: bytes | None = self.store.read(rel + SIG_SUFFIX)
        except FileNotFoundError:
            sig = None
        return self.trusted.check(name, image_id, text, sig)

    def clean_tmp(self) -> None:
        self.store.clean_tmp()

    def close(self) -> None:
        self.store.close()


_SEALED_RE = re.compile(r"^[0-9a-f]{64}$")  # an encrypted repository's manifest names


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def host_name() -> str:
    return socket.gethostname()


def liferaft_version() -> str:
    return __version__


def _check_creatable(path: str) -> None:
    """A repository folder could be made at ``path``: its nearest existing
    parent is a writable folder on a writable filesystem. Creates nothing."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RepositoryError(
            f"cannot create the repository {path}: {parent} is a file",
            hint="give --repo a folder path",
        )
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise RepositoryError(
            f"cannot create the repository {path}: {parent} is on a read-only filesystem",
            hint="remount it read-write or choose another destination",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RepositoryError(
            f"cannot create the repository {path}: {parent} is not writable (permission denied)",
            hint="run as root or fix the folder's permissions",
        )
