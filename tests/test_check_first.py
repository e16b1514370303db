"""A restore checks every chunk it needs before its first write (issue 15):
a tampered or damaged chunk stops it in one line with the target's old
contents whole (the whole loop disk is checksummed before and after).

Real loop disks and a real nginx on loopback. An encrypted repository's
tampered chunk is tested with the other encrypted-repository tests
(tests/stores/test_encrypted.py, ``test_tampered_chunk``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from rescue_app.engine import Engine
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.manifest import Manifest
from rescue_app.engine.repository import chunk_rel
from rescue_app.engine.spool import ChunkSpool, in_memory
from tests.conftest import _disk_backed_tmp
from tests.enginekit import (
    Layout,
    Source,
    assert_one_line_error,
    build_source,
    check_restored,
    liferaft,
)
from tests.helpers.diskkit import MIB, PartSpec, disk_bytes_sha256, loop_disk
from tests.stores.serverkit import Nginx

LAYOUT = Layout(
    "gpt", [PartSpec(32, "ext4", "boot"), PartSpec(None, "ext4", "root")], ["ext4", "ext4"]
)
# What the targets held before: another table and filesystem, so a restore
# onto them has nothing to seed from.
OLD = Layout("msdos", [PartSpec(None, "ext4", "old")], ["ext4"])
DISK = 96 * MIB
SHM = "/dev/shm"  # tmpfs, as the rescue system's /tmp


@dataclass
class Image:
    source: Source
    repo: str  # a local repository holding image "src"
    manifest: Manifest


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    with (
        tempfile.TemporaryDirectory(prefix="liferaft-check-", dir=_disk_backed_tmp()) as d,
        ExitStack() as stack,
    ):
        source = build_source(stack.enter_context(loop_disk(DISK, d)), LAYOUT, seed=7)
        repo = os.path.join(d, "repo")
        liferaft("capture", "--repo", repo, "--name", "src", source.dev)
        engine = Engine()
        yield Image(source, repo, engine.load_manifest(engine.open_repository(repo), "src"))


def _copy(image: Image, workdir: str) -> str:
    repo = os.path.join(workdir, "repo")
    shutil.copytree(image.repo, repo)
    return repo


def _flip(path: str) -> None:
    """One byte in the middle of a stored chunk, changed."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def _old_disk(loopdisk, seed: int = 3) -> str:
    return build_source(loopdisk(DISK), OLD, seed=seed).dev


def _whole(dev: str) -> str:
    return disk_bytes_sha256(dev, 0, DISK)


def _restore(repo: str, target: str, *extra: str):
    return liferaft("restore", "--repo", repo, "--image", "src", "--to", target, "--yes", *extra,
                    check=False)  # fmt: skip


def _largest_chunk(image: Image) -> str:
    """The id of the image's largest stored chunk (random file data)."""
    digests = {d for d, _, _ in image.manifest.chunk_refs()}
    return max(digests, key=lambda d: os.path.getsize(os.path.join(image.repo, chunk_rel(d))))


@pytest.mark.root
def test_tampered_chunk_leaves_the_target_as_it_was(image, loopdisk, workdir):
    repo = _copy(image, workdir)
    victim = _largest_chunk(image)
    _flip(os.path.join(repo, chunk_rel(victim)))
    target = _old_disk(loopdisk)
    before = _whole(target)
    proc = _restore(repo, target)
    line = assert_one_line_error(
        proc, f"chunk {victim[:12]}", "src@", "damaged", f"nothing was written to {target}"
    )
    assert "partly written" not in line
    assert _whole(target) == before
    # what a restore did before it checked first (and still does when told
    # so): the disk is partly written when the bad chunk is met
    proc = _restore(repo, target, "--no-check-first")
    assert_one_line_error(proc, f"chunk {victim[:12]}", "only partly written")
    assert _whole(target) != before


@pytest.mark.root
def test_good_image_restores_identically_and_the_plan_says_so(image, loopdisk):
    target = _old_disk(loopdisk)
    proc = _restore(image.repo, target)
    assert proc.returncode == 0, proc.stderr
    refs = image.manifest.chunk_refs()
    n = len({d for d, where, _ in refs if not where.endswith("GPT backup")})
    assert f"Checking every chunk before writing: {n} chunks" in proc.stdout, proc.stdout
    check_restored(image.source, reread_partitions(target, 2))


