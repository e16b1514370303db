"""One retry policy for every network store, and who hears about it.

A store that lost its server retries with backoff until a deadline passes
without progress. What is the same for every store (HTTP, SFTP, S3, the
next one) lives here; a store only says which of its errors are worth
another try and words its own final message:

- ``RetryPolicy``: the backoff schedule and the deadlines. A server that has
  never answered gets a short window (``first_contact``): a wrong port or
  host name is reported in seconds, not after a minute of silence. Once it
  has answered, a dropped transfer is retried for ``deadline`` seconds
  without progress (``LIFERAFT_RETRY_SECONDS``, 60 by default).
- ``Attempts``: one operation's tries under the policy (the store's loop
  asks it whether, and after how long, to try again).
- ``Watch``: the running operation's ears. The Engine gives the store one
  for the length of a capture, restore or verify; each wait is reported as
  a notice on the operation's progress callback ("server unreachable,
  retrying (12 s of 60)"), the all-clear once the server answers again, and
  a cancel (Ctrl-C, the UI's Cancel) ends the wait at once.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TypeVar

from rescue_app.errors import CancelledError, RepositoryError
from rescue_app.progress import CancelToken, Progress, ProgressCallback, no_progress

log = logging.getLogger("liferaft.stores.retry")

T = TypeVar("T")

NOTICE = "notice"  # Progress.phase of a notice: not a step of the operation


@dataclass(frozen=True)
class RetryPolicy:
    deadline: float = 60.0  # seconds without progress before giving up
    first_contact: float = 2.0  # the same, for a server that never answered
    first_backoff: float = 0.25
    max_backoff: float = 5.0

    @classmethod
    def from_environment(cls) -> RetryPolicy:
        text = os.environ.get("LIFERAFT_RETRY_SECONDS", "60")
        try:
            deadline = float(text)
        except ValueError:
            deadline = -1.0
        if not deadline > 0:  # (also NaN)
            raise RepositoryError(
                f"LIFERAFT_RETRY_SECONDS={text!r} is not a number of seconds",
                hint="give a positive number, e.g. 60, or unset it",
            )
        return cls(deadline=deadline)

    def attempts(self, watch: Watch, what: str, *, answered: bool) -> Attempts:
        return Attempts(self, watch, what, answered=answered)


class Attempts:
    """The tries of one operation against one server: when to try again,
    when to give up, each wait reported to the Watch and cut short by a cancel.

    A store's loop: ``return tries.succeeded(attempt())``; on a transient
    failure call ``wait(reason)`` and try again if it returns True, else raise
    ``gave_up(...)`` or a line of the store's own (``limit`` says how long it
    tried, ``answered`` whether the server ever answered).
    """

    def __init__(self, policy: RetryPolicy, watch: Watch, what: str, *, answered: bool) -> None:
        self.policy = policy
        self.watch = watch
        self.what = what
        self.answered = answered  # False: first contact, the short window
        self._delay = policy.first_backoff
        self._started = time.monotonic()

    @property
    def limit(self) -> float:
        return self.policy.deadline if self.answered else self.policy.first_contact

    def gave_up(self, location: str, server: str, reason: str, check: str) -> RepositoryError:
        """The one line once ``wait`` said no: a server never reached, or one lost
        for longer than the deadline. ``check``: what the user should look at."""
        if not self.answered:
            return RepositoryError(
                f"repository {location}: cannot reach {server}: {reason}",
                hint=f"check {check}, that the server is running, and the network cable/settings",
            )
        return RepositoryError(
            f"repository {location}: {self.what} from {server} failed: {reason}",
            hint=f"retried for {self.limit:.0f} s; check that the server is running and "
            f"reachable, {check}, and the network cable/settings",
        )

    def succeeded(self, result: T) -> T:
        """The try worked: the server answers, and any notice is cleared."""
        self.answered = True
        self.watch.recovered()
        return result

    def progressed(self) -> None:
        """The server answered or sent bytes: the full deadline, counted from now."""
        self.answered = True
        self._delay = self.policy.first_backoff
        self._started = time.monotonic()

    def wait(self, reason: str) -> bool:
        """Sleep before the next try (a notice while a known server is away);
        False, without sleeping, once the next try would pass the limit.
        CancelledError at once if the operation is cancelled meanwhile."""
        delay = self._delay
        self._delay = min(self._delay * 2, self.policy.max_backoff)
        waited = time.monotonic() - self._started
        if waited + delay > self.limit:
            return False
        log.info("%s: %s; retrying in %.2f s", self.what, reason, delay)
        if self.answered:
            self.watch.retrying(reason, waited, self.limit)
        self.watch.sleep(delay, self.what)
        return True


@dataclass(eq=False)
class Watch:
    """Reports a store's waits to the running operation and carries its cancel."""

    location: str = ""
    progress: ProgressCallback = no_progress
    cancel: CancelToken | None = None
    _waiting: bool = field(default=False, init=False, repr=False)

    def retrying(self, reason: str, waited: float, limit: float) -> None:
        self._waiting = True
        self.progress(
            Progress(
                NOTICE,
                self.location,
                0,
                0,
                notice=(f"server unreachable ({reason}), retrying ({waited:.0f} s of {limit:.0f})"),
            )
        )

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


_SAYINGS = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "unknown host name"),
    ("Temporary failure in name resolution", "host name not resolved"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("timed out", "timed out"),
    ("Connection reset", "connection reset"),
    ("Connection aborted", "connection dropped"),
    ("IncompleteRead", "connection dropped mid-file"),
    ("RemoteDisconnected", "connection dropped"),
    ("Connection broken", "connection dropped mid-file"),
)


def network_reason(exc: BaseException) -> str:
    """A network library's error in a few words ("connection refused"), for
    notices and one-line errors; the error's first line when not recognised."""
    text = str(exc)
    for needle, say in _SAYINGS:
        if needle in text:
            return say
    return text.splitlines()[0][:160] if text else type(exc).__name__
