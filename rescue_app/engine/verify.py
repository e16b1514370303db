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
    # Each distinct chunk is checked once, for the first image that needs it.
    todo: dict[str, str] = {}
    for m in manifests:
        for digest, where, offset in m.chunk_refs():
            todo.setdefault(digest, f"image {m.ref}, {where}, offset {offset}")
    total = len(todo)
    checked = 0
    nbytes = 0

    def job(digest: str, where: str) -> tuple[int, str | None]:
        try:
            return len(repo.get_chunk(digest, where)), None
        except ChunkError as exc:
            return 0, str(exc)

    def collect(results: list[tuple[int, str | None]]) -> None:
        nonlocal checked, nbytes
        for size, problem in results:
            checked += 1
            nbytes += size
            if problem:
                problems.append(problem)
            progress(Progress("verify", "chunks", checked, total))

    with pipeline(tuple) as pipe:
        for digest, where in todo.items():
            if cancel is not None and cancel.cancelled:
                raise CancelledError("verification cancelled")
            collect(pipe.submit(job, digest, where))
        collect(pipe.drain())
    return VerifyReport(
        refs=tuple(m.ref for m in manifests),
        chunks_checked=checked,
        bytes_checked=nbytes,
        problems=tuple(problems),
    )
