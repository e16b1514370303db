"""A FAT (an EFI system partition) captured file by file and made anew.

A mounted vfat cannot be snapshotted: the online backup reads its files
from the mounted tree (engine/filelevel.py) and the restore makes a FAT with
the same volume ID, label, FAT type and cluster size and copies the files in
with mtools (engine/filetree.py; no mount). The host kernel cannot mount
vfat, so the mounted tree is stood in for by the partition's files copied
out with mtools (what a vfat mount shows: names, folders, contents); the
capture of that tree and everything after it are the engine's and the CLI's
own: the image is committed, `liferaft restore --verify` lays it onto a new
loop disk."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue_app.engine import fatattrs, filelevel
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.filetree import fat_options, read_identity
from rescue_app.engine.keychain import CredentialChain
from rescue_app.engine.manifest import Filesystem, Method
from rescue_app.engine.repository import Repository
from rescue_app.errors import DiskError
from rescue_app.run import run
from tests.enginekit import assert_one_line_error, liferaft
from tests.helpers.diskkit import (
    MIB,
    MTOOLS_UTF8,
    PartSpec,
    fat_attribute_listing,
    fsck_clean,
    make_fs,
    partition_disk,
    populate,
    tree_checksums,
)

VOLUME_ID = "4A1B-2C3D"
LABEL = "EFISYS"


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _boot_sector(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(512)


@pytest.mark.parametrize(
    ("mib", "asked", "expected"),
    [
        (4, [], ("-F", "12", "-S", "512", "-s", "4", "-R", "1", "-f", "2", "-r", "512")),
        (48, ["-F", "16", "-s", "2"],
         ("-F", "16", "-S", "512", "-s", "2", "-R", "2", "-f", "2", "-r", "512")),
        (48, ["-F", "32", "-s", "1", "-R", "16", "-f", "1"],
         ("-F", "32", "-S", "512", "-s", "1", "-R", "16", "-f", "1")),
    ],
)  # fmt: skip
def test_fat_options_read_from_the_boot_sector_make_the_same_fat(
    workdir: str, mib: int, asked: list[str], expected: tuple[str, ...]
) -> None:
    image = os.path.join(workdir, "fat.img")
    with open(image, "wb") as f:
        f.truncate(mib * MIB)
    run(["mkfs.fat", *asked, image])
    assert fat_options(_boot_sector(image)) == expected
    # made again from those options: the same geometry
    again = os.path.join(workdir, "again.img")
    with open(again, "wb") as f:
        f.truncate(mib * MIB)
    run(["mkfs.fat", *expected, again])
    assert fat_options(_boot_sector(again)) == expected


def test_a_damaged_boot_sector_is_one_clear_error() -> None:
    with pytest.raises(DiskError, match="no FAT boot sector"):
        fat_options(bytes(512))
    sector = bytearray(512)
    sector[510:512] = b"\x55\xaa"
    with pytest.raises(DiskError, match="damaged"):
        fat_options(bytes(sector))


@pytest.mark.root
def test_an_esp_captured_file_by_file_restores_with_its_id_label_and_files(
    loopdisk: Callable[[int], str], workdir: str
) -> None:
    src = loopdisk(128 * MIB)
    esp, data = partition_disk(src, "gpt", [PartSpec(48, "vfat", "esp"), PartSpec(None, "ext4")])
    run(["mkfs.fat", "-F", "32", "-s", "1", "-n", LABEL, "-i", VOLUME_ID.replace("-", ""), esp])
    make_fs(data, "ext4")
    populate(esp, "vfat", seed=5, n_files=20, big_mib=2)
    # a name outside ASCII, and DOS attributes a tar archive has no place for
    greeting = os.path.join(workdir, "greeting")
    Path(greeting).write_text("Grüße\n")
    run(["mcopy", "-i", esp, greeting, "::/docs/Grüße.txt"], env=MTOOLS_UTF8)
    for flags, path in [(["+h", "+s"], "data/big-random.bin"), (["+r", "-a"], "docs/Grüße.txt"),
                        (["+h"], "docs")]:  # fmt: skip
        run(["mattrib", "-i", esp, *flags, f"::/{path}"], env=MTOOLS_UTF8)
    attributes = fat_attribute_listing(esp)
    assert "     SH      ::/data/big-random.bin" not in attributes  # (archive stays)
    assert "  A  SH      ::/data/big-random.bin" in attributes, attributes
    assert "       R     ::/docs/Grüße.txt" in attributes, attributes
    expected = tree_checksums(esp, "vfat")
    before = fat_options(_boot_sector(esp))

    repo_path = os.path.join(workdir, "repo")
    assert liferaft("capture", "--repo", repo_path, "--name", "esp", src).returncode == 0
    # what the online backup does for a vfat mounted read-write: its tree, file by file
    tree = os.path.join(workdir, "mounted-esp")
    os.mkdir(tree)
    run(["mcopy", "-s", "-m", "-i", esp, "::/*", tree + "/"], env=MTOOLS_UTF8)
    repo = Repository.open(repo_path, credentials=CredentialChain())
    m = repo.load_manifest("esp")
    stored: list[str] = []

    def store(chunk: bytes) -> str:
        digest = repo.chunk_id(chunk)
        repo.put_chunk(chunk, digest)
        stored.append(digest)
        return digest

    fs = Filesystem("vfat", VOLUME_ID, LABEL)
    assert read_identity(esp, fs).options == before
    chunks, files = filelevel.capture_tree(tree, esp, fs, store, lambda _n, _p: None)
    assert files.files >= 20 and files.options == before and not files.changing
    # The attributes come from FAT_IOCTL_GET_ATTRIBUTES on a mounted vfat; the
    # stand-in folder is not one (none read): mattrib reads the same FAT.
    assert files.fat_attributes == ()
    files = dataclasses.replace(
        files, fat_attributes=fatattrs.to_text(fatattrs.from_image(esp, tree))
    )
    assert files.fat_attributes == ("-HSA data/big-random.bin", "-H-- docs", "R--- docs/Grüße.txt")
    disk = m.disks[0]
    part = dataclasses.replace(
        disk.partitions[0], method=Method.FILES, chunks=tuple(chunks), tree=files,
        used_bytes=files.length, used_map=ExtentMap([]), filesystem=fs,
    )  # fmt: skip
    image_id, _ = repo.new_image_id("espfiles")
    repo.commit_manifest(dataclasses.replace(
        m, name="espfiles", id=image_id,
        disks=(dataclasses.replace(disk, partitions=(part, *disk.partitions[1:])),),
    ))  # fmt: skip

    target = loopdisk(160 * MIB)
    proc = liferaft("restore", "--repo", repo_path, "--image", "espfiles", "--to", target,
                    "--verify", "--yes")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    new_esp = f"{target}p1"
    probe = run(["blkid", "-p", "-o", "export", new_esp]).stdout
    assert "TYPE=vfat" in probe and f"UUID={VOLUME_ID}" in probe and f"LABEL={LABEL}" in probe
    assert fat_options(_boot_sector(new_esp)) == before
    assert tree_checksums(new_esp, "vfat") == expected
    assert fat_attribute_listing(new_esp) == attributes
    fsck_clean(new_esp, "vfat")

    # extract reads the archive of a partition captured file by file
    out = os.path.join(workdir, "out")
    proc = liferaft("extract", "--repo", repo_path, "--image", "espfiles", "--partition", "1",
                    "/docs", "/data/big-random.bin", "--to", out)  # fmt: skip
    assert "extracted 2 path(s) of disk1/p1" in proc.stdout, proc.stdout
    got = {
        os.path.relpath(os.path.join(d, n), out): _sha256(os.path.join(d, n))
        for d, _dirs, names in os.walk(out)
        for n in names
    }
    assert got == {
        "big-random.bin": expected["data/big-random.bin"],
        **{k: v for k, v in expected.items() if k.startswith("docs/")},
    }
    # a path it does not hold: one line, nothing written
    empty = os.path.join(workdir, "empty")
    proc = liferaft("extract", "--repo", repo_path, "--image", "espfiles", "--partition", "1",
                    "/docs", "/no/such", "--to", empty, check=False)  # fmt: skip
    assert_one_line_error(proc, "/no/such is not in partition disk1/p1 (vfat)")
    assert os.listdir(empty) == []
