"""Clonezilla images (issue 16): real images made by Debian's ocs-sr on loop
disks, restored directly and through a repository (import), every file's
checksum compared; damaged images refused in one line before any write.

The images are made once per session (ocs-sr takes about a minute each: it
scans every block device of the host). ocs-sr runs in batch mode with its
image root on a temporary folder (-or), so nothing goes to /home/partimag;
it needs no udev. It probes every disk it can see while it looks for its
device, so it runs with a /dev that holds only the loop disk being saved
(tests/helpers/devjail.py): the host's own disks are never opened.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import lz4.frame
import pytest
import xxhash
import zstandard

from rescue_app.engine.clonezilla import (
    parse_blkid_list,
    parse_sfdisk_dump,
)
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.partclone_image import (
    HEADER_V2,
    ClonezillaImageError,
    PartcloneReader,
    bitmap_runs,
    open_decompressed,
    open_image,
    volume_names,
)
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.devjail import only_devices
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    loop_disk,
    make_fs,
    partition_disk,
    populate,
    tree_checksums,
)

GPT_LAYOUT = [
    PartSpec(64, "vfat", "esp"),
    PartSpec(200, "ext4", "root"),
    PartSpec(32, "swap", "swap"),
    PartSpec(None, "xfs", "srv"),
]
GPT_FS = {1: "vfat", 2: "ext4", 3: "swap", 4: "xfs"}
MBR_LAYOUT = [
    PartSpec(120, "ext4"),
    PartSpec(None, None, None, "extended"),
    PartSpec(100, "ntfs", None, "logical"),
    PartSpec(32, "swap", None, "logical"),
    PartSpec(None, "ext4", None, "logical"),
]
MBR_FS = {1: "ext4", 5: "ntfs", 6: "swap", 7: "ext4"}


@dataclass
class CzImage:
    root: str  # the image root (ocs-sr's -or)
    name: str
    folder: str
    disk_size: int
    fs: dict[int, str]  # partition number -> filesystem
    files: dict[int, dict[str, str]]  # partition number -> {path: sha256}
    swap: dict[int, tuple[str, str]]  # partition number -> (UUID, LABEL)
    table_id: str


@dataclass
class CzSet:
    root: str
    gpt: CzImage
    mbr: CzImage
    extra: dict[str, str]  # partclone images made by partclone directly: kind -> path


def _blkid(node: str, tag: str) -> str:
    return subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", tag, node], capture_output=True, text=True
    ).stdout.strip()


def _table_id(dev: str) -> str:
    out = subprocess.run(["sfdisk", "--dump", dev], capture_output=True, text=True).stdout
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("label-id"))


def ocs_savedisk(root: str, name: str, dev: str, *options: str) -> str:
    """``ocs-sr savedisk`` in batch mode: partclone, hidden data after the MBR,
    no fsck, no check, no encryption, nothing done afterwards."""
    argv = ["ocs-sr", "-b", "-q2", "-j2", *options, "-sfsck", "-scs", "-senc", "-nogui"]
    argv += ["-p", "true", "-or", root, "savedisk", name, os.path.basename(dev)]
    # (its /dev holds only this disk: ocs-sr probes every disk it can see)
    proc = subprocess.run(
        only_devices(argv, [dev]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    folder = os.path.join(root, name)
    if proc.returncode != 0 or not os.path.exists(os.path.join(folder, "disk")):
        raise AssertionError(f"ocs-sr savedisk failed:\n{proc.stdout[-3000:]}\n{proc.stderr}")
    return folder


def _make_gpt(stack: ExitStack, work: str, root: str, extra: dict[str, str]) -> CzImage:
    size = 900 * MIB
    dev = stack.enter_context(loop_disk(size, work))
    nodes = partition_disk(dev, "gpt", GPT_LAYOUT)
    files: dict[int, dict[str, str]] = {}
    for n, fs in GPT_FS.items():
        make_fs(nodes[n - 1], fs, label=f"{fs[:4]}{n}")
        if fs != "swap":
            files[n] = populate(nodes[n - 1], fs, seed=n, big_mib=2)
    swap = {3: (_blkid(nodes[2], "UUID"), _blkid(nodes[2], "LABEL"))}
    # The same ext4 as partclone writes it with other options: running CRC32
    # (-K), no checksum (-a0), 7 blocks per checksum (-k7).
    for kind, opts in {"noreseed": ["-K"], "nocs": ["-a0"], "k7": ["-k7"]}.items():
        out = os.path.join(work, f"p2-{kind}.ptcl")
        subprocess.run(
            ["partclone.ext4", "-c", *opts, "-q", "-s", nodes[1], "-O", out, "-L", out + ".log"],
            check=True,
            capture_output=True,
        )
        extra[kind] = out
    folder = ocs_savedisk(root, "gpt-gz", dev, "-z1p", "-i", "0")
    return CzImage(root, "gpt-gz", folder, size, GPT_FS, files, swap, _table_id(dev))


def _make_mbr(stack: ExitStack, work: str, root: str) -> CzImage:
    size = 600 * MIB
    dev = stack.enter_context(loop_disk(size, work))
    nodes = partition_disk(dev, "msdos", MBR_LAYOUT)
    by_number = {1: nodes[0], 5: nodes[2], 6: nodes[3], 7: nodes[4]}
    files: dict[int, dict[str, str]] = {}
    for n, fs in MBR_FS.items():
        make_fs(by_number[n], fs, label=f"{fs[:4]}{n}")
        if fs != "swap":
            # 24 MiB of random data in the first partition: its image is split
            # into 10 MB volumes
            files[n] = populate(by_number[n], fs, seed=10 + n, big_mib=24 if n == 1 else 2)
    swap = {6: (_blkid(by_number[6], "UUID"), _blkid(by_number[6], "LABEL"))}
    folder = ocs_savedisk(root, "mbr-zst", dev, "-z9", "-i", "10")
    return CzImage(root, "mbr-zst", folder, size, MBR_FS, files, swap, _table_id(dev))


@pytest.fixture(scope="session")
def cz() -> Iterator[CzSet]:
    with ExitStack() as stack:
        work = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="liferaft-cz-", dir="/var/tmp")
        )
        root = os.path.join(work, "partimag")
        os.makedirs(root)
        extra: dict[str, str] = {}
        with ExitStack() as sources:  # the source disks go once saved
            gpt = _make_gpt(sources, work, root, extra)
            mbr = _make_mbr(sources, work, root)
        yield CzSet(root, gpt, mbr, extra)


def _nodes(dev: str, numbers: list[int], extended: bool) -> dict[int, str]:
    reread_partitions(dev, len(numbers) + extended, timeout=20)
    return {n: f"{dev}p{n}" for n in numbers}


def check_restored(image: CzImage, dev: str) -> None:
    """fsck clean, every file equal, swap with its UUID and label, table id kept."""
    nodes = _nodes(dev, sorted(image.fs), extended=max(image.fs) > 4)
    for n, fs in image.fs.items():
        fsck_clean(nodes[n], fs)
        if fs == "swap":
            assert (_blkid(nodes[n], "UUID"), _blkid(nodes[n], "LABEL")) == image.swap[n]
        else:
            assert tree_checksums(nodes[n], fs) == image.files[n], f"files differ on {nodes[n]}"
    assert _table_id(dev).lower() == image.table_id.lower()


# -- restore directly --------------------------------------------------------------


@pytest.mark.root
def test_list_and_restore_gpt_gzip_with_grow(cz: CzSet, loopdisk) -> None:
    listed = liferaft("images", "--repo", cz.root).stdout
    rows = [ln for ln in listed.splitlines()[1:] if "@" in ln.split()[0]]  # not "NAME: last good"
    lines = {ln.split()[0].split("@")[0]: ln for ln in rows}
    assert set(lines) == {"gpt-gz", "mbr-zst"}
    assert all(" clonezilla " in ln for ln in lines.values()), listed
    one = liferaft("images", "--repo", cz.gpt.folder).stdout
    assert "gpt-gz@" in one and "mbr-zst" not in one

    dev = loopdisk(1024 * MIB)
    dry = liferaft("restore", "--repo", cz.root, "--image", "gpt-gz", "--to", dev, "--dry-run")
    assert "nothing was written" in dry.stdout and 'xfs "xfs4"' in dry.stdout, dry.stdout
    assert disk_bytes_sha256(dev, 0, 2 * MIB) == disk_bytes_sha256("/dev/zero", 0, 2 * MIB)

    out = liferaft(
        "restore", "--repo", cz.root, "--image", "gpt-gz", "--to", dev, "--grow", "--yes"
    )
    assert "restored gpt-gz@" in out.stdout, out.stdout + out.stderr
    check_restored(cz.gpt, dev)
    # --grow: the last partition (XFS) fills the larger disk
    size = int(open(f"/sys/class/block/{os.path.basename(dev)}p4/size").read()) * 512
    assert size > 1024 * MIB - 400 * MIB


@pytest.mark.root
def test_restore_mbr_logical_ntfs_zstd_split(cz: CzSet, loopdisk) -> None:
    names = os.listdir(cz.mbr.folder)
    split = sorted(n for n in names if ".ext4-ptcl-img.zst." in n and n.startswith(_p1(cz)))
    assert len(split) >= 3 and split[0].endswith(".aa"), names
    assert any(n.endswith("-hidden-data-after-mbr") for n in names)
    dev = loopdisk(cz.mbr.disk_size)
    liferaft("restore", "--repo", cz.root, "--image", "mbr-zst", "--to", dev, "--yes")
    check_restored(cz.mbr, dev)
    # the gap after the MBR (where GRUB keeps its core) came back as saved
    hidden = next(n for n in names if n.endswith("-hidden-data-after-mbr"))
    with open(os.path.join(cz.mbr.folder, hidden), "rb") as f:
        gap = f.read()
    with open(dev, "rb") as f:
        f.seek(512)
        assert f.read(len(gap)) == gap


def _p1(cz: CzSet) -> str:
    with open(os.path.join(cz.mbr.folder, "disk")) as f:
        return f.read().split()[0] + "p1."


# -- import ------------------------------------------------------------------------


@pytest.mark.root
def test_import_then_restore_from_the_repository(cz: CzSet, loopdisk, workdir: str) -> None:
    repo = os.path.join(workdir, "repo")
    out = liferaft("import", "--repo", repo, cz.gpt.folder).stdout
    assert "imported Clonezilla image gpt-gz as gpt-gz@" in out, out
    out = liferaft("import", "--repo", repo, "--name", "old-server", cz.mbr.folder).stdout
    assert "as old-server@" in out
    assert "OK" in liferaft("verify", "--repo", repo).stdout
    listed = liferaft("images", "--repo", repo).stdout
    assert "gpt-gz@" in listed and "old-server@" in listed and " liferaft " in listed
    dev = loopdisk(cz.gpt.disk_size)
    liferaft("restore", "--repo", repo, "--image", "gpt-gz", "--to", dev, "--yes")
    check_restored(cz.gpt, dev)
    dev2 = loopdisk(cz.mbr.disk_size)
    liferaft("restore", "--repo", repo, "--image", "old-server", "--to", dev2, "--yes")
    check_restored(cz.mbr, dev2)


# -- the TUI: a typed folder of Clonezilla images -----------------------------------


@pytest.mark.root
def test_tui_restores_a_clonezilla_image_from_a_typed_folder(cz: CzSet, loopdisk) -> None:
    import asyncio

    from textual.widgets import Select

    from rescue_app.engine import Engine
    from rescue_app.tui.app import LiferaftApp
    from tests.tui.pilot_helpers import confirm_restore, open_target, screen_text, settle

    target = loopdisk(cz.gpt.disk_size)

    async def body() -> None:
        app = LiferaftApp(Engine(), media_filter=lambda d: getattr(d, "path", None) == target)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_target(pilot, cz.gpt.folder)  # one image folder
            screen.query_one("#target-0", Select).value = target
            await settle(pilot)
            assert screen.plan is not None, screen_text(pilot)
            assert "gpt-gz@" in screen_text(pilot) and 'xfs "xfs4"' in screen.plan.render()
            assert "Done." in await confirm_restore(pilot, target)

    asyncio.run(body())
    check_restored(cz.gpt, target)


@pytest.mark.root
def test_tui_media_scan_finds_a_clonezilla_stick(cz: CzSet, loopdisk) -> None:
    """Clonezilla keeps its images at the top of the stick (mounted as
    /home/partimag): the scan offers it, its image list shows the image."""
    import asyncio

    from rescue_app.engine import Engine
    from rescue_app.tui.app import LiferaftApp
    from rescue_app.tui.screens.images import ImagesScreen
    from rescue_app.tui.screens.source import SourceScreen
    from tests.helpers.diskkit import mounted
    from tests.tui.pilot_helpers import screen_text, settle, wait_for_screen

    stick = loopdisk(160 * MIB)
    (part,) = partition_disk(stick, "gpt", [PartSpec(None, "ext4")])
    make_fs(part, "ext4", label="CZSTICK")
    with mounted(part, "ext4") as point:
        shutil.copytree(cz.gpt.folder, os.path.join(point, cz.gpt.name))

    async def body() -> None:
        app = LiferaftApp(Engine(), media_filter=lambda d: getattr(d, "path", None) == stick)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("r")
            await wait_for_screen(pilot, SourceScreen)
            await settle(pilot)
            assert [src.label for src in app.sources] == [f"{part}:/"]
            await pilot.press("enter")
            await wait_for_screen(pilot, ImagesScreen)
            await settle(pilot)
            assert "gpt-gz@" in screen_text(pilot), screen_text(pilot)
            assert "Clonezilla images in " in screen_text(pilot), screen_text(pilot)

    asyncio.run(body())


# -- damaged images ----------------------------------------------------------------


def _copy(image: CzImage, workdir: str, tag: str) -> str:
    root = os.path.join(workdir, tag)
    shutil.copytree(image.folder, os.path.join(root, image.name))
    return root


def _ptcl(folder: str, part_suffix: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if f"{part_suffix}." in n and "-ptcl-img" in n)


@pytest.mark.root
def test_damaged_images_are_refused_in_one_line_and_the_target_untouched(
    cz: CzSet, loopdisk, workdir: str
) -> None:
    dev = loopdisk(cz.mbr.disk_size)
    zero = disk_bytes_sha256(dev, 0, cz.mbr.disk_size)
    disk = open(os.path.join(cz.mbr.folder, "disk")).read().split()[0]

    def refused(root: str, *needles: str) -> str:
        proc = liferaft(
            "restore", "--repo", root, "--image", "mbr-zst", "--to", dev, "--yes", check=False
        )
        return assert_one_line_error(proc, *needles)

    # 1. one byte of the data changed inside a valid zstd stream: partclone's
    #    CRC32 catches it, and the line names image, partition and block
    root = _copy(cz.mbr, workdir, "flipped")
    folder = os.path.join(root, "mbr-zst")
    vols = _ptcl(folder, f"{disk}p7")
    blob = b"".join(open(os.path.join(folder, v), "rb").read() for v in vols)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
    data = bytearray(reader.readall())
    data[len(data) // 2] ^= 0x40
    for v in vols:
        os.unlink(os.path.join(folder, v))
    base = vols[0].removesuffix(".aa")
    with open(os.path.join(folder, base), "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(bytes(data)))
    line = refused(root, "mbr-zst", f"{disk}p7", "checksum mismatch", "block")
    assert "nothing" in line or "damaged" in line
    # import refuses it too and leaves no image behind
    repo = os.path.join(workdir, "repo-flipped")
    proc = liferaft("import", "--repo", repo, folder, check=False)
    assert_one_line_error(proc, "checksum mismatch", f"{disk}p7")
    assert not os.path.exists(os.path.join(repo, "images", "mbr-zst"))

    # 2. a split volume missing in the middle
    root = _copy(cz.mbr, workdir, "gap")
    folder = os.path.join(root, "mbr-zst")
    vols = _ptcl(folder, f"{disk}p1")
    os.unlink(os.path.join(folder, vols[1]))
    refused(root, vols[1], "missing")

    # 3. the last volume missing: the stream ends early
    root = _copy(cz.mbr, workdir, "short")
    folder = os.path.join(root, "mbr-zst")
    vols = _ptcl(folder, f"{disk}p1")
    os.unlink(os.path.join(folder, vols[-1]))
    refused(root, f"{disk}p1", "ends early")

    # 4. a truncated single-file image
    root = _copy(cz.mbr, workdir, "cut")
    folder = os.path.join(root, "mbr-zst")
    (img,) = _ptcl(folder, f"{disk}p5")
    os.truncate(os.path.join(folder, img), os.path.getsize(os.path.join(folder, img)) // 2)
    refused(root, f"{disk}p5")

    # 5. a compression liferaft does not read (lzop's signature)
    root = _copy(cz.mbr, workdir, "lzo")
    folder = os.path.join(root, "mbr-zst")
    (img,) = _ptcl(folder, f"{disk}p5")
    with open(os.path.join(folder, img), "wb") as f:
        f.write(b"\x89LZO\x00\r\n\x1a\n" + bytes(4096))
    refused(root, "unsupported compression")

    # 6. a byte flipped in the compressed file itself
    root = _copy(cz.mbr, workdir, "zbyte")
    folder = os.path.join(root, "mbr-zst")
    (img,) = _ptcl(folder, f"{disk}p5")
    path = os.path.join(folder, img)
    with open(path, "r+b") as rw:
        rw.seek(os.path.getsize(path) // 2)
        b = rw.read(1)
        rw.seek(-1, os.SEEK_CUR)
        rw.write(bytes([b[0] ^ 0xFF]))
    refused(root, f"{disk}p5")

    # 7. a partition image in partclone's old format 0001 (old Clonezilla)
    root = _copy(cz.mbr, workdir, "v1")
    folder = os.path.join(root, "mbr-zst")
    (img,) = _ptcl(folder, f"{disk}p5")
    with open(os.path.join(folder, img), "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(partclone_v1()))
    refused(root, img.removesuffix(".aa"), "format 0001", "reads format 0002 only")

    assert disk_bytes_sha256(dev, 0, cz.mbr.disk_size) == zero, "the target was written"


# -- the partclone reader: every compression, every checksum mode --------------------


def _blocks(stream: object, where: str) -> tuple[list[tuple[int, int]], str]:
    reader = PartcloneReader(stream, where)  # type: ignore[arg-type]
    digest = xxhash.xxh3_128()
    blocks = 0
    for strip in reader.strips():
        # (strips differ with blocks per checksum; the blocks they hold do not)
        assert sum(n for _, n in strip.runs) * reader.header.block_size == len(strip.data)
        blocks += sum(n for _, n in strip.runs)
        digest.update(strip.data)
    assert blocks == reader.header.used_blocks
    reader.close()
    return reader.runs, digest.hexdigest()


def _from_file(work: str, name: str, data: bytes) -> tuple[list, str]:
    out = os.path.join(work, name)
    with open(out, "wb") as f:
        f.write(data)
    stream, _kind = open_decompressed([out], name)
    return _blocks(stream, name)


def _as_xxh64(raw: bytes, reseed: bool) -> bytes:
    """The CRC32 image ``raw`` rewritten with XXH64 checksums, as partclone
    >= 0.3.2x writes them (this host's partclone 0.3.23 writes CRC32 only)."""
    h = bytearray(raw[:HEADER_V2])
    total, per = struct.unpack_from("<Q", h, 60)[0], struct.unpack_from("<I", h, 100)[0]
    used, bs = struct.unpack_from("<Q", h, 76)[0], struct.unpack_from("<I", h, 84)[0]
    struct.pack_into("<HH", h, 96, 0x30, 8)
    h[104] = 1 if reseed else 0
    struct.pack_into("<I", h, 106, zlib.crc32(bytes(h[:106])) ^ 0xFFFFFFFF)
    pos = HEADER_V2 + (total + 7) // 8 + 4
    out = bytearray(h) + raw[HEADER_V2:pos]
    state = xxhash.xxh64(seed=0)
    done = 0
    while done < used:
        k = min(per, used - done)
        strip = raw[pos : pos + k * bs]
        pos += k * bs + 4
        if reseed:
            state.reset()
        state.update(strip)
        out += strip + struct.pack("<Q", state.intdigest())
        done += k
    return bytes(out)


@pytest.mark.root
def test_every_compression_and_checksum_mode_reads_the_same_blocks(cz: CzSet, workdir: str) -> None:
    folder = cz.gpt.folder
    disk = open(os.path.join(folder, "disk")).read().split()[0]
    (img,) = _ptcl(folder, f"{disk}p2")
    with gzip.open(os.path.join(folder, img)) as f:
        raw = f.read()
    want = _from_file(workdir, "plain", raw)
    half = len(raw) // 2
    variants = {
        "gzip-members": gzip.compress(raw[:half]) + gzip.compress(raw[half:]),
        "zstd-frames": zstandard.ZstdCompressor().compress(raw[:half])
        + zstandard.ZstdCompressor().compress(raw[half:]),
        "xz": lzma.compress(raw),
        "lzma": lzma.compress(raw, format=lzma.FORMAT_ALONE),
        "bzip2": bz2.compress(raw),
        "lz4": lz4.frame.compress(raw),
    }
    for name, data in variants.items():
        assert _from_file(workdir, name, data) == want, name
    # split volumes: the same bytes cut anywhere, read as one stream
    z = zstandard.ZstdCompressor().compress(raw)
    base = os.path.join(workdir, "sdz1.ext4-ptcl-img.zst")
    step = len(z) // 5 + 1
    for i, at in enumerate(range(0, len(z), step)):
        with open(f"{base}.a{chr(ord('a') + i)}", "wb") as f:
            f.write(z[at : at + step])
    names = volume_names(sorted(os.listdir(workdir)), os.path.basename(base))
    stream, _ = open_decompressed([os.path.join(workdir, n) for n in names], "split")
    assert _blocks(stream, "split") == want

    # real partclone images of that filesystem with other checksum settings
    # (running CRC32, none, 7 blocks per checksum) hold the same blocks and bytes
    extras = {}
    for kind, path in cz.extra.items():
        with open(path, "rb") as f:
            extras[kind] = _from_file(workdir, kind, f.read())
    assert extras["noreseed"] == extras["nocs"] == extras["k7"] == want
    # XXH64 (reseeded and running), and a flipped byte caught in each mode
    for reseed in (True, False):
        assert _from_file(workdir, f"xxh{reseed}", _as_xxh64(raw, reseed)) == want
    for name, image in {
        "crc32": raw,
        "crc32-running": open(cz.extra["noreseed"], "rb").read(),
        "xxh64": _as_xxh64(raw, True),
    }.items():
        bad = bytearray(image)
        bad[-5000] ^= 1
        with pytest.raises(ClonezillaImageError, match="checksum mismatch in blocks"):
            _from_file(workdir, f"bad-{name}", bytes(bad))


# -- real images of partclone 0.3.47 (XXH64, XXH128): tests/data/partclone -------------

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "partclone")


