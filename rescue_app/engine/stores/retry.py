"""One retry policy for every network store, and who hears about it.

A store that lost its server retries with backoff until a deadline passes
without progress. Two things are the same for every store and live here:

- ``RetryPolicy``: the backoff schedule and the deadlines. A server that has
  never answered gets a short window (``first_contact``): a wrong port or
  host name is reported in seconds, not after a minute of silence. Once it
  has answered, a dropped transfer is retried for ``deadline`` seconds
  without progress (``LIFERAFT_RETRY_SECONDS``, 60 by default).
- ``Watch``: the running operation's ears. The Engine gives the store one
  for the length of a capture, restore or verify; each wait is reported as
  a notice on the operation's progress callback ("server unreachable,
  retrying (12 s of 60)"), the all-clear once the server answers again, and
  a cancel (Ctrl-C, the UI's Cancel) ends the wait at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from rescue_app.errors import CancelledError
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress

NOTICE = "notice"  # Progress.phase of a notice: not a step of the operation


@dataclass(frozen=True)
class RetryPolicy:
    deadline: float = 60.0  # seconds without progress before giving up
    first_contact: float = 4.0  # the same, for a server that never answered
    first_backoff: float = 0.25
    max_backoff: float = 5.0

    @classmethod
    def from_environment(cls) -> RetryPolicy:
        return cls(deadline=float(os.environ.get("LIFERAFT_RETRY_SECONDS", "60")))

    def backoffs(self) -> _Backoff:
        return _Backoff(self)


class _Backoff:
    """Delays that double up to ``max_backoff``; ``reset()`` after progress."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.reset()

    def reset(self) -> None:
        self.delay = self.policy.first_backoff
        self.started = time.monotonic()

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.policy.max_backoff)
        return delay

    def waited(self) -> float:
        return time.monotonic() - self.started


class Watch:
    """Reports a store's waits to the running operation and carries its cancel."""

    def __init__(self, location: str = "", progress: ProgressCallback = no_progress,
                 cancel: CancelToken | None = None) -> None:
        self.location = location
        self.progress = progress
        self.cancel = cancel
        self._waiting = False

    def retrying(self, reason: str, waited: float, limit: float) -> None:
        self._waiting = True
        self.progress(Progress(NOTICE, self.location, 0, 0, notice=(
            f"server unreachable ({reason}), retrying ({waited:.0f} s of {limit:.0f})")))

    def recovered(self) -> None:
        if self._waiting:
            self._waiting = False
            self.progress(Progress(NOTICE, self.location, 0, 0, notice=""))

    def sleep(self, seconds: float, what: str) -> None:
        """Wait before the next try; CancelledError at once if the user cancels."""
        if self.cancel is None:
            time.sleep(seconds)
        elif self.cancel.wait(seconds):
            raise CancelledError(f"cancelled while waiting for {self.location} ({what})")

    def check_cancelled(self, what: str) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise CancelledError(f"cancelled while waiting for {self.location} ({what})")
