"""Real disks for tests: loop devices over sparse files, partitions, filesystems, trees.

Everything here makes and cleans up its own devices; nothing touches a disk the
test did not create. The host kernel mounts ext*/xfs/btrfs but not vfat, ntfs
or exfat, so those go through mtools (vfat) and FUSE (ntfs-3g, exfat-fuse).

    loop_disk(size_bytes, directory) -> context manager yielding "/dev/loopN"
    partition_disk(dev, label, parts) -> list of partition paths
    make_fs(part, fstype, label=None)
    populate(part, fstype, seed, n_files=12, big_mib=3) -> {relative path: sha256}
    tree_checksums(part, fstype) -> {relative path: sha256}
    fsck_clean(part, fstype)          # AssertionError with the checker's output
    disk_bytes_sha256(dev, start, length) -> hex digest
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rescue_app.engine import mounts
from rescue_app.engine.kernel import reread_partitions
from rescue_app.run import run

MIB = 1024 * 1024
# mtools refuses partitions whose size is not a whole number of "tracks".
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
MTOOLS_UTF8 = {**MTOOLS_ENV, "LC_ALL": "C.UTF-8"}
FSTYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "ntfs", "exfat", "swap")
KERNEL_FS = ("ext4", "ext3", "ext2", "xfs", "btrfs")
# parted's fs-type hints (they only set the partition type code).
_PARTED_FS = {"vfat": "fat32", "swap": "linux-swap", "exfat": "ntfs", "ntfs": "ntfs"}


@dataclass(frozen=True)
class PartSpec:
    size_mib: int | None  # None: the rest of the disk (or of the extended partition)
    fs: str | None = None  # hint for the partition type code
    name: str | None = None  # GPT partition name
    kind: str = "primary"  # msdos: primary, extended or logical


# ---------------------------------------------------------------- loop devices


def _ours(dev: str) -> re.Pattern[str]:
    """Matches dev and its partitions (loop1, loop1p2) but not loop10."""
    return re.compile(re.escape(dev) + r"(p\d+)?$")


def _mounts_of(dev: str) -> list[str]:
    """Mount points of dev and its partitions, deepest first."""
    ours = _ours(dev)
    points = []
    with open("/proc/self/mounts") as f:
        for line in f:
            source, point = line.split()[:2]
            if ours.match(source):
                points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return sorted(points, key=len, reverse=True)


def _release(dev: str) -> None:
    for point in _mounts_of(dev):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    with open("/proc/swaps") as f:
        for line in f.readlines()[1:]:
            swap = line.split()[0]
            if _ours(dev).match(swap):
                subprocess.run(["swapoff", swap], check=False, capture_output=True)


@contextlib.contextmanager
def loop_disk(size_bytes: int, directory: str) -> Iterator[str]:
    """A loop device over a sparse file, with partition scanning; always detached."""
    fd, image = tempfile.mkstemp(prefix="disk-", suffix=".img", dir=directory)
    dev = None
    try:
        os.ftruncate(fd, size_bytes)
        os.close(fd)
        dev = run(["losetup", "-f", "--show", "-P", image]).stdout.strip()
        yield dev
    finally:
        if dev:
            _release(dev)
            for _ in range(50):
                proc = subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
                if proc.returncode == 0:
                    break
                time.sleep(0.1)
        with contextlib.suppress(OSError):
            os.unlink(image)


# ---------------------------------------------------------------- partitions


def partition_disk(dev: str, label: str, parts: list[PartSpec]) -> list[str]:
    """Write a fresh table with ``parts`` (1 MiB aligned) and wait for the nodes.

    For msdos, an extended partition takes ``kind="extended"`` and the logical
    ones after it ``kind="logical"``; their sizes count inside the extended one.
    Returns the partition paths in number order (the extended one included).
    """
    if label not in ("gpt", "msdos"):
        raise ValueError(f"label must be gpt or msdos, not {label}")
    sectors = Path(f"/sys/class/block/{os.path.basename(dev)}/size").read_text()
    disk_mib = int(sectors) * 512 // MIB
    script = ["mklabel", label]
    cursor = 1  # MiB; the first MiB holds the table
    ext_end = None
    for index, spec in enumerate(parts, 1):
        if spec.kind == "logical":
            cursor += 1  # room for the EBR in front of each logical partition
            limit = ext_end if ext_end is not None else disk_mib - 1
        else:
            if ext_end is not None:
                cursor = ext_end
            limit = disk_mib - 1  # GPT keeps a backup table in the last sectors
        end = limit if spec.size_mib is None else cursor + spec.size_mib
        start = f"{cursor}MiB"
        if label == "gpt":
            fs = _PARTED_FS.get(spec.fs or "", spec.fs or "ext4")
            script += ["mkpart", spec.name or f"part{index}", fs, start, f"{end}MiB"]
        elif spec.kind == "extended":
            script += ["mkpart", "extended", start, f"{end}MiB"]
            ext_end = end
            end = cursor  # logical partitions start inside it
        else:
            fs = _PARTED_FS.get(spec.fs or "", spec.fs or "ext4")
            script += ["mkpart", spec.kind, fs, start, f"{end}MiB"]
        cursor = end
    run(["parted", "-s", "-a", "optimal", dev, "--", *script])
    return reread_partitions(dev, len(parts), timeout=20)


# ---------------------------------------------------------------- filesystems


def make_fs(part: str, fstype: str, label: str | None = None) -> None:
    """A fresh filesystem of ``fstype`` (one of FSTYPES) on ``part``."""
    lab: list[str]
    if fstype in ("ext4", "ext3", "ext2"):
        lab = ["-L", label] if label else []
        run([f"mkfs.{fstype}", "-q", "-F", *lab, part])
    elif fstype == "xfs":  # needs >= 300 MiB
        lab = ["-L", label] if label else []
        run(["mkfs.xfs", "-q", "-f", *lab, part])
    elif fstype == "btrfs":
        lab = ["-L", label] if label else []
        run(["mkfs.btrfs", "-q", "-f", *lab, part])
    elif fstype == "vfat":
        lab = ["-n", label] if label else []
        run(["mkfs.vfat", *lab, part])
    elif fstype == "ntfs":
        lab = ["-L", label] if label else []
        run(["mkfs.ntfs", "-Q", "-F", *lab, part])
    elif fstype == "exfat":
        lab = ["-L", label] if label else []
        run(["mkfs.exfat", *lab, part])
    elif fstype == "swap":
        lab = ["-L", label] if label else []
        run(["mkswap", *lab, part])
    else:
        raise ValueError(f"unknown fstype {fstype}")


@contextlib.contextmanager
def mounted(part: str, fstype: str, *, read_only: bool = False) -> Iterator[str]:
    """Mount ``part`` on a temporary directory (kernel or FUSE); always unmounted."""
    if fstype == "vfat":
        raise ValueError("the host kernel has no vfat; use mtools")
    if fstype not in (*KERNEL_FS, "ntfs", "exfat"):
        raise ValueError(f"cannot mount {fstype}")
    point = tempfile.mkdtemp(prefix="diskkit-mnt-")
    try:
        # The product's own mount (options, FUSE drivers); the umount below is
        # the tests' own: it waits for FUSE to flush instead of detaching lazily,
        # so what a test reads from the device afterwards is complete.
        mounts.mount(
            part, point, fstype=fstype, options=mounts.options_for(fstype, writable=not read_only)
        )
        try:
            yield point
        finally:
            os.sync()
            _umount(point)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(point)


def _umount(point: str) -> None:
    # FUSE daemons may still be flushing right after the last write; retry briefly.
    for _ in range(50):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.1)
    run(["umount", point])


# ---------------------------------------------------------------- trees


def _tree_spec(seed: int, n_files: int, big_mib: int) -> dict[str, bytes]:
    """Deterministic file contents; names fit 8.3-less vfat and are case-distinct."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {
        "empty.txt": b"",
        "name with spaces.txt": f"seed {seed}\n".encode(),
        "docs/readme.txt": "".join(f"line {i} of seed {seed}\n" for i in range(500)).encode(),
        "data/big-random.bin": rng.randbytes(big_mib * MIB),
        "data/big-zeros-then-random.bin": bytes(MIB) + rng.randbytes(MIB // 2),
    }
    dirs = ["", "docs", "data", "deep/a/b/c", "deep/a/other"]
    for i in range(n_files):
        folder = dirs[i % len(dirs)]
        name = f"file-{i:03d}" + (".txt" if i % 2 else ".bin")
        if i % 2:
            body = "".join(f"{rng.random():.17f}\n" for _ in range(rng.randint(1, 400))).encode()
        else:
            body = rng.randbytes(rng.randint(1, 200_000))
        files[os.path.join(folder, name)] = body
    return files


