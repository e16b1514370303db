"""Seed restore (issue 17): a restore onto a disk that already holds (most
of) the image compares each chunk with the target's bytes and fetches and
writes only what differs. Real loop disks, a real nginx on loopback; what
was downloaded is counted from nginx's access log.

Every seeded restore is compared byte for byte, over the whole disk, with
a full restore (``--no-seed``) onto a copy of the same target: the seed
restore must leave exactly what a full restore leaves, blocks outside the
used map included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from rescue_app.engine import Engine
from rescue_app.engine.diskmodel import BlockDisk, BlockPartition
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.manifest import Manifest
from rescue_app.engine.plan import DiskPlan, seeded_partitions
from tests.conftest import _disk_backed_tmp
from tests.enginekit import (
    Layout,
    Source,
    block_disk,
    check_restored,
    interrupt_restore,
    liferaft,
)
from tests.helpers.diskkit import (
    MIB,
    PartSpec,
    disk_bytes_sha256,
    loop_disk,
    make_fs,
    mounted,
    partition_disk,
    populate,
    tree_checksums,
)
from tests.stores.serverkit import Nginx

LAYOUT = Layout(
    "gpt", [PartSpec(40, "ext4", "boot"), PartSpec(None, "ext4", "root")], ["ext4", "ext4"]
)
DISK = 192 * MIB
SEEDING = "seeding from the target: only changed data will be downloaded"


@dataclass
class Images:
    repo: str  # local repository: "old" (v1) and "new" (10% of the used data changed)
    url: str  # the same repository served by nginx
    server: Nginx
    old: Source
    new: Source
    holds_old: str  # a disk holding "old" as a restore left it (template for targets)
    manifests: dict[str, Manifest]


def _write(path: str, offset: int, length: int, mode: str) -> None:
    with open(path, mode) as f:
        f.seek(offset)
        f.write(os.urandom(length))


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    with (
        tempfile.TemporaryDirectory(prefix="liferaft-seed-", dir=_disk_backed_tmp()) as d,
        ExitStack() as stack,
    ):
        dev = stack.enter_context(loop_disk(DISK, d))
        nodes = partition_disk(dev, LAYOUT.label, LAYOUT.parts)
        files = {}
        for i, node in enumerate(nodes):
            make_fs(node, "ext4", label=f"seed{i}")
            files[i] = populate(node, "ext4", seed=41 + i, n_files=60, big_mib=4 if i else 2)
        with mounted(nodes[1], "ext4") as point:  # more data in the root partition
            _write(os.path.join(point, "data", "more.bin"), 0, 48 * MIB, "wb")
        old = Source(dev, LAYOUT, nodes, {0: files[0], 1: tree_checksums(nodes[1], "ext4")})
        repo = os.path.join(d, "repo")
        liferaft("capture", "--repo", repo, "--name", "old", dev)
        engine = Engine()
        used = engine.load_manifest(engine.open_repository(repo), "old").disks[0]
        change = sum(p.used_bytes for p in used.partitions) // 10
        with mounted(nodes[1], "ext4") as point:  # 10% of the used data rewritten in place
            _write(os.path.join(point, "data", "more.bin"), 8 * MIB, change, "r+b")
        new = Source(dev, LAYOUT, nodes, {0: files[0], 1: tree_checksums(nodes[1], "ext4")})
        liferaft("capture", "--repo", repo, "--name", "new", dev)
        holds_old = stack.enter_context(loop_disk(DISK, d))
        liferaft("restore", "--repo", repo, "--image", "old", "--to", holds_old, "--yes")
        server = stack.enter_context(Nginx(repo, os.path.join(d, "nginx"), methods=True))
        r = engine.open_repository(repo)
        yield Images(
            repo,
            f"http://127.0.0.1:{server.port}",
            server,
            old,
            new,
            holds_old,
            {n: engine.load_manifest(r, n) for n in ("old", "new")},
        )


def _copy_of(loopdisk: Callable[[int], str], disk: str) -> str:
    """A new loop disk holding exactly what ``disk`` holds."""
    dev = loopdisk(DISK)
    subprocess.run(
        ["dd", f"if={disk}", f"of={dev}", "bs=4M", "conv=fsync", "status=none"], check=True
    )
    reread_partitions(dev, 2)
    return dev


def _restore(
    images: Images, image: str, target: str, *extra: str
) -> tuple[dict[str, Any], set[str]]:
    """Restore over HTTP; the result as --json says it and the chunks nginx served."""
    since = len(images.server.log_lines())
    proc = liferaft(
        "restore", "--repo", images.url, "--image", image, "--to", target, "--yes", "--json", *extra
    )
    served = {
        line.split()[1].rsplit("/", 1)[-1]
        for line in images.server.log_lines()[since:]
        if line.startswith("GET /chunks/") and line.split()[2] in ("200", "206")
    }
    return json.loads(proc.stdout), served


def _whole(dev: str) -> str:
    return disk_bytes_sha256(dev, 0, DISK)


def _full_restore_of(images: Images, loopdisk: Callable[[int], str], start: str, image: str) -> str:
    """What a full restore of ``image`` leaves on a copy of ``start``: its hash."""
    dev = _copy_of(loopdisk, start)
    result, _ = _restore(images, image, dev, "--no-seed")
    assert result["seeded"] is False and result["read_bytes"] == 0
    return _whole(dev)


def _chunks(m: Manifest) -> list[str | None]:
    """Every chunk of the image: the disk's head and its partitions'."""
    return [*m.disks[0].head.chunks, *(c for p in m.disks[0].partitions for c in p.chunks)]


def _changed(old: Manifest, new: Manifest) -> set[str]:
    """The chunks of ``new`` that ``old`` does not hold at the same place."""
    out = set()
    for po, pn in zip(old.disks[0].partitions, new.disks[0].partitions, strict=True):
        for i, digest in enumerate(pn.chunks):
            if digest is not None and (i >= len(po.chunks) or po.chunks[i] != digest):
                out.add(digest)
    return out


@pytest.mark.root
def test_unchanged_target_fetches_nothing(images, loopdisk):
    target = _copy_of(loopdisk, images.holds_old)
    plan = liferaft(
        "restore", "--repo", images.url, "--image", "old", "--to", target, "--dry-run"
    ).stdout
    assert SEEDING in plan.lower() and "every partition is in place" in plan
    result, served = _restore(images, "old", target)
    assert served == set() and result["fetched_bytes"] == 0
    assert result["seeded"] is True and result["read_bytes"] > 0
    # only the first MiB of each partition (zeroed first, see restoremark) and the boot area
    assert result["written_bytes"] <= 3 * MIB
    check_restored(images.old, reread_partitions(target, 2))
    assert _whole(target) == _whole(images.holds_old)


@pytest.mark.root
def test_ten_percent_changed_fetches_only_the_changed_chunks(images, loopdisk):
    target = _copy_of(loopdisk, images.holds_old)
    result, served = _restore(images, "new", target, "--verify")
    assert result["verified"] is True
    changed = _changed(images.manifests["old"], images.manifests["new"])
    every = {c for c in _chunks(images.manifests["new"]) if c is not None}
    head = set(images.manifests["new"].disks[0].head.chunks)  # --verify reads it
    assert served - head <= changed and served - head
    assert len(served) <= len(every) // 4, (len(served), len(every))
    check_restored(images.new, reread_partitions(target, 2))
    assert _whole(target) == _full_restore_of(images, loopdisk, images.holds_old, "new")


@pytest.mark.root
def test_target_with_another_table_is_seeded_per_partition(images, loopdisk):
    """Partition 2 moved by 1 MiB on the target: only partition 1 is seeded;
    the table is rewritten and partition 2 written whole."""
    start = _copy_of(loopdisk, images.holds_old)
    p2 = images.manifests["old"].disks[0].partitions[1]
    sector = 512
    subprocess.run(
        ["sfdisk", "--no-reread", "--quiet", start, "-N", "2"],
        input=f"{(p2.start + MIB) // sector},{(p2.size - MIB) // sector}\n",
        text=True,
        check=True,
        capture_output=True,
    )
    reread_partitions(start, 2)
    target = _copy_of(loopdisk, start)
    plan = liferaft(
        "restore", "--repo", images.url, "--image", "new", "--to", target, "--dry-run"
    ).stdout
    assert SEEDING in plan.lower() and "partition 1 in place" in plan
    result, served = _restore(images, "new", target)
    # all of partition 2 and the disk's head (its table differed), nothing of partition 1
    new = images.manifests["new"].disks[0]
    assert served == {c for c in (*new.head.chunks, *new.partitions[1].chunks) if c is not None}
    check_restored(images.new, reread_partitions(target, 2))
    assert _whole(target) == _full_restore_of(images, loopdisk, start, "new")


@pytest.mark.root
def test_corrupted_block_is_fetched_and_repaired(images, loopdisk):
    start = _copy_of(loopdisk, images.holds_old)
    p2 = images.manifests["old"].disks[0].partitions[1]
    size = images.manifests["old"].chunk_size
    # a used 4 KiB block in the middle of partition 2, outside its first chunk
    offset = next(s for s, n in p2.used_map if s >= 2 * size and n >= 4096)
    with open(start, "r+b", buffering=0) as f:
        f.seek(p2.start + offset)
        f.write(os.urandom(4096))
        os.fsync(f.fileno())
    target = _copy_of(loopdisk, start)
    result, served = _restore(images, "old", target)
    assert served == {p2.chunks[offset // size]}
    assert result["fetched_bytes"] == size
    check_restored(images.old, reread_partitions(target, 2))
    assert _whole(target) == _whole(images.holds_old)


@pytest.mark.root
def test_interrupted_seed_restore_then_rerun_is_identical(images, loopdisk):
    target = _copy_of(loopdisk, images.holds_old)
    args = ("--repo", images.url, "--image", "new", "--to", target, "--yes")
    interrupt_restore(args, signal.SIGKILL, stage="partition-1")
    assert "incomplete restore" in liferaft("disks").stdout
    result, _ = _restore(images, "new", target)
    assert result["seeded"] is True
    check_restored(images.new, reread_partitions(target, 2))
    assert _whole(target) == _full_restore_of(images, loopdisk, images.holds_old, "new")


def _sectors_read(dev: str) -> int:
    """Sectors the kernel has read from ``dev`` (a loop disk) since it was attached."""
    with open(f"/sys/block/{os.path.basename(dev)}/stat") as f:
        return int(f.read().split()[2])


@pytest.mark.root
def test_the_target_is_read_once(images, loopdisk):
    """The check before writing compares the seeded partitions with the
    target; the writes reuse what it found instead of reading and hashing
    the whole target again (which doubled a seed restore's time)."""
    target = _copy_of(loopdisk, images.holds_old)
    before = _sectors_read(target)
    result, served = _restore(images, "new", target)
    read = (_sectors_read(target) - before) * 512
    assert result["seeded"] is True and served
    # the compared chunks once, plus what the table tools and the heads read
    assert result["read_bytes"] <= read < result["read_bytes"] * 1.3 + 8 * MIB, (
        read,
        result["read_bytes"],
    )
    check_restored(images.new, reread_partitions(target, 2))
    assert _whole(target) == _full_restore_of(images, loopdisk, images.holds_old, "new")


@pytest.mark.root
def test_a_table_in_place_is_not_written_again(images, loopdisk):
    """The target holds the image's table already: it is neither erased
    (wipefs) nor written again, nor the kernel asked to re-read it. A byte
    in the GPT header's reserved space (outside its checksum, zeroed by any
    new table) shows it was left alone."""
    target = _copy_of(loopdisk, images.holds_old)
    canary = 512 + 400
    with open(target, "r+b") as f:
        f.seek(canary)
        f.write(b"\x17")
    result, served = _restore(images, "new", target)
    assert result["seeded"] is True and served
    with open(target, "rb") as f:
        f.seek(canary)
        assert f.read(1) == b"\x17"
    check_restored(images.new, reread_partitions(target, 2))


@pytest.mark.root
def test_chunks_are_looked_up_once(images, loopdisk):
    """The plan looks every chunk up (HEAD); the check before writing then
    reads each one it needs. A second round of look-ups before the writes
    (seconds over a network for a large image) is left out."""
    target = loopdisk(DISK)
    since = len(images.server.log_lines())
    _restore(images, "old", target, "--no-seed")
    heads = [
        line.split()[1]
        for line in images.server.log_lines()[since:]
        if line.startswith("HEAD /chunks/")
    ]
    every = {d for d, _, _ in images.manifests["old"].chunk_refs()}
    assert len(heads) == len(set(heads)) == len(every), (len(heads), len(every))
    check_restored(images.old, reread_partitions(target, 2))


@pytest.mark.root
def test_no_seed_writes_everything(images, loopdisk):
    target = _copy_of(loopdisk, images.holds_old)
    plan = liferaft(
        "restore", "--repo", images.url, "--image", "old", "--to", target, "--dry-run", "--no-seed"
    ).stdout
    assert SEEDING not in plan.lower()
    result, served = _restore(images, "old", target, "--no-seed")
    assert served == {c for c in _chunks(images.manifests["old"]) if c is not None}
    used = sum(p.used_bytes for p in images.manifests["old"].disks[0].partitions)
    head = images.manifests["old"].disks[0].head.length
    assert result["written_bytes"] == used + head and result["read_bytes"] == 0
    check_restored(images.old, reread_partitions(target, 2))


def _disk(pttype: str | None, parts: list[tuple[int, int, int]]) -> BlockDisk:
    partitions = tuple(
        BlockPartition(f"/dev/sdz{n}", n, s, z, "ext4", None, None, None, None, None, ())
        for n, s, z in parts
    )
    return block_disk("/dev/sdz", 1 << 30, pttype=pttype, partitions=partitions)


def test_seeded_partitions_are_those_at_the_same_place(images):
    """Pure: which partitions a plan seeds, from the target's table as it is."""
    from rescue_app.engine.plan import plan_disk

    image = images.manifests["old"].disks[0]
    p1, p2 = image.partitions
    same = [(1, p1.start, p1.size), (2, p2.start, p2.size)]

    def seeded(target: BlockDisk) -> tuple[int, ...]:
        d: DiskPlan = plan_disk(image, target, grow=False)
        return seeded_partitions(d)

    assert seeded(_disk("gpt", same)) == (1, 2)
    assert seeded(_disk("gpt", [same[0], (2, p2.start + MIB, p2.size - MIB)])) == (1,)
    assert seeded(_disk("gpt", [same[0], (2, p2.start, p2.size - MIB)])) == (1,)
    assert seeded(_disk("gpt", [(2, p1.start, p1.size), (1, p2.start, p2.size)])) == ()
    assert seeded(_disk("dos", same)) == ()  # another kind of table: nothing is seeded
    assert seeded(_disk(None, [])) == ()


def test_unattended_no_seed_from_the_kernel_command_line():
    from rescue_app.unattended import parse_cmdline, resolve_action

    base = "liferaft.action=restore liferaft.repo=/r liferaft.image=web1 liferaft.target=/dev/sda"
    action = resolve_action(parse_cmdline(base), None)
    assert action is not None and action.seed is True
    action = resolve_action(parse_cmdline(base + " liferaft.seed=0"), None)
    assert action is not None and action.seed is False
