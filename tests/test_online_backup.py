"""The online backup (`liferaft backup`) of mounted loop filesystems, as on a
running server: file by file while a writer keeps replacing files, restored
onto another disk (fsck clean, same UUID, no torn file), a second run of an
unchanged tree storing almost nothing, Btrfs through snapshots, refusals."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rescue_app.engine import mounts
from rescue_app.engine.keychain import CredentialChain
from rescue_app.engine.repository import CHUNK_SIZE, Repository, chunk_rel
from rescue_app.run import run
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.diskkit import MIB, PartSpec, fsck_clean, make_fs, mounted, partition_disk
from tests.test_browse import mounted_image

pytestmark = pytest.mark.root

# Each file is its payload followed by the payload's sha256 (hex): a torn
# file (part old, part new) fails its own check.
WRITER = """
import hashlib, os, random, sys, time
root, stop = sys.argv[1], sys.argv[2]
rnd = random.Random(7)
n = 0
while not os.path.exists(stop):
    payload = rnd.randbytes(rnd.choice([3000, 90_000, 700_000]))
    body = payload + hashlib.sha256(payload).hexdigest().encode()
    tmp = os.path.join(root, "live", f".tmp{n}")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(root, "live", f"w{n % 25}.dat"))
    n += 1
    time.sleep(0.002)
