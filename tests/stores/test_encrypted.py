"""Encrypted repositories (issue 15) on every store: a local folder, SFTP
(OpenSSH on loopback), S3 (moto_server) and HTTP (nginx, read-only).

What the store holds must tell it nothing: no 64-byte run of a random file
of the captured filesystem, no object named by the SHA-256 of its chunk, no
image name. Tampering is detected and named; a wrong or missing passphrase,
missing key slots and paper-key recovery each end in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import boto3
import pytest

from rescue_app.engine import CredentialChain, Engine
from rescue_app.engine.kernel import reread_partitions
from tests.enginekit import assert_one_line_error, check_restored, files_below, liferaft
from tests.helpers.diskkit import _tree_spec
from tests.stores import test_s3 as s3_tests
from tests.stores.conftest import DISK_BYTES, Captured
from tests.stores.serverkit import Nginx, sshd

pytestmark = pytest.mark.root
moto_s3 = s3_tests.s3  # its moto_server fixture (the endpoint URL), under this name

PASSPHRASE = "enc-Passphrase-7f3c"
NAME = "vault"  # an image name that must appear nowhere in the store


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", PASSPHRASE)
    return PASSPHRASE


def _known_windows() -> list[bytes]:
    """64-byte runs of a random file on the captured disk's second partition
    (tests/stores/conftest.py: seed 12, 12 MiB), spread over the whole file."""
    body = _tree_spec(12, 12, 12)["data/big-random.bin"]
    step = len(body) // 300
    return [body[i : i + 64] for i in range(0, len(body) - 64, step)]


def _s3_objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="backups", Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    return {
        k.removeprefix(prefix): s3.get_object(Bucket="backups", Key=k)["Body"].read() for k in keys
    }


def _assert_sealed(objects: dict[str, bytes], url: str) -> None:
    """The store's bytes and names give away no content, no chunk hash, no name."""
    blob = b"".join(objects.values())
    assert len(blob) > 15_000_000  # the random file is in there, somehow
    leaked = [w for w in _known_windows() if w in blob]
    assert not leaked, f"{len(leaked)} runs of a captured file are stored in plaintext"
    assert not any(NAME in rel for rel in objects), sorted(objects)
    assert NAME.encode() not in blob
    names = {os.path.basename(rel) for rel in objects}
    repo = Engine().open_repository(url)
    assert repo.encrypted
    manifest = repo.load_manifest(NAME)
    chunk_ids = {d for d, _, _ in manifest.chunk_refs()}
    assert chunk_ids <= names  # the chunks are there, under their keyed ids
    for d in list(chunk_ids)[:40]:
        assert hashlib.sha256(repo.get_chunk(d)).hexdigest() not in names


def _capture_verify_restore(captured: Captured, url: str, loopdisk) -> None:
    out = liferaft("init", "--repo", url, "--encrypt").stdout
    assert "created the encrypted repository" in out
    liferaft("capture", "--repo", url, "--name", NAME, captured.source.dev)
    assert f"{NAME}@" in liferaft("images", "--repo", url).stdout
    assert ": OK" in liferaft("verify", "--repo", url).stdout
    target = loopdisk(DISK_BYTES)
    liferaft("restore", "--repo", url, "--image", NAME, "--to", target, "--yes")
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


def test_the_check_finds_plaintext_in_a_plain_repository(captured: Captured) -> None:
    """What _assert_sealed looks for is there in an unencrypted repository:
    the file's runs and chunks named by their SHA-256."""
    blob = b"".join(files_below(captured.repo).values())
    assert sum(w in blob for w in _known_windows()) > 250
    chunk = next(
        rel for rel in files_below(captured.repo) if rel.startswith("chunks/") and "." not in rel
    )
    repo = Engine().open_repository(captured.repo)
    digest = os.path.basename(chunk)
    assert hashlib.sha256(repo.get_chunk(digest)).hexdigest() == digest


def test_local_folder(captured, loopdisk, workdir, passphrase):
    repo = os.path.join(workdir, "enc")
    _capture_verify_restore(captured, repo, loopdisk)
    objects = files_below(repo)
    _assert_sealed(objects, repo)
    assert PASSPHRASE.encode() not in b"".join(objects.values())
    # dedup within the repository: a second capture stores no new chunk
    out = liferaft("capture", "--repo", repo, "--name", NAME, captured.source.dev).stdout
    assert "0 B newly stored" in out or " 0 of " in out, out


def test_sftp(captured, loopdisk, workdir, passphrase, monkeypatch):
    with sshd(os.path.join(workdir, "sshd")) as server:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
        remote = os.path.join(workdir, "remote", "repo")
        url = f"sftp://root@127.0.0.1:{server.port}{remote}"
        _capture_verify_restore(captured, url, loopdisk)
        _assert_sealed(files_below(remote), url)


