"""Clonezilla images beyond partclone savedisk (issue 16): ntfsclone and dd
partition images, saveparts images restored onto partitions the user names,
damaged LVM and LUKS descriptions refused, a network read that breaks midway, and the
TUI opening a Clonezilla image at a URL.

The images are made once per module by Debian's ocs-sr on a loop disk, in
batch mode with a /dev holding only that disk (tests/helpers/devjail.py):
``-q`` (ntfsclone for NTFS; this host has no partimage, so the ext4
partitions go to dd) with zstd in 10 MB volumes, and ``-q2 saveparts`` of two
of its partitions with pigz. LVM and LUKS images cannot be made here (no
device-mapper): their description files are written into a copy of a real
image as ocs-sr writes them (ocs-functions: lvm_vg_dev.list "VG /dev/PV
UUID", <part>-luksHeader.bin).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import zstandard

from rescue_app.engine import restoremark
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.lvmtext import layout
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.devjail import only_devices
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    fsck_clean,
    loop_disk,
    make_fs,
    mounted,
    partition_disk,
    populate,
    tree_checksums,
)

pytestmark = pytest.mark.root

# an lvm_vg0.conf as ocs-sr keeps it (vgcfgbackup's text; tests/test_clonezilla_lvm.py)
LVM_DATA = os.path.join(os.path.dirname(__file__), "data", "clonezilla-lvm")

LAYOUT = [PartSpec(64, "ext4", "root"), PartSpec(96, "ntfs", "win"), PartSpec(None, "ext4", "srv")]
FS = {1: "ext4", 2: "ntfs", 3: "ext4"}
DISK = 360 * MIB


@dataclass
class Images:
    root: str  # the image root (ocs-sr's -or)
    disk: str  # the saved disk's kernel name (loopN)
    files: dict[int, dict[str, str]]  # partition number -> {path: sha256}
    sizes: dict[int, int]  # partition number -> bytes

    def folder(self, name: str) -> str:
        return os.path.join(self.root, name)


def ocs_save(root: str, dev: str, mode: str, name: str, what: str, *options: str) -> str:
    """``ocs-sr savedisk``/``saveparts`` in batch mode: no fsck, no check, no
    encryption, nothing done afterwards."""
    argv = ["ocs-sr", "-b", *options, "-j2", "-sfsck", "-scs", "-senc", "-nogui"]
    argv += ["-p", "true", "-or", root, mode, name, what]
    proc = subprocess.run(
        only_devices(argv, [dev]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
    )
    folder = os.path.join(root, name)
    if proc.returncode != 0 or not os.path.isdir(folder):
        raise AssertionError(f"ocs-sr {mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr}")
    return folder


@pytest.fixture(scope="module")
def cz() -> Iterator[Images]:
    with ExitStack() as stack:
        work = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="liferaft-czparts-", dir="/var/tmp")
        )
        root = os.path.join(work, "partimag")
        os.makedirs(root)
        with loop_disk(DISK, work) as dev:
            nodes = partition_disk(dev, "gpt", LAYOUT)
            files = {}
            for n, fs in FS.items():
                make_fs(nodes[n - 1], fs, label=f"{fs[:4]}{n}")
                # 24 MiB of random data on p3: its dd image comes in 10 MB volumes
                files[n] = populate(nodes[n - 1], fs, seed=40 + n, big_mib=24 if n == 3 else 2)
            sizes = {
                n: int(subprocess.check_output(["blockdev", "--getsize64", nodes[n - 1]]))
                for n in FS
            }
            disk = os.path.basename(dev)
            ocs_save(root, dev, "savedisk", "q-ntfs", disk, "-q", "-z9", "-i", "10")
            ocs_save(root, dev, "saveparts", "parts-gz", f"{disk}p1 {disk}p3", "-q2", "-z1p")
        # Clonezilla before partclone.dd named dd's images <part>.dd-img[.aa]
        # (ocs-functions: dd | compressor | split -b 10MB - <part>.dd-img.):
        # the same bytes as partclone.dd's, under that name
        old = os.path.join(root, "dd-old")
        shutil.copytree(os.path.join(root, "q-ntfs"), old)
        for name in os.listdir(old):
            if ".dd-ptcl-img.gz" in name:
                new = name.replace("-ptcl-img.gz", "-img")
                os.rename(os.path.join(old, name), os.path.join(old, new))
        yield Images(root, disk, files, sizes)


def _nodes(dev: str) -> dict[int, str]:
    reread_partitions(dev, 3, timeout=20)
    return {n: f"{dev}p{n}" for n in FS}


def _check_files(cz: Images, pairs: dict[int, str]) -> None:
    """Saved partition number -> the node it was restored to: fsck clean,
    every file's sha256 equal."""
    for n, node in pairs.items():
        fsck_clean(node, FS[n])
        assert tree_checksums(node, FS[n]) == cz.files[n], f"files differ on {node}"


