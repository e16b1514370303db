"""What capture, restore and verify report back when they finish."""

from __future__ import annotations

from dataclasses import dataclass, field

from rescue_app.engine.units import human_size


@dataclass(frozen=True)
class JobResult:
    """What a job over one image reports: the image, how long it took, and
    what the user should know (a partition stored raw, a file system not grown)."""

    ref: str  # name@id of the image
    seconds: float = field(kw_only=True)
    notes: tuple[str, ...] = field(default=(), kw_only=True)


@dataclass(frozen=True)
class CaptureResult(JobResult):
    data_bytes: int  # bytes read from the disks and described by the image
    stored_bytes: int  # compressed bytes newly added to the repository
    chunks_total: int
    chunks_new: int


@dataclass(frozen=True)
class RestoreResult(JobResult):
    targets: tuple[str, ...]
    written_bytes: int  # bytes written to the targets
    verified: bool
    read_bytes: int = 0  # bytes read from the targets to compare (seeding)
    fetched_bytes: int = 0  # chunk data fetched from the repository
    seeded: bool = False  # the restore compared with what the targets held

    def figures(self) -> str:
        """What the restore moved, in words (the CLI's last line, the UI's summary)."""
        moved = f"{human_size(self.written_bytes)} written, "
        moved += f"{human_size(self.fetched_bytes)} fetched"
        if self.seeded:
            moved += f", {human_size(self.read_bytes)} read from the target (seeded)"
        return moved


@dataclass(frozen=True)
class VerifyReport:
    refs: tuple[str, ...]
    chunks_checked: int
    bytes_checked: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems
