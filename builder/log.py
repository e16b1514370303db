"""Build logging: each step prints its name, then its duration (mkosi's complete_step)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

_depth = 0


def say(message: str) -> None:
    print(f"{'  ' * _depth}{message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def complete_step(name: str) -> Iterator[None]:
    global _depth
    say(f"‣ {name}")
    start = time.monotonic()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        elapsed = time.monotonic() - start
        say(f"  {name}: {elapsed:.1f} s")
