"""Apply a restore plan: the one place that writes to a target disk.

Order per disk: re-check the target, clear old signatures, write the new
table (pyparted), make the kernel see it, write the boot code and the gap
before the first partition, write each partition's data, recreate swap,
flush, grow the last filesystem if planned, and optionally read everything
back. Every chunk's hash is checked before its bytes reach the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from rescue_app.engine import (
    blockio,
    fatattrs,
    filelevel,
    filetree,
    luks,
    lvm,
    mdraid,
    ntfsshrink,
    restoremark,
    usedmap,
)
from rescue_app.engine.bootentry import recreate_boot_entries
from rescue_app.engine.browse import mount_image
from rescue_app.engine.chunkio import RESTORE_WORKERS, WORKERS, pipeline
from rescue_app.engine.diskscan import find_disk, list_disks
from rescue_app.engine.extents import Extent, clip, total
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.manifest import (
    DiskImage,
    LogicalVolumeImage,
    LuksVolumeImage,
    Manifest,
    MdArrayImage,
    Method,
    PartitionImage,
    VolumeGroupImage,
)
from rescue_app.engine.mounts import mounted
from rescue_app.engine.plan import (
    DiskPlan,
    LuksVolumePlan,
    MdArrayPlan,
    RestorePlan,
    VolumeGroupPlan,
    make_restore_plan,
    restore_regions,
)
from rescue_app.engine.repository import Repository
from rescue_app.engine.results import RestoreResult
from rescue_app.engine.spool import ChunkSpool, spool_budget
from rescue_app.engine.table import table_in_place, write_table
from rescue_app.errors import (
    CancelledError,
    CommandError,
    DiskError,
    RepositoryError,
    TargetRefusedError,
    VerifyError,
)
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress
from rescue_app.run import run

log = logging.getLogger("liferaft.restore")

MBR_BOOT_CODE = 440  # bytes of boot code before the disk signature

# What is written like a partition: a partition, or a logical volume.
Volume = PartitionImage | LogicalVolumeImage | MdArrayImage | LuksVolumeImage
# A chunk to lay: its index in the region, digest (None: zeros), extents.
_Chunk = tuple[int, str | None, list[Extent]]
# Part of a partition's first MiB held back: offset, chunk data (None: zeros), extents.
_Piece = tuple[int, bytes | None, list[Extent]]
# A chunk compared with the target: None (differs), else b"" or its bytes (see _Seed._check).
_Checked = tuple[_Chunk, bytes | None]
# How many compared chunks a seed restore's reader may be ahead of the writes,
# and how many threads read and hash them (reads in flight keep a disk busy;
# hashing releases the GIL).
READ_AHEAD = 64
SEED_READERS = 4


@dataclass
class _Compared:
    """What comparing a seeded partition with the target found: the chunks
    it holds (index -> b"", or the chunk's bytes when some lie in the first
    MiB; see _Seed._check) and the bytes read to find out."""

    same: dict[int, bytes]
    read: int


# Of each seeded partition, by (disk of the image, partition number).
_Comparisons = dict[tuple[int, int], _Compared]


class Counter:
    """Progress of one pass (restore or verify), and what the restore moved:
    bytes read from the target (seeding), fetched from the repository (chunk
    data) and written to the target. The chunk threads add to the latter."""

    def __init__(self, total: int, progress: ProgressCallback, phase: str) -> None:
        self.done = 0
        self.total = total
        self.progress = progress
        self.phase = phase
        self.read = 0
        self.fetched = 0
        self.written = 0
        self._lock = threading.Lock()

    def add(self, item: str, n: int, item_done: int, item_total: int) -> None:
        self.done += n
        self.progress(Progress(self.phase, item, self.done, self.total, item_done, item_total))

    def moved(self, *, read: int = 0, fetched: int = 0, written: int = 0) -> None:
        with self._lock:
            self.read += read
            self.fetched += fetched
            self.written += written


@dataclass(frozen=True)
class Region:
    """One partition or logical volume of the image and the node that holds
    it on the target: what writing it and reading it back share.

    With ``Counter``, ``write_volume`` and ``verify_volume`` the interface
    for writing one volume onto a node of its own, which partrestore.py
    (a Clonezilla saveparts image onto named partitions) shares."""

    repo: Repository
    m: Manifest
    where: str  # the image's name for it, in messages
    p: Volume
    node: str
    counter: Counter
    cancel: CancelToken | None

    @property
    def item(self) -> str:
        return f"{self.node} ({self.p.filesystem.type or 'raw'})"


def apply_plan(
    plan: RestorePlan,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    verify: bool = False,
    luks_key: luks.KeySource | None = None,
) -> RestoreResult:
    """``luks_key``: the passphrases of the image's unlocked LUKS volumes
    (the same as when captured: their headers come back as they were)."""
    started = time.monotonic()
    plan = _recheck_plan(plan)
    if not _checks_first(plan):
        # The plan may have waited for a confirmation: check the chunks again
        # before the first byte is erased. (The check before writing reads
        # every chunk it needs anyway: over a network a second round of
        # look-ups for the whole image costs seconds.)
        plan.repo.check_chunks_present(plan.manifest)
    check_volume_groups_absent(plan)
    luks_keys = _luks_keys(plan, luks_key)
    check_btrfs_uuids_free(plan)
    ntfsshrink.check_scratch_space(plan)
    with (
        _checked_first(plan, progress, cancel) as compared,
        ntfsshrink.Scratch(plan.choices.scratch) as scratch,
    ):
        _shrink_ntfs(plan, scratch, progress, cancel)
        return _apply_checked(plan, luks_keys, started, progress, cancel, verify, compared, scratch)


def _shrink_ntfs(
    plan: RestorePlan,
    scratch: ntfsshrink.Scratch,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> None:
    """Each NTFS partition that shrinks, shrunk in its scratch copy before
    the first write to a target (ntfsshrink.py): one that cannot shrink that
    far is refused with every target untouched."""
    steps = ntfsshrink.resized_steps(plan)
    counter = Counter(sum(s.source.used_bytes for _, s in steps), progress, "shrink")
    for d, step in steps:
        p = step.source
        where = f"{plan.manifest.ref} disk {d.image.index + 1} {p.label}"
        try:
            with scratch.device(d.image.index, p) as dev:
                write_volume(Region(plan.repo, plan.manifest, where, p, dev, counter, cancel))
        except CancelledError:
            raise CancelledError(
                "restore cancelled before anything was written to the target"
            ) from None
        progress(Progress("shrink", f"ntfsresize {where}", counter.done, counter.total))
        path = scratch.files[(d.image.index, p.number)]
        ntfsshrink.shrink(path, p, step.new.size, d.target.size)
    scratch.fetched = counter.fetched


def _apply_checked(
    plan: RestorePlan,
    luks_keys: list[bytes],
    started: float,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    verify: bool,
    compared: _Comparisons,
    scratch: ntfsshrink.Scratch,
) -> RestoreResult:
    """The writing part of ``apply_plan``, once every chunk is checked;
    ``compared``: what the check found of the seeded partitions;
    ``scratch``: the NTFS partitions shrunk already."""
    counter = Counter(plan.write_bytes, progress, "restore")
    counter.moved(fetched=scratch.fetched)
    notes: list[str] = []
    firsts: list[bytes] = []  # each disk's first bytes as they were, for its boot code
    for d in plan.disks:
        try:
            firsts.append(
                _restore_disk(plan.repo, plan.manifest, d, counter, cancel, compared, scratch)
            )
        except RepositoryError as exc:
            # A chunk that cannot be fetched or is wrong stops the restore
            # midway: say so, the disk must not be trusted as it is.
            again = f"run the restore again before using {d.target.path}"
            raise type(exc)(
                f"{exc.message}; {d.target.path} is only partly written and will not work",
                hint=f"{exc.hint}; {again}" if exc.hint else again,
            ) from None
    # Unlocked LUKS volumes stay open until the volume groups inside them are restored.
    with contextlib.ExitStack() as opened:
        inner = {
            (v.disk, v.partition): _restore_luks(
                plan, v, key, counter, progress, cancel, verify, opened, notes
            )
            for v, key in zip(plan.manifest.luks_volumes, luks_keys, strict=True)
        }
        for a in plan.md_arrays:
            # After every disk's table: an array's members lie on several disks.
            try:
                node = _restore_md_array(plan, a, counter, progress, cancel, verify, opened, notes)
                first = a.image.members[0]
                inner[(first.disk, first.partition)] = node
            except RepositoryError as exc:
                paths = ", ".join(d.target.path for d in plan.disks)
                again = f"run the restore again before using {paths}"
                raise type(exc)(
                    f"{exc.message}; {a.image.label} is only partly written and will not work",
                    hint=f"{exc.hint}; {again}" if exc.hint else again,
                ) from None
        for g in plan.volume_groups:
            # After every disk's table: a volume group may span several disks.
            try:
                devices = _pv_devices(plan, g.image, inner)
                notes += restore_volume_group(
                    plan.repo, plan.manifest, g, devices, counter, progress, cancel, verify
                )
            except RepositoryError as exc:
                paths = ", ".join(d.target.path for d in plan.disks)
                again = f"run the restore again before using {paths}"
                raise type(exc)(
                    f"{exc.message}; volume group {g.image.name} is only partly written "
                    "and will not work",
                    hint=f"{exc.hint}; {again}" if exc.hint else again,
                ) from None
    checker = Counter(plan.write_bytes, progress, "verify")
    if verify:
        # Before growing: growing rewrites filesystem metadata the image holds.
        for d in plan.disks:
            _verify_disk(plan.repo, plan.manifest, d, checker, cancel)
    # Only now, every layer (md arrays, LUKS contents, volume groups) written
    # and verified: the boot code over the mark (see restoremark).
    for d, seen in zip(plan.disks, firsts, strict=True):
        _finish_disk(plan.repo, plan.manifest, d, seen, counter)
        if verify:
            _verify_head(plan.repo, plan.manifest, d, checker)
    for d in plan.disks:
        notes += _grow_disk(d, progress)
    # Under UEFI the restored disk boots only from a firmware entry (or the
    # removable path): recreate it; a note, never a failure, when it cannot.
    notes += recreate_boot_entries([d.target.path for d in plan.disks])
    return RestoreResult(
        ref=plan.manifest.ref,
        targets=tuple(d.target.path for d in plan.disks),
        written_bytes=counter.written,
        read_bytes=counter.read,
        fetched_bytes=counter.fetched,
        seeded=any(d.seeded for d in plan.disks),
        seconds=time.monotonic() - started,
        verified=verify,
        notes=tuple(notes),
    )


@contextlib.contextmanager
def _checked_first(
    plan: RestorePlan, progress: ProgressCallback, cancel: CancelToken | None
) -> Iterator[_Comparisons]:
    """Before the first write to a target: every chunk the restore will fetch
    is read and checked (AEAD tag and keyed id, or SHA-256), so that a
    damaged, tampered or vanished chunk stops it while the targets are as
    they were. Over a network store the checked chunks are kept in a spool
    (engine/spool.py) for the writes, up to its budget, instead of being
    fetched twice; a local folder is simply read again. docs/DESIGN.md,
    "Checking before writing". Yields what it found comparing the seeded
    partitions with the target, for the writes to reuse."""
    repo = plan.repo
    if not _checks_first(plan):
        yield {}
        return
    spool = None if repo.local_path() is not None else ChunkSpool(spool_budget())
    try:
        try:
            compared = _check_chunks(plan, spool, progress, cancel)
        except (RepositoryError, CancelledError) as exc:
            targets = ", ".join(d.target.path for d in plan.disks)
            raise type(exc)(
                f"{exc.message}; nothing was written to {targets}", hint=exc.hint
            ) from None
        repo.spool = spool
        yield compared
    finally:
        repo.spool = None
        if spool is not None:
            spool.close()


def _checks_first(plan: RestorePlan) -> bool:
    """Whether the restore reads and checks its chunks before the first write
    (not asked to skip it, and not a repository read whole in one piece)."""
    return plan.choices.check_first and not plan.repo.read_whole_first


def _check_chunks(
    plan: RestorePlan,
    spool: ChunkSpool | None,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> _Comparisons:
    """Read and check, once each, the chunks of ``_to_fetch`` as it finds
    them (a seed restore's fetches overlap its reading of the target); what
    it compared."""
    repo, m = plan.repo, plan.manifest
    compared: _Comparisons = {}
    # every distinct chunk (plan.check_line); a seeded disk needs fewer
    most = len({d for *_place, chunks in restore_regions(m) for d in chunks if d is not None})
    total_bytes = most * m.chunk_size
    done = checked = 0

    def count(results: list[int]) -> None:
        nonlocal done, checked
        for n in results:
            checked += 1
            done += n
            item = f"chunk {checked} of {most}"
            progress(Progress("check", item, done, max(total_bytes, done)))

    cancelled = CancelledError("restore cancelled while checking the chunks")
    try:
        with (
            pipeline(int, RESTORE_WORKERS) as pipe,
            contextlib.closing(_to_fetch(plan, cancel, compared)) as wanted,
        ):
            for digest, where in wanted:
                if cancel is not None and cancel.cancelled:
                    raise cancelled
                count(pipe.submit(repo.check_chunk, digest, where, spool))
            count(pipe.drain())
    except CancelledError:
        # (a store's wait for its server says what it interrupted: the
        # user needs to know what it left behind, here nothing)
        raise cancelled from None
    progress(Progress("check", f"{checked} chunks checked", done, done))
    return compared


def _to_fetch(
    plan: RestorePlan, cancel: CancelToken | None, compared: _Comparisons
) -> Generator[tuple[str, str]]:
    """Each chunk the restore will fetch, once, with the first place that
    needs it, as soon as it is known. Of a seeded disk, only the chunks that
    differ from what the target holds now: its head compared as
    ``_head_bytes`` does, a seeded partition by ``_Seed`` over the target's
    partition as it is. What the seeded partitions' comparison found goes
    to ``compared``, for the writes, which start right after the check
    (reading and hashing a large disk twice would double a seed restore's
    time); nothing is written before they start."""
    repo, m = plan.repo, plan.manifest
    scratch = Counter(0, no_progress, "check")
    disks = {d.image.index: (d, *_read_heads(d, scratch)) for d in plan.disks}
    needed: set[str] = set()
    for where, disk, number, chunks in restore_regions(m):
        wanted: Iterable[tuple[int, str | None]] = enumerate(chunks)
        if disk is not None:
            d, first, heads = disks[disk]
            if number is None and first:
                wanted = _head_fetches(repo, m, d.image, first)
            elif number is not None and number in heads:
                node = d.target.path
                if d.table.type != "none":
                    node = next(t.path for t in d.target.partitions if t.number == number)
                p = next(s.source for s in d.steps if s.source.number == number)
                r = Region(repo, m, where, p, node, scratch, cancel)
                seed = _Seed(r, heads[number], [])
                compared[(disk, number)] = seed.found
                wanted = ((i, digest) for i, digest, _ in seed.changed(_chunks(r), _uncounted))
        for i, digest in wanted:
            if digest is not None and digest not in needed:
                needed.add(digest)
                yield digest, f"{where} at offset {i * m.chunk_size}"


def _uncounted(_: list[int]) -> None:
    """Progress of chunks a check finds in place: not counted (the writes do)."""


def _recheck_plan(plan: RestorePlan) -> RestorePlan:
    """The person confirmed what the plan showed; if a disk changed since (a
    stick pulled and another plugged in, something written or mounted), that
    confirmation no longer holds. Plan again from the disks as they are now
    (which also refuses any that became busy) and insist on the same plan."""
    disks = list_disks()
    targets = []
    for d in plan.disks:
        now = find_disk(d.target.path, disks)
        if (now.serial, now.size) != (d.target.serial, d.target.size):
            raise TargetRefusedError(
                f"{d.target.path} is no longer the disk that was confirmed ({d.target.describe()})",
                hint="list the disks again and confirm the new target",
            )
        targets.append(now)
    fresh = make_restore_plan(plan.repo, plan.manifest, targets, plan.choices)
    if fresh.render() != plan.render():
        raise TargetRefusedError(
            "the disks changed after the plan was shown; nothing was written",
            hint="look at the plan again and confirm it again",
        )
    return fresh


def _stage(name: str, cancel: CancelToken | None) -> None:
    """Between the steps of a restore: stop here if cancelled.

    LIFERAFT_TEST_PAUSE=NAME holds the restore at that step (up to a minute,
    until cancelled) and says so on stderr: the interruption tests use it to
    kill the process at a known point. Nothing else reads it.
    """
    if os.environ.get("LIFERAFT_TEST_PAUSE") == name:
        print(f"liferaft-test: paused at {name}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (cancel is not None and cancel.cancelled):
            time.sleep(0.05)
    if cancel is not None and cancel.cancelled:
        raise CancelledError(
            f"restore cancelled at {name}: the disk is only partly written and will not work",
            hint="run the restore again before using this disk",
        )


def _restore_disk(
    repo: Repository,
    m: Manifest,
    d: DiskPlan,
    counter: Counter,
    cancel: CancelToken | None,
    compared: _Comparisons,
    scratch: ntfsshrink.Scratch | None = None,
) -> bytes:
    """Write one disk so that, wherever it stops, nothing looks restored: the
    mark first, each partition's first MiB after the rest is on the disk. The
    boot code (over the mark) comes later, from ``_finish_disk``, once the
    layers on the disks (md, LUKS, LVM) are written too. See restoremark.
    ``compared``: the seeded partitions as the check before writing found them
    (else compared here). Returns the disk's first bytes as they were (a seed
    restore takes the boot code's chunks it holds from them)."""
    target = d.target.path
    image = d.image
    started = datetime.now(UTC)
    nodes: dict[int, str] = {}
    # Before anything is written: the first MiB of each seeded partition,
    # which is zeroed next and compared from memory (see _Seed).
    first, heads = _read_heads(d, counter)
    # The mark goes first, before any other write, and again after each step
    # that writes over it (libparted clears the boot-code area; on a disk
    # without a table the mark sits in the first MiB that is zeroed).
    restoremark.write(target, m.ref, started)
    # Every new partition's first MiB is zeroed before the table is written:
    # whatever old filesystem sat at that place is unrecognisable from now on.
    with blockio.open_device(target, write=True) as fd:
        for step in d.steps:
            if step.source.method not in (Method.NONE, Method.SWAP):
                # (a whole-disk filesystem's one "partition" starts at 0)
                blockio.zero_range(fd, target, step.new.start, min(restoremark.HOLD, step.new.size))
        blockio.flush(fd, target)
    parts = [s.new for s in d.steps]
    if d.table.type == "none":
        # an old filesystem's signatures at both ends
        run(["wipefs", "--all", "--quiet", target])
        nodes[0] = target
    elif table_in_place(target, d.table, parts, image.logical_sector_size):
        # The target holds the new table already (a seed restore onto the
        # disk it came from): neither erased nor written again, and the
        # kernel asked again only when it shows other partitions.
        nodes = _partition_nodes(target, d, rescan=not _kernel_shows(d))
    else:
        # Old signatures at both ends (a GPT backup header, say) would make
        # tools doubt the new table.
        run(["wipefs", "--all", "--quiet", target])
        write_table(target, d.table, parts, image.logical_sector_size)
        nodes = _partition_nodes(target, d)
    restoremark.write(target, m.ref, started)
    _stage("marked", cancel)
    held: list[tuple[Region, list[_Piece]]] = []
    for step in d.steps:
        p = step.source
        if p.method in (Method.USED, Method.RAW) and not step.files and not step.resize:
            where = f"{m.ref} disk {image.index + 1} {p.label}"
            r = Region(repo, m, where, p, nodes[p.number], counter, cancel)
            known = compared.get((image.index, p.number))
            held.append((r, _write_partition(r, heads.get(p.number), known)))
            _stage(f"partition-{p.number}", cancel)
    _stage("data", cancel)
    # The rest of every partition is on the disk: now their first MiB.
    for r, pieces in held:
        _lay_held(r, pieces)
    _stage("heads", cancel)
    for step in d.steps:
        if step.resize and scratch is not None:
            p = step.source
            item = f"{nodes[p.number]} (ntfs, shrunk)"
            counter.add(item, 0, 0, p.used_bytes)
            path = scratch.files[(image.index, p.number)]
            counter.moved(written=ntfsshrink.copy_to(path, nodes[p.number], step.new.size, cancel))
            counter.add(item, p.used_bytes, p.used_bytes, p.used_bytes)
    for step in d.steps:
        if step.source.method == Method.SWAP:
            _mkswap(nodes[step.source.number], step.source)
    _restore_files(repo, m, d, nodes, counter, cancel)
    return first


def _finish_disk(
    repo: Repository, m: Manifest, d: DiskPlan, first: bytes, counter: Counter
) -> None:
    """The last write of a disk's restore: its boot code over the mark."""
    target = d.target.path
    image = d.image
    if d.table.type != "none":
        _write_head(repo, m, image, target, first, counter)  # the boot code replaces the mark
        counter.add(f"{target} boot area", image.head.length, image.head.length, image.head.length)
        counter.moved(written=image.head.length)
    restoremark.clear(target)  # an image without boot code of its own


def _restore_files(
    repo: Repository,
    m: Manifest,
    d: DiskPlan,
    nodes: dict[int, str],
    counter: Counter,
    cancel: CancelToken | None,
) -> None:
    """Partitions that shrank: each a new filesystem with the old identity,
    filled with the files of the image's partition (read-only, through a
    browse mount of the image: engine/filetree.py). Partitions captured file
    by file: the same, filled from their archive (engine/filelevel.py)."""
    finished: list[tuple[str, filetree.FsIdentity]] = []
    for step in d.steps:
        p = step.source
        if p.method == Method.FILES:
            node = nodes[p.number]
            item = f"{node} ({p.filesystem.type}, files)"
            counter.add(item, 0, 0, p.used_bytes)
            where = f"{m.ref} disk {d.image.index + 1} {p.label}"
            ident, written = filelevel.write_stream(repo, m, p, node, where, cancel)
            finished.append((node, ident))
            counter.add(item, p.used_bytes, p.used_bytes, p.used_bytes)
            counter.moved(fetched=p.used_bytes, written=written)
            _stage(f"files-{p.number}", cancel)
    steps = [s for s in d.steps if s.files and s.source.method != Method.FILES]
    if not steps:
        for node, ident in finished:
            filetree.finish_identity(node, ident)
        return
    point = tempfile.mkdtemp(prefix="liferaft-shrink-")
    try:
        with mount_image(repo, m, point, only=[]) as image:
            for step in steps:
                p = step.source
                part = next(
                    b
                    for b in image.partitions
                    if (b.disk, b.number) == (d.image.index + 1, p.number)
                )
                source = os.path.join(point, part.image)
                node = nodes[p.number]
                ident = filetree.read_identity(source, p.filesystem, step.new.size)
                counter.add(f"{node} ({ident.type}, files)", 0, 0, p.used_bytes)
                with filetree.image_tree(source, ident.type) as tree:
                    attrs = fatattrs.from_image(source, tree) if ident.type == "vfat" else None
                    written = filetree.write_tree(
                        tree, node, ident, cancel=cancel, fat_attributes=attrs
                    )
                    counter.moved(written=written)
                finished.append((node, ident))
                counter.add(
                    f"{node} ({ident.type}, files)", p.used_bytes, p.used_bytes, p.used_bytes
                )
                _stage(f"files-{p.number}", cancel)
            counter.moved(fetched=image.fs.cache.fetches * m.chunk_size)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(point)
    for node, ident in finished:
        filetree.finish_identity(node, ident)


def _grow_disk(d: DiskPlan, progress: ProgressCallback) -> list[str]:
    notes = []
    for step in d.steps:
        if step.grow_fs and step.source.method != Method.SWAP:
            node = _nodes(d)[step.source.number]
            progress(Progress("grow", node, 0, 0, message=f"growing {step.source.filesystem.type}"))
            notes.append(grow_filesystem(node, step.source.filesystem.type))
    return [n for n in notes if n]


def _nodes(d: DiskPlan) -> dict[int, str]:
    return {0: d.target.path} if d.table.type == "none" else _partition_nodes(d.target.path, d)


def _kernel_shows(d: DiskPlan) -> bool:
    """Whether the kernel, as the plan read it a moment ago, shows exactly
    the partitions of the new table (number, start, size)."""
    now = {(p.number, p.start, p.size) for p in d.target.partitions}
    return now == {(s.new.number, s.new.start, s.new.size) for s in d.steps}


def _partition_nodes(target: str, d: DiskPlan, *, rescan: bool = True) -> dict[int, str]:
    wanted = [s.source.number for s in d.steps]
    paths = reread_partitions(target, len(wanted), rescan=rescan)
    out: dict[int, str] = {}
    for path in paths:
        match = re.search(r"(\d+)$", path)
        if match:
            out[int(match.group(1))] = path
    missing = [n for n in wanted if n not in out]
    if missing:
        raise DiskError(
            f"the kernel does not show partition(s) {missing} of {target} after writing the table",
            hint="run the restore again; if it repeats, reboot the rescue system",
        )
    return out


def _head_bytes(
    repo: Repository,
    m: Manifest,
    image: DiskImage,
    seen: bytes = b"",
    counter: Counter | None = None,
) -> bytes:
    """The image's first bytes of the disk. ``seen``: the target's, read
    before the restore wrote anything (a seed restore); a chunk of them that
    it holds already is not fetched."""
    parts = []
    for i, digest in enumerate(image.head.chunks):
        start = i * m.chunk_size
        length = min(m.chunk_size, image.head.length - start)
        there = seen[start : start + length]
        if digest is None:
            parts.append(bytes(length))
        elif _holds(repo, there, length, digest):
            parts.append(there)
        else:
            parts.append(repo.get_chunk(digest, f"{m.ref} disk {image.index + 1} head"))
            if counter is not None:
                counter.moved(fetched=length)
    return b"".join(parts)


def _holds(repo: Repository, there: bytes, length: int, digest: str) -> bool:
    """Whether ``there``, read from the target, is the chunk ``digest`` of ``length`` bytes."""
    return len(there) == length and repo.chunk_id(there) == digest


def _head_fetches(
    repo: Repository, m: Manifest, image: DiskImage, seen: bytes
) -> list[tuple[int, str | None]]:
    """The chunks of the image's head that ``_head_bytes`` fetches, given
    ``seen``, the target's first bytes: (index, id)."""
    out: list[tuple[int, str | None]] = []
    for i, digest in enumerate(image.head.chunks):
        start = i * m.chunk_size
        length = min(m.chunk_size, image.head.length - start)
        if digest is not None and not _holds(repo, seen[start : start + length], length, digest):
            out.append((i, digest))
    return out


def _head_ranges(image: DiskImage, head: bytes) -> list[Extent]:
    """The parts of the head that are not the partition table: the boot code,
    and the gap between the table and the first partition (GRUB's core.img
    lives there on MBR disks)."""
    ss = image.logical_sector_size
    if len(head) < ss:
        return []
    if image.table.type == "gpt" and len(head) >= 2 * ss and head[ss : ss + 8] == b"EFI PART":
        entries_lba, count, size = struct.unpack_from("<QII", head, ss + 72)
        gap = -(-(entries_lba * ss + count * size) // ss) * ss
    else:
        gap = ss
    ranges = [(0, MBR_BOOT_CODE)]
    if gap < len(head):
        ranges.append((gap, len(head) - gap))
    return ranges


def _write_head(
    repo: Repository, m: Manifest, image: DiskImage, target: str, seen: bytes, counter: Counter
) -> None:
    if not image.head.length:
        return
    head = _head_bytes(repo, m, image, seen, counter)
    with blockio.open_device(target, write=True) as fd:
        for start, length in _head_ranges(image, head):
            blockio.write_all(fd, target, head[start : start + length], start)
        blockio.flush(fd, target)


def _chunk_extents(p: Volume, chunk_size: int, i: int) -> list[Extent]:
    start = i * chunk_size
    end = min(start + chunk_size, p.size)
    if p.method == Method.RAW:
        return [(start, end - start)]
    return clip(p.used_map, start, end)


def _chunks(r: Region) -> Generator[_Chunk]:
    """Every chunk of the region that has bytes to write: (index, digest, extents)."""
    for i, digest in enumerate(r.p.chunks):
        extents = _chunk_extents(r.p, r.m.chunk_size, i)
        if extents:
            yield i, digest, extents


def _each_chunk(
    r: Region,
    cancelled: CancelledError,
    job: Callable[[int, str | None, list[Extent]], int],
    workers: int = WORKERS,
    seed: _Seed | None = None,
) -> None:
    """Run ``job(index, digest, extents)`` on ``workers`` threads for every
    chunk that has bytes to write (with a seed: that the target does not hold
    already), in order, counting progress; stop if cancelled."""
    done = 0

    def count(results: list[int]) -> None:
        nonlocal done
        for n in results:
            done += n
            r.counter.add(r.item, n, done, r.p.used_bytes)

    chunks = _chunks(r) if seed is None else seed.changed(_chunks(r), count)
    try:
        with pipeline(int, workers) as pipe, contextlib.closing(chunks):
            for i, digest, extents in chunks:
                if r.cancel is not None and r.cancel.cancelled:
                    raise cancelled
                count(pipe.submit(job, i, digest, extents))
            count(pipe.drain())
    except CancelledError as exc:
        # A cancel that ended a store's wait for its server says what it
        # interrupted; the user needs to know what it left behind.
        if exc is cancelled:
            raise
        raise cancelled from None


def _lay(
    writer: blockio.TargetWriter, base: int, data: bytes | None, extents: list[Extent]
) -> None:
    """Put ``extents`` of the chunk that starts at ``base`` on the disk; None: zeros."""
    if data is None:
        for start, length in extents:
            writer.zero(start, length)
    else:
        writer.write_extents(data, base, extents)


def _write_partition(
    r: Region, head: bytes | None = None, known: _Compared | None = None
) -> list[_Piece]:
    """Write the partition but its first MiB; return what belongs there
    (offset, chunk data or None for zeros, extents) for the caller to write
    once everything else is on the disk. ``head``: the partition's first MiB
    as the target held it before it was zeroed, to seed from the target
    (None: write every chunk)."""
    held: list[_Piece] = []
    seed = None if head is None else _Seed(r, head, held, known)

    def job(i: int, digest: str | None, extents: list[Extent]) -> int:
        base = i * r.m.chunk_size
        first = clip(extents, 0, restoremark.HOLD) if base < restoremark.HOLD else []
        rest = clip(extents, restoremark.HOLD, r.p.size) if first else extents
        data = None
        if digest is not None:
            data = r.repo.get_chunk(digest, f"{r.where} at offset {base}")
            r.counter.moved(fetched=len(data))
        if first:
            held.append((base, data, first))
        _lay(writer, base, data, rest)
        r.counter.moved(written=total(rest))
        return total(extents)

    cancelled = CancelledError(
        f"restore cancelled: {r.node} is only partly written and will not work",
        hint="run the restore again before using this disk",
    )
    with blockio.TargetWriter(r.node) as writer:
        _each_chunk(r, cancelled, job, RESTORE_WORKERS, seed)
        writer.flush()
    return held


def write_volume(r: Region) -> None:
    """One volume onto a node of its own, whole: swap made anew with its UUID
    and label; used blocks (or every block) with each chunk's hash checked,
    the first MiB last (see restoremark). A volume of another method (laid
    file by file, not saved) is not written here."""
    if r.p.method == Method.SWAP:
        _mkswap(r.node, r.p)
    elif r.p.method in (Method.USED, Method.RAW):
        _lay_held(r, _write_partition(r))


def _lay_held(r: Region, pieces: list[_Piece]) -> None:
    """The first MiB of a partition, last (see restoremark)."""
    with blockio.TargetWriter(r.node) as writer:
        for base, data, extents in pieces:
            _lay(writer, base, data, extents)
            r.counter.moved(written=total(extents))
        writer.flush()


def _read_heads(d: DiskPlan, counter: Counter) -> tuple[bytes, dict[int, bytes]]:
    """What a seed restore compares with but overwrites before it gets there:
    the disk's boot area, and the first MiB of every seeded partition, as the
    target holds them now."""
    heads: dict[int, bytes] = {}
    if not d.seeded:
        return b"", heads
    with blockio.open_device(d.target.path) as fd:
        first = blockio.read_exact(fd, d.target.path, 0, d.image.head.length)
        counter.moved(read=len(first))
        for step in d.steps:
            if step.source.number in d.seeded:
                length = min(restoremark.HOLD, step.new.size)
                heads[step.source.number] = blockio.read_exact(
                    fd, d.target.path, step.new.start, length
                )
                counter.moved(read=length)
    return first, heads


class _Seed:
    """The target as the source of the chunks it already holds.

    A thread reads the target ahead of the fetches (at most READ_AHEAD chunks
    ahead, a few reads in flight on a small pool that also hashes: hashlib
    releases the GIL) and hashes each chunk's bytes as the image stores them
    (its extents, zeros elsewhere) with the repository's own id function. A
    chunk whose id is the image's is neither fetched nor written: its used
    bytes already are the image's, and bytes outside the used map stay as
    they are, as a full restore leaves them. The partition's first MiB was
    zeroed before the table was written, so that part is compared from
    ``head`` (read before) and put back with the other first-MiB pieces, last.
    """

    def __init__(
        self, r: Region, head: bytes, held: list[_Piece], known: _Compared | None = None
    ) -> None:
        self.r = r
        self.head = head
        self.held = held
        self.known = known
        # What this comparison found, for the writes to reuse (see _Compared).
        self.found = _Compared({}, 0)
        self._lock = threading.Lock()
        self._zero_ids: dict[int, str] = {}

    def changed(
        self, chunks: Iterator[_Chunk], count: Callable[[list[int]], None]
    ) -> Generator[_Chunk]:
        """The chunks of ``chunks`` the target does not hold, in order; the
        others are counted as done, on the caller's thread. With ``known``
        (the check before writing compared the same target a moment ago,
        before anything was written) its answer is used: the target is not
        read and hashed a second time."""
        compared = self._compared(chunks) if self.known is None else self._recalled(chunks)
        for (i, digest, extents), same in compared:
            if same is None:
                yield i, digest, extents
                continue
            self.found.same[i] = same
            if same:  # its first-MiB part goes back with the others, last
                base = i * self.r.m.chunk_size
                self.held.append((base, same, clip(extents, 0, restoremark.HOLD)))
            count([total(extents)])

    def _recalled(self, chunks: Iterator[_Chunk]) -> Iterator[_Checked]:
        assert self.known is not None
        self.r.counter.moved(read=self.known.read)
        for chunk in chunks:
            yield chunk, self.known.same.get(chunk[0])

    def _compared(self, chunks: Iterator[_Chunk]) -> Generator[_Checked]:
        """``chunks`` each with what ``_check`` found, read and hashed ahead."""
        out: queue.Queue[_Checked | BaseException | None] = queue.Queue(READ_AHEAD)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read_ahead, args=(chunks, out, stop), name="liferaft-seed", daemon=True
        )
        reader.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if self.r.cancel is not None and self.r.cancel.cancelled:
                    raise CancelledError("restore cancelled while comparing with the target")
                yield item
        finally:
            stop.set()
            reader.join()

    def _read_ahead(
        self,
        chunks: Iterator[_Chunk],
        out: queue.Queue[_Checked | BaseException | None],
        stop: threading.Event,
    ) -> None:
        def put(item: _Checked | BaseException | None) -> None:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        try:
            with (
                blockio.SourceReader(self.r.node) as reader,
                pipeline(tuple, SEED_READERS) as pipe,
            ):
                for chunk in chunks:
                    if stop.is_set():
                        return
                    for checked in pipe.submit(self._check, reader, chunk):
                        put(checked)
                for checked in pipe.drain():
                    put(checked)
            put(None)
        except BaseException as exc:  # raised on the caller's thread
            put(exc)

    def _check(self, reader: blockio.SourceReader, chunk: _Chunk) -> _Checked:
        """``(chunk, None)`` when the target's bytes differ from the chunk;
        else ``(chunk, b"")``, or the bytes when some lie in the first MiB."""
        i, digest, extents = chunk
        m, p = self.r.m, self.r.p
        base = i * m.chunk_size
        length = min(m.chunk_size, p.size - base)
        seen: bytes | bytearray | memoryview = reader.read_span(base, length, extents)
        self.r.counter.moved(read=length)
        with self._lock:
            self.found.read += length
        first = clip(extents, 0, len(self.head)) if base < len(self.head) else []
        if first:
            seen = bytearray(seen)
            for start, n in first:
                seen[start - base : start - base + n] = self.head[start : start + n]
        if digest is None:
            if length not in self._zero_ids:
                self._zero_ids[length] = self.r.repo.chunk_id(bytes(length))
            digest = self._zero_ids[length]
        if self.r.repo.chunk_id(seen) != digest:
            return chunk, None
        return chunk, bytes(seen) if first else b""


def _mkswap(node: str, p: Volume) -> None:
    args = ["mkswap"]
    if p.filesystem.label:
        args += ["-L", p.filesystem.label]
    if p.filesystem.uuid:
        args += ["-U", p.filesystem.uuid]
    run([*args, node])


def grow_filesystem(node: str, fs: str | None) -> str:
    """Grow the filesystem on ``node`` to fill it; a note when that fails
    (the data is restored: the filesystem keeps its size), else ""."""
    try:
        if fs in ("ext2", "ext3", "ext4"):
            # resize2fs insists on a freshly checked filesystem; 1 = fixed, fine.
            proc = run(["e2fsck", "-f", "-p", node], check=False)
            if proc.returncode > 1:
                raise CommandError(f"e2fsck found problems on {node}", stderr=proc.stderr)
            run(["resize2fs", node])
        elif fs == "xfs":
            with mounted(node, "xfs", writable=True, prefix="liferaft-grow-") as mnt:
                run(["xfs_growfs", mnt])
        elif fs == "btrfs":
            with mounted(node, "btrfs", writable=True, prefix="liferaft-grow-") as mnt:
                run(["btrfs", "filesystem", "resize", "max", mnt])
        elif fs == "ntfs":
            # (should ntfsresize fail, the volume still checks clean)
            place_ntfs_backup_boot_sector(node)
            run(["ntfsresize", "--force", "--force", node], input=b"y\n")
        else:
            return ""
    except CommandError as exc:
        return (
            f"the data is restored, but growing {fs} on {node} failed ({exc}); "
            "the filesystem keeps its old size"
        )
    return ""


def place_ntfs_backup_boot_sector(node: str) -> None:
    """A copy of an NTFS's boot sector into the last sector of ``node``.

    NTFS keeps its backup boot sector just after the volume's last sector,
    which is the partition's last sector when the volume fills it. In a
    larger partition that copy (the image's) sits further in, and ntfsfix
    looks for it in the device's last sector: "alternate boot sector BAD".
    ntfsresize, growing the volume, writes it there itself; this puts it
    there for a volume that stays smaller than its partition. The sector
    lies outside the volume: nothing of it is overwritten."""
    with blockio.open_device(node, write=True) as fd:
        boot = blockio.read_exact(fd, node, 0, 512)
        found = usedmap.ntfs_backup_boot_sector(boot)
        if found is None:
            return
        sector = found[1]
        end = blockio.device_size(fd)
        if end - sector <= found[0]:
            return  # the volume fills the partition: its own copy is there
        if sector != 512:
            boot = blockio.read_exact(fd, node, 0, sector)
        blockio.write_all(fd, node, boot, end - sector)
        blockio.flush(fd, node)


# -- volume groups -----------------------------------------------------------


def check_btrfs_uuids_free(plan: RestorePlan) -> None:
    """A Btrfs laid back file-level (restore onto a smaller disk) gets its
    UUID from btrfstune, which refuses while another disk holds a filesystem
    with that UUID (and the kernel would take both for one filesystem).
    Refuse before anything is written; typically the original disk is still
    attached."""
    wanted = {
        s.source.filesystem.uuid: s.source.number
        for d in plan.disks
        for s in d.steps
        if s.files and s.source.filesystem.type == "btrfs" and s.source.filesystem.uuid
    }
    if not wanted:
        return
    targets = {os.path.realpath(d.target.path) for d in plan.disks}
    for disk in list_disks():
        if os.path.realpath(disk.path) in targets:
            continue
        for part in disk.partitions:
            if part.uuid in wanted:
                raise TargetRefusedError(
                    f"{part.path} holds Btrfs {part.uuid}, which partition {wanted[part.uuid]} "
                    "of the image is made anew with on the smaller disk: btrfs refuses a "
                    "second filesystem with that UUID while it is attached",
                    hint="detach the original disk (or wipe it with wipefs), then restore",
                )


def check_volume_groups_absent(plan: RestorePlan) -> None:
    """Refuse before anything is written when a PV the image recreates (same
    UUID) is visible on a disk that is not a target: LVM would then see two
    PVs with one UUID and could use either. Typically the original disk is
    still attached."""
    _check_md_arrays_absent(plan)
    targets = {os.path.realpath(d.target.path) for d in plan.disks}
    targets |= {os.path.realpath(p.path) for d in plan.disks for p in d.target.partitions}
    refuse_lvm_twins(plan.manifest.volume_groups, targets)


def refuse_lvm_twins(groups: Sequence[VolumeGroupImage], targets: set[str]) -> None:
    """A volume group the restore recreates must not be active here, nor
    any of its PVs visible outside ``targets`` (real paths of the devices
    the restore writes): one line before anything is written."""
    for vg in groups:
        active = lvm.active_devices(vg.uuid)
        if active:
            raise TargetRefusedError(
                f"volume group {vg.name} (UUID {vg.uuid}), which this restore recreates, is "
                f"active on this machine ({', '.join(active)}): LVM would see it twice; "
                "nothing was written",
                hint=f"deactivate it first (vgchange -an {vg.name}), or detach its disk",
            )
    if not groups:
        return
    wanted = {pv.uuid: vg.name for vg in groups for pv in vg.pvs}
    for pv in lvm.physical_volumes():
        if pv.uuid in wanted and os.path.realpath(pv.device) not in targets:
            raise TargetRefusedError(
                f"{pv.device} holds physical volume {pv.uuid} of volume group "
                f"{wanted[pv.uuid]}, which this restore recreates: LVM would see "
                "the same volume twice",
                hint="detach the original disk (or wipe it with wipefs), then restore",
            )


def _check_md_arrays_absent(plan: RestorePlan) -> None:
    """Likewise an md member with the UUID of an array the image recreates,
    outside the targets: at boot mdadm would assemble either."""
    wanted = {mdraid.uuid_hex(a.uuid): a for a in plan.manifest.md_arrays}
    if not wanted:
        return
    targets = {os.path.realpath(p.path) for d in plan.disks for p in d.target.partitions}
    targets |= {os.path.realpath(d.target.path) for d in plan.disks}
    for disk in list_disks():
        for p in disk.partitions:
            found = wanted.get(mdraid.uuid_hex(p.uuid or ""))
            if (
                found is not None
                and p.fstype == mdraid.MEMBER_TYPE
                and os.path.realpath(p.path) not in targets
            ):
                raise TargetRefusedError(
                    f"{p.path} is a member of md array {found.name or found.uuid} "
                    f"(UUID {found.uuid}), which this restore recreates: the system would "
                    "see the array twice",
                    hint="detach the original disk (or wipe the member: mdadm "
                    "--zero-superblock), then restore",
                )


def _restore_md_array(
    plan: RestorePlan,
    a: MdArrayPlan,
    counter: Counter,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    verify: bool,
    opened: contextlib.ExitStack,
    notes: list[str],
) -> str:
    """The array created anew on its members' new partitions (same UUID,
    name, level, metadata, chunk, layout; a captured missing member stays
    missing), its contents written through the array device, grown where
    planned; its device path. Stopped when ``opened`` closes (after a volume
    group on it is restored), also on failure. md resyncs the members in the
    background (no --assume-clean: docs/FORMAT.md, "md RAID")."""
    img = a.image
    slots: list[str | None] = [None] * img.raid_devices
    for member in img.members:
        if 0 <= member.role < img.raid_devices:
            slots[member.role] = _nodes(plan.disks[member.disk])[member.partition]
    progress(
        Progress("restore", img.label, counter.done, counter.total, message="creating the md array")
    )
    node = mdraid.create(_md_spec(img), slots)
    opened.callback(mdraid.stop, node)
    # Before it is stopped, once every layer on it is written: how far md got.
    opened.callback(lambda: notes.extend(filter(None, [mdraid.resync_note(img.label, node)])))
    with blockio.SourceReader(node) as reader:
        size = reader.size()
    if size < img.size:
        raise DiskError(
            f"the new {img.label} has {size} bytes, {img.size - size} fewer than "
            "the captured one; nothing of it was written",
            hint="restore onto larger disks (or with --grow)",
        )
    _write_inside(plan, img, node, counter, progress, cancel, verify)
    if a.grow_fs:
        progress(Progress("grow", node, 0, 0, message=f"growing {img.filesystem.type}"))
        grown = grow_filesystem(node, img.filesystem.type)
        notes += [grown] if grown else []
    return node


def _luks_keys(plan: RestorePlan, luks_key: luks.KeySource | None) -> list[bytes]:
    """The key of each unlocked LUKS volume of the image, checked against its
    stored header before anything is written."""
    m = plan.manifest
    keys = []
    for v in m.luks_volumes:
        shown = f"{v.uuid} (disk {v.disk + 1} partition {v.partition} of the image)"
        if luks_key is None:
            raise DiskError(
                f"the image holds the unlocked LUKS volume {shown}: restoring it needs "
                "its passphrase; nothing was written",
                hint="give it with --unlock-key-file FILE or LIFERAFT_LUKS_PASSPHRASE",
            )
        key = luks_key(shown, v.uuid)
        luks.check_header_key(_luks_header(plan.repo, m, v), key, shown)
        keys.append(key)
    return keys


def _luks_header(repo: Repository, m: Manifest, v: LuksVolumeImage) -> bytes:
    where = f"{m.ref} {v.label} header"
    pieces = [
        repo.get_chunk(digest, where)
        if digest is not None
        else bytes(min(m.chunk_size, v.header.length - i * m.chunk_size))
        for i, digest in enumerate(v.header.chunks)
    ]
    return b"".join(pieces)


def _restore_luks(
    plan: RestorePlan,
    v: LuksVolumeImage,
    key: bytes,
    counter: Counter,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    verify: bool,
    opened: contextlib.ExitStack,
    notes: list[str],
) -> str:
    """The header area back as it was (so the old passphrases open it), then
    the volume opened with ``key`` (on ``opened``, closed when it closes,
    also on failure) and its contents written inside, grown where planned;
    its device path."""
    m = plan.manifest
    node = _nodes(plan.disks[v.disk])[v.partition]
    header = _luks_header(plan.repo, m, v)
    with blockio.open_device(node, write=True) as fd:
        blockio.write_all(fd, node, header, 0)
        blockio.flush(fd, node)
    counter.add(f"{node} (LUKS header)", len(header), len(header), len(header))
    inner = opened.enter_context(luks.opened(node, key, read_only=False))
    _write_inside(plan, v, inner, counter, progress, cancel, verify)
    grow = next((g for g in plan.luks_volumes if g.image == v and g.grows), None)
    if grow is not None:
        notes += _grow_luks(grow, node, inner, key, progress)
    return inner


def _grow_luks(
    v: LuksVolumePlan, node: str, inner: str, key: bytes, progress: ProgressCallback
) -> list[str]:
    """The opened volume on its grown partition, made to span it (it does
    already unless its header fixes the data segment's length), then the
    filesystem inside grown (a PV inside: its volume group's restore runs
    pvresize)."""
    span = _device_size(node) - v.image.header.length
    if _device_size(inner) < span:
        try:
            luks.resize(inner, key)
        except DiskError as exc:
            log.warning("%s: %s", inner, exc)
    now = _device_size(inner)
    if now <= v.image.size:
        return [
            f"{v.image.label}: the partition grew but the LUKS volume keeps its size "
            f"({now} bytes; its header fixes the data segment's length)"
        ]
    if not v.grow_fs:
        return []
    progress(Progress("grow", inner, 0, 0, message=f"growing {v.image.filesystem.type}"))
    grown = grow_filesystem(inner, v.image.filesystem.type)
    return [grown] if grown else []


def _device_size(node: str) -> int:
    with blockio.open_device(node) as fd:
        return blockio.device_size(fd)


def _write_inside(
    plan: RestorePlan,
    v: MdArrayImage | LuksVolumeImage,
    node: str,
    counter: Counter,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    verify: bool,
) -> None:
    """A volume written through its own device (a new md array, an opened
    LUKS volume): swap recreated, else its chunks, read back if asked."""
    m = plan.manifest
    where = f"{m.ref} {v.label}"
    r = Region(plan.repo, m, where, v, node, counter, cancel)
    write_volume(r)
    if v.method in (Method.USED, Method.RAW):
        _stage(v.label, cancel)
        if verify:
            verify_volume(replace(r, counter=Counter(v.used_bytes, progress, "verify")))


def _md_spec(img: MdArrayImage) -> mdraid.MdArray:
    return mdraid.MdArray(**mdraid.spec_fields(img), members=())


def _pv_devices(
    plan: RestorePlan, vg: VolumeGroupImage, inner: dict[tuple[int, int], str]
) -> dict[str, str]:
    """PV UUID -> its new partition (or opened LUKS volume, md array)."""
    devices: dict[str, str] = {}
    for pv in vg.pvs:
        place = (pv.disk, pv.partition)
        inside = pv.luks or pv.md
        devices[pv.uuid] = inner[place] if inside else _nodes(plan.disks[pv.disk])[pv.partition]
    return devices


def restore_volume_group(
    repo: Repository,
    m: Manifest,
    g: VolumeGroupPlan,
    devices: dict[str, str],
    counter: Counter,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    verify: bool,
) -> list[str]:
    """PVs with their old UUIDs on ``devices`` (PV UUID -> its new device),
    the volume group from its metadata, a thin pool's metadata written back
    through the PVs, then every LV's data onto the active LV; grown where
    planned; deactivated at the end, also on failure."""
    vg = g.image
    progress(
        Progress(
            "restore",
            f"volume group {vg.name}",
            counter.done,
            counter.total,
            message="recreating the LVM volume group",
        )
    )
    for pv in vg.pvs:
        lvm.create_pv(devices[pv.uuid], pv.uuid, vg.metadata, pv.metadata_copies)
    lvm.restore_vg(vg.name, vg.metadata, force=vg.has_thin_pool)
    notes: list[str] = []
    try:
        source_free = lvm.free_extents(vg.name)  # as restored: the source's, kept free
        for uuid in g.grown_pvs:
            lvm.resize_pv(devices[uuid])
        for lv in vg.lvs:
            if lv.segments:
                _write_through_pvs(repo, m, vg, lv, devices, counter)
        lvm.activate(vg.name)
        for lv in vg.lvs:
            if lv.hidden and not lv.segments:
                continue
            node = lvm.dm_path(vg.name, lv.name)
            where = f"{m.ref} volume group {vg.name} {lv.label}"
            if lv.method == Method.SWAP or not lv.segments:
                write_volume(Region(repo, m, where, lv, node, counter, cancel))
            if lv.method in (Method.USED, Method.RAW) and not lv.segments:
                _stage(f"lv-{lv.name}", cancel)
        if verify:
            checker = Counter(g.write_bytes, progress, "verify")
            for lv in vg.lvs:
                if lv.method in (Method.USED, Method.RAW) and not lv.segments:
                    node = lvm.dm_path(vg.name, lv.name)
                    where = f"{m.ref} volume group {vg.name} {lv.label}"
                    verify_volume(Region(repo, m, where, lv, node, checker, cancel))
        if g.grow_lv is not None:
            grow = next(lv for lv in vg.lvs if lv.name == g.grow_lv)
            node = lvm.dm_path(vg.name, grow.name)
            progress(Progress("grow", node, 0, 0, message=f"growing {vg.name}/{grow.name}"))
            lvm.extend_lv(vg.name, grow.name, keep_free=source_free)
            notes.append(grow_filesystem(node, grow.filesystem.type))
    finally:
        lvm.deactivate(vg.name)
    return [n for n in notes if n]


def _write_through_pvs(
    repo: Repository,
    m: Manifest,
    vg: VolumeGroupImage,
    lv: LogicalVolumeImage,
    devices: dict[str, str],
    counter: Counter,
) -> None:
    """An LV written at its extents' places on the PVs, before the volume
    group is active (a thin pool's metadata: the pool cannot be activated
    without it)."""
    pe_start = {pv.uuid: pv.pe_start for pv in vg.pvs}
    where = f"{m.ref} volume group {vg.name} {lv.label}"
    for seg in lv.segments:
        node = devices[seg.pv]
        first = seg.le * vg.extent_size
        length = seg.extents * vg.extent_size
        place = pe_start[seg.pv] + seg.pe * vg.extent_size
        with blockio.open_device(node, write=True) as fd:
            offset = first
            while offset < min(first + length, lv.size):
                i, within = divmod(offset, m.chunk_size)
                n = min(m.chunk_size - within, first + length - offset, lv.size - offset)
                digest = lv.chunks[i] if i < len(lv.chunks) else None
                chunk = None if digest is None else repo.get_chunk(digest, where)
                data = bytes(n) if chunk is None else chunk[within : within + n]
                blockio.write_all(fd, node, data, place + offset - first)
                offset += n
            blockio.flush(fd, node)
    counter.add(f"volume group {vg.name} {lv.name}", lv.used_bytes, lv.used_bytes, lv.used_bytes)
    counter.moved(written=lv.used_bytes)


# -- read-back -------------------------------------------------------------


def _verify_disk(
    repo: Repository, m: Manifest, d: DiskPlan, counter: Counter, cancel: CancelToken | None
) -> None:
    """Every partition of ``d`` read back and compared with the image (the
    boot area is ``_verify_head``'s, written after the layers)."""
    image = d.image
    nodes = _nodes(d)
    for step in d.steps:
        p = step.source
        if step.files and p.filesystem.type:
            # laid back file by file: its blocks are not the image's
            filetree.check_filesystem(nodes[p.number], p.filesystem.type)
            counter.add(f"{nodes[p.number]} (fsck)", p.used_bytes, p.used_bytes, p.used_bytes)
            continue
        if step.resize:  # shrunk by ntfsresize: neither
            ntfsshrink.check(nodes[p.number])
            counter.add(f"{nodes[p.number]} (ntfsfix)", p.used_bytes, p.used_bytes, p.used_bytes)
            continue
        if p.method not in (Method.USED, Method.RAW):
            continue
        where = f"{m.ref} disk {image.index + 1} {p.label}"
        verify_volume(Region(repo, m, where, p, nodes[p.number], counter, cancel))


def _verify_head(repo: Repository, m: Manifest, d: DiskPlan, counter: Counter) -> None:
    target = d.target.path
    image = d.image
    if not image.head.length:
        return
    head = _head_bytes(repo, m, image)
    with blockio.open_device(target) as fd:
        blockio.drop_cache(fd)
        for start, length in _head_ranges(image, head):
            got = blockio.read_exact(fd, target, start, length)
            if got != head[start : start + length]:
                raise VerifyError(
                    f"verification failed: the boot area of {target} at byte {start} "
                    "differs from the image",
                    hint="the disk may be failing; try another",
                )
    counter.add(f"{target} boot area", image.head.length, image.head.length, image.head.length)


def verify_volume(r: Region) -> None:
    """Read a volume ``write_volume`` wrote back and compare every chunk with
    the image (swap and other methods: nothing to compare)."""
    if r.p.method not in (Method.USED, Method.RAW):
        return

    def job(i: int, digest: str | None, extents: list[Extent]) -> int:
        start = i * r.m.chunk_size
        length = min(r.m.chunk_size, r.p.size - start)
        # O_DIRECT where aligned: what the disk holds, not what the cache does
        got = r.repo.chunk_id(reader.read(start, length, extents))
        if got != (digest or r.repo.chunk_id(bytes(length))):
            raise VerifyError(
                f"verification failed: {r.node} ({r.where}) differs from the image at "
                f"offset {start}",
                hint="the target disk may be failing; restore again or use another disk",
            )
        return total(extents)

    with blockio.SourceReader(r.node) as reader:
        blockio.drop_cache(reader.buffered)
        _each_chunk(r, CancelledError("verification cancelled; the restore itself finished"), job)
