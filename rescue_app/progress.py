"""Progress reporting from the engine to whoever draws it (CLI bar, Textual UI).

The engine calls a ProgressCallback with a Progress value; it never draws.
Callbacks run in the engine's thread: a UI must hand the value over to its
own thread (Textual: post_message / call_from_thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running operation.

    ``phase`` is a word such as "capture", "restore", "verify", "grow";
    ``item`` names the current part ("disk 1 partition 2 (ext4)");
    ``done``/``total`` count bytes of the whole operation and
    ``item_done``/``item_total`` bytes of the current item.
    """

    phase: str
    item: str
    done: int
    total: int
    item_done: int = 0
    item_total: int = 0
    message: str = ""
    # phase "notice": a passing condition, not a step ("server unreachable,
    # retrying (12 s of 60)"); shown beside the bar, cleared by notice "".
    notice: str = ""


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default callback: report nothing."""


class CancelToken:
    """Set by the UI or a signal handler; the engine checks it between chunks."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once if cancelled meanwhile."""
        return self._event.wait(seconds)