print(n)
"""


def _checked(body: bytes) -> bool:
    payload, digest = body[:-64], body[-64:]
    return hashlib.sha256(payload).hexdigest().encode() == digest


def _static_tree(root: str) -> dict[str, str]:
    """Files that do not change during the backup: {path: sha256}."""
    rnd = random.Random(3)
    out = {}
    for i in range(120):
        sub = os.path.join(root, "etc", f"d{i % 7}")
        os.makedirs(sub, exist_ok=True)
        size = rnd.choice([0, 100, 5000, 200_000, 1_500_000]) if i % 40 else 9 * MIB
        data = rnd.randbytes(size)
        path = os.path.join(sub, f"f{i}")
        Path(path).write_bytes(data)
        out[os.path.relpath(path, root)] = hashlib.sha256(data).hexdigest()
    os.link(os.path.join(root, "etc/d1/f1"), os.path.join(root, "etc/hard"))
    os.symlink("d1/f1", os.path.join(root, "etc/soft"))
    os.setxattr(os.path.join(root, "etc/d1/f1"), "user.origin", b"\xff\x00binary")
    os.chmod(os.path.join(root, "etc/d2"), 0o700)
    os.chown(os.path.join(root, "etc/d2/f2"), 1234, 5678)
    os.makedirs(os.path.join(root, "live"))
    return out


def _hashes(root: str, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256(Path(root, n).read_bytes()).hexdigest() for n in names}


def _uuid(node: str) -> str:
    return run(["blkid", "-s", "UUID", "-o", "value", node]).stdout.strip()


@pytest.fixture(params=["ext4", "xfs"])
def source(
    loopdisk: Callable[[int], str], request: pytest.FixtureRequest
) -> Iterator[tuple[str, str, str]]:
    """A GPT loop disk with one partition mounted read-write: (disk, partition, mount)."""
    dev = loopdisk(320 * MIB)
    (part,) = partition_disk(dev, "gpt", [PartSpec(None, request.param, "root")])
    make_fs(part, request.param, "rootfs")
    with mounted(part, request.param) as point:
        yield dev, part, point


def test_online_backup_under_a_writer_restores_whole_files(
    source: tuple[str, str, str], loopdisk: Callable[[int], str], workdir: str
) -> None:
    dev, part, point = source
    fs = run(["blkid", "-s", "TYPE", "-o", "value", part]).stdout.strip()
    static = _static_tree(point)
    repo = os.path.join(workdir, "repo")
    stop = os.path.join(workdir, "stop")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, point, stop], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)
        started = time.monotonic()
        first = liferaft("backup", "--repo", repo, "--name", "web", dev)
        online_seconds = time.monotonic() - started
    finally:
        Path(stop).touch()
        writes = int(writer.communicate(timeout=30)[0])
    assert writes > 20  # the writer really wrote during the backup
    assert f"disk 1 partition 1 ({fs}): file by file from the mounted tree" in first.stdout
    assert first.stdout.splitlines()[-1].startswith("backed up web@")

    # restore onto another disk: fsck clean, same UUID, static files equal, no torn file
    target = loopdisk(320 * MIB)
    liferaft("restore", "--repo", repo, "--image", "web", "--to", target, "--yes")
    node = target + "p1"
    fsck_clean(node, fs)
    assert _uuid(node) == _uuid(part)
    # (nouuid: the source XFS, still mounted, has the same UUID)
    with mounts.mounted(node, fs, options=["nouuid"] if fs == "xfs" else []) as back:
        assert _hashes(back, list(static)) == static
        assert os.stat(f"{back}/etc/hard").st_ino == os.stat(f"{back}/etc/d1/f1").st_ino
        assert os.readlink(f"{back}/etc/soft") == "d1/f1"
        assert os.getxattr(f"{back}/etc/d1/f1", "user.origin") == b"\xff\x00binary"
        assert os.stat(f"{back}/etc/d2").st_mode & 0o777 == 0o700
        assert (os.stat(f"{back}/etc/d2/f2").st_uid, os.stat(f"{back}/etc/d2/f2").st_gid) == (
            1234,
            5678,
        )
        live = [n for n in os.listdir(f"{back}/live") if n.endswith(".dat")]
        assert live
        for name in live:
            assert _checked(Path(back, "live", name).read_bytes()), name

    liferaft("verify", "--repo", repo)

    # an unchanged tree: the next run stores under 1 % of its data; with
    # --limit-rate it takes at least its bytes over the rate
    second = liferaft("backup", "--repo", repo, "--name", "web", dev)
    started = time.monotonic()
    rate = 40 * MIB
    third = liferaft("backup", "--repo", repo, "--name", "web", "--limit-rate", str(rate), dev)
    paced = time.monotonic() - started
    data, new = _figures(third.stdout)
    assert new < data / 100, third.stdout
    assert paced >= 0.9 * data / rate, (paced, data)
    # figures for the report (pytest -s shows them)
    offline = _offline_capture(dev, part, point, workdir)
    print(
        f"\nonline backup {online_seconds:.1f} s under a writer ({writes} files replaced); "
        f"second run {second.stdout.splitlines()[-1]}; unchanged run: {new} of {data} bytes "
        f"new; offline capture: {offline}"
    )


def _metadata(root: str) -> dict[str, tuple[object, ...]]:
    """Every entry below ``root``: (mode, owner, group, mtime ns, size, its
    sha256 or symlink target)."""
    out: dict[str, tuple[object, ...]] = {}
    for folder, dirs, names in os.walk(root):
        for name in ["", *dirs, *names] if folder == root else [*dirs, *names]:
            path = os.path.join(folder, name) if name else folder
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out[os.path.relpath(path, root)] = (
                stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, size, what,
            )  # fmt: skip
    return out


def test_liferaft_mount_shows_a_partition_backed_up_file_by_file(
    source: tuple[str, str, str], workdir: str
) -> None:
    """The files of a partition the online backup stored file by file, under
    `liferaft mount` (served from its archive, no image file): equal to the
    mounted tree in content, mode, owners, times, symlinks, hard links and
    xattrs; `liferaft umount` leaves nothing mounted."""
    dev, _part, point = source
    _static_tree(point)
    os.utime(f"{point}/etc/d3", ns=(0, 1_500_000_000_123_456_789))
    os.mkfifo(f"{point}/etc/fifo", 0o640)
    expected = _metadata(point)
    repo = os.path.join(workdir, "repo")
    liferaft("backup", "--repo", repo, "--name", "src", dev)
    mnt = os.path.join(workdir, "mnt")
    with mounted_image(repo, mnt) as proc:
        assert os.listdir(f"{mnt}/disk1/p1") == ["files"]  # no p1.img: nothing raw stored
        files = f"{mnt}/disk1/p1/files"
        assert _metadata(files) == expected
        assert os.stat(f"{files}/etc/hard").st_ino == os.stat(f"{files}/etc/d1/f1").st_ino
        assert os.stat(f"{files}/etc/hard").st_nlink == 2
        assert os.getxattr(f"{files}/etc/d1/f1", "user.origin") == b"\xff\x00binary"
        assert liferaft("umount", mnt).returncode == 0
        assert proc.wait(20) == 0
    assert mounts.mounts_under(mnt) == [] and mounts.loops_backed_under(mnt) == []

    # A damaged data chunk of a large file: EIO for that read and a log line
    # naming the file, never wrong bytes; the rest reads.
    big = Path(point, "etc/d0/f0").read_bytes()  # 9 MiB: its second 4 MiB is one chunk
    store = Repository.open(repo, credentials=CredentialChain())
    damaged = os.path.join(repo, chunk_rel(store.chunk_id(big[CHUNK_SIZE : 2 * CHUNK_SIZE])))
    with open(damaged, "r+b") as f:
        f.seek(os.path.getsize(damaged) // 2)
        f.write(b"\xff" * 64)
    with mounted_image(repo, mnt) as proc:
        files = f"{mnt}/disk1/p1/files"
        assert os.path.getsize(f"{files}/etc/d0/f0") == len(big)
        with open(f"{files}/etc/d0/f0", "rb") as f, pytest.raises(OSError) as caught:
            f.seek(CHUNK_SIZE + 4096)
            f.read(4096)
        assert caught.value.errno == errno.EIO
        assert Path(files, "etc/d1/f1").read_bytes() == Path(point, "etc/d1/f1").read_bytes()
        assert liferaft("umount", mnt).returncode == 0
        proc.wait(20)
        err = proc.stderr.read() if proc.stderr else ""
    line = next(ln for ln in err.splitlines() if "damaged" in ln)
    assert "disk 1 partition 1, file /etc/d0/f0" in line, line


def _figures(stdout: str) -> tuple[int, int]:
    """(data bytes, newly stored bytes) of the backup's last line."""
    units = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
    found = re.findall(r"([\d.]+) (B|KiB|MiB|GiB)", stdout.splitlines()[-1])
    data, new = (float(v) * units[u] for v, u in found[:2])
    return int(data), int(new)


