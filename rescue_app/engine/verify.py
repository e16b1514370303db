"""Verify images in a repository: every chunk they need is read and hashed.

Reads the repository only. A damaged chunk is reported with the image,
partition and offset that need it; every problem is collected, not just the
first, so one run tells the whole state of the repository.
"""

from __future__ import annotations

from rescue_app.engine.chunkio import pipeline
from rescue_app.engine.manifest import Manifest
from rescue_app.engine.repository import Repository
from rescue_app.engine.results import VerifyReport
from rescue_app.errors import CancelledError, ChunkError, ManifestError
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress


def verify_repository(
    repo: Repository,
    ref: str | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> VerifyReport:
    problems: list[str] = []
    manifests: list[Manifest] = []
    if ref is not None:
        manifests.append(repo.load_manifest(ref))
    else:
        for name, image_id in repo.manifest_refs():
            try:
                manifests.append(repo.load_manifest(f"{name}@{image_id}"))
            except ManifestError as exc:
                problems.append(str(exc))
        problems.extend(repo.unreadable)  # an encrypted repository's, left out of the refs
    # Each distinct chunk is read once; a bad one is reported for every image
    # that needs it (deduplication shares chunks between images).
    users: dict[str, list[str]] = {}
    for m in manifests:
        for digest, where, offset in m.chunk_refs():
            places = users.setdefault(digest, [])
            if not any(p.startswith(f"image {m.ref},") for p in places):
                places.append(f"image {m.ref}, {where}, offset {offset}")
    # Progress counts bytes, like every progress: a chunk is at most chunk_size.
    total = sum(m.chunk_size for m in manifests[:1]) * len(users)
    checked = 0
    nbytes = 0

    def job(digest: str, places: list[str]) -> tuple[int, str | None]:
        try:
            return len(repo.get_chunk(digest, places[0])), None
        except ChunkError as exc:
            if len(places) == 1:
                return 0, str(exc)
            return 0, f"{exc.message}; also needed by " + "; ".join(places[1:])

    def collect(results: list[tuple[int, str | None]]) -> None:
        nonlocal checked, nbytes
        for size, problem in results:
            checked += 1
            nbytes += size
            if problem:
                problems.append(problem)
            done = nbytes if checked < len(users) else max(nbytes, 1)
            progress(
                Progress(
                    "verify",
                    f"chunk {checked} of {len(users)}",
                    done,
                    max(total, done) if checked < len(users) else done,
                )
            )

    with pipeline(tuple) as pipe:
        for digest, places in users.items():
            if cancel is not None and cancel.cancelled:
                raise CancelledError("verification cancelled")
            collect(pipe.submit(job, digest, places))
        collect(pipe.drain())
    return VerifyReport(
        refs=tuple(m.ref for m in manifests),
        chunks_checked=checked,
        bytes_checked=nbytes,
        problems=tuple(problems),
    )