def _fixture_source() -> bytes:
    lines = "".join(f"line {i:06d} of the partclone fixture, xxhash modes\n" for i in range(20000))
    return (lines.encode() + bytes(256 * 1024))[:1282048]


@pytest.mark.parametrize("name", ["xxh64", "xxh64-running", "xxh128", "crc32-k5"])
def test_checksum_modes_of_a_newer_partclone(name: str, tmp_path) -> None:
    path = os.path.join(FIXTURES, f"{name}.ptcl.gz")
    stream, kind = open_decompressed([path], name)
    reader = PartcloneReader(stream, name)
    data = b"".join(bytes(strip.data) for strip in reader.strips())
    assert kind == "gzip" and reader.runs == [(0, 2504)]
    assert data == _fixture_source()
    # one byte changed in the data: the line names the blocks
    with gzip.open(path) as f:
        raw = bytearray(f.read())
    raw[-3000] ^= 0x01
    bad = tmp_path / "bad.ptcl"
    bad.write_bytes(bytes(raw))
    stream, _ = open_decompressed([str(bad)], f"bad {name}")
    reader = PartcloneReader(stream, f"bad {name}")
    with pytest.raises(ClonezillaImageError, match=r"checksum mismatch in blocks \d+-\d+"):
        for _ in reader.strips():
            pass


