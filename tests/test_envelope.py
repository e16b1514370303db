"""Encrypted repositories without disks: sealing, key slots, the paper key,
and where the passphrase comes from (no root, a local folder)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from rescue_app.engine import CredentialChain, Engine
from rescue_app.engine import envelope as env
from rescue_app.engine.credentials import parse
from rescue_app.engine.keychain import (
    CallbackPrompt,
    CredentialsFile,
    SecretKind,
    SecretRequest,
)
from rescue_app.errors import ChunkError, RepositoryError
from tests.enginekit import REPO_ROOT

PASSPHRASE = "unit-Passphrase-1"


def _sealed() -> env.SealedEnvelope:
    return env.SealedEnvelope(env.MasterKeys.generate())


def test_seal_binds_kind_and_name_and_nonces_differ() -> None:
    e = _sealed()
    a = e.seal("chunk", "chunks/ab/ab1", b"data" * 100)
    b = e.seal("chunk", "chunks/ab/ab1", b"data" * 100)
    assert a != b and a[:12] != b[:12]  # a fresh nonce each time
    assert e.open("chunk", "chunks/ab/ab1", a) == b"data" * 100
    with pytest.raises(env.SealError):
        e.open("chunk", "chunks/ab/ab2", a)  # moved to another name
    with pytest.raises(env.SealError):
        e.open("manifest", "chunks/ab/ab1", a)  # presented as another kind
    with pytest.raises(env.SealError):
        _sealed().open("chunk", "chunks/ab/ab1", a)  # another repository's key
    flipped = bytearray(a)
    flipped[20] ^= 1
    with pytest.raises(env.SealError):
        e.open("chunk", "chunks/ab/ab1", bytes(flipped))


def test_chunk_ids_are_keyed_and_stable() -> None:
    e = _sealed()
    data = os.urandom(5000)
    assert e.chunk_id(data) == e.chunk_id(data)  # dedup within the repository
    assert e.chunk_id(data) != hashlib.sha256(data).hexdigest()
    assert e.chunk_id(data) != _sealed().chunk_id(data)
    assert env.PLAIN.chunk_id(data) == hashlib.sha256(data).hexdigest()
    assert "web1" not in e.manifest_rel("web1", "20261125T101500Z")


def test_key_slot_and_paper_key() -> None:
    keys = env.MasterKeys.generate()
    raw = env.wrap(keys, PASSPHRASE, "rid", "0123456789abcdef", "now")
    assert PASSPHRASE.encode() not in raw and keys.encryption not in raw
    slot = env.parse_slot(raw, "keys/0123456789abcdef.json")
    assert env.unwrap(slot, PASSPHRASE, "rid") == keys
    assert env.unwrap(slot, "wrong", "rid") is None
    assert env.unwrap(slot, PASSPHRASE, "other-repository") is None
    paper = env.paper_key(keys, "rid")
    assert env.read_paper_key(paper.lower().replace("-", " ")) == keys
    with pytest.raises(RepositoryError, match="checksum"):
        env.read_paper_key(paper.replace(paper.splitlines()[2][:4], "ZZZZ", 1))
    with pytest.raises(RepositoryError, match="check:"):
        env.read_paper_key("\n".join(paper.splitlines()[:-1]))


def test_repository_in_a_folder(tmp_path: Path) -> None:
    """Chunks round-trip under keyed ids; a flipped byte is one ChunkError;
    the repository's objects never hold the plain content."""
    folder = str(tmp_path / "repo")
    knows = Engine(
        credentials=CredentialChain.standard(environ={"LIFERAFT_PASSPHRASE": PASSPHRASE})
    )
    repo = knows.init_repository(folder, passphrase=PASSPHRASE)
    data = os.urandom(300_000)
    put = repo.put_chunk(data)
    assert put.digest == repo.chunk_id(data) and put.stored_bytes > 0
    assert repo.put_chunk(data).stored_bytes == 0  # deduplicated
    again = knows.open_repository(folder)
    assert again.encrypted and again.get_chunk(put.digest) == data
    path = os.path.join(folder, "chunks", put.digest[:2], put.digest)
    with open(path, "rb") as f:
        blob = f.read()
    assert data[1000:1064] not in blob
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(bytes([blob[100] ^ 1]))
    with pytest.raises(ChunkError, match="tampered with"):
        again.get_chunk(put.digest, "image x, partition 1")
    with pytest.raises(RepositoryError, match="already a liferaft repository"):
        knows.init_repository(folder, passphrase=PASSPHRASE)
    with pytest.raises(RepositoryError, match="shorter than"):
        knows.init_repository(str(tmp_path / "r2"), passphrase="short")
    assert not os.path.exists(tmp_path / "r2")
    # locked (key management): nothing can be named or sealed
    locked = knows.open_repository(folder, unlock=False)
    with pytest.raises(RepositoryError, match="locked"):
        locked.put_chunk(b"x")


