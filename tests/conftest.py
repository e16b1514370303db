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


# The QEMU test files, longest first (measured: docs/TESTING.md). `make test`
# runs the slow part on two xdist workers, file by file in this order
# (--dist loadfile --no-loadscope-reorder): the long drills start at once and
# the short boots fill in at the end, so both workers finish together. The
# files that boot nothing come early: they run while the other worker builds
# the ISO. Files not listed keep their place after these.
SLOW_FIRST = (
    "tests/drill/test_drill.py",
    "tests/test_deb.py",
    "tests/test_builder_pipeline.py",
    "tests/drill/test_lvm_drill.py",
    "tests/guest/test_clonezilla_lvm_vm.py",
    "tests/guest/test_online_vm.py",
    "tests/guest/test_md_luks_vm.py",
    "tests/guest/test_lvm_vm.py",
    "tests/guest/test_guest_tools.py",
    "tests/tui/test_tui_vm.py",
    "tests/boot/test_netstores_vm.py",
    "tests/boot/test_boot.py",
    "tests/boot/test_unattended_vm.py",
)


def _file_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_file_rank)  # stable: the order within a file is kept
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
