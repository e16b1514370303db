"""Deleting chunks no image needs, safely while backups run (``liferaft prune``).

Two phases, one per prune run, a grace period apart (docs/FORMAT.md, "Prune"):

1. *mark*: every chunk no manifest names is renamed to ``<digest>.candidate``
   in its folder and listed, with the time the renaming ended, in
   ``prune/candidates.json``. A capture that looks for such a chunk from then
   on finds it absent and stores it again, so it never comes to depend on a
   candidate; readers fall back to the candidate (``Repository.get_chunk``).
2. *sweep*, in a run after the grace period: every candidate that a manifest
   present now names is renamed back (a capture that found the chunk before
   it was marked has finished by now and its manifest names it); every other
   one is deleted.

Nothing is ever deleted that a manifest names, so a crash at any point leaves
every image whole. Needs only read, write, list, rename and delete of single
files: no locks, no access times, no server-side copies of state. One prune
at a time per repository (the candidates file carries a token; a second prune
that overwrote it is noticed and stops). Owns ``prune/`` and the
``.candidate`` files; never touches a manifest.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rescue_app.engine.repository import CANDIDATE_SUFFIX, Repository, chunk_rel
from rescue_app.errors import (
    CancelledError,
    ImageNotFoundError,
    ManifestError,
    RepositoryError,
    UsageError,
)
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress

CANDIDATES_FILE = "prune/candidates.json"
CANDIDATES_FORMAT = "liferaft-prune-candidates"
DEFAULT_GRACE = timedelta(hours=24)

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_FOLDER_RE = re.compile(r"^[0-9a-f]{2}$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` or plain seconds."""
    m = _DURATION_RE.match(text.strip().lower())
    if m is None:
        raise UsageError(
            f"{text!r} is not a duration", hint="write it as seconds or with s, m, h or d: 24h"
        )
    return timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])


@dataclass(frozen=True)
class PruneResult:
    # phase 2 (this run swept the candidates of an earlier run)
    swept: bool
    freed_chunks: int
    freed_bytes: int  # compressed bytes deleted
    rescued_chunks: int  # candidates a manifest named again: renamed back
    # phase 1 (what this run marked; 0 when it waited for an earlier mark)
    marked_chunks: int
    marked_bytes: int
    # candidates waiting for their grace period, and when they may go
    pending_chunks: int
    deletable_after: str  # ISO UTC time; "" when nothing is pending
    referenced_chunks: int  # distinct chunks the images need
    # unused chunks the store will not delete yet (S3 Object Lock): left alone
    locked_chunks: int = 0
    locked_until: str = ""  # ISO UTC time the last of their locks ends


@dataclass
class _Candidates:
    token: str
    started: str
    marked: str | None
    chunks: dict[str, int]  # digest -> compressed size

    @classmethod
    def read(cls, repo: Repository) -> _Candidates | None:
        try:
            raw = repo.store.read(CANDIDATES_FILE)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            if doc.get("format") != CANDIDATES_FORMAT or doc.get("version") != 1:
                raise ValueError("not a candidates file")
            chunks = {str(c["digest"]): int(c["size"]) for c in doc["chunks"]}
            return cls(str(doc["token"]), str(doc["started"]), doc.get("marked"), chunks)
        except (ValueError, KeyError, TypeError, AttributeError):
            # Only prune reads it; a damaged one is started over (mark again):
            # the candidates stay readable and are marked again next time.
            return None

    def write(self, repo: Repository) -> None:
        doc = {
            "format": CANDIDATES_FORMAT,
            "version": 1,
            "token": self.token,
            "started": self.started,
            "marked": self.marked,
            "chunks": [{"digest": d, "size": s} for d, s in sorted(self.chunks.items())],
        }
        repo.store.write(CANDIDATES_FILE, (json.dumps(doc, indent=1) + "\n").encode(), durable=True)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _chunk_files(repo: Repository) -> tuple[dict[str, int], dict[str, int]]:
    """(chunks, candidates): digest -> compressed size, from one listing of
    every chunk folder."""
    folders = [f for f in repo.store.list("chunks") if _FOLDER_RE.match(f)]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="liferaft-list") as pool:
        listings = list(pool.map(lambda f: repo.store.sizes(f"chunks/{f}"), folders))
    chunks: dict[str, int] = {}
    candidates: dict[str, int] = {}
    for listing in listings:
        for fname, size in listing.items():
            if _DIGEST_RE.match(fname):
                chunks[fname] = size
            elif fname.endswith(CANDIDATE_SUFFIX) and _DIGEST_RE.match(
                fname.removesuffix(CANDIDATE_SUFFIX)
            ):
                candidates[fname.removesuffix(CANDIDATE_SUFFIX)] = size
    return chunks, candidates


def _referenced(repo: Repository) -> set[str]:
    """Every chunk a manifest present now names. A damaged manifest stops the
    prune: what it needs cannot be known, so nothing may be deleted."""
    wanted: set[str] = set()
    for name, image_id in repo.manifest_refs():
        try:
            manifest = repo.load_manifest(f"{name}@{image_id}")
        except ManifestError as exc:
            raise RepositoryError(
                f"cannot prune {repo.location}: {exc.message}; nothing was deleted",
                hint="run 'liferaft verify' and remove or repair the damaged image first",
            ) from None
        except ImageNotFoundError:
            continue  # forgotten meanwhile
        wanted.update(d for d, _, _ in manifest.chunk_refs())
    for problem in repo.unreadable:  # an encrypted repository's, left out of the refs
        raise RepositoryError(
            f"cannot prune {repo.location}: {problem}; nothing was deleted",
            hint="run 'liferaft verify' and remove or repair the damaged image first",
        )
    return wanted


