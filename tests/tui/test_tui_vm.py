"""The real thing: boot the built ISO in QEMU and drive `liferaft tui` on its serial console.

pexpect talks to the VM's ttyS0 (QEMU ``-serial stdio``), pyte turns the byte
stream into a screen we can read. The restore goes from a repository disk the
UI finds by itself (read-only scan) onto a blank disk; the test checks the
disk on the host afterwards. Before that, in the same boot, the network screen
runs DHCP on the VM's interface and lists the images a host nginx serves
behind basic auth (URL, user and password typed on the console).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pyte
import pytest

from rescue_app.engine.kernel import reread_partitions
from tests.helpers.builds import BuildFailed, build_iso
from tests.helpers.diskkit import (
    PartSpec,
    fsck_clean,
    loop_disk,
    make_fs,
    mounted,
    partition_disk,
    populate,
    tree_checksums,
)
from tests.tui.webauth import nginx_with_basic_auth

pytestmark = [pytest.mark.slow, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
PROFILE = "default"
MIB = 1024 * 1024
WEB_USER, WEB_PASSWORD = "rescuer", "vm-Pa55word"


class SerialScreen:
    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()

    def pump(self, seconds: float = 0.3) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                continue
            self.raw += data
            self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.5)
            if needle in self.text():
                return self.text()
        raise AssertionError(
            f"{needle!r} never appeared on the serial console; screen:\n"
            f"{self.text()}\nlast bytes:\n{bytes(self.raw[-2000:])!r}"
        )

    def send(self, keys: str) -> None:
        for key in keys:
            self.child.send(key)
            self.pump(0.15)


def _build_iso() -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86 is not installed (run `make setup`)")
    try:
        return build_iso(PROFILE)
    except BuildFailed as exc:
        pytest.fail(str(exc))


def _losetup(image: Path) -> str:
    return subprocess.run(
        ["losetup", "-f", "--show", "-P", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_restore_through_the_tui_on_a_serial_console(tmp_path: Path) -> None:
    iso = _build_iso()
    # A repository disk (whole-disk ext4, repository in liferaft/) with one image.
    repo_img = tmp_path / "repo.img"
    with open(repo_img, "wb") as f:
        f.truncate(512 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "LRREPO", str(repo_img)], check=True)
    with loop_disk(256 * MIB, str(tmp_path)) as src:
        (part,) = partition_disk(src, "gpt", [PartSpec(None, "ext4", "root")])
        make_fs(part, "ext4", label="srcroot")
        expected = populate(part, "ext4", seed=11)
        # Captured on the host once: served over HTTP (network screen) and copied
        # onto the repository disk (media scan, restore).
        host_repo = tmp_path / "web-repo"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rescue_app.cli",
                "capture",
                "--repo",
                str(host_repo),
                "--name",
                "vmsrc",
                src,
            ],
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        repo_dev = _losetup(repo_img)
        try:
            with mounted(repo_dev, "ext4") as point:
                subprocess.run(["cp", "-a", str(host_repo), f"{point}/liferaft"], check=True)
        finally:
            subprocess.run(["losetup", "-d", repo_dev], check=False)
    target_img = tmp_path / "target.img"
    with open(target_img, "wb") as f:
        f.truncate(256 * MIB)

    argv = [
        "-accel",
        "tcg",
        "-m",
        "1536",
        "-smp",
        "2",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-cdrom",
        str(iso),
        "-drive",
        f"file={repo_img},format=raw,if=none,id=repo",
        "-device",
        "virtio-blk-pci,drive=repo,serial=LRREPO01",
        "-drive",
        f"file={target_img},format=raw,if=none,id=target",
        "-device",
        "virtio-blk-pci,drive=target,serial=LRTARGET01",
    ]
    stack = contextlib.ExitStack()
    server = stack.enter_context(
        nginx_with_basic_auth(str(host_repo), str(tmp_path / "web"), WEB_USER, WEB_PASSWORD)
    )
    child = pexpect.spawn(
        "qemu-system-x86_64",
        argv,
        dimensions=(24, 80),
        timeout=30,
        env=dict(os.environ, TERM="vt220"),
    )
    try:
        console = SerialScreen(child)
        console.wait_for("Restore an image onto a disk", timeout=300)
        console.wait_for("/liferaft", timeout=120)  # the read-only media scan found it
        # As if the profile had set up no network: networkd stopped, no address.
        console.send("s")
        console.wait_for("type `exit` to return to the menu", timeout=60)
        console.send(
            "systemctl stop systemd-networkd.socket systemd-networkd.service; "
            "ip -4 addr flush scope global; exit\r"
        )
        console.wait_for("Restore an image onto a disk", timeout=60)
        # The network screen: offline; DHCP on the first interface starts networkd
        # with liferaft's runtime file; then the host's nginx by URL, user and password.
        console.send("n")
        console.wait_for("Network interfaces", timeout=60)
        console.wait_for("Offline: no interface has an address", timeout=60)
        child.send("\x1bOQ")  # F2 (one write: a lone ESC would be the Escape key)
        text = console.wait_for("Set up ", timeout=120)
        assert re.search(r"Set up \w+: 10\.0\.2\.\d+/24, gateway 10\.0\.2\.2", text), text
        console.send(f"http://10.0.2.2:{server.port}/\r{WEB_USER}\r")
        console.send(WEB_PASSWORD)
        assert WEB_PASSWORD not in console.text()
        console.send("\r")
        console.wait_for("vmsrc", timeout=120)
        assert any(line.split()[1] == "200" for line in server.log_lines())
        console.send("\x1b")  # back to the network screen
        console.wait_for("Network interfaces", timeout=60)
        console.send("\x1b")  # home
        console.wait_for("Restore an image onto a disk", timeout=60)
        console.send("r")
        console.wait_for("Where are the images?", timeout=60)
        console.send("\r")
        console.wait_for("vmsrc", timeout=120)
        console.send("\r")
        console.wait_for("ERASES everything on", timeout=120)
        console.send("\x0e")  # ctrl+n
        text = console.wait_for("type the name of each target disk", timeout=60)
        match = re.search(r"target disk \((/dev/\w+)\)", text.replace("\n", " "))
        assert match, text
        device = match.group(1)
        console.send(device + "\r")
        text = console.wait_for("Press Enter for the home screen", timeout=600)
        assert "Done." in text and "read back and matches the image" in text, text
        assert "Traceback" not in bytes(console.raw).decode("utf-8", "replace")
    finally:
        child.terminate(force=True)
        stack.close()
    assert WEB_PASSWORD.encode() not in bytes(console.raw)

    dev = _losetup(target_img)
    try:
        (node,) = reread_partitions(dev, 1)
        fsck_clean(node, "ext4")
        assert tree_checksums(node, "ext4") == expected
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