def test_a_strip_larger_than_the_memory_bound_is_read_in_pieces(monkeypatch, tmp_path) -> None:
    """Strips bigger than PIECE_BYTES (a large -k) come in pieces; the checksum
    after them is still checked."""
    import rescue_app.engine.partclone_image as pi

    monkeypatch.setattr(pi, "PIECE_BYTES", 3 * 512)  # XXH64 strips are 2048 blocks of 512
    path = os.path.join(FIXTURES, "xxh64.ptcl.gz")
    stream, _ = open_decompressed([path], "xxh64")
    reader = PartcloneReader(stream, "xxh64")
    pieces = list(reader.strips())
    assert max(len(p.data) for p in pieces) == 3 * 512
    assert b"".join(bytes(p.data) for p in pieces) == _fixture_source()
    with gzip.open(path) as f:
        raw = bytearray(f.read())
    raw[-3000] ^= 0x01
    bad = tmp_path / "bad.ptcl"
    bad.write_bytes(bytes(raw))
    stream, _ = open_decompressed([str(bad)], "bad")
    with pytest.raises(ClonezillaImageError, match=r"XXH64 checksum mismatch in blocks 2048-"):
        for _ in PartcloneReader(stream, "bad").strips():
            pass


# -- pure parsing (no root needed) -----------------------------------------------------