def test_passphrase_sources(tmp_path: Path) -> None:
    secret = tmp_path / "phrase"
    secret.write_text("from-the-file\n")
    os.chmod(secret, 0o600)
    loaded = parse(
        {"credentials": [{"match": "sftp://nas/backups", "passphrase_file": str(secret)}]},
        str(tmp_path / "c.yaml"),
    )
    request = SecretRequest(SecretKind.PASSPHRASE, url="sftp://nas/backups/site")
    chain = CredentialChain.standard(file=CredentialsFile.of(loaded), environ={})
    answer = chain.lookup(request)
    assert answer is not None and answer.passphrase == "from-the-file"
    assert "from-the-file" not in repr(answer)
    env_first = CredentialChain.standard(
        file=CredentialsFile.of(loaded), environ={"LIFERAFT_PASSPHRASE": "from-env"}
    )
    assert (a := env_first.lookup(request)) is not None and a.passphrase == "from-env"
    # the UI's dialog is asked with "repository URL"; a login's password is not a passphrase
    asked: list[str] = []

    def ask(who: str) -> str:
        asked.append(who)
        return "typed"

    prompt = CallbackPrompt(ask)
    ui = CredentialChain.standard(environ={"LIFERAFT_PASSWORD": "pw"}, prompt=prompt)
    got = ui.lookup(SecretRequest(SecretKind.PASSPHRASE, url="/mnt/usb/repo"))
    assert got is not None and got.passphrase == "typed"
    assert asked == ["repository /mnt/usb/repo"]


def _at_terminal(*args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k != "LIFERAFT_PASSPHRASE"}
    return pexpect.spawn(
        sys.executable,
        ["-m", "rescue_app.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        encoding="utf-8",
        timeout=60,
    )


def test_passphrases_typed_at_the_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """init asks twice (a mismatch writes nothing); opening asks once; nothing echoes."""
    creds = tmp_path / "credentials.yaml"
    creds.write_text("credentials: []\n")
    os.chmod(creds, 0o600)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", str(creds))
    repo = str(tmp_path / "repo")
    child = _at_terminal("init", "--repo", repo, "--encrypt")
    child.expect("new passphrase for")
    child.sendline(PASSPHRASE)
    child.expect("the same passphrase again")
    child.sendline(PASSPHRASE + "x")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0 and "differ" in (child.before or "")
    assert not os.path.exists(repo)
    child = _at_terminal("init", "--repo", repo, "--encrypt")
    child.expect("new passphrase for")
    child.sendline(PASSPHRASE)
    child.expect("the same passphrase again")
    child.sendline(PASSPHRASE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "created the encrypted repository" in (child.before or "")
    child = _at_terminal("images", "--repo", repo)
    child.expect(f"passphrase for repository {repo}: ")
    child.sendline(PASSPHRASE)
    child.expect(pexpect.EOF)
    child.close()
    out = child.before or ""
    assert child.exitstatus == 0 and "no images" in out and PASSPHRASE not in out


def test_forget_prune_verify_in_an_encrypted_folder(tmp_path: Path) -> None:
    """Retention works on opaque names: forget removes the older image's
    sealed manifest, prune frees only its chunks, verify finds the rest whole;
    a manifest that fails to open stops prune."""
    from datetime import timedelta

    from rescue_app.engine import KeepPolicy
    from tests.stores.test_retention import WHEN, _chunk, make_image

    engine = Engine(
        credentials=CredentialChain.standard(environ={"LIFERAFT_PASSPHRASE": PASSPHRASE})
    )
    folder = str(tmp_path / "repo")
    repo = engine.init_repository(folder, passphrase=PASSPHRASE)
    make_image(repo, "web", WHEN[1], [1, 2, 3])
    make_image(repo, "web", WHEN[0], [3, 4])
    assert len(os.listdir(os.path.join(folder, "images"))) == 2
    plan = engine.forget(repo, KeepPolicy(last=1))
    assert len(plan.removed) == 1
    (kept,) = os.listdir(os.path.join(folder, "images"))
    assert "web" not in kept
    engine.prune(repo, grace=timedelta(0))  # mark
    freed = engine.prune(repo, grace=timedelta(0))  # sweep
    assert freed.freed_chunks == 2
    gone = {repo.chunk_id(_chunk(s)) for s in (1, 2)}
    left = {n for _f, _d, names in os.walk(os.path.join(folder, "chunks")) for n in names}
    assert not gone & left and {repo.chunk_id(_chunk(s)) for s in (3, 4)} <= left
    assert engine.verify(repo).ok
    path = os.path.join(folder, "images", kept)
    with open(path, "r+b") as f:
        f.seek(30)
        byte = f.read(1)
        f.seek(30)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(RepositoryError, match="tampered with"):
        engine.prune(engine.open_repository(folder), grace=timedelta(0))
    report = engine.verify(engine.open_repository(folder))
    assert not report.ok and "tampered with" in report.problems[0]


def _plain_marker(folder: str) -> None:
    """The marker an attacker with write access would put in place: version 1,
    no ``encryption``."""
    doc = {
        "format": "liferaft-repository",
        "version": 1,
        "chunk_size": 4194304,
        "chunk_hash": "sha256",
        "compression": "zstd",
        "created": "2026-12-04T09:00:00Z",
    }
    Path(folder, "liferaft-repository.json").write_text(json.dumps(doc))


def test_marker_downgraded_to_plain_is_refused(tmp_path: Path) -> None:
    """An encrypted repository whose marker was swapped for a plain one: its
    key slots give it away, and so does a passphrase given for it; without
    either it cannot be told from a plain repository (docs/FORMAT.md)."""
    folder = str(tmp_path / "repo")
    chain = CredentialChain.standard(environ={"LIFERAFT_PASSPHRASE": PASSPHRASE})
    Engine(credentials=chain).init_repository(folder, passphrase=PASSPHRASE)
    _plain_marker(folder)
    blind = Engine(credentials=CredentialChain.standard(environ={}))
    for engine, why in ((Engine(credentials=chain), "key slot"), (blind, "key slot")):
        for create in (False, True):
            with pytest.raises(RepositoryError, match=f"says it is not encrypted.*{why}"):
                engine.open_repository(folder, create=create)
    # keys/ gone too: a passphrase given for it still refuses it ...
    for slot in os.listdir(os.path.join(folder, "keys")):
        os.unlink(os.path.join(folder, "keys", slot))
    with pytest.raises(RepositoryError, match=r"a passphrase is given for it \(LIFERAFT_PASS"):
        Engine(credentials=chain).open_repository(folder)
    # ... but nothing else can tell it from a plain repository
    assert not blind.open_repository(folder).encrypted
    # a plain repository with no passphrase given opens as before
    plain = str(tmp_path / "plain")
    blind.open_repository(plain, create=True).create_now()
    assert not blind.open_repository(plain).encrypted


def test_changing_the_passphrase_is_add_then_remove(tmp_path: Path) -> None:
    """`key add` names the slot the passphrase in use opens; removing it
    leaves only the new passphrase (there is no master-key re-keying)."""
    folder = str(tmp_path / "repo")
    env_vars = {**os.environ, "LIFERAFT_PASSPHRASE": PASSPHRASE}
    Engine(credentials=CredentialChain.standard(environ=env_vars)).init_repository(
        folder, passphrase=PASSPHRASE
    )
    (old,) = os.listdir(os.path.join(folder, "keys"))
    new_env = {**env_vars, "LIFERAFT_NEW_PASSPHRASE": "new-Passphrase-2"}
    argv = [sys.executable, "-m", "rescue_app.cli", "key"]
    run = functools.partial(
        subprocess.run, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    added = run([*argv, "add", "--repo", folder], env=new_env)
    old_slot = old.removesuffix(".json")
    assert f"liferaft key remove --repo {folder} {old_slot}" in added.stderr
    new_slot = added.stdout.split()[-1]
    run([*argv, "remove", "--repo", folder, old_slot], env=new_env)
    assert os.listdir(os.path.join(folder, "keys")) == [f"{new_slot}.json"]
    with pytest.raises(RepositoryError, match="opens none"):
        Engine(credentials=CredentialChain.standard(environ=env_vars)).open_repository(folder)
    again = {"LIFERAFT_PASSPHRASE": "new-Passphrase-2"}
    assert Engine(credentials=CredentialChain.standard(environ=again)).open_repository(folder)
