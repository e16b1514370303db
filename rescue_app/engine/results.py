"""What capture, restore and verify report back when they finish."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CaptureResult:
    ref: str  # name@id of the new image
    data_bytes: int  # bytes read from the disks and described by the image
    stored_bytes: int  # compressed bytes newly added to the repository
    chunks_total: int
    chunks_new: int
    seconds: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreResult:
    ref: str
    targets: tuple[str, ...]
    written_bytes: int
    seconds: float
    verified: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyReport:
    refs: tuple[str, ...]
    chunks_checked: int
    bytes_checked: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems
