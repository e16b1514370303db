"""Fixtures of the drill: the rescue ISO (built or reused through the
builder's cache), its kernel for direct boots, and the drill's folder with
its QEMU VMs, which are always killed at teardown."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.boot.bootkit import PROFILE, REPO, _build
from tests.drill.machinekit import DrillSite
from tests.drill.rescuekit import Rescue
from tests.helpers.guest import extract_live_kernel


@pytest.fixture(scope="session")
def rescue_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86 is not installed (deps/apt-host.txt)")
    # Another build of the same cache (the other xdist worker's) holds the
    # builder's lock: this one waits for it and finds the ISO up to date.
    _build("iso", "--profile", PROFILE)
    # A copy: other tests may rebuild dist/ while the drill's VMs read the ISO.
    iso = tmp_path_factory.mktemp("rescue-iso") / "liferaft.iso"
    shutil.copyfile(REPO / "dist" / f"liferaft-{PROFILE}.iso", iso)
    return iso


@pytest.fixture(scope="session")
def rescue_kernel(rescue_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return extract_live_kernel(rescue_iso, tmp_path_factory.mktemp("rescue-kernel"))


@pytest.fixture(scope="session")
def rescue(rescue_iso: Path, rescue_kernel: tuple[Path, Path]) -> Rescue:
    """The stick: the ISO and its kernel, for the drill's unattended runs."""
    return Rescue(rescue_iso, *rescue_kernel)


@pytest.fixture(scope="module")
def site() -> Iterator[DrillSite]:
    """Shared by the drill's tests: the backup is made once, restored twice."""
    with tempfile.TemporaryDirectory(prefix="liferaft-drill-", dir="/var/tmp") as d:
        drill = DrillSite(Path(d))
        try:
            yield drill
        finally:
            drill.stop_all()
