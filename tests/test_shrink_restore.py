"""Restore onto a smaller disk, for real: a 4 GiB disk (ESP vfat + a root of
ext4, XFS or Btrfs) captured and restored onto a 2 GiB one through the CLI.
The root is laid back file-level through the image's FUSE mount; the ESP
block-level. Checks: fsck clean, same filesystem and partition identities,
every file's bytes and metadata equal; a disk too small is refused in one line
and left untouched."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from rescue_app.engine import mounts
from rescue_app.engine.kernel import reread_partitions
from rescue_app.run import run
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    make_fs,
    partition_disk,
    populate,
    tree_checksums,
)
from tests.test_browse import _acl_xattr

pytestmark = pytest.mark.root

GIB = 1024 * MIB
UID, GID = 1234, 5678
MTIME = 1_500_000_000
SELINUX = b"system_u:object_r:etc_t:s0\x00"
TIMES: dict[str, float] = {}  # restore seconds, reported by the last test


@dataclass
class Source:
    dev: str
    nodes: list[str]
    fs: str
    repo: str
    tree: dict[str, tuple]  # the root's files and their metadata
    esp: dict[str, str]
    identity: tuple  # table and filesystem IDs
    features: str  # the root filesystem's


def _write_root(root: str, seed: int) -> None:
    """Files whose bytes and metadata must come back: owners, modes, times,
    xattrs, an ACL, an SELinux label, hardlinks, symlinks, device nodes, a
    FIFO, a sparse file, many small files and some larger ones."""
    rng = __import__("random").Random(seed)
    os.makedirs(f"{root}/meta/sub")
    owned = f"{root}/meta/owned.txt"
    with open(owned, "w") as f:
        f.write("owned by 1234\n")
    os.chown(owned, UID, GID)
    os.chmod(owned, 0o640)
    os.setxattr(owned, "user.liferaft", b"kept")
    os.setxattr(owned, "system.posix_acl_access", _acl_xattr(UID))
    os.setxattr(owned, "security.selinux", SELINUX)
    os.link(owned, f"{root}/meta/sub/hardlink.txt")
    os.symlink("../owned.txt", f"{root}/meta/sub/link")
    os.mknod(f"{root}/meta/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(f"{root}/meta/loop9", 0o660 | stat.S_IFBLK, os.makedev(7, 9))
    os.mkfifo(f"{root}/meta/fifo")
    os.chmod(f"{root}/meta/sub", 0o1750)
    with open(f"{root}/sparse.img", "wb") as f:  # 1 GiB, 12 MiB of it data
        f.truncate(GIB)
        for at in (0, 300 * MIB, 700 * MIB):
            f.seek(at)
            f.write(rng.randbytes(4 * MIB))
    for i in range(1500):  # small files, as a system has
        folder = f"{root}/small/{i % 30:02d}"
        os.makedirs(folder, exist_ok=True)
        with open(f"{folder}/f{i:04d}", "wb") as f:
            f.write(rng.randbytes(rng.randint(0, 12000)))
    os.makedirs(f"{root}/big")
    for i in range(6):  # 144 MiB that does not compress
        with open(f"{root}/big/b{i}.bin", "wb") as f:
            f.write(rng.randbytes(24 * MIB))
    for path in (owned, f"{root}/meta/sub/link", f"{root}/big"):
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)


def _snapshot(root: str) -> dict[str, tuple]:
    """Every entry below ``root``: type, mode, owner, mtime, size, content
    hash, link target, device numbers, xattrs (ACLs and SELinux labels
    included), and which entries are one inode (hardlinks)."""
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel == "lost+found":
                continue
            st = os.lstat(path)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(path, k, follow_symlinks=False))
                    for k in os.listxattr(path, follow_symlinks=False)
                )
            )
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, size, digest, target)
            out[rel] += (rdev, xattrs, st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    out["<hardlinks>"] = tuple(sorted(tuple(sorted(v)) for v in inodes.values()))
    return out


def _top(node: str, fs: str, writable: bool = False):
    opts = ["subvolid=5"] if fs == "btrfs" else []
    return mounts.mounted(node, fs, writable=writable, options=opts)


def _btrfs_layout(root: str) -> tuple:
    subs = run(["btrfs", "subvolume", "list", root]).stdout
    ro = run(["btrfs", "subvolume", "list", "-r", root]).stdout
    default = run(["btrfs", "subvolume", "get-default", root]).stdout
    paths = lambda text: sorted(re.findall(r" path (\S+)", text))  # noqa: E731
    return paths(subs), paths(ro), paths(default)


def _features(node: str, fs: str) -> str:
    if fs == "ext4":
        out = run(["dumpe2fs", "-h", node]).stdout
        keep = ("Filesystem features", "Inode size", "Block size", "Filesystem UUID")
        return "\n".join(ln for ln in out.splitlines() if ln.startswith(keep))
    if fs == "xfs":
        return run(["xfs_db", "-r", "-c", "version", "-c", "sb 0", "-c", "p uuid", node]).stdout
    out = run(["btrfs", "inspect-internal", "dump-super", node]).stdout
    return "\n".join(re.findall(r"^(?:fsid|label|nodesize|sectorsize)\s.*$", out, re.M)) + str(
        sorted(set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", out)))
    )


def _identity(dev: str, nodes: list[str]) -> tuple:
    table = json.loads(run(["sfdisk", "--json", dev]).stdout)["partitiontable"]
    parts = [(p.get("uuid"), p.get("name"), p.get("type")) for p in table["partitions"]]
    fs = []
    for n in nodes:
        out = run(["blkid", "-p", "-o", "export", n], check=False).stdout
        tags = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        fs.append((tags.get("TYPE"), tags.get("UUID"), tags.get("LABEL")))
    return table["id"], parts, fs


def _source(loopdisk: Callable[[int], str], workdir: str, fs: str) -> Source:
    dev = loopdisk(4 * GIB)
    nodes = partition_disk(dev, "gpt", [PartSpec(64, "vfat", "esp"), PartSpec(None, fs, "root")])
    make_fs(nodes[0], "vfat", label="ESP")
    esp = populate(nodes[0], "vfat", seed=3, n_files=4, big_mib=1)
    make_fs(nodes[1], fs, label="rootfs")
    with _top(nodes[1], fs, writable=True) as top:
        root = top
        if fs == "btrfs":
            for sub in ("@", "@home"):
                run(["btrfs", "subvolume", "create", f"{top}/{sub}"])
            root = f"{top}/@"
            with open(f"{top}/@home/notes.txt", "w") as f:
                f.write("home\n")
            run(["btrfs", "subvolume", "snapshot", "-r", f"{top}/@home", f"{top}/@home-snap"])
            sid = re.search(
                r"ID (\d+) .* path @$", run(["btrfs", "subvolume", "list", top]).stdout, re.M
            )
            assert sid is not None
            run(["btrfs", "subvolume", "set-default", sid.group(1), top])
        _write_root(root, seed=7)
    with _top(nodes[1], fs) as top:
        tree = _snapshot(top)
    repo = os.path.join(workdir, f"repo-{fs}")
    liferaft("capture", "--repo", repo, "--name", fs, dev)
    identity, features = _identity(dev, nodes), _features(nodes[1], fs)
    return Source(dev, nodes, fs, repo, tree, esp, identity, features)


def _restore(src: Source, target: str, *extra: str) -> float:
    started = time.monotonic()
    liferaft("restore", "--repo", src.repo, "--image", src.fs, "--to", target, "--yes", *extra)
    return time.monotonic() - started


@pytest.mark.parametrize("fs", ["ext4", "xfs", "btrfs"])
def test_restore_onto_a_disk_half_the_size(
    fs: str, loopdisk: Callable[[int], str], workdir: str
) -> None:
    src = _source(loopdisk, workdir, fs)
    small = loopdisk(2 * GIB)
    if fs == "btrfs":
        # btrfs will not give the new one the UUID the original disk still holds
        before = disk_bytes_sha256(small, 0, 2 * GIB)
        proc = liferaft(
            "restore", "--repo", src.repo, "--image", fs, "--to", small, "--yes", check=False
        )
        assert_one_line_error(proc, f"{src.nodes[1]} holds Btrfs", "detach the original disk")
        assert disk_bytes_sha256(small, 0, 2 * GIB) == before
        run(["wipefs", "--all", "--quiet", src.nodes[1]])
    plan = liferaft("restore", "--repo", src.repo, "--image", fs, "--to", small, "--dry-run").stdout
    assert "shrunk from 3.9 GiB" in plan and f"a new {fs} with the same UUID" in plan, plan
    started = time.monotonic()
    proc = liferaft(
        "restore", "--repo", src.repo, "--image", fs, "--to", small, "--yes", "--json", "--verify"
    )
    out = proc.stdout
    TIMES[f"{fs} shrink"] = time.monotonic() - started
    # libfuse 3.14 printed "Ignoring invalid max threads value 4294967295" on
    # the user's terminal when the image's FUSE mount started
    assert "max threads" not in proc.stderr, proc.stderr
    result = json.loads(out)
    # the files copied count as written, the chunks read through the mount as fetched
    assert result["written_bytes"] > 150 * MIB and result["fetched_bytes"] > 150 * MIB, result
    assert result["verified"]  # the ESP against the image, the new root by its own fsck
    nodes = reread_partitions(small, 2)
    fsck_clean(nodes[0], "vfat")
    fsck_clean(nodes[1], fs)
    assert _identity(small, nodes) == src.identity
    assert _features(nodes[1], fs) == src.features
    assert tree_checksums(nodes[0], "vfat") == src.esp
    with _top(nodes[1], fs) as top:
        got = _snapshot(top)
        if fs == "btrfs":
            assert _btrfs_layout(top) == (["@", "@home", "@home-snap"], ["@home-snap"], ["@"])
        sparse = os.lstat(f"{top}/@/sparse.img" if fs == "btrfs" else f"{top}/sparse.img")
        assert sparse.st_blocks * 512 < 64 * MIB  # the holes stayed holes
    assert got == src.tree
    # The same image onto a disk of the original size: block-level (the Btrfs
    # one lost its subvolumes' tree blocks before capture added them to
    # partclone's map), for the time it takes against the shrink.
    full = loopdisk(4 * GIB)
    TIMES[f"{fs} same size"] = _restore(src, full)
    nodes = reread_partitions(full, 2)
    fsck_clean(nodes[1], fs)
    with _top(nodes[1], fs) as top:
        assert _snapshot(top) == src.tree
    print(f"\nrestore seconds: {json.dumps(TIMES)}")


def test_data_larger_than_the_disk_is_refused_target_untouched(
    loopdisk: Callable[[int], str], workdir: str
) -> None:
    dev = loopdisk(1 * GIB)
    nodes = partition_disk(
        dev, "gpt", [PartSpec(64, "vfat", "esp"), PartSpec(None, "ext4", "root")]
    )
    make_fs(nodes[0], "vfat", label="ESP")
    make_fs(nodes[1], "ext4", label="rootfs")
    with (
        mounts.mounted(nodes[1], "ext4", writable=True) as root,
        open(f"{root}/data.bin", "wb") as f,
    ):
        f.write(os.urandom(300 * MIB))
    repo = os.path.join(workdir, "repo-big")
    liferaft("capture", "--repo", repo, "--name", "big", dev)
    target = loopdisk(320 * MIB)
    with open(target, "r+b") as f:
        f.write(os.urandom(MIB))
        f.seek(200 * MIB)
        f.write(os.urandom(MIB))
    before = disk_bytes_sha256(target, 0, 320 * MIB)
    proc = liferaft(
        "restore", "--repo", repo, "--image", "big", "--to", target, "--yes", check=False
    )
    line = assert_one_line_error(
        proc, "partition 2 (ext4) does not fit", "of data", "is left for it"
    )
    assert re.search(r"holds 3\d\d\.\d MiB of data", line), line
    assert disk_bytes_sha256(target, 0, 320 * MIB) == before


def test_verify_of_a_file_level_partition_is_its_fsck(loopdisk: Callable[[int], str]) -> None:
    from rescue_app.engine.filetree import check_filesystem
    from rescue_app.errors import VerifyError

    dev = loopdisk(64 * MIB)
    make_fs(dev, "ext4", label="x")
    check_filesystem(dev, "ext4")
    run(["debugfs", "-w", "-R", "set_bg 0 free_blocks_count 7", dev])  # a wrong count
    with pytest.raises(VerifyError, match=f"e2fsck finds the new ext4 on {dev} unclean"):
        check_filesystem(dev, "ext4")
