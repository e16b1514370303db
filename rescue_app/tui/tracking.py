"""Turns engine Progress values into what the progress screen shows. Pure.

Rate and ETA come from a sliding window so a slow start or a burst of zero
chunks does not make the estimate jump around.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from rescue_app.engine import human_duration, human_rate, human_size
from rescue_app.progress import Progress


@dataclass(frozen=True)
class ProgressView:
    phase: str
    item: str
    overall: float | None  # 0..1, None when unknown
    item_fraction: float | None
    overall_text: str
    item_text: str
    rate_text: str
    elapsed_text: str
    eta_text: str
    message: str


class ProgressTracker:
    WINDOW = 10.0  # seconds of history for the rate

    def __init__(self, started: float) -> None:
        self.started = started
        self.samples: collections.deque[tuple[float, int, str]] = collections.deque()
        self.last: Progress | None = None

    def update(self, p: Progress, now: float) -> ProgressView:
        if self.last is None or p.phase != self.last.phase:
            self.samples.clear()
        self.last = p
        if p.total > 0:
            self.samples.append((now, p.done, p.phase))
            while self.samples and now - self.samples[0][0] > self.WINDOW:
                self.samples.popleft()
        return self.view(now)

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0, _), (t1, d1, _) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.5 or d1 <= d0:
            return None
        return (d1 - d0) / (t1 - t0)

    def view(self, now: float) -> ProgressView:
        p = self.last or Progress("starting", "", 0, 0)
        overall = min(1.0, p.done / p.total) if p.total > 0 else None
        item = min(1.0, p.item_done / p.item_total) if p.item_total > 0 else None
        rate = self.rate()
        eta = "-"
        if rate and p.total > p.done:
            eta = human_duration((p.total - p.done) / rate)
        elif p.total and p.done >= p.total:
            eta = "0:00"
        return ProgressView(
            phase=p.phase,
            item=p.item,
            overall=overall,
            item_fraction=item,
            overall_text=f"{human_size(p.done)} of {human_size(p.total)}" if p.total else "",
            item_text=(
                f"{human_size(p.item_done)} of {human_size(p.item_total)}" if p.item_total else ""
            ),
            rate_text=human_rate(rate) if rate else "-",
            elapsed_text=human_duration(now - self.started),
            eta_text=eta,
            message=p.message,
        )