def test_s3_bucket(captured, loopdisk, moto_s3, passphrase):
    url = f"s3://backups/site/enc?endpoint={moto_s3}"
    _capture_verify_restore(captured, url, loopdisk)
    _assert_sealed(_s3_objects(moto_s3, "site/enc/"), url)


@pytest.fixture(scope="module")
def encrypted(captured: Captured, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local encrypted repository holding image NAME, for the read-side tests
    (each copies it before changing it)."""
    repo = str(tmp_path_factory.mktemp("enc") / "repo")
    env = {"LIFERAFT_PASSPHRASE": PASSPHRASE}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        liferaft("init", "--repo", repo, "--encrypt")
        liferaft("capture", "--repo", repo, "--name", NAME, captured.source.dev)
    finally:
        mp.undo()
    yield repo
    shutil.rmtree(repo, ignore_errors=True)


def test_http_read(captured, encrypted, loopdisk, workdir, passphrase):
    """A plain web server (no listing) serves an encrypted repository: the
    index names only opaque paths and the key slots."""
    with Nginx(encrypted, os.path.join(workdir, "nginx")) as nginx:
        url = f"http://127.0.0.1:{nginx.port}/"
        assert f"{NAME}@" in liferaft("images", "--repo", url).stdout
        assert ": OK" in liferaft("verify", "--repo", url, NAME).stdout
        target = loopdisk(DISK_BYTES)
        liferaft("restore", "--repo", url, "--image", NAME, "--to", target, "--yes")
        check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))
    with open(os.path.join(encrypted, "index.json")) as f:
        assert NAME not in f.read()


def _copy(encrypted: str, workdir: str) -> str:
    repo = os.path.join(workdir, "copy")
    shutil.copytree(encrypted, repo)
    return repo


def _flip(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x01]))


def _device_digest(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_tampered_chunk(encrypted, loopdisk, workdir, passphrase):
    repo = _copy(encrypted, workdir)
    chunks = sorted(
        os.path.join(folder, n)
        for folder, _d, names in os.walk(os.path.join(repo, "chunks"))
        for n in names
    )
    victim = max(chunks, key=os.path.getsize)
    _flip(victim, os.path.getsize(victim) // 2)
    proc = liferaft("verify", "--repo", repo, check=False)
    assert proc.returncode == 1
    problems = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(problems) == 1, proc.stderr
    assert os.path.basename(victim)[:12] in problems[0]
    assert "tampered with" in problems[0]
    # restore: checked before the first write, so the target keeps what it
    # held (a disk with a filesystem, checksummed whole before and after)
    target = loopdisk(DISK_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-L", "old", target], check=True)
    before = _device_digest(target)
    proc = liferaft(
        "restore", "--repo", repo, "--image", NAME, "--to", target, "--yes", check=False
    )
    assert_one_line_error(
        proc, os.path.basename(victim)[:12], f"{NAME}@", "tampered with", "nothing was written"
    )
    assert _device_digest(target) == before


def test_tampered_manifest(encrypted, loopdisk, workdir, passphrase):
    repo = _copy(encrypted, workdir)
    (manifest,) = os.listdir(os.path.join(repo, "images"))
    path = os.path.join(repo, "images", manifest)
    _flip(path, os.path.getsize(path) - 5)
    proc = liferaft("verify", "--repo", repo, check=False)
    assert proc.returncode == 1
    assert f"manifest images/{manifest} was tampered with" in proc.stderr
    target = loopdisk(DISK_BYTES)
    before = _device_digest(target)
    proc = liferaft(
        "restore", "--repo", repo, "--image", NAME, "--to", target, "--yes", check=False
    )
    assert_one_line_error(proc, f"manifest images/{manifest} was tampered with")
    assert _device_digest(target) == before  # nothing written


def test_passphrase_slots_and_paper_key(encrypted, loopdisk, workdir, captured, monkeypatch):
    repo = _copy(encrypted, workdir)
    before = files_below(repo)
    # none given (stdin is no terminal): one line saying where to put it
    monkeypatch.delenv("LIFERAFT_PASSPHRASE", raising=False)
    creds = os.path.join(workdir, "credentials.yaml")
    with open(creds, "w") as f:
        f.write("credentials: []\n")
    os.chmod(creds, 0o600)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", creds)
    proc = liferaft("images", "--repo", repo, check=False)
    assert_one_line_error(proc, "no passphrase", "LIFERAFT_PASSPHRASE")
    # wrong: one line, and a capture writes nothing
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", "not-the-passphrase")
    proc = liferaft("images", "--repo", repo, check=False)
    line = assert_one_line_error(proc, "passphrase opens none of its 1 key slot")
    assert "not-the-passphrase" not in proc.stderr + proc.stdout
    assert "not-the" not in line
    proc = liferaft("capture", "--repo", repo, "--name", "x", captured.source.dev, check=False)
    assert_one_line_error(proc, "passphrase opens none")
    assert files_below(repo) == before

    # from the credentials file: passphrase_file, for this repository's folder
    secret = os.path.join(workdir, "phrase")
    with open(secret, "w") as f:
        f.write(PASSPHRASE + "\n")
    with open(creds, "w") as f:
        f.write(f"credentials:\n  - match: {repo}\n    passphrase_file: {secret}\n")
    os.chmod(secret, 0o600)
    os.chmod(creds, 0o600)
    monkeypatch.delenv("LIFERAFT_PASSPHRASE")
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", creds)
    assert f"{NAME}@" in liferaft("images", "--repo", repo).stdout

    # a second passphrase; both open it; the first removed
    monkeypatch.setenv("LIFERAFT_NEW_PASSPHRASE", "second-Passphrase")
    added = liferaft("key", "add", "--repo", repo).stdout.split()[-1]
    slots = liferaft("key", "list", "--repo", repo).stdout.split()[::3]
    assert len(slots) == 2 and added in slots
    (first,) = set(slots) - {added}
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", "second-Passphrase")
    assert f"{NAME}@" in liferaft("images", "--repo", repo).stdout
    paper = liferaft("key", "export", "--paper", "--repo", repo).stdout
    assert "check:" in paper
    for slot in slots:
        with open(os.path.join(repo, "keys", f"{slot}.json")) as f:
            assert "second-Passphrase" not in f.read()
    liferaft("key", "remove", "--repo", repo, first)
    proc = liferaft("key", "remove", "--repo", repo, added, check=False)
    assert_one_line_error(proc, "last one")
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", PASSPHRASE)
    assert_one_line_error(liferaft("images", "--repo", repo, check=False), "opens none")

    # every key slot lost: one line pointing at the paper key
    shutil.rmtree(os.path.join(repo, "keys"))
    proc = liferaft("images", "--repo", repo, check=False)
    assert_one_line_error(proc, "holds no key slot", "key import")
    # a typo in the paper key: refused by its checksum, nothing written
    typo = paper.replace(paper.splitlines()[1][:4], "AAAA", 1)
    paper_file = os.path.join(workdir, "paper.txt")
    with open(paper_file, "w") as f:
        f.write(typo)
    monkeypatch.setenv("LIFERAFT_PASSPHRASE", "recovered-Passphrase")
    proc = liferaft("key", "import", "--repo", repo, paper_file, check=False)
    assert_one_line_error(proc, "checksum")
    assert not os.path.exists(os.path.join(repo, "keys"))
    with open(paper_file, "w") as f:
        f.write(paper)
    assert "new key slot" in liferaft("key", "import", "--repo", repo, paper_file).stdout
    target = loopdisk(DISK_BYTES)
    liferaft("restore", "--repo", repo, "--image", NAME, "--to", target, "--yes")
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


def test_engine_in_process_uses_the_chain_only(encrypted):
    """Two Engines: one whose chain knows the passphrase, one that does not."""
    knows = CredentialChain.standard(environ={"LIFERAFT_PASSPHRASE": PASSPHRASE})
    assert Engine(credentials=knows).open_repository(encrypted).encrypted
    blind = CredentialChain.standard(environ={})
    with pytest.raises(Exception, match="no passphrase"):
        Engine(credentials=blind).open_repository(encrypted)


def test_marker_swapped_to_plain(encrypted, captured, loopdisk, workdir, monkeypatch):
    """Someone who can write the store replaces the marker with a plain one,
    so that a client would write plaintext into the repository or take
    manifests planted in the clear: capture and restore refuse in one line,
    and nothing is written to the repository or the target."""
    repo = _copy(encrypted, workdir)
    marker = os.path.join(repo, "liferaft-repository.json")
    doc = json.loads(open(marker).read())
    plain = {k: v for k, v in doc.items() if k not in ("encryption", "id")}
    with open(marker, "w") as f:
        json.dump({**plain, "version": 1, "chunk_hash": "sha256"}, f)
    before = files_below(repo)
    target = loopdisk(DISK_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-L", "old", target], check=True)
    disk_before = _device_digest(target)
    for phrase in (PASSPHRASE, None):  # given or not: the key slots give it away
        if phrase:
            monkeypatch.setenv("LIFERAFT_PASSPHRASE", phrase)
        else:
            monkeypatch.delenv("LIFERAFT_PASSPHRASE", raising=False)
        proc = liferaft("capture", "--repo", repo, "--name", "x", captured.source.dev, check=False)
        assert_one_line_error(proc, "says it is not encrypted", "key slot", "nothing was")
        proc = liferaft(
            "restore", "--repo", repo, "--image", NAME, "--to", target, "--yes", check=False
        )
        assert_one_line_error(proc, "says it is not encrypted", "altered")
    assert files_below(repo) == before
    assert _device_digest(target) == disk_before