@pytest.mark.root
def test_seeded_restore_checks_only_what_differs(image, loopdisk, workdir):
    """On a disk that holds the image, a tampered chunk the target holds is
    never fetched; one the target lacks stops the restore before it writes."""
    repo = _copy(image, workdir)
    target = loopdisk(DISK)
    assert _restore(image.repo, target).returncode == 0
    reread_partitions(target, 2)
    held = _largest_chunk(image)
    _flip(os.path.join(repo, chunk_rel(held)))
    proc = _restore(repo, target)
    assert proc.returncode == 0, proc.stderr
    assert "Checking every chunk before writing: at most" in proc.stdout
    check_restored(image.source, reread_partitions(target, 2))
    # now the target lacks a chunk: the same place in the root partition
    # overwritten, and that chunk tampered with in the repository
    root = image.manifest.disks[0].partitions[1]
    where = f"disk 1 {root.label}"
    digest, _where, offset = next(r for r in image.manifest.chunk_refs() if r[1] == where)
    assert digest != held
    _flip(os.path.join(repo, chunk_rel(digest)))
    node = reread_partitions(target, 2)[1]
    with open(node, "r+b") as f:
        f.seek(offset + 4096)
        f.write(os.urandom(4096))
    before = _whole(target)
    proc = _restore(repo, target)
    assert_one_line_error(proc, f"chunk {digest[:12]}", "nothing was written")
    assert _whole(target) == before


@pytest.mark.root
def test_over_http_each_chunk_is_fetched_once(image, loopdisk, workdir):
    """The check keeps what it fetched in a local spool: the writes take it
    from there, not from the server again."""
    with Nginx(image.repo, os.path.join(workdir, "nginx"), methods=True) as nginx:
        target = _old_disk(loopdisk)
        proc = _restore(f"http://127.0.0.1:{nginx.port}/", target)
        assert proc.returncode == 0, proc.stderr
        gets = [ln.split()[1] for ln in nginx.log_lines() if ln.startswith("GET /chunks/")]
    check_restored(image.source, reread_partitions(target, 2))
    assert gets and len(gets) == len(set(gets)), sorted(gets)


def test_spool_keeps_up_to_its_budget(tmp_path):
    spool = ChunkSpool(10, str(tmp_path))
    try:
        assert spool.keep("a", b"123456")
        assert not spool.keep("b", b"123456")  # over the budget: dropped
        assert spool.keep("a", b"123456")  # already kept
        assert spool.take("a") == b"123456" and spool.take("b") is None
        assert (spool.kept, spool.dropped, spool.size) == (1, 1, 6)
        assert os.listdir(tmp_path) == []  # unlinked from the start
    finally:
        spool.close()


def test_spool_keeps_checked_bytes_in_its_share(workdir):
    """In memory (tmpfs): checked bytes while they fit in PLAIN_SHARE of the
    budget, then the stored form; each comes back only as what it was kept
    as. On a disk: only the stored form."""
    assert in_memory(SHM) and not in_memory(workdir)
    on_disk = ChunkSpool(20, workdir)
    try:
        assert on_disk.keep("a", b"st", b"checked!!!")
        assert on_disk.take("a") == b"st" and on_disk.take_checked("a") is None
    finally:
        on_disk.close()
    spool = ChunkSpool(20, SHM)
    try:
        assert spool.keep("a", b"st", b"checked!!!")  # 10 bytes: the plain share
        assert spool.keep("b", b"stored", b"checked-b")  # no room as checked: stored
        assert spool.take_checked("a") == b"checked!!!" and spool.take("a") is None
        assert spool.take("b") == b"stored" and spool.take_checked("b") is None
        assert (spool.kept, spool.checked, spool.size) == (2, 1, 16)
    finally:
        spool.close()


@pytest.mark.root
def test_checked_chunks_are_not_decompressed_and_hashed_again(image, workdir):
    """What the check kept of a plain repository, the writes take as it is:
    get_chunk hashes none of it again (before, each chunk was decompressed
    and hashed a second time: the check cost a restore over HTTP 1.77 x).
    A chunk kept stored (no room) is still checked when taken."""
    engine = Engine()
    repo = engine.open_repository(image.repo)
    digests = sorted({d for d, _, _ in image.manifest.chunk_refs()})
    hashed: list[int] = []
    chunk_id = repo.envelope.chunk_id

    def counted(data: bytes | bytearray | memoryview) -> str:
        hashed.append(len(data))
        return chunk_id(data)

    spool = ChunkSpool(1 << 40, SHM)
    try:
        wanted = {d: repo.get_chunk(d) for d in digests}
        for d in digests:
            repo.check_chunk(d, keep=spool)
        assert spool.checked == len(digests)
        repo.spool = spool
        repo.envelope.chunk_id = counted  # type: ignore[method-assign]
        assert {d: repo.get_chunk(d) for d in digests} == wanted
        assert hashed == []
    finally:
        spool.close()
    small = ChunkSpool(1, workdir)  # nothing fits: fetched and checked again
    try:
        repo.check_chunk(digests[0], keep=small)
        hashed.clear()
        repo.spool = small
        assert repo.get_chunk(digests[0]) == wanted[digests[0]] and len(hashed) == 1
    finally:
        small.close()