def _offline_capture(dev: str, part: str, point: str, workdir: str) -> str:
    """The same disk captured offline (unmounted), for the comparison."""
    run(["umount", point])
    try:
        started = time.monotonic()
        out = liferaft("capture", "--repo", os.path.join(workdir, "off"), "--name", "o", dev)
        return f"{time.monotonic() - started:.1f} s, {out.stdout.strip()}"
    finally:
        run(["mount", part, point])


def test_btrfs_subvolumes_are_backed_up_from_snapshots(
    loopdisk: Callable[[int], str], workdir: str
) -> None:
    dev = loopdisk(320 * MIB)
    (part,) = partition_disk(dev, "gpt", [PartSpec(None, "btrfs", "data")])
    make_fs(part, "btrfs", "pool")
    repo = os.path.join(workdir, "repo")
    with mounted(part, "btrfs") as point:
        run(["btrfs", "subvolume", "create", f"{point}/@home"])
        run(["btrfs", "subvolume", "create", f"{point}/@home/nested"])
        Path(point, "top.txt").write_text("top")
        Path(point, "@home", "a.txt").write_text("home")
        Path(point, "@home", "nested", "b.bin").write_bytes(os.urandom(3 * MIB))
        run(["btrfs", "subvolume", "snapshot", "-r", f"{point}/@home", f"{point}/@ro"])
        # a snapshot left by a run that crashed is deleted first
        run(["btrfs", "subvolume", "snapshot", "-r", point, f"{point}/liferaft-snap-9"])
        expected = hashlib.sha256(Path(point, "@home", "nested", "b.bin").read_bytes()).hexdigest()
        out = liferaft("backup", "--repo", repo, "--name", "b", dev).stdout
        assert "file by file from read-only snapshots of each subvolume" in out
        subs = run(["btrfs", "subvolume", "list", point]).stdout
        assert "liferaft-snap" not in subs, subs
    # btrfs takes one filesystem per UUID: the original goes, as a dead machine's would
    uuid = _uuid(part)
    run(["wipefs", "-a", "-q", part])
    target = loopdisk(320 * MIB)
    liferaft("restore", "--repo", repo, "--image", "b", "--to", target, "--yes")
    node = target + "p1"
    fsck_clean(node, "btrfs")
    assert _uuid(node) == uuid
    with mounted(node, "btrfs", read_only=True) as back:
        assert Path(back, "top.txt").read_text() == "top"
        assert Path(back, "@home", "a.txt").read_text() == "home"
        got = hashlib.sha256(Path(back, "@home", "nested", "b.bin").read_bytes()).hexdigest()
        assert got == expected
        subs = run(["btrfs", "subvolume", "list", back]).stdout
        assert "@home/nested" in subs and "@ro" in subs and "liferaft-snap" not in subs
        assert run(["btrfs", "property", "get", f"{back}/@ro", "ro"]).stdout.strip() == "ro=true"


def test_refusals_are_one_line(loopdisk: Callable[[int], str], workdir: str) -> None:
    repo = os.path.join(workdir, "repo")
    dev = loopdisk(64 * MIB)
    (part,) = partition_disk(dev, "gpt", [PartSpec(None, "ext4", "root")])
    proc = liferaft("backup", "--repo", repo, "--name", "x", part, check=False)
    assert_one_line_error(proc, f"{part} is a partition, not a disk")
    make_fs(part, "ext4")
    with mounted(part, "ext4") as point:
        inside = os.path.join(point, "repo")
        proc = liferaft("backup", "--repo", inside, "--name", "x", dev, check=False)
        assert_one_line_error(proc, "the backup would copy itself")
    proc = liferaft("backup", "--repo", repo, "--name", "x", "/dev/nonexistent", check=False)
    assert_one_line_error(proc, "/dev/nonexistent")
    proc = liferaft(
        "backup", "--repo", repo, "--name", "x", "--limit-rate", "fast", "/dev/x", check=False
    )
    assert proc.returncode == 2 and "bytes per second" in proc.stderr
    assert not os.path.exists(repo)


# rewrites the file in place without end (its mtime moves, its size stays)
APPENDER = """
import os, random, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
while not os.path.exists(sys.argv[2]):
    os.pwrite(fd, os.urandom(4096), random.randrange(0, 24 << 20))
"""


def test_a_file_that_never_stops_changing_is_named(
    source: tuple[str, str, str], workdir: str
) -> None:
    dev, _, point = source
    Path(point, "busy.log").write_bytes(os.urandom(24 * MIB))
    Path(point, "quiet.txt").write_text("still")
    stop = os.path.join(workdir, "stop")
    appender = subprocess.Popen([sys.executable, "-c", APPENDER, f"{point}/busy.log", stop])
    try:
        time.sleep(0.2)
        proc = liferaft("backup", "--repo", os.path.join(workdir, "repo"), "--name", "b", dev)
    finally:
        Path(stop).touch()
        appender.wait(timeout=30)
    assert "1 file(s) kept changing while read, kept as last read: busy.log" in proc.stderr