def _write_tree(root: str, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)


def _hash_tree(root: str) -> dict[str, str]:
    sums = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel.startswith("lost+found") or rel.startswith("System Volume Information"):
                continue
            with open(path, "rb") as f:
                sums[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return sums


def populate(
    part: str, fstype: str, seed: int, n_files: int = 12, big_mib: int = 3
) -> dict[str, str]:
    """Write a deterministic tree of files on ``part``; returns {relative path: sha256}."""
    files = _tree_spec(seed, n_files, big_mib)
    expected = {rel: hashlib.sha256(body).hexdigest() for rel, body in files.items()}
    if fstype == "vfat":
        with tempfile.TemporaryDirectory(prefix="diskkit-tree-") as src:
            _write_tree(src, files)
            names = [os.path.join(src, n) for n in sorted(os.listdir(src))]
            # -s recursive, -p keep attributes, -m keep times, -D o overwrite clashes
            run(["mcopy", "-s", "-p", "-m", "-D", "o", "-i", part, *names, "::/"], env=MTOOLS_ENV)
    else:
        with mounted(part, fstype) as point:
            _write_tree(point, files)
    return expected


def fat_attribute_listing(part: str) -> list[str]:
    """Every entry of the FAT on ``part`` with its DOS attributes, as
    ``mattrib -/`` lists them (names in UTF-8), by path (not in the order
    of the folders' entries, which a copy may change)."""
    lines = run(["mattrib", "-/", "-i", part, "::/"], env=MTOOLS_UTF8).stdout.splitlines()
    return sorted(lines, key=lambda line: line.partition("::/")[2])


def tree_checksums(part: str, fstype: str) -> dict[str, str]:
    """{relative path: sha256} of every file on ``part``, read without changing it."""
    if fstype == "vfat":
        with tempfile.TemporaryDirectory(prefix="diskkit-read-") as out:
            proc = run(
                ["mcopy", "-s", "-n", "-i", part, "::/*", out + "/"], env=MTOOLS_UTF8, check=False
            )  # (UTF-8: in the C locale mtools gives a non-ASCII name as "_")
            # An empty root makes "::/*" match nothing, which mcopy calls an error.
            if proc.returncode != 0 and not (os.listdir(out) == [] and "not found" in proc.stderr):
                raise AssertionError(f"mcopy could not read {part}: {proc.stderr.strip()}")
            return _hash_tree(out)
    with mounted(part, fstype, read_only=True) as point:
        return _hash_tree(point)


# ---------------------------------------------------------------- checks


def fsck_clean(part: str, fstype: str) -> None:
    """Run the filesystem's own checker without changing anything; fail loudly if unclean."""
    checkers = {
        "ext4": ["e2fsck", "-f", "-n", part],
        "ext3": ["e2fsck", "-f", "-n", part],
        "ext2": ["e2fsck", "-f", "-n", part],
        "xfs": ["xfs_repair", "-n", part],
        "btrfs": ["btrfs", "check", "--readonly", part],
        "vfat": ["fsck.vfat", "-n", part],
        # ntfsfix has no check-only mode but -n ("no action") which reports and exits.
        "ntfs": ["ntfsfix", "-n", part],
        "exfat": ["fsck.exfat", "-n", part],
        "swap": ["swaplabel", part],
    }
    if fstype not in checkers:
        raise ValueError(f"no checker for {fstype}")
    proc = run(checkers[fstype], check=False)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise AssertionError(f"{checkers[fstype][0]} on {part} ({fstype}) is not clean:\n{output}")
    if fstype == "swap":
        magic = disk_bytes_sha256(part, 4096 - 10, 10)
        if magic != hashlib.sha256(b"SWAPSPACE2").hexdigest():
            raise AssertionError(f"{part} has no swap signature")


def disk_bytes_sha256(dev: str, start: int, length: int) -> str:
    """sha256 of ``length`` bytes of ``dev`` from byte offset ``start``."""
    digest = hashlib.sha256()
    with open(dev, "rb", buffering=0) as f:
        f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(left, 4 * MIB))
            if not block:
                raise AssertionError(f"{dev} ends before byte {start + length}")
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()
