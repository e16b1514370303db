"""Fixtures every liferaft test may use: a work directory on a real disk and loop disks."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

# `from tests.helpers.diskkit import ...` works however pytest is started.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.helpers.diskkit import loop_disk  # noqa: E402

# Tests that need loop devices and mounts carry @pytest.mark.root: the one
# mechanism. Only non-root skips them; a missing tool is a failure (add its
# package to deps/apt-host.txt instead). Fixtures do not skip on their own: a
# test that uses one of these without the marker is refused at collection.
ROOT_FIXTURES = frozenset(
    {"loopdisk", "captured", "image", "cz", "built_iso", "rescue_iso", "guest_iso"}
)


@pytest.fixture(autouse=True)
def _signals_as_they_were() -> Iterator[None]:
    """A test that runs a command's main() in this process (the builder's
    takes SIGTERM and SIGHUP) gives the handlers back: the next test starts
    with the process's own, as a user's process would."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if ROOT_FIXTURES & set(getattr(item, "fixturenames", ()))
        and not item.get_closest_marker("root")
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use a fixture that needs root but lack @pytest.mark.root "
            f"(add it): {', '.join(unmarked)}"
        )
    if os.geteuid() == 0:
        return
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason="needs root (loop devices, mounts)"))


def _disk_backed_tmp() -> str:
    # Sparse disk images of several GB must not land on a tmpfs /tmp.
    for candidate in ("/var/tmp",):
        try:
            os.makedirs(candidate, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    return tempfile.gettempdir()


@pytest.fixture
def workdir() -> Iterator[str]:
    """A fresh directory on a real filesystem (not tmpfs), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="liferaft-test-", dir=_disk_backed_tmp()) as path:
        yield path


@pytest.fixture
def loopdisk(workdir: str) -> Iterator[Callable[[int], str]]:
    """Factory: ``loopdisk(size_bytes) -> "/dev/loopN"``; all detached at teardown."""
    with ExitStack() as stack:

        def make(size_bytes: int) -> str:
            return stack.enter_context(loop_disk(size_bytes, workdir))

        yield make
