"""`liferaft tui` in a real pseudo-terminal, read through a terminal emulator (pyte).

The host-side stand-in for the serial-console test: TERM=vt100 and linux, NO_COLOR,
80x24, keys only. The media scan is switched off: on a shared host it must not
mount other people's disks.
"""

from __future__ import annotations

import os
import sys
import time

import pexpect
import pyte
import pytest

LIFERAFT = os.path.join(os.path.dirname(sys.executable), "liferaft")


def screen_of(
    child: pexpect.spawn,
    stream: pyte.ByteStream,
    screen: pyte.Screen,
    want: str,
    timeout: float = 30,
) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=0.2))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            break
        text = "\n".join(screen.display)
        if want in text:
            # A frame can arrive in pieces: read on until the terminal is quiet.
            try:
                while True:
                    stream.feed(child.read_nonblocking(65536, timeout=0.3))
            except (pexpect.TIMEOUT, pexpect.EOF):
                pass
            return "\n".join(screen.display)
    raise AssertionError(f"{want!r} never appeared; the screen shows:\n{text}")


@pytest.mark.root
@pytest.mark.parametrize("term", ["vt100", "linux"])
def test_tui_in_a_terminal(term: str, tmp_path: object) -> None:
    env = dict(
        os.environ, TERM=term, NO_COLOR="1", LIFERAFT_TUI_NO_SCAN="1", COLUMNS="80", LINES="24"
    )
    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    child = pexpect.spawn(LIFERAFT, ["tui"], env=env, dimensions=(24, 80), timeout=30)
    try:
        text = screen_of(child, stream, screen, "Restore an image onto a disk")
        assert "Disks" in text and "Reboot / Power off" in text
        assert "Traceback" not in text
        child.send("r")
        text = screen_of(child, stream, screen, "Where are the images?")
        child.send("\x1b")  # Escape: back home
        screen_of(child, stream, screen, "Restore an image onto a disk")
        child.send("n")  # the network screen: this host's interfaces, the URL form
        text = screen_of(child, stream, screen, "Network interfaces")
        assert "Repository URL" in text and "Traceback" not in text
        child.send("\x1b")
        screen_of(child, stream, screen, "Restore an image onto a disk")
        child.send("\x11")  # ctrl+q
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
