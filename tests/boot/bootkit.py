"""Helpers for the boot tests: constants, the QEMU VM wrapper, firmware, HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest

# REPO and PROFILE: the boot and drill tests import them from here.
from tests.helpers.builds import PROFILE as PROFILE
from tests.helpers.builds import REPO as REPO
from tests.helpers.builds import BuildFailed, run_builder

# One home for taking the kernel out of the ISO: the guest runner's.
from tests.helpers.guest import extract_live_kernel  # noqa: F401

MARKER = "liferaft rescue environment ready"
# liferaft-start prints MARKER just before it starts the app; the app is usable
# once its home screen is drawn, so the boot time is taken at this text.
TUI_HOME = "Restore an image onto a disk"
OVMF = Path("/usr/share/OVMF")
# The target is 45 s under TCG; the assertion leaves room for a busy
# CI machine, the measured time is printed and recorded for the closing note.
# `make test` boots two guests side by side on two cores (xdist workers): a
# netboot that takes 80 s alone took 150 s with other guests running.
BOOT_TARGET_S = 45
BOOT_TIMEOUT_S = 300


def _need(condition: bool, why: str) -> None:
    """A missing tool fails the test: `make setup` installs every one."""
    if not condition:
        pytest.fail(f"{why} (run `make setup`)")


def _build(*args: str) -> None:
    try:
        run_builder(*args)
    except BuildFailed as exc:
        pytest.fail(str(exc))


class Vm:
    """A QEMU process whose serial console goes to a file."""

    def __init__(self, args: list[str], workdir: Path, memory_mb: int = 1536) -> None:
        self.serial = workdir / "serial.log"
        self.serial.write_bytes(b"")
        self.argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", "2",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.serial}", *args,
        ]  # fmt: skip
        self.screen = pyte.Screen(80, 24)
        self._stream = pyte.ByteStream(self.screen)
        self._fed = 0
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def text(self) -> str:
        return self.serial.read_bytes().decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout: float = BOOT_TIMEOUT_S) -> float:
        """Seconds from QEMU start until ``needle`` appears on the serial console."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                pytest.fail(f"QEMU exited ({self.proc.returncode}) before {needle!r}:\n{out}\n"
                            f"serial:\n{self.text()[-3000:]}")  # fmt: skip
            time.sleep(0.5)
        pytest.fail(f"no {needle!r} on the serial console after {timeout:.0f} s:\n"
                    f"{self.text()[-3000:]}")  # fmt: skip

    def screen_text(self) -> str:
        """The serial console as an 80x24 terminal shows it now."""
        data = self.serial.read_bytes()
        self._stream.feed(data[self._fed :])
        self._fed = len(data)
        return "\n".join(self.screen.display)

    def wait_for_screen(self, needle: str, timeout: float = BOOT_TIMEOUT_S) -> float:
        """Seconds from QEMU start until ``needle`` is on the terminal screen.

        Full-screen apps draw with cursor moves, so their text is looked for on
        the rendered screen, not in the byte stream.
        """
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if needle in self.screen_text():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                pytest.fail(f"QEMU exited ({self.proc.returncode}) before {needle!r}:\n"
                            f"{self.screen_text()}")  # fmt: skip
            time.sleep(0.5)
        pytest.fail(f"no {needle!r} on the serial console's screen after {timeout:.0f} s:\n"
                    f"{self.screen_text()}")  # fmt: skip

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"VM still running after {timeout:.0f} s:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def ovmf_args(tmp_path: Path, secure_boot: bool) -> list[str]:
    if secure_boot:
        code, vars_ = OVMF / "OVMF_CODE_4M.secboot.fd", OVMF / "OVMF_VARS_4M.ms.fd"
    else:
        code, vars_ = OVMF / "OVMF_CODE_4M.fd", OVMF / "OVMF_VARS_4M.fd"
    _need(code.exists() and vars_.exists(), "ovmf is not installed")
    local_vars = tmp_path / "OVMF_VARS.fd"
    shutil.copy(vars_, local_vars)
    args = [
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={local_vars}",
    ]  # fmt: skip
    if secure_boot:
        args = ["-machine", "q35,smm=on", "-global",
                "driver=cfi.pflash01,property=secure,value=on", *args]  # fmt: skip
    return args


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def http_server(directory: Path, sock: socket.socket) -> Iterator[None]:
    """Serve ``directory`` on an already bound loopback socket, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_activate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
