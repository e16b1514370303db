"""Fixtures for tests that run scripts inside the rescue system (tests/helpers/guest.py).

``guest(script, disks, ...)`` boots the built ISO once per call and returns a
GuestResult; put several scenarios into one script, since each boot costs
1-3 minutes under TCG (docs/TESTING.md). The ISO is built (or found up to
date) once per session.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.helpers.builds import BuildFailed, build_iso
from tests.helpers.guest import GuestResult, run_in_guest, sparse_disk

REPO = Path(__file__).resolve().parents[2]
PROFILE = "default"
ISO_LIMIT_BYTES = 250 * 10**6  # issue 12


@pytest.fixture(scope="session")
def guest_iso() -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86 is not installed (run `make setup`)")
    try:
        iso = build_iso(PROFILE)
    except BuildFailed as exc:
        pytest.fail(str(exc))
    assert iso.stat().st_size <= ISO_LIMIT_BYTES, f"ISO is {iso.stat().st_size / 1e6:.0f} MB"
    return iso


@pytest.fixture
def guest(guest_iso: Path) -> Callable[..., GuestResult]:
    """``guest(script, disks=(), app=False, memory_mb=1536, timeout=900)``."""

    def run(script: str, disks: Sequence[Path] = (), **options: object) -> GuestResult:
        return run_in_guest(guest_iso, disks, script, stream=sys.stdout, **options)  # type: ignore[arg-type]

    return run


@pytest.fixture
def guest_checks(guest: Callable[..., GuestResult], workdir: str) -> Callable[..., str]:
    """``guest_checks(script, disks, checks, **options)``: the script
    tests/guest/SCRIPT run with this tree's engine (--app) on new sparse
    disks (``disks``: MiB each, in order: vda, vdb, ...); it must exit 0 and
    print "CHECK <name> ok" for each of ``checks``. Returns its output."""

    def run(script: str, disks: Sequence[int], checks: Sequence[str], **options: object) -> str:
        files = [
            sparse_disk(Path(workdir) / f"disk{i}.img", mib << 20) for i, mib in enumerate(disks)
        ]
        text = (Path(__file__).resolve().parent / script).read_text()
        result = guest(text, files, app=True, **options)
        assert result.exit_code == 0, result.output[-3000:]
        for name in checks:
            assert f"CHECK {name} ok" in result.output, name
        return result.output

    return run


@pytest.fixture(scope="module")
def scenario_workdir() -> Iterator[Path]:
    """A module's work directory on a real disk (sparse disks of GiBs)."""
    with tempfile.TemporaryDirectory(prefix="liferaft-test-", dir="/var/tmp") as path:
        yield Path(path)