def _sha(data_chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for c in data_chunks:
        h.update(c)
    return h.hexdigest()


def _volumes(folder: str, base: str) -> list[str]:
    return sorted(
        os.path.join(folder, n) for n in os.listdir(folder) if n == base or n.startswith(base + ".")
    )


def _decompressed(paths: list[str]) -> Iterator[bytes]:
    """The gzip or zstd stream of split volumes, decompressed by the
    compressor's own library (not liferaft's reader)."""
    with open(paths[0], "rb") as f:
        magic = f.read(4)
    cat = subprocess.Popen(["cat", *paths], stdout=subprocess.PIPE)
    assert cat.stdout is not None
    reader: Any
    if magic.startswith(b"\x1f\x8b"):
        reader = gzip.GzipFile(fileobj=cat.stdout)
    else:
        assert magic == b"\x28\xb5\x2f\xfd", magic
        reader = zstandard.ZstdDecompressor().stream_reader(cat.stdout, read_across_frames=True)
    while block := reader.read(4 * MIB):
        yield block
    assert cat.wait() == 0


# -- ntfsclone and dd images --------------------------------------------------------


def test_ntfsclone_and_dd_images_restored(cz: Images, loopdisk, workdir: str) -> None:
    folder = cz.folder("q-ntfs")
    names = os.listdir(folder)
    assert f"{cz.disk}p2.ntfs-img.aa" in names, names  # ntfsclone, not partclone
    # ocs-sr -q saves what ntfsclone cannot with partclone.dd: the raw bytes
    dd3 = _volumes(folder, f"{cz.disk}p3.dd-ptcl-img.gz")
    assert len(dd3) >= 3 and dd3[0].endswith(".aa"), names

    listed = liferaft("images", "--repo", cz.root).stdout
    assert all(f"{n}@" in listed for n in ("q-ntfs", "dd-old", "parts-gz")), listed
    dev = loopdisk(DISK)
    out = liferaft("restore", "--repo", cz.root, "--image", "q-ntfs", "--to", dev, "--yes")
    assert "restored q-ntfs@" in out.stdout, out.stdout + out.stderr
    nodes = _nodes(dev)
    _check_files(cz, nodes)
    # the dd partition's bytes are the stream as gzip itself decompresses it
    dd_sha = _sha(_decompressed(dd3))
    assert disk_bytes_sha256(nodes[3], 0, cz.sizes[3]) == dd_sha
    # an old Clonezilla's dd image (.dd-img.aa, ...): the same
    dev2 = loopdisk(DISK)
    out = liferaft("restore", "--repo", cz.root, "--image", "dd-old", "--to", dev2, "--yes")
    assert "restored dd-old@" in out.stdout, out.stdout + out.stderr
    nodes2 = _nodes(dev2)
    _check_files(cz, nodes2)
    assert disk_bytes_sha256(nodes2[3], 0, cz.sizes[3]) == dd_sha
    # ntfsclone --restore-image of the same stream gives the NTFS volume
    # liferaft wrote (the target was zeros before)
    ref = os.path.join(workdir, "ntfs.raw")
    stream = os.path.join(workdir, "ntfs.img")
    with open(stream, "wb") as f:
        for block in _decompressed(_volumes(folder, f"{cz.disk}p2.ntfs-img")):
            f.write(block)
    subprocess.run(
        ["ntfsclone", "--restore-image", "--overwrite", ref, stream],
        check=True,
        capture_output=True,
    )
    with open(ref, "rb") as f:
        ref_sha = _sha(iter(lambda: f.read(4 * MIB), b""))
    assert disk_bytes_sha256(nodes[2], 0, os.path.getsize(ref)) == ref_sha


def test_damaged_ntfsclone_and_dd_images_refused(cz: Images, loopdisk, workdir: str) -> None:
    dev = loopdisk(DISK)
    zero = disk_bytes_sha256(dev, 0, DISK)

    def damaged(image: str, base: str, cut: bool) -> str:
        root = os.path.join(workdir, f"{image}-{base}-{cut}")
        shutil.copytree(cz.folder(image), os.path.join(root, image))
        vols = _volumes(os.path.join(root, image), f"{cz.disk}{base}")
        if cut:  # the stream cut short inside a volume
            os.truncate(vols[0], os.path.getsize(vols[0]) * 2 // 3)
        else:  # the last volume gone
            os.unlink(vols[-1])
        proc = liferaft(
            "restore", "--repo", root, "--image", image, "--to", dev, "--yes", check=False
        )
        return assert_one_line_error(proc, image, f"{cz.disk}{base.split('.')[0]}")

    damaged("q-ntfs", "p2.ntfs-img", True)
    assert "truncated" in damaged("q-ntfs", "p3.dd-ptcl-img.gz", False)
    assert "truncated" in damaged("dd-old", "p3.dd-img", False)
    damaged("dd-old", "p1.dd-img", True)
    assert disk_bytes_sha256(dev, 0, DISK) == zero, "the target was written"


# -- saveparts: restored onto named partitions -----------------------------------------

TARGET_LAYOUT = [PartSpec(32, "ext4", "keep"), PartSpec(80, None), PartSpec(None, None)]


@dataclass
class Target:
    """A disk to restore partitions onto: its first partition holds files
    that must stay, the other two are the targets."""

    dev: str
    parts: list[str]
    kept: dict[str, str]  # the first partition's files
    table: str  # sfdisk --dump

    def unchanged(self) -> bool:
        return (
            subprocess.check_output(["sfdisk", "--dump", self.dev], text=True) == self.table
            and tree_checksums(self.parts[0], "ext4") == self.kept
        )


def _target(loopdisk, seed: int) -> Target:
    dev = loopdisk(DISK)
    parts = partition_disk(dev, "gpt", TARGET_LAYOUT)
    make_fs(parts[0], "ext4", label="keep")
    kept = populate(parts[0], "ext4", seed=seed)
    return Target(dev, parts, kept, subprocess.check_output(["sfdisk", "--dump", dev], text=True))


def test_saveparts_restored_onto_named_partitions(cz: Images, loopdisk, workdir: str) -> None:
    listed = liferaft("images", "--repo", cz.folder("parts-gz")).stdout
    assert f"partitions {cz.disk}p1, {cz.disk}p3 of {cz.disk} (saveparts)" in listed, listed

    target = _target(loopdisk, 99)
    dev, (t1, t2, t3) = target.dev, target.parts
    before = {n: disk_bytes_sha256(n, 0, 4 * MIB) for n in (t1, t2, t3)}
    root = cz.root

    def restore(*to: str, check: bool = True, extra: tuple[str, ...] = ("--yes",)):
        argv = ["restore", "--repo", root, "--image", "parts-gz", *extra]
        for t in to:
            argv += ["--to", t]
        return liferaft(*argv, check=check)

    # refused in one line, nothing written: a partition too small for the
    # filesystem, a whole disk, a wrong count, a mounted partition
    line = assert_one_line_error(restore(t1, t3, check=False), "smaller than the filesystem")
    assert f"{cz.disk}p1" in line and t1 in line
    assert_one_line_error(restore(dev, check=False), "whole disk", "partitions only")
    assert_one_line_error(restore(t3, check=False), "2 saved partition", "1 target")
    make_fs(t2, "ext4", label="busy")
    with mounted(t2, "ext4"):
        assert_one_line_error(restore(t2, t3, check=False), "refusing", "mounted")
    # the whole-disk plan (what the UI asks for) refuses it in one line too
    from rescue_app.engine import Engine
    from rescue_app.errors import UsageError

    engine = Engine()
    source = engine.open_repository(root)
    with pytest.raises(UsageError, match="saveparts image"):
        engine.plan_restore(source, "parts-gz", [dev])
    assert disk_bytes_sha256(t1, 0, 4 * MIB) == before[t1]
    assert disk_bytes_sha256(t3, 0, 4 * MIB) == before[t3]

    dry = restore(t2, t3, extra=("--dry-run",)).stdout
    assert f"{cz.disk}p1 (ext4" in dry and f"-> partition 2 ({t2}" in dry, dry
    assert f"{cz.disk}p3 (ext4" in dry and f"-> partition 3 ({t3}" in dry, dry
    assert "nothing was written" in dry
    assert disk_bytes_sha256(t3, 0, 4 * MIB) == before[t3]

    out = restore(t2, t3, extra=("--yes", "--verify"))
    assert "restored parts-gz@" in out.stdout and "verified" in out.stdout, out.stdout
    assert "was not grown" in out.stderr, out.stderr
    _check_files(cz, {1: t2, 3: t3})
    # the table and the other partition are as they were
    assert target.unchanged()
    assert disk_bytes_sha256(t1, 0, 4 * MIB) == before[t1]

    # one saved partition by name, onto another partition
    make_fs(t3, "ext4", label="other")
    out = restore(f"{cz.disk}p3={t3}")
    assert f"to {t3}:" in out.stdout, out.stdout
    _check_files(cz, {3: t3})


def test_saveparts_imported_verified_and_restored_from_the_repository(
    cz: Images, loopdisk, workdir: str
) -> None:
    """A saveparts image imported stays one of partitions: used blocks only,
    deduplicated, listed as partitions, verified, restored onto partitions
    from the repository as from its folder, refused onto a whole disk."""
    repo = os.path.join(workdir, "repo")
    out = liferaft("import", "--repo", repo, cz.folder("parts-gz")).stdout
    assert "imported Clonezilla image parts-gz as parts-gz@" in out, out
    (name,) = os.listdir(os.path.join(repo, "images", "parts-gz"))
    doc = json.loads(open(os.path.join(repo, "images", "parts-gz", name)).read())
    assert doc["version"] == 5
    p1, p3 = f"{cz.disk}p1", f"{cz.disk}p3"
    assert [s["name"] for s in doc["partitions_only"]] == [p1, p3]
    (disk,) = doc["disks"]
    assert disk["head"]["length"] == 0 and [p["number"] for p in disk["partitions"]] == [1, 3]
    for part in disk["partitions"]:  # used blocks only: p3 holds 24 MiB of files
        assert part["method"] == "used-blocks"
        assert part["used_bytes"] < cz.sizes[part["number"]] // 2, part["used_bytes"]
    # imported again under another name: every chunk is already there
    out = liferaft("import", "--repo", repo, "--name", "again", cz.folder("parts-gz")).stdout
    assert "(0 of " in out and "as again@" in out, out
    assert "OK" in liferaft("verify", "--repo", repo).stdout
    listed = liferaft("images", "--repo", repo).stdout
    assert f"partitions {p1}, {p3} of disk 1 (saveparts)" in listed, listed

    target = _target(loopdisk, 98)
    dev, (_t1, t2, t3) = target.dev, target.parts
    before = disk_bytes_sha256(dev, 0, DISK)
    # onto a whole disk: refused in one line (its other partitions were not
    # saved; ocs-sr restoreparts writes no table either), nothing written
    proc = liferaft("restore", "--repo", repo, "--image", "parts-gz", "--to", dev, "--yes",
                    check=False)  # fmt: skip
    assert_one_line_error(proc, "whole disk", "partitions only")
    from rescue_app.engine import Engine
    from rescue_app.errors import UsageError

    engine = Engine()
    with pytest.raises(UsageError, match="saveparts image"):
        engine.plan_restore(engine.open_repository(repo), "parts-gz", [dev])
    assert disk_bytes_sha256(dev, 0, DISK) == before

    argv = ["restore", "--repo", repo, "--image", "parts-gz", "--to", t2, "--to", t3]
    dry = liferaft(*argv, "--dry-run").stdout
    assert f"{p1} (ext4" in dry and f"-> partition 2 ({t2}" in dry, dry
    assert disk_bytes_sha256(dev, 0, DISK) == before
    done = liferaft(*argv, "--yes", "--verify").stdout
    assert "restored parts-gz@" in done and "verified" in done, done
    _check_files(cz, {1: t2, 3: t3})
    assert target.unchanged()
    # one saved partition by name, from the second import
    make_fs(t3, "ext4", label="other")
    done = liferaft("restore", "--repo", repo, "--image", "again", "--to", f"{p3}={t3}",
                    "--yes").stdout  # fmt: skip
    assert f"to {t3}:" in done, done
    _check_files(cz, {3: t3})


def test_a_damaged_saveparts_image_is_not_imported(cz: Images, workdir: str) -> None:
    """One byte of partclone data changed inside a valid gzip stream: the
    import stops on partclone's checksum, naming the partition, and the
    repository holds no image."""
    folder = os.path.join(workdir, "flipped", "parts-gz")
    shutil.copytree(cz.folder("parts-gz"), folder)
    vols = _volumes(folder, f"{cz.disk}p3.ext4-ptcl-img.gz")
    data = bytearray(b"".join(_decompressed(vols)))
    data[len(data) // 2] ^= 0x40
    for v in vols:
        os.unlink(v)
    with open(os.path.join(folder, f"{cz.disk}p3.ext4-ptcl-img.gz"), "wb") as f:
        f.write(gzip.compress(bytes(data), compresslevel=1))
    repo = os.path.join(workdir, "repo")
    proc = liferaft("import", "--repo", repo, folder, check=False)
    assert_one_line_error(proc, "checksum mismatch", f"{cz.disk}p3")
    assert not os.path.exists(os.path.join(repo, "images", "parts-gz"))
    assert "parts-gz" not in liferaft("images", "--repo", repo, check=False).stdout


def test_tui_restores_saveparts_onto_a_chosen_partition(cz: Images, loopdisk) -> None:
    """The TUI offers a saveparts image's partitions a target partition each
    (one left out here), plans with --grow's checkbox, and the confirmation
    names the partition and its disk (model or loop file, serial, size)."""
    import asyncio

    from textual.widgets import Checkbox, Select

    from rescue_app.engine import Engine
    from rescue_app.tui.app import LiferaftApp
    from rescue_app.tui.matching import candidate_partitions
    from rescue_app.tui.screens.confirm import ConfirmEraseModal
    from rescue_app.tui.screens.parttarget import PartitionTargetScreen
    from tests.tui.pilot_helpers import (
        confirm_restore,
        screen_text,
        settle,
        type_source,
        wait_for_screen,
        wait_until,
    )

    dev = loopdisk(DISK)
    t1, t2, t3 = partition_disk(dev, "gpt", TARGET_LAYOUT)
    make_fs(t1, "ext4", label="keep")
    kept = populate(t1, "ext4", seed=98)
    table = subprocess.check_output(["sfdisk", "--dump", dev], text=True)
    confirm_text: list[str] = []

    async def body() -> None:
        app = LiferaftApp(Engine(), media_filter=lambda d: getattr(d, "path", None) == dev)
        async with app.run_test(size=(100, 30)) as pilot:
            await type_source(pilot, "r", cz.folder("parts-gz"))
            await settle(pilot)
            await pilot.press("enter")  # the image
            screen = await wait_for_screen(pilot, PartitionTargetScreen)
            await wait_until(pilot, lambda: bool(screen.query("#part-1")), "offered", 300)
            await settle(pilot)
            text = screen_text(pilot)
            assert f"Saved {cz.disk}p1 (ext4" in text and f"Saved {cz.disk}p3 (ext4" in text
            offered = [p.path for _, p in candidate_partitions(app.disks)]
            assert t3 in offered and t1 in offered, offered
            screen.query_one("#part-1", Select).value = t3  # p3 onto t3; p1 left out
            await settle(pilot)
            assert screen.plan is not None, screen_text(pilot)
            assert "left unused" in screen.plan.render()
            screen.query_one("#grow", Checkbox).value = True
            await settle(pilot)
            assert screen.plan is not None and screen.plan.grow, screen_text(pilot)
            assert "grows by" in screen.plan.render(), screen.plan.render()
            # the confirmation names the partition and its disk
            await pilot.press("ctrl+n")
            modal = await wait_for_screen(pilot, ConfirmEraseModal)
            confirm_text.append(screen_text(pilot))
            await pilot.press("escape")
            await settle(pilot)
            assert not isinstance(app.screen, ConfirmEraseModal) and modal.paths == [t3]
            summary = await confirm_restore(pilot, os.path.basename(t3))
            assert "Done." in summary and "read back and matches" in summary, summary

    asyncio.run(body())
    shown = " ".join(confirm_text[0].split())
    assert f"ERASES partition 3 ({t3}" in shown and "of loop over" in shown, shown
    assert f"({dev})" in shown and "partition tables and the other partitions stay" in shown
    _check_files(cz, {3: t3})
    # grown into the whole partition
    size = int(subprocess.check_output(["blockdev", "--getsize64", t3]))
    info = subprocess.check_output(["dumpe2fs", "-h", t3], text=True, stderr=subprocess.DEVNULL)
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    count, block = int(fields["Block count"]), int(fields["Block size"])
    assert count * block > size - 4 * MIB, (count, block, size)
    assert subprocess.check_output(["sfdisk", "--dump", dev], text=True) == table
    assert tree_checksums(t1, "ext4") == kept


# -- LVM and LUKS as Clonezilla describes them --------------------------------------------


def test_damaged_lvm_and_luks_descriptions_are_refused_in_one_line(
    cz: Images, loopdisk, workdir: str
) -> None:
    """LVM descriptions liferaft cannot restore from (a missing or damaged
    lvm_<vg>.conf, a RAID LV, a thin pool described wrongly) and a LUKS header
    luks-dev.list does not name: one line naming what, nothing written."""
    dev = loopdisk(DISK)
    zero = disk_bytes_sha256(dev, 0, 4 * MIB)
    with open(os.path.join(LVM_DATA, "lvm_vg0.conf")) as f:
        real = f.read()
    pv = layout(real).pvs[0].uuid
    lists = {
        "lvm_vg_dev.list": f"vg0 /dev/{cz.disk}p3 {pv}\n",
        "lvm_logv.list": "/dev/vg0/root Linux rev 1.0 ext4 filesystem data\n",
    }
    raid = real.replace('type = "striped"', 'type = "raid1"', 1)
    # a thin pool whose segment lacks its metadata LV
    thin = real.replace('type = "striped"', 'type = "thin-pool"', 1)
    cases: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
        "lvm-missing": (lists, ("lvm_vg0.conf", "missing")),
        "lvm-damaged": (
            {**lists, "lvm_vg0.conf": "vg0 {\n}\n"},
            ("lvm_vg0.conf", "no extent_size"),
        ),
        "lvm-raid": ({**lists, "lvm_vg0.conf": raid}, ("vg0 has raid1", "linear, striped")),
        "lvm-thin": ({**lists, "lvm_vg0.conf": thin}, ("lvm_vg0.conf", "thin pool")),
        "luks": ({f"{cz.disk}p2-luksHeader.bin": "LUKS\xba\xbe"}, ("LUKS", f"{cz.disk}p2")),
    }
    for tag, (extra, needles) in cases.items():
        root = os.path.join(workdir, tag)
        shutil.copytree(cz.folder("q-ntfs"), os.path.join(root, "q-ntfs"))
        for name, text in extra.items():
            with open(os.path.join(root, "q-ntfs", name), "w") as f:
                f.write(text)
        proc = liferaft(
            "restore", "--repo", root, "--image", "q-ntfs", "--to", dev, "--yes", check=False
        )
        assert_one_line_error(proc, *needles)
        # listing says why too, and goes on
        listed = liferaft("images", "--repo", root, check=False)
        assert tag.split("-")[0].upper() in (listed.stdout + listed.stderr).upper()
    assert disk_bytes_sha256(dev, 0, 4 * MIB) == zero


# -- a network read that breaks midway ---------------------------------------------------


class _CuttingHandler(SimpleHTTPRequestHandler):
    """Serves a folder (with its listing pages); the ``cut_at``-th GET of a
    file whose name contains ``cut_name`` sends half of it and hangs up."""

    cut_name = ""
    cut_at = 0
    gets: dict[str, int] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.cut_name and self.cut_name in self.path:
            n = self.gets[self.path] = self.gets.get(self.path, 0) + 1
            if n == self.cut_at:
                path = self.translate_path(self.path)
                size = os.path.getsize(path)
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with open(path, "rb") as f:
                    self.wfile.write(f.read(size // 2))
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
        super().do_GET()


@contextlib.contextmanager
def _cutting_server(directory: str, cut_name: str, cut_at: int) -> Iterator[int]:
    handler = type(
        "Handler", (_CuttingHandler,), {"cut_name": cut_name, "cut_at": cut_at, "gets": {}}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_network_read_that_breaks_midway(cz: Images, loopdisk) -> None:
    """Over HTTP the image is read twice: a break in the check pass writes
    nothing; a break in the write pass leaves the disk marked incomplete.
    Both are one line."""
    dev = loopdisk(DISK)
    zero = disk_bytes_sha256(dev, 0, DISK)
    vol = f"{cz.disk}p3.dd-ptcl-img.gz.ab"
    for cut_at, written in ((1, False), (2, True)):
        with _cutting_server(cz.root, vol, cut_at) as port:
            url = f"http://127.0.0.1:{port}/"
            proc = liferaft(
                "restore", "--repo", url, "--image", "q-ntfs", "--to", dev, "--yes", check=False
            )
        line = assert_one_line_error(proc, vol)
        if not written:
            assert disk_bytes_sha256(dev, 0, DISK) == zero, "a broken check pass wrote"
        else:
            mark = restoremark.read(dev)
            assert mark and "q-ntfs" in mark, (mark, line)
            disks = liferaft("disks").stdout
            assert "incomplete restore of q-ntfs" in disks, disks
    # the next full restore clears the mark
    liferaft("restore", "--repo", cz.root, "--image", "q-ntfs", "--to", dev, "--yes")
    assert restoremark.read(dev) is None


# -- the TUI: a Clonezilla image at a URL --------------------------------------------------


def test_tui_restores_a_clonezilla_image_from_a_url(cz: Images, loopdisk, workdir: str) -> None:
    import asyncio

    from textual.widgets import Select

    from rescue_app.engine import Engine
    from rescue_app.tui.app import LiferaftApp
    from tests.stores.serverkit import Nginx
    from tests.tui.pilot_helpers import (
        confirm_restore,
        open_target,
        screen_text,
        settle,
        wait_until,
    )

    target = loopdisk(DISK)
    with Nginx(os.path.dirname(cz.root), os.path.join(workdir, "nginx"), autoindex=True) as web:
        url = f"http://127.0.0.1:{web.port}/{os.path.basename(cz.root)}/q-ntfs/"

        async def body() -> None:
            app = LiferaftApp(Engine(), media_filter=lambda d: getattr(d, "path", None) == target)
            async with app.run_test(size=(80, 24)) as pilot:
                screen = await open_target(pilot, url)
                # (the image is read whole over HTTP before disks are offered)
                await wait_until(pilot, lambda: bool(screen.query("#target-0")), "read", 600)
                screen.query_one("#target-0", Select).value = target
                await settle(pilot)
                assert screen.plan is not None, screen_text(pilot)
                assert "q-ntfs@" in screen_text(pilot)
                assert "Done." in await confirm_restore(pilot, target)

        asyncio.run(body())
    _check_files(cz, _nodes(target))
