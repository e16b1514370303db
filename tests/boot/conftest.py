"""Fixtures for the boot tests: the ISO built once per session, QEMU VMs (TCG).

The build goes through `liferaft-build` with the repository's cache, so an
up-to-date dist/ is reused in seconds. Each VM writes its serial console to a
file that the test polls; VMs and servers are always stopped, temp files
removed.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bootkit import PROFILE, REPO, Vm, _build, _need, extract_live_kernel, http_server


@pytest.fixture(scope="session")
def built_iso() -> Path:
    _need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    _build("iso", "--profile", PROFILE)
    iso = REPO / "dist" / f"liferaft-{PROFILE}.iso"
    assert iso.stat().st_size <= 250 * 10**6, f"ISO is {iso.stat().st_size / 1e6:.0f} MB"
    return iso


@pytest.fixture(scope="session")
def live_kernel(built_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """vmlinuz and initrd.img from the ISO, for boots that need extra kernel arguments."""
    return extract_live_kernel(built_iso, tmp_path_factory.mktemp("kernel"))


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Callable[..., Vm]]:
    """``vm(args)`` starts a VM; every VM started is killed at teardown."""
    started: list[Vm] = []

    def start(args: list[str], memory_mb: int = 1536) -> Vm:
        machine = Vm(args, tmp_path, memory_mb)
        started.append(machine)
        return machine

    yield start
    for machine in started:
        machine.stop()


@pytest.fixture
def netboot_server(built_iso: Path, tmp_path: Path) -> Iterator[str]:
    """The netboot files built for this server's URL and served on loopback.

    The guest reaches the host's loopback at 10.0.2.2 (QEMU user networking).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"http://10.0.2.2:{port}/"
    out = tmp_path / "dist"
    _build("netboot", "--profile", PROFILE, "--output-dir", str(out), "--base-url", base)
    with http_server(out / f"netboot-{PROFILE}", sock):
        yield base + "boot.ipxe"
