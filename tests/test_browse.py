"""Browse and extract (issue 13): `liferaft mount`, `umount` and `extract` on a
real image of ext4, XFS, vfat, NTFS, exFAT and Btrfs, through real FUSE, loop
devices, ntfs-3g, exfat-fuse and nginx.

One source disk is captured once for the module; each test mounts the image
(local or over HTTP) with the real CLI in a process of its own, and every
test leaves no mount and no loop device behind, also when it fails.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import boto3
import pytest

from rescue_app.engine import Engine, browse, mounts
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.imagefs import ChunkCache, VolumeFile
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.manifest import (
    DiskImage,
    Filesystem,
    LogicalVolumeImage,
    Manifest,
    Method,
    PartitionImage,
    PartitionTable,
    Region,
    VolumeGroupImage,
    parse_manifest,
)
from rescue_app.engine.repository import CHUNK_SIZE, chunk_rel
from rescue_app.errors import ChunkError, LiferaftError, UsageError
from rescue_app.progress import Progress
from rescue_app.run import run
from tests.conftest import _disk_backed_tmp
from tests.enginekit import (
    REPO_ROOT,
    Layout,
    assert_one_line_error,
    build_source,
    cli_argv,
    liferaft,
)
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    _hash_tree,
    disk_bytes_sha256,
    loop_disk,
    make_fs,
    populate,
    tree_checksums,
)
from tests.stores.serverkit import Nginx, free_port, running, sshd

LAYOUT = Layout(
    "gpt",
    [PartSpec(128, "ext4"), PartSpec(320, "xfs"), PartSpec(48, "vfat"), PartSpec(48, "ntfs"),
     PartSpec(48, "exfat"), PartSpec(None, "btrfs")],
    ["ext4", "xfs", "vfat", "ntfs", "exfat", "btrfs"],
)  # fmt: skip
DISK_BYTES = 1100 * MIB
UID, GID = 1234, 5678
MTIME = 1_500_000_000  # 2017-07-14, whole seconds


def _acl_xattr(uid: int) -> bytes:
    """A POSIX access ACL (user::rw-, user:UID:r--, group::r--, mask::r--,
    other::---) as the kernel stores it in system.posix_acl_access."""
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, uid), (0x04, 4, 0xFFFFFFFF)]
    entries += [(0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


@dataclass
class Image:
    dev: str  # the source disk, still attached
    nodes: list[str]
    repo: str
    files: dict[int, dict[str, str]]  # partition index -> {path: sha256}
    manifest_chunks: dict[int, tuple[str | None, ...]]  # partition number -> chunks
    chunk_bytes: int  # bytes of every chunk file of the repository
    workdir: str


def _special_files(node: str) -> None:
    """Files whose metadata extract must keep, on the ext4 partition."""
    with mounts.mounted(node, "ext4", writable=True) as root:
        os.makedirs(f"{root}/meta/sub")
        with open(f"{root}/meta/owned.txt", "w") as f:
            f.write("owned by 1234\n")
        os.chown(f"{root}/meta/owned.txt", UID, GID)
        os.chmod(f"{root}/meta/owned.txt", 0o640)
        os.setxattr(f"{root}/meta/owned.txt", "user.liferaft", b"kept")
        os.setxattr(f"{root}/meta/owned.txt", "system.posix_acl_access", _acl_xattr(UID))
        os.link(f"{root}/meta/owned.txt", f"{root}/meta/sub/hardlink.txt")
        os.symlink("../owned.txt", f"{root}/meta/sub/link")
        os.symlink("/etc", f"{root}/meta/abs")  # leads out of the partition on this machine
        os.utime(f"{root}/meta/owned.txt", (MTIME, MTIME))
        with open(f"{root}/big10.bin", "wb") as f:
            f.write(os.urandom(10 * MIB))  # random: the chunks do not compress away


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    with (
        tempfile.TemporaryDirectory(prefix="liferaft-browse-", dir=_disk_backed_tmp()) as d,
        loop_disk(DISK_BYTES, d) as dev,
    ):
        source = build_source(dev, LAYOUT, seed=21)
        _special_files(source.nodes[0])
        # Data a reader of other files must not download (random: no compression).
        with mounts.mounted(source.nodes[1], "xfs", writable=True) as root:
            with open(f"{root}/filler.bin", "wb") as f:
                f.write(os.urandom(200 * MIB))
            source.files[1]["filler.bin"] = _hash_tree(root)["filler.bin"]
        with mounts.mounted(source.nodes[0], "ext4") as root:
            source.files[0] = _hash_tree(root)
        repo = os.path.join(d, "repo")
        liferaft("capture", "--repo", repo, "--name", "src", dev)
        (name,) = os.listdir(f"{repo}/images/src")
        with open(f"{repo}/images/src/{name}") as f:
            manifest = parse_manifest(f.read(), name)
        chunks = {p.number: p.chunks for p in manifest.disks[0].partitions}
        size = sum(
            os.path.getsize(os.path.join(folder, n))
            for folder, _, names in os.walk(f"{repo}/chunks")
            for n in names
        )
        yield Image(dev, source.nodes, repo, source.files, chunks, size, d)


def _loops_under(point: str) -> list[str]:
    return mounts.loops_backed_under(point)


@contextlib.contextmanager
def mounted_image(
    repo: str, point: str, *extra: str, name: str = "src"
) -> Iterator[subprocess.Popen[str]]:
    """`liferaft mount` of the image ``name`` in a process of its own, until
    it says it serves; always ended (umount, then the process), also when
    the test fails."""
    os.makedirs(point, exist_ok=True)
    argv = cli_argv("mount", "--repo", repo, "--image", name)
    proc = subprocess.Popen(
        [*argv, *extra, point],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            out.append(line)
            if line.startswith("serving"):
                break
            assert time.monotonic() < deadline, out
        if not out or not out[-1].startswith("serving"):
            proc.wait(30)
            raise AssertionError("".join(out) + (proc.stderr.read() if proc.stderr else ""))
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        browse.take_down(point)  # a no-op when the mount ended as it should


def _assert_gone(point: str) -> None:
    assert mounts.mounts_under(point) == []
    assert _loops_under(point) == []


# ---------------------------------------------------------------- mount


@pytest.mark.root
def test_mount_shows_each_partition_files_and_image(image: Image) -> None:
    point = os.path.join(image.workdir, "mnt")
    with mounted_image(image.repo, point) as proc:
        assert sorted(os.listdir(f"{point}/disk1")) == [f"p{n}" for n in range(1, 7)]
        for i, fs in enumerate(LAYOUT.filesystems):
            folder = f"{point}/disk1/p{i + 1}"
            if fs == "vfat":
                # This host's kernel has no vfat and there is no FUSE driver for
                # it: the raw image only (its files checked through mtools).
                assert os.listdir(folder) == [f"p{i + 1}.img"]
                got = tree_checksums(f"{folder}/p{i + 1}.img", "vfat")
            else:
                assert sorted(os.listdir(folder)) == ["files", f"p{i + 1}.img"]
                got = _hash_tree(f"{folder}/files")
            assert got == image.files[i], f"files of p{i + 1} ({fs}) differ"
        # The partition image: byte for byte the source partition (its unused
        # blocks are zeros on the sparse source), and each filesystem checks clean.
        p1 = f"{point}/disk1/p1/p1.img"
        size = os.path.getsize(p1)
        with open(p1, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == disk_bytes_sha256(
                image.nodes[0], 0, size
            )
        for n, checker in [(1, ["e2fsck", "-f", "-n"]), (2, ["xfs_repair", "-n", "-f"]),
                           (6, ["btrfs", "check", "--readonly"])]:  # fmt: skip
            copy = os.path.join(image.workdir, f"p{n}-copy.img")
            run(["cp", "--sparse=always", f"{point}/disk1/p{n}/p{n}.img", copy])
            run([*checker, copy])
            os.unlink(copy)
        # Read-only all the way down.
        with pytest.raises(OSError) as caught:
            open(p1, "r+b")
        assert caught.value.errno in (errno.EROFS, errno.EACCES)
        with pytest.raises(OSError) as caught:
            open(f"{point}/disk1/p1/files/new.txt", "w")
        assert caught.value.errno == errno.EROFS
        assert len(_loops_under(point)) == 5  # every partition but the vfat one
        done = liferaft("umount", point)
        assert done.returncode == 0, done.stderr
        assert proc.wait(20) == 0
        assert "unmounted" in (proc.stdout.read() if proc.stdout else "")
        err = proc.stderr.read() if proc.stderr else ""
    _assert_gone(point)
    notes = [ln for ln in err.splitlines() if "disk1/p3" in ln]
    assert notes == [
        "note: disk1/p3 (vfat): its files cannot be shown (unknown filesystem type 'vfat'); "
        "disk1/p3/p3.img is there"
    ], err


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_mount_and_leaves_no_loop_device(image: Image, signum: int) -> None:
    point = os.path.join(image.workdir, f"mnt-{signum}")
    with mounted_image(image.repo, point) as proc:
        assert os.listdir(f"{point}/disk1/p6/files")
        proc.send_signal(signum)
        assert proc.wait(30) == 0
        _assert_gone(point)
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


@pytest.mark.root
def test_umount_cleans_up_after_a_killed_mount(image: Image) -> None:
    """SIGKILL leaves the FUSE folder dead and the loop devices attached:
    `liferaft umount` still takes everything down."""
    point = os.path.join(image.workdir, "mnt-kill")
    with mounted_image(image.repo, point) as proc:
        proc.kill()
        proc.wait(10)
        assert _loops_under(point)
        liferaft("umount", point)
        _assert_gone(point)


@pytest.mark.root
def test_mount_over_http_fetches_little_and_is_timed(image: Image) -> None:
    """Reading one small file of a 230 MiB image over HTTP fetches a few chunks,
    counted in nginx's log; listing a folder and reading a 10 MB file are timed."""
    work = os.path.join(image.workdir, "http")
    point = os.path.join(work, "mnt")
    with Nginx(image.repo, os.path.join(work, "nginx")) as nginx:
        url = f"http://127.0.0.1:{nginx.port}/"
        started = time.monotonic()
        with mounted_image(url, point):
            mounted = time.monotonic() - started
            with open(f"{point}/disk1/p1/files/docs/readme.txt", "rb") as f:
                small = f.read()
            assert hashlib.sha256(small).hexdigest() == image.files[0]["docs/readme.txt"]
            sent = _bytes_sent(nginx)
            started = time.monotonic()
            names = os.listdir(f"{point}/disk1/p1/files/deep/a/b/c")
            listed = time.monotonic() - started
            before = _bytes_sent(nginx)
            started = time.monotonic()
            with open(f"{point}/disk1/p1/files/big10.bin", "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            read = time.monotonic() - started
            big = _bytes_sent(nginx) - before
        assert names
        assert digest == image.files[0]["big10.bin"]
    _assert_gone(point)
    print(
        f"\nbrowse over HTTP: image {image.chunk_bytes / MIB:.1f} MiB of chunks; mounting 5 "
        f"filesystems ({mounted:.2f} s) and reading a small file fetched {sent / MIB:.1f} MiB; "
        "listing a "
        f"folder {listed * 1000:.0f} ms; reading a 10 MiB file {read:.2f} s "
        f"({10 / read:.0f} MiB/s, {big / MIB:.1f} MiB fetched)"
    )
    # About one 4 MiB chunk per filesystem's metadata and the file: a small
    # part of the image, however large it is.
    assert sent < 6 * CHUNK_SIZE and sent < image.chunk_bytes / 10, (sent, image.chunk_bytes)
    assert big < 10 * MIB + 3 * CHUNK_SIZE


def _bytes_sent(nginx: Nginx) -> int:
    return sum(int(line.split()[2]) for line in nginx.log_lines() if "/chunks/" in line)


@pytest.mark.root
def test_a_corrupt_chunk_is_eio_and_a_log_line_never_wrong_bytes(image: Image) -> None:
    work = os.path.join(image.workdir, "corrupt")
    repo = os.path.join(work, "repo")
    shutil.copytree(image.repo, repo)
    # The chunk holding the middle of big10.bin's random half: found by its bytes.
    with mounts.mounted(image.nodes[0], "ext4") as root, open(f"{root}/big10.bin", "rb") as f:
        f.seek(5 * MIB)
        needle = f.read(4096)
    offset = _find(image.nodes[0], needle)
    digest = image.manifest_chunks[1][offset // CHUNK_SIZE]
    assert digest is not None
    path = os.path.join(repo, chunk_rel(digest))
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(64)
        f.seek(-64, os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))
    point = os.path.join(work, "mnt")
    with mounted_image(repo, point) as proc:
        files = f"{point}/disk1/p1/files"
        assert os.path.getsize(f"{files}/big10.bin") == 10 * MIB  # metadata is fine
        with open(f"{files}/docs/readme.txt", "rb") as f:  # so are other chunks
            assert hashlib.sha256(f.read()).hexdigest() == image.files[0]["docs/readme.txt"]
        with open(f"{files}/big10.bin", "rb") as f, pytest.raises(OSError) as caught:
            f.seek(5 * MIB)
            f.read(4096)
        assert caught.value.errno == errno.EIO
        liferaft("umount", point)
        proc.wait(20)
        err = proc.stderr.read() if proc.stderr else ""
    _assert_gone(point)
    line = next(ln for ln in err.splitlines() if "damaged" in ln)
    base = offset // CHUNK_SIZE * CHUNK_SIZE
    assert "image src@" in line and "disk 1 partition 1" in line, line
    assert f"offset {base}" in line, line


def _find(node: str, needle: bytes) -> int:
    with open(node, "rb") as f:
        at = f.read().find(needle)  # 128 MiB
    assert at >= 0, "needle not on the partition"
    return at


# ---------------------------------------------------------------- extract


@pytest.mark.root
def test_extract_keeps_owner_mode_times_xattrs_acls_links(image: Image) -> None:
    out = os.path.join(image.workdir, "out", "new")  # created by extract
    liferaft(
        "extract", "--repo", image.repo, "--image", "src", "--partition", "1",
        "/meta", "docs/readme.txt", "--to", out,
    )  # fmt: skip
    st = os.lstat(f"{out}/meta/owned.txt")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (UID, GID, 0o640)
    assert int(st.st_mtime) == MTIME
    assert os.getxattr(f"{out}/meta/owned.txt", "user.liferaft") == b"kept"
    assert os.getxattr(f"{out}/meta/owned.txt", "system.posix_acl_access") == _acl_xattr(UID)
    assert os.lstat(f"{out}/meta/sub/hardlink.txt").st_ino == st.st_ino
    assert os.readlink(f"{out}/meta/sub/link") == "../owned.txt"
    with open(f"{out}/readme.txt", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == image.files[0]["docs/readme.txt"]
    assert [p for p in mounts.mounts_under("/") if "liferaft-extract" in p] == []
    assert not [d for d in os.listdir(tempfile.gettempdir()) if d.startswith("liferaft-extract")]


@pytest.mark.root
def test_extract_while_the_source_filesystem_is_mounted(image: Image) -> None:
    """One file back on the running server: its XFS is mounted while its own
    image is read. XFS refuses a second filesystem with a mounted one's UUID
    unless told not to check (the image's copy is read-only)."""
    out = os.path.join(image.workdir, "while-mounted")
    with mounts.mounted(image.nodes[1], "xfs"):
        liferaft(
            "extract", "--repo", image.repo, "--image", "src", "--partition", "2",
            "filler.bin", "--to", out,
        )  # fmt: skip
    with open(f"{out}/filler.bin", "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == image.files[1]["filler.bin"]
    shutil.rmtree(out)


@pytest.mark.root
def test_extract_of_a_missing_path_names_it_and_writes_nothing(image: Image) -> None:
    out = os.path.join(image.workdir, "never")
    proc = liferaft(
        "extract", "--repo", image.repo, "--image", "src", "--partition", "2",
        "/docs", "/no/such/file", "--to", out, check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "/no/such/file", "disk1/p2", "xfs")
    assert not os.path.exists(out)
    proc = liferaft(
        "extract", "--repo", image.repo, "--image", "src", "/x", "--to", out, check=False
    )
    assert_one_line_error(proc, "6 partitions with files", "--partition")
    proc = liferaft(
        "extract", "--repo", image.repo, "--image", "src", "--partition", "9", "/x", "--to", out,
        check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "no partition '9'")
    proc = liferaft(
        "extract", "--repo", image.repo, "--image", "src", "--partition", "1",
        "/meta/abs/passwd", "--to", out, check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "/meta/abs/passwd: a symlink on the way leads out")
    assert not os.path.exists(out)
    with open(out, "w") as f:
        f.write("a file, not a folder")
    proc = liferaft("extract", "--repo", image.repo, "--image", "src", "--partition", "1",
                    "/docs", "--to", out, check=False)  # fmt: skip
    assert_one_line_error(proc, f"--to {out} is not a folder")


# ---------------------------------------------------------------- bad input


@pytest.mark.root
def test_bad_mount_inputs_are_one_line(image: Image) -> None:
    work = os.path.join(image.workdir, "bad")
    os.makedirs(f"{work}/full")
    with open(f"{work}/full/x", "w") as f:
        f.write("x")
    with open(f"{work}/file", "w") as f:
        f.write("x")
    os.makedirs(f"{work}/empty")
    cases = [
        (["--image", "nosuch", f"{work}/empty"], "no image named 'nosuch'"),
        (["--image", "src", f"{work}/full"], "not empty"),
        (["--image", "src", f"{work}/file"], "not a folder"),
        (["--image", "src", f"{work}/missing"], "does not exist"),
    ]
    for args, needle in cases:
        proc = liferaft("mount", "--repo", image.repo, *args, check=False)
        assert_one_line_error(proc, needle)
    _assert_gone(f"{work}/empty")
    proc = liferaft("mount", "--repo", "/nonexistent", "--image", "src", f"{work}/empty",
                    check=False, user=65534)  # fmt: skip
    assert_one_line_error(proc, "needs root")
    proc = liferaft("umount", f"{work}/empty", check=False, user=65534)
    assert_one_line_error(proc, "needs root")
    proc = liferaft("extract", "--repo", "/nonexistent", "--image", "src", "/etc", "--to",
                    f"{work}/out", check=False, user=65534)  # fmt: skip
    assert_one_line_error(proc, "needs root")
    proc = liferaft("mount", "--repo", image.repo, "--image", "src", "--cache", "2",
                    f"{work}/empty", check=False)  # fmt: skip
    assert_one_line_error(proc, "--cache 2 is too small")
    _assert_gone(f"{work}/empty")
    proc = liferaft("umount", f"{work}/empty", check=False)
    assert_one_line_error(proc, "nothing is mounted")
    proc = liferaft("umount", "/", check=False)
    assert_one_line_error(proc, "not a liferaft image mount")


# ---------------------------------------------------------------- no root


def test_partition_reads_assemble_chunks_zeros_and_refuse_bad_ones(tmp_path) -> None:
    """The read path on a real local repository: across chunk borders, zeros
    where no chunk is stored, a damaged chunk an error, never other bytes;
    the cache stays within its bound."""
    repo = Engine().open_repository(str(tmp_path / "repo"), create=True)
    a, b = os.urandom(CHUNK_SIZE), os.urandom(CHUNK_SIZE // 2)
    da, db = repo.put_chunk(a).digest, repo.put_chunk(b).digest
    size = 2 * CHUNK_SIZE + len(b)
    f = VolumeFile("image t@1, disk 1 partition 1", size, size, (da, None, db), CHUNK_SIZE)
    cache = ChunkCache(repo.get_chunk, CHUNK_SIZE + 1)
    whole = a + bytes(CHUNK_SIZE) + b
    for off, n in [(0, 10), (CHUNK_SIZE - 5, 10), (2 * CHUNK_SIZE - 3, 9), (size - 4, 100)]:
        assert f.read(cache, off, n) == whole[off : off + n]
    assert f.read(cache, size, 10) == b""
    assert len(cache._data) == 1  # bounded: one 4 MiB chunk fits, two do not
    path = tmp_path / "repo" / chunk_rel(da)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    fresh = ChunkCache(repo.get_chunk, 8 * CHUNK_SIZE)
    with pytest.raises(ChunkError, match="offset 0"):
        f.read(fresh, 100, 10)


def test_chunk_cache_fetches_a_chunk_once_for_concurrent_readers(tmp_path) -> None:
    repo = Engine().open_repository(str(tmp_path / "repo"), create=True)
    digest = repo.put_chunk(os.urandom(1000)).digest
    calls = []

    def slow_fetch(d: str, where: str) -> bytes:
        calls.append(d)
        time.sleep(0.2)
        return repo.get_chunk(d, where)

    cache = ChunkCache(slow_fetch, 1 << 20)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(digest, "x"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [digest] and len(results) == 4 and len(set(results)) == 1


def test_partition_choice_for_extract() -> None:
    doc = json.loads(
        json.dumps(
            {
                "format": "liferaft-manifest",
                "version": 1,
                "name": "m",
                "id": "20260101T000000Z",
                "created": "2026-01-01T00:00:00Z",
                "host": "h",
                "liferaft_version": "0",
                "chunk_size": CHUNK_SIZE,
                "chunk_hash": "sha256",
                "compression": "zstd",
                "disks": [],
            }
        )
    )
    empty = parse_manifest(json.dumps(doc), "m")
    with pytest.raises(UsageError, match="0 partitions with files"):
        browse.select_partition(empty, None)
    parts = [
        browse.BrowsePartition(1, 1, "vfat", None, 1, 1, "disk1/p1", "disk1/p1/p1.img", "f"),
        browse.BrowsePartition(1, 2, "swap", None, 1, 1, "disk1/p2", "disk1/p2/p2.img", None),
        browse.BrowsePartition(2, 1, "ext4", None, 1, 1, "disk2/p1", "disk2/p1/p1.img", "f"),
    ]
    assert browse.select_partition(empty, "disk2/p1", parts) is parts[2]
    with pytest.raises(UsageError, match="several disks"):
        browse.select_partition(empty, "1", parts)
    with pytest.raises(UsageError, match="swap"):
        browse.select_partition(empty, "2", parts)


def test_lvm_volumes_are_shown_and_their_physical_volume_is_not() -> None:
    """An image with an LVM volume group: each logical volume is a folder of
    its own (lvm/VG/LV), the PV partition holds no data of its own, a thin
    pool and a pool's hidden parts are not shown. No root: the layout only."""
    base = _small_manifest()
    disk = base.disks[0]
    pv = replace(disk.partitions[0], number=2, method=Method.LVM_PV, chunks=())
    boot = replace(disk.partitions[0], number=1, filesystem=Filesystem("ext4"))

    def lv(name: str, fs: str | None, **kw: object) -> LogicalVolumeImage:
        fields: dict[str, object] = dict(
            name=name, uuid=name, size=8 * CHUNK_SIZE, segtype="linear", tags=(), pool="",
            hidden=False, holds_root=False, filesystem=Filesystem(fs), method="used-blocks",
            used_bytes=CHUNK_SIZE, used_map=ExtentMap(), chunks=("a" * 64,),
        )  # fmt: skip
        fields.update(kw)
        return LogicalVolumeImage(**fields)  # type: ignore[arg-type]

    vg = VolumeGroupImage(
        "vg0", "u", 4 * MIB, (), "", (),
        (lv("root", "xfs"), lv("pool", None, segtype="thin-pool"),
         lv("pool_tmeta", None, hidden=True), lv("swap", "swap", method="swap")),
    )  # fmt: skip
    m = replace(base, disks=(replace(disk, partitions=(boot, pv)),), volume_groups=(vg,))
    parts = browse.browse_partitions(m)
    assert [p.folder for p in parts] == ["disk1/p1", "lvm/vg0/root", "lvm/vg0/swap"]
    root = parts[1]
    assert (root.image, root.files, root.lv) == (
        "lvm/vg0/root/root.img",
        "lvm/vg0/root/files",
        "vg0/root",
    )
    assert root.volume is not None and root.volume.where.endswith("logical volume vg0/root")
    assert parts[2].swap and parts[2].files is None
    assert browse.select_partition(m, "vg0/root") == root
    assert browse.select_partition(m, "1") == parts[0]
    with pytest.raises(UsageError, match="2 partitions with files"):
        browse.select_partition(m, None)


def _small_manifest() -> Manifest:
    part = PartitionImage(
        1, MIB, 8 * CHUNK_SIZE, "gpt", None, None, None, None, False, Filesystem("ext4"),
        "used-blocks", CHUNK_SIZE, ExtentMap(), ("a" * 64,),
    )  # fmt: skip
    disk = DiskImage(
        index=0, model=None, serial=None, wwn=None, size=64 * CHUNK_SIZE,
        logical_sector_size=512, physical_sector_size=512, transport=None,
        table=PartitionTable("gpt", None), head=Region(0, MIB, ()), gpt_backup=None,
        partitions=(part,),
    )  # fmt: skip
    return Manifest(
        "m", "20260101T000000Z", "2026-01-01T00:00:00Z", "h", "0", CHUNK_SIZE, "sha256",
        "zstd", (disk,),
    )  # fmt: skip


@pytest.mark.root
def test_engine_api_lists_folders_and_copies_with_progress(image: Image) -> None:
    """What the UI's "Browse files" will call: the partitions, a folder
    listing, a copy with progress, all through the Engine in this process."""
    engine = Engine()
    repo = engine.open_repository(image.repo)
    point = os.path.join(image.workdir, "api")
    os.makedirs(point)
    manifest = engine.load_manifest(repo, "src")
    parts = engine.image_partitions(manifest)
    assert [p.fstype for p in parts] == LAYOUT.filesystems
    with engine.mount_image(repo, "src", point, partitions=[parts[0]]) as m:
        entries = m.list_dir(parts[0], "/meta")
        assert [(e.name, e.kind) for e in entries] == [
            ("sub", "dir"),
            ("abs", "symlink"),
            ("owned.txt", "file"),
        ]
        assert int(entries[2].mtime) == MTIME and entries[2].mode & 0o777 == 0o640
        assert "meta" in [e.name for e in m.list_dir(parts[0])]
        with pytest.raises(UsageError, match="leads out of"):
            m.list_dir(parts[0], "meta/abs")
        with pytest.raises(UsageError, match="is not in"):
            m.list_dir(parts[0], "nowhere")
        with pytest.raises(LiferaftError, match="Not a directory"):
            m.list_dir(parts[0], "meta/owned.txt")
        with pytest.raises(UsageError, match="not available"):
            m.files_root(parts[1])  # only the first partition's files were asked for
        assert len(_loops_under(point)) == 1
    _assert_gone(point)
    seen: list[Progress] = []
    out = os.path.join(image.workdir, "api-out")
    result = engine.extract(repo, "src", ["/docs", "/big10.bin"], out, partition="1",
                            progress=seen.append)  # fmt: skip
    assert result.partition == "disk1/p1" and result.bytes >= 10 * MIB
    assert seen[-1].done == seen[-1].total == result.bytes
    assert sorted(os.listdir(out)) == ["big10.bin", "docs"]


@pytest.mark.root
def test_mount_from_s3(loopdisk, workdir, monkeypatch) -> None:
    """Another store, the same read path: an image in an S3 bucket (moto_server
    on loopback) mounts and its files read back."""
    dev = loopdisk(96 * MIB)
    source = build_source(dev, Layout("gpt", [PartSpec(None, "ext4")], ["ext4"]), seed=5)
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    point = os.path.join(workdir, "mnt")
    with running([moto, "-H", "127.0.0.1", "-p", str(port)], port):
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="backups")
        url = f"s3://backups/browse?endpoint={endpoint}"
        liferaft("capture", "--repo", url, "--name", "src", dev)
        with mounted_image(url, point) as proc:
            assert _hash_tree(f"{point}/disk1/p1/files") == source.files[0]
            liferaft("umount", point)
            assert proc.wait(20) == 0
    _assert_gone(point)


@pytest.mark.root
def test_ctrl_c_during_extract_says_cancelled_and_unmounts(image: Image) -> None:
    """Ctrl-C reaches the whole process group (cp too): one 'cancelled' line,
    exit 130, and the temporary mount is gone."""
    work = os.path.join(image.workdir, "cancel")
    with Nginx(image.repo, os.path.join(work, "nginx"), limit_rate="2m") as nginx:
        argv = cli_argv("extract", "--repo",
                f"http://127.0.0.1:{nginx.port}/", "--image", "src", "--partition", "1",
                "/big10.bin", "--to", f"{work}/out")  # fmt: skip
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(f"{work}/out/big10.bin"):  # cp has begun
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode == 130, err
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    assert_one_line_error(done, "extract cancelled", "/big10.bin")
    assert [p for p in mounts.mounts_under("/") if "liferaft-extract" in p] == []


@pytest.mark.root
def test_a_disk_without_a_partition_table_is_disk1_whole(loopdisk, workdir) -> None:
    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4", label="bare")
    files = populate(dev, "ext4", seed=9, big_mib=1)
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "src", dev)
    os.makedirs(os.path.join(workdir, "mnt"))
    point = os.path.join(workdir, "via-symlink")  # mountinfo shows the real path
    os.symlink("mnt", point)
    with mounted_image(repo, point) as proc:
        assert sorted(os.listdir(f"{point}/disk1/whole")) == ["files", "whole.img"]
        assert os.path.getsize(f"{point}/disk1/whole/whole.img") == 64 * MIB
        assert _hash_tree(f"{point}/disk1/whole/files") == files
        out = liferaft(
            "extract", "--repo", repo, "--image", "src", "/docs/readme.txt",
            "--to", f"{workdir}/out",
        ).stdout  # fmt: skip
        assert "disk1/whole" in out
        liferaft("umount", point)
        assert proc.wait(20) == 0
    _assert_gone(point)


@pytest.mark.root
def test_extract_reports_progress_while_a_large_file_is_copied(image: Image) -> None:
    """From a slow server, the copy of one 10 MiB file reports its bytes as
    they arrive, not only at the end."""
    engine = Engine()
    work = os.path.join(image.workdir, "slow")
    seen: list[Progress] = []
    with Nginx(image.repo, os.path.join(work, "nginx"), limit_rate="3m") as nginx:
        repo = engine.open_repository(f"http://127.0.0.1:{nginx.port}/")
        engine.extract(repo, "src", ["/big10.bin"], f"{work}/out", partition="1",
                       progress=seen.append)  # fmt: skip
    size = 10 * MIB
    between = [p for p in seen if 0 < p.item_done < size]
    assert between, [(p.item_done, p.item_total) for p in seen]
    assert all(p.item_total == size and p.total == size for p in seen)
    assert seen[-1].done == size


@pytest.mark.root
@pytest.mark.parametrize("fstype", ["btrfs", "ext4", "xfs"])
def test_a_filesystem_with_a_log_to_replay_mounts_read_only(loopdisk, workdir, fstype) -> None:
    """An image of a machine that crashed after an fsync: its journal (Btrfs:
    log tree) waits to be replayed, which a read-only image cannot do; the
    browse mount shows the filesystem as of its last checkpoint without
    replaying (noload, norecovery, rescue=nologreplay)."""
    live, crashed = loopdisk(320 * MIB), loopdisk(320 * MIB)
    (node,) = build_source(live, Layout("gpt", [PartSpec(None, fstype)], [fstype])).nodes
    with mounts.mounted(node, fstype, writable=True) as root:
        with open(f"{root}/committed.txt", "w") as f:
            f.write("in a transaction\n")
        os.sync()
        # a freeze writes the journal back to its home (a checkpoint)
        run(["fsfreeze", "--freeze", root])
        run(["fsfreeze", "--unfreeze", root])
        with open(f"{root}/fsynced.txt", "w") as f:
            f.write("only in the journal\n")
            f.flush()
            os.fsync(f.fileno())
        # The crash: the disk as it is now, with the filesystem still mounted.
        with open(live, "rb") as src, open(crashed, "wb") as dst:
            shutil.copyfileobj(src, dst, 4 * MIB)
    (copy,) = reread_partitions(crashed, 1)
    if fstype == "btrfs":
        dump = run(["btrfs", "inspect-internal", "dump-super", copy]).stdout
        assert not re.search(r"^log_root\s+0$", dump, re.M)  # there is a log to replay
    repo = os.path.join(workdir, "repo")
    liferaft("capture", "--repo", repo, "--name", "src", crashed)
    point = os.path.join(workdir, "mnt")
    with mounted_image(repo, point) as proc:
        files = f"{point}/disk1/p1/files"
        with open(f"{files}/committed.txt") as f:
            assert f.read() == "in a transaction\n"
        liferaft("umount", point)
        proc.wait(20)
    _assert_gone(point)


@pytest.mark.root
def test_mount_over_sftp(image: Image, monkeypatch) -> None:
    """SFTP keeps a channel per fetching thread: the mount's few fetch threads
    read the image over sshd on loopback."""
    work = os.path.join(image.workdir, "sftp")
    with sshd(os.path.join(work, "sshd")) as server:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
        url = f"sftp://root@127.0.0.1:{server.port}{image.repo}"
        point = os.path.join(work, "mnt")
        with mounted_image(url, point) as proc:
            assert _hash_tree(f"{point}/disk1/p1/files") == image.files[0]
            liferaft("umount", point)
            assert proc.wait(20) == 0
    _assert_gone(point)
