"""An encrypted repository's keys: create, unlock, key slots, the paper key.

Owns what happens to ``keys/`` and the marker's ``encryption`` block
(docs/FORMAT.md, "Version 2"); the cryptography itself is
rescue_app/engine/envelope.py. The passphrase that unlocks comes from the
Engine's CredentialChain (SecretKind.PASSPHRASE); a new passphrase (init, key
add, key import) is given by the caller, which asks for it twice. Neither is
ever logged, written in plaintext or put in an error message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from rescue_app.engine import envelope as _env
from rescue_app.engine.envelope import Envelope, KeySlot, MasterKeys, SealedEnvelope
from rescue_app.engine.keychain import CredentialChain, SecretKind, SecretRequest
from rescue_app.engine.repository import INDEX_FILE, REPO_FILE, Repository
from rescue_app.errors import RepositoryError

MIN_PASSPHRASE = 8


class LockedEnvelope(Envelope):
    """An encrypted repository opened without its keys (key management): it
    refuses to name or seal anything, so nothing plain is ever written into it."""

    encrypted = True

    def _refuse(self) -> RepositoryError:
        return RepositoryError("the encrypted repository is locked (no passphrase was used)")

    def chunk_id(self, data: bytes | bytearray | memoryview) -> str:
        raise self._refuse()

    def manifest_rel(self, name: str, image_id: str) -> str:
        raise self._refuse()

    def seal(self, kind: str, rel: str, body: bytes) -> bytes:
        raise self._refuse()

    def open(self, kind: str, rel: str, blob: bytes) -> bytes:
        raise self._refuse()


LOCKED = LockedEnvelope()


@dataclass(frozen=True)
class SlotInfo:
    slot: str
    created: str


def check_new_passphrase(passphrase: str) -> str:
    if len(passphrase) < MIN_PASSPHRASE:
        raise RepositoryError(
            f"the new passphrase is shorter than {MIN_PASSPHRASE} characters",
            hint="choose a longer one: it is all that protects the repository",
        )
    return passphrase


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _repo_id(repo: Repository) -> str:
    rid = repo.marker.get("id")
    if not isinstance(rid, str) or not rid:
        raise RepositoryError(f"repository {repo.location}: its marker has no 'id'")
    return rid


def create(repo: Repository, passphrase: str) -> None:
    """Make a new repository encrypted (before its first file is written):
    new master keys, the first key slot for ``passphrase``, the marker."""
    if not repo.create_pending:
        raise RepositoryError(
            f"{repo.location} is already a liferaft repository",
            hint="an existing repository cannot be encrypted; initialise a new one",
        )
    keys = MasterKeys.generate()
    rid = _env.new_repository_id()
    slot = _env.new_slot_id()
    repo.envelope = SealedEnvelope(keys)
    repo.marker = {
        "version": 2,
        "id": rid,
        "encryption": {
            "cipher": _env.CIPHER,
            "chunk_id": _env.KEYED_CHUNK_ID,
            "kdf": _env.KDF,
            "key_check": keys.check_value(),
        },
    }
    repo.first_files = [(_env.slot_rel(slot), _env.wrap(keys, passphrase, rid, slot, _now()))]
    repo.create_now()
    if not repo.store.can_list:  # (a web server) readers find the slot through index.json
        repo.write_index()
    repo.first_files = []


def _slot_ids(repo: Repository) -> list[str]:
    if repo.store.can_list:
        names = repo.store.list(_env.KEYS_DIR)
        return sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))
    # a plain web server cannot list keys/: index.json names the slots, but
    # not yet the one a new repository's marker is written with
    new = [rel for rel, _ in repo.first_files if rel.startswith(f"{_env.KEYS_DIR}/")]
    ids = {rel.removeprefix(f"{_env.KEYS_DIR}/").removesuffix(".json") for rel in new}
    try:
        doc = json.loads(repo.store.read(INDEX_FILE))
        return sorted(ids | {str(s) for s in doc.get("keys", [])})
    except FileNotFoundError:
        return sorted(ids)
    except (ValueError, AttributeError, TypeError):
        raise RepositoryError(f"repository {repo.location}: {INDEX_FILE} is damaged") from None


def slots(repo: Repository) -> list[KeySlot]:
    """Every key slot file of the repository."""
    out = []
    for sid in _slot_ids(repo):
        if not _env.SLOT_RE.match(sid):
            continue
        try:
            raw = repo.store.read(_env.slot_rel(sid))
        except FileNotFoundError:
            continue
        out.append(_env.parse_slot(raw, _env.slot_rel(sid)))
    return out


def list_slots(repo: Repository) -> list[SlotInfo]:
    _require_encrypted(repo)
    return [SlotInfo(s.slot, s.created) for s in slots(repo)]


def _require_encrypted(repo: Repository) -> None:
    if not repo.encrypted:
        raise RepositoryError(
            f"repository {repo.location} is not encrypted: it has no keys",
            hint="'liferaft init --repo NEW --encrypt' makes an encrypted repository",
        )


def refuse_downgrade(repo: Repository, credentials: CredentialChain) -> None:
    """A repository whose marker says it is plain, refused where that may be
    a lie: someone who can write the marker could remove its ``encryption``
    so that a client writes plaintext next to the ciphertext, or takes
    manifests planted in the clear for the repository's own (docs/FORMAT.md,
    "What the marker's authenticity rests on"). Refused when key slots are
    there, and when a passphrase is given for the repository (nobody gives
    one for a plain repository). Nothing is read or written after this."""
    why = ""
    if slots_present := _slot_ids(repo):
        why = f"it holds {len(slots_present)} key slot(s) in {_env.KEYS_DIR}/"
    else:
        request = SecretRequest(SecretKind.PASSPHRASE, url=repo.location)
        answer = credentials.lookup(request, ask=False)
        if answer is not None and answer.passphrase:
            why = f"a passphrase is given for it ({answer.match})"
    if why:
        raise RepositoryError(
            f"repository {repo.location}: its marker {REPO_FILE} says it is not encrypted, "
            f"but {why}: the marker may have been altered to make an encrypted repository "
            "look plain; nothing was read or written",
            hint=f"restore {REPO_FILE} from a copy of the repository and check who can write "
            "to it; if it really is a plain repository, give no passphrase for it",
        )


def unlock(repo: Repository, credentials: CredentialChain) -> None:
    """Open the repository's master keys with the passphrase the chain gives;
    one-line RepositoryError when there is none, none fits, or no slot is left."""
    found = slots(repo)
    if not found:
        raise RepositoryError(
            f"repository {repo.location} is encrypted but holds no key slot (keys/ is empty)",
            hint="restore keys/ from a copy of the repository, or run "
            f"'liferaft key import --repo {repo.location}' with the paper key",
        )
    request = SecretRequest(SecretKind.PASSPHRASE, url=repo.location)
    answer = credentials.lookup(request)
    if answer is None or not answer.passphrase:
        raise credentials.missing(request, repo.location)
    opened = unlock_with(repo, found, answer.passphrase)
    if opened is None:
        raise RepositoryError(
            f"repository {repo.location}: the passphrase opens none of its "
            f"{len(found)} key slot(s); nothing was read or written",
            hint="check LIFERAFT_PASSPHRASE or the credentials file's passphrase entry; "
            "with the paper key, 'liferaft key import' adds a new passphrase",
        )
    _use(repo, opened[0])
    repo.key_slot = opened[1]


def unlock_with(
    repo: Repository, found: list[KeySlot], passphrase: str
) -> tuple[MasterKeys, str] | None:
    """The master keys and the slot ``passphrase`` opens, else None."""
    rid = _repo_id(repo)
    for slot in found:
        keys = _env.unwrap(slot, passphrase, rid)
        if keys is not None:
            return keys, slot.slot
    return None


def _use(repo: Repository, keys: MasterKeys) -> None:
    check = repo.marker.get("encryption", {}).get("key_check")
    if check != keys.check_value():
        raise RepositoryError(
            f"repository {repo.location}: this key is not the repository's key",
            hint="use the paper key printed for this repository",
        )
    repo.envelope = SealedEnvelope(keys)


def _unlocked_keys(repo: Repository) -> MasterKeys:
    _require_encrypted(repo)
    if not isinstance(repo.envelope, SealedEnvelope):
        raise LOCKED._refuse()
    return repo.envelope.keys


def add_slot(repo: Repository, passphrase: str) -> str:
    """A new key slot for ``passphrase`` in an unlocked repository; its id."""
    keys = _unlocked_keys(repo)
    slot = _env.new_slot_id()
    raw = _env.wrap(keys, check_new_passphrase(passphrase), _repo_id(repo), slot, _now())
    repo.store.write(_env.slot_rel(slot), raw, durable=True)
    repo.write_index(slot=slot)
    return slot


def remove_slot(repo: Repository, slot: str) -> None:
    """Delete one key slot; the last one is refused (only the paper key would
    be left)."""
    ids = [s.slot for s in slots(repo)]
    _unlocked_keys(repo)  # only someone who can open the repository removes keys
    if slot not in ids:
        raise RepositoryError(
            f"repository {repo.location} has no key slot {slot!r}",
            hint="'liferaft key list' shows the slots",
        )
    if len(ids) == 1:
        raise RepositoryError(
            f"key slot {slot} is the repository's last one; nothing was removed",
            hint="add another passphrase first ('liferaft key add')",
        )
    repo.store.delete(_env.slot_rel(slot))
    repo.write_index()


def paper_key(repo: Repository) -> str:
    """The master keys as text to print and keep apart from the repository."""
    return _env.paper_key(_unlocked_keys(repo), _repo_id(repo))


def import_paper_key(repo: Repository, text: str, passphrase: str) -> str:
    """Restore access from a paper key: a new key slot for ``passphrase``.
    The key is checked against the repository before anything is written."""
    _require_encrypted(repo)
    keys = _env.read_paper_key(text)
    _use(repo, keys)
    return add_slot(repo, passphrase)