@pytest.mark.parametrize(
    ("bitmap", "total", "runs"),
    [
        (b"\x00", 8, []),
        (b"\xff\xff\x01", 17, [(0, 17)]),
        (b"\x0f\xf0", 16, [(0, 4), (12, 4)]),
        (b"\x80\xff\x01\x00\xff", 36, [(7, 10), (32, 4)]),
    ],
)
def test_bitmap_runs(bitmap: bytes, total: int, runs: list) -> None:
    assert bitmap_runs(bitmap, total) == runs


def partclone_v1(blocks: int = 64, block_size: int = 4096) -> bytes:
    """The start of an image as partclone before 0.3.0 wrote it (format
    0001, image.h's image_head_v1, file_system_info_v1, image_options_v1 and
    a byte per block of bitmap): Debian's partclone writes 0002 only."""
    head = b"partclone-image" + b"EXTFS".ljust(15, b"\0") + b"0001" + b"\0\0"
    info = struct.pack("<iQQQ", block_size, blocks * block_size, blocks, blocks // 2)
    bitmap = bytes([1] * (blocks // 2) + [0] * (blocks - blocks // 2))
    return head + info + bytes(4096) + bitmap + b"BiTmAgIc" + bytes(block_size)


def test_a_partclone_v1_image_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "sda1.ext4-ptcl-img.gz"
    path.write_bytes(gzip.compress(partclone_v1()))
    with pytest.raises(ClonezillaImageError) as caught:
        where = f"Clonezilla image old, partition sda1 ({path})"
        open_image([str(path)], str(path), where, lambda name: open(name, "rb"))
    line = str(caught.value)
    assert "\n" not in line and str(path) in line, line
    assert "format 0001" in line and "reads format 0002 only" in line, line


def test_volume_names() -> None:
    names = ["x.ext4-ptcl-img.gz.aa", "x.ext4-ptcl-img.gz.ab", "y.xfs-ptcl-img.zst"]
    assert volume_names(names, "x.ext4-ptcl-img.gz") == names[:2]
    assert volume_names(names, "y.xfs-ptcl-img.zst") == names[2:]
    with pytest.raises(ClonezillaImageError, match=r"x\.ext4-ptcl-img\.gz\.ab is missing"):
        volume_names([names[0], "x.ext4-ptcl-img.gz.ac"], "x.ext4-ptcl-img.gz")


def test_sfdisk_dump_and_blkid_list() -> None:
    dump = """label: dos
label-id: 0x1f2e3d4c
device: /dev/sda
unit: sectors
sector-size: 512

/dev/sda1 : start=        2048, size=      245760, type=83, bootable
/dev/sda2 : start=      247808, size=     1046528, type=5
/dev/sda5 : start=      249856, size=      204800, type=7
"""
    table, entries, ss = parse_sfdisk_dump(dump, "sda")
    assert (table.type, table.id, ss) == ("dos", "0x1f2e3d4c", 512)
    assert [(e.number, e.kind, e.type, e.bootable) for e in entries] == [
        (1, "primary", "83", True),
        (2, "extended", "5", False),
        (5, "logical", "7", False),
    ]
    assert entries[2].start == 249856 * 512
    blkid = parse_blkid_list('/dev/sda1: LABEL="root fs" UUID="ab-cd" TYPE="ext4"\n')
    assert blkid == {"sda1": {"LABEL": "root fs", "UUID": "ab-cd", "TYPE": "ext4"}}


def test_a_folder_of_clonezilla_images_is_never_made_a_repository(tmp_path) -> None:
    """Read-only: a capture or an import into it is one line, nothing written."""
    image = tmp_path / "2024-05-01-img"
    image.mkdir()
    (image / "disk").write_text("sda\n")
    (image / "sda-pt.sf").write_text("label: dos\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for location in (str(tmp_path), str(image)):
        proc = liferaft("capture", "--repo", location, "--name", "x", "/dev/null", check=False)
        assert_one_line_error(proc, "holds Clonezilla images", "only reads")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# -- from every store: HTTP, SFTP, S3 (SMB and NFS are mounted: local folders) ----


@pytest.mark.root
def test_list_restore_and_import_over_http(cz: CzSet, loopdisk, workdir: str) -> None:
    from tests.stores.serverkit import Nginx

    with Nginx(os.path.dirname(cz.root), os.path.join(workdir, "nginx"), autoindex=True) as web:
        root = f"http://127.0.0.1:{web.port}/{os.path.basename(cz.root)}"
        listed = liferaft("images", "--repo", root).stdout
        assert "gpt-gz@" in listed and "mbr-zst@" in listed and " clonezilla " in listed, listed
        dev = loopdisk(cz.gpt.disk_size)
        out = liferaft("restore", "--repo", root, "--image", "gpt-gz", "--to", dev, "--yes")
        assert "restored gpt-gz@" in out.stdout, out.stdout + out.stderr
        check_restored(cz.gpt, dev)
        # one image folder's address; its first partition split in volumes
        repo = os.path.join(workdir, "repo")
        imported = liferaft("import", "--repo", repo, f"{root}/mbr-zst/").stdout
        assert "imported Clonezilla image mbr-zst as mbr-zst@" in imported, imported
        # (the split volumes came over HTTP: one GET each, read as the import goes)
        assert any(f"/mbr-zst/{_p1(cz)}" in ln and " 200 " in ln for ln in web.log_lines()), (
            web.log_lines()
        )
    assert "OK" in liferaft("verify", "--repo", repo).stdout
    dev2 = loopdisk(cz.mbr.disk_size)
    liferaft("restore", "--repo", repo, "--image", "mbr-zst", "--to", dev2, "--yes")
    check_restored(cz.mbr, dev2)


def _list_and_restore(url: str, image: CzImage, loopdisk: Callable[[int], str]) -> None:
    """``url`` lists ``image`` as a Clonezilla image; restored from there, checked."""
    listed = liferaft("images", "--repo", url).stdout
    assert f"{image.name}@" in listed and " clonezilla " in listed, listed
    dev = loopdisk(image.disk_size)
    liferaft("restore", "--repo", url, "--image", image.name, "--to", dev, "--yes")
    check_restored(image, dev)


@pytest.mark.root
def test_restore_over_sftp(cz: CzSet, loopdisk, workdir: str, monkeypatch) -> None:
    from tests.stores.serverkit import sshd

    with sshd(os.path.join(workdir, "sshd")) as server:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
        _list_and_restore(f"sftp://root@127.0.0.1:{server.port}{cz.root}", cz.mbr, loopdisk)


@pytest.mark.root
def test_restore_over_s3(cz: CzSet, loopdisk, workdir: str, monkeypatch) -> None:
    import boto3

    from tests.stores.serverkit import moto_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto_s3(workdir) as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="nas")
        for name in ("gpt-gz",):
            folder = os.path.join(cz.root, name)
            for n in os.listdir(folder):
                s3.upload_file(os.path.join(folder, n), "nas", f"partimag/{name}/{n}")
        _list_and_restore(f"s3://nas/partimag?endpoint={endpoint}", cz.gpt, loopdisk)
