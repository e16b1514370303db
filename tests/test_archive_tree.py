"""The index of a file-level partition's archive (engine/archivetree.py), as a
browse mount reads it: every entry's metadata and bytes equal the tree that
was archived, the data chunks of large files are counted and not fetched,
and an archive of another layout (chunks cut anywhere) is read exactly."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from rescue_app.engine.archivetree import ArchiveTree, index_archive
from rescue_app.engine.filelevel import BLOCK, _Stream, _Walk, _walk
from rescue_app.engine.repository import CHUNK_SIZE
from rescue_app.errors import ChunkError


def _tree(tmp_path: Path) -> Path:
    """A tree with every kind of member the online backup stores."""
    root = tmp_path / "root"
    (root / "etc/sub").mkdir(parents=True)
    (root / "etc/small").write_bytes(b"small\n" * 100)
    (root / "etc/sub/empty").write_bytes(b"")
    (root / "big").write_bytes(os.urandom(2 * CHUNK_SIZE + 12345))
    (root / "exact").write_bytes(os.urandom(CHUNK_SIZE))
    (root / "mid").write_bytes(os.urandom(300_000))
    os.link(root / "big", root / "etc/big-link")
    os.symlink("../big", root / "etc/soft")
    os.setxattr(root / "etc/small", "user.origin", b"\xff\x00binary")
    os.chmod(root / "etc/sub", 0o710)
    os.utime(root / "mid", ns=(1, 1_600_000_000_123_456_789))
    for i in range(200):  # enough headers for several groups
        (root / "etc/sub" / f"f{i:03}").write_bytes(os.urandom(i * 37))
    return root


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """(the tree, its archive as the online backup stores it, chunk by chunk)."""
    root = _tree(tmp_path)
    return root, _capture(root)


def _capture(root: Path) -> list[bytes]:
    """The archive of ``root`` as the online backup stores it, chunk by chunk."""
    chunks: list[bytes] = []

    def store(data: bytes) -> str:
        chunks.append(data)
        return str(len(chunks) - 1)

    w = _Walk(_Stream(store), lambda _n, _p: None, None)
    _walk(w, str(root), ".")
    w.stream.add(bytes(2 * BLOCK))
    w.stream.cut()
    return [chunks[int(i)] for i in w.stream.chunks]  # (stored in the order read)


def _read_all(tree: ArchiveTree, rel: str, chunks: list[bytes]) -> bytes:
    entry = tree.lookup(rel)
    assert entry is not None
    out = b""
    for offset in range(0, entry.size, 100_000):  # as the kernel reads: in pieces
        out += tree.read(entry, offset, 100_000, chunks.__getitem__, "test")
    return out


def _assert_same(tree: ArchiveTree, root: Path, chunks: list[bytes]) -> None:
    on_disk = {
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, names in os.walk(root)
        for n in dirs + names
    }
    assert set(tree.entries) == on_disk | {""}
    for rel in on_disk:
        st = os.lstat(root / rel)
        e = tree.lookup(rel)
        assert e is not None
        assert (e.mode, e.uid, e.gid, e.mtime_ns) == (
            st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
        ), rel  # fmt: skip
        if stat.S_ISREG(st.st_mode):
            assert e.nlink == st.st_nlink
            assert _read_all(tree, rel, chunks) == (root / rel).read_bytes(), rel
        if stat.S_ISLNK(st.st_mode):
            assert e.target == os.readlink(root / rel)
    assert tree.lookup("big") is tree.lookup("etc/big-link")
    assert tree.lookup("etc/small").xattrs == {"user.origin": b"\xff\x00binary"}  # type: ignore[union-attr]
    assert sorted(tree.children["etc"]) == ["big-link", "small", "soft", "sub"]


def test_the_index_of_a_captured_tree_holds_every_file_and_skips_large_data(
    archived: tuple[Path, list[bytes]],
) -> None:
    root, chunks = archived
    fetched: list[int] = []

    def get(i: int) -> bytes:
        fetched.append(i)
        return chunks[i]

    tree = index_archive([str(i) for i in range(len(chunks))], get)
    _assert_same(tree, root, chunks)
    # the data chunks of big (3), exact (1) and mid (1) were counted, not read
    assert len(set(fetched)) == len(chunks) - 5, (len(fetched), len(chunks))


@pytest.mark.parametrize("piece", [1000, 777_777])
def test_an_archive_cut_anywhere_is_read_exactly(tmp_path: Path, piece: int) -> None:
    root = _tree(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".")
    data = buf.getvalue()
    chunks = [data[i : i + piece] for i in range(0, len(data), piece)]
    tree = index_archive([str(i) for i in range(len(chunks))], chunks.__getitem__)
    # (GNU-less tarfile keeps whole-second mtimes without pax records; compare bytes and names)
    assert set(tree.entries) >= {"big", "etc/small", "etc/sub/f199", "etc/soft"}
    for rel in ("big", "exact", "mid", "etc/small", "etc/sub/f150"):
        assert _read_all(tree, rel, chunks) == (root / rel).read_bytes(), rel


def test_a_chunk_shorter_than_the_index_says_is_an_error_not_wrong_bytes(
    archived: tuple[Path, list[bytes]],
) -> None:
    _root, chunks = archived
    tree = index_archive([str(i) for i in range(len(chunks))], chunks.__getitem__)
    big = tree.lookup("big")
    assert big is not None
    short = list(chunks)
    short[big.extents[1].chunk] = short[big.extents[1].chunk][:1000]
    with pytest.raises(ChunkError, match="the archive's index expects"):
        tree.read(big, CHUNK_SIZE, 4096, short.__getitem__, "disk1/p1")