def prune(
    repo: Repository,
    *,
    grace: timedelta = DEFAULT_GRACE,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> PruneResult:
    repo.store.check_can_delete()  # a web server: its one-line refusal, before anything
    state = _Candidates.read(repo)
    swept = False
    freed = freed_bytes = rescued = 0
    if state is not None and state.marked is not None:
        due = datetime.fromisoformat(state.marked.replace("Z", "+00:00")) + grace
        if now() < due:
            return PruneResult(
                swept=False,
                freed_chunks=0,
                freed_bytes=0,
                rescued_chunks=0,
                marked_chunks=0,
                marked_bytes=0,
                pending_chunks=len(state.chunks),
                deletable_after=_iso(due),
                referenced_chunks=len(_referenced(repo)),
            )
        freed, freed_bytes, rescued = _sweep(repo, state, progress, cancel)
        swept = True
    marked, marked_bytes, referenced, pending, locked = _mark(repo, now, progress, cancel)
    return PruneResult(
        swept=swept,
        freed_chunks=freed,
        freed_bytes=freed_bytes,
        rescued_chunks=rescued,
        marked_chunks=marked,
        marked_bytes=marked_bytes,
        pending_chunks=pending,
        deletable_after=_iso(now() + grace) if pending else "",
        referenced_chunks=referenced,
        locked_chunks=len(locked),
        locked_until=_iso(max(locked.values())) if locked else "",
    )


def _sweep(
    repo: Repository, state: _Candidates, progress: ProgressCallback, cancel: CancelToken | None
) -> tuple[int, int, int]:
    """Phase 2: delete the candidates no manifest names now; rename back the others."""
    chunks, candidates = _chunk_files(repo)
    wanted = _referenced(repo)  # read after the listing: a newer manifest is seen
    freed = freed_bytes = rescued = 0
    todo = sorted(d for d in state.chunks if d in candidates)
    for n, digest in enumerate(todo):
        if cancel is not None and cancel.cancelled:
            raise CancelledError("prune cancelled; the repository is whole, run it again")
        rel = chunk_rel(digest)
        if digest in wanted:
            rescued += 1
            if digest in chunks:  # stored again by a capture: the copy is not needed
                repo.store.delete(rel + CANDIDATE_SUFFIX)
            else:
                try:
                    repo.store.rename(rel + CANDIDATE_SUFFIX, rel)
                except FileNotFoundError:
                    pass  # another run got there first
        else:
            repo.store.delete(rel + CANDIDATE_SUFFIX)
            freed += 1
            freed_bytes += candidates[digest]
        progress(Progress("prune", "deleting unused chunks", n + 1, len(todo)))
    # Last: while this file exists, a crashed sweep is done again.
    repo.store.delete(CANDIDATES_FILE)
    return freed, freed_bytes, rescued


def _mark(
    repo: Repository,
    now: Callable[[], datetime],
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> tuple[int, int, int, int, dict[str, datetime]]:
    """Phase 1: rename every chunk no manifest names to a candidate. Returns
    (marked, their bytes, referenced chunks, candidates now pending, the
    unused chunks left alone because the store locks them until a date)."""
    chunks, candidates = _chunk_files(repo)
    wanted = _referenced(repo)  # after the listing: a chunk listed, then used, stays
    unused = {d: s for d, s in chunks.items() if d not in wanted}
    locked = _locked(repo, unused)
    unused = {d: s for d, s in unused.items() if d not in locked}
    # Candidates still here (of a mark that crashed before its "marked" time,
    # or listed in a candidates file that was lost) are marked again, their
    # grace counted from this mark: they were renamed before it, which is all
    # the sweep's argument needs.
    left_over = candidates
    if not unused and not left_over:
        repo.store.delete(CANDIDATES_FILE)  # one a crash or damage left: nothing in it now
        return 0, 0, len(wanted), 0, locked
    state = _Candidates(uuid.uuid4().hex, _iso(now()), None, {**left_over, **unused})
    state.write(repo)  # before any rename: a crash leaves the list of what may be renamed
    for n, digest in enumerate(sorted(unused)):
        if cancel is not None and cancel.cancelled:
            raise CancelledError("prune cancelled; the repository is whole, run it again")
        rel = chunk_rel(digest)
        try:
            repo.store.rename(rel, rel + CANDIDATE_SUFFIX)
        except FileNotFoundError:
            state.chunks.pop(digest, None)
        progress(Progress("prune", "marking unused chunks", n + 1, len(unused)))
    again = _Candidates.read(repo)
    if again is None or again.token != state.token:
        raise RepositoryError(
            f"another prune of {repo.location} ran at the same time; this one stopped "
            "(the repository is whole)",
            hint="run one prune at a time per repository, then run it again",
        )
    state.marked = _iso(now())  # the grace period counts from the last rename
    state.write(repo)
    return len(unused), sum(unused.values()), len(wanted), len(state.chunks), locked


def _locked(repo: Repository, digests: Iterable[str]) -> dict[str, datetime]:
    """The chunks the store refuses to delete yet, and until when. On S3 a
    delete of a locked object would only hide it behind a delete marker
    (versioned buckets), so they are not renamed at all: a later prune takes them."""
    wanted = sorted(digests)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="liferaft-lock") as pool:
        dates = list(pool.map(lambda d: repo.store.locked_until(chunk_rel(d)), wanted))
    return {d: until for d, until in zip(wanted, dates, strict=True) if until is not None}
