"""The guest runner without QEMU: its argument errors, its framing of the
script's output, its medium, and the switch that keeps a rescue boot from
running scripts found on disks."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import pytest

from builder import layers
from builder.build import check_profile
from builder.context import BuildContext
from builder.profile import list_profiles, load_profile
from rescue_app.profile import ProfileError
from tests.helpers.guest import CMDLINE, MEDIUM_LABEL, _Channel, make_medium, sparse_disk

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "overlay"


def _runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.helpers.guest", *args],
        cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_iso_is_one_line_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    proc = _runner("--iso", str(tmp_path / "none.iso"), str(script))
    _one_line_error(proc, "no ISO at", "none.iso", "make iso")


def test_other_argument_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    iso = sparse_disk(tmp_path / "fake.iso", 1024)
    disk = sparse_disk(tmp_path / "a.img", 1024)
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    _one_line_error(_runner("--iso", str(iso), str(tmp_path / "none.sh")), "no script at")
    _one_line_error(_runner("--iso", str(iso), "--disk", str(tmp_path / "b.img"), str(script)),
                    "no disk image at", "b.img")  # fmt: skip
    _one_line_error(_runner("--iso", str(iso), "--disk", str(disk), "--disk", str(disk),
                            str(script)), "twice")  # fmt: skip
    _one_line_error(_runner("--iso", str(iso), "--memory", "64", str(script)), "--memory")
    _one_line_error(_runner("--iso", str(iso), "--timeout", "0", str(script)), "--timeout")
    proc = _runner("--iso", str(iso))  # no script: argparse's own usage error
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_file_that_is_not_the_iso_is_one_line_exit_125(tmp_path: Path) -> None:
    iso = tmp_path / "fake.iso"
    iso.write_bytes(b"not an ISO 9660 image" * 100)
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    proc = _runner("--iso", str(iso), str(script))
    assert proc.returncode == 125 and proc.stdout == "", proc
    assert len(proc.stderr.strip().splitlines()) == 1 and "no /live/vmlinuz" in proc.stderr


def _channel(tmp_path: Path, data: bytes) -> tuple[_Channel, str]:
    path = tmp_path / "channel.log"
    path.write_bytes(data)
    out = io.StringIO()
    channel = _Channel(path, "abc123", out)
    channel.poll()
    return channel, out.getvalue()


def test_frame_gives_exact_output_and_exit_code(tmp_path: Path) -> None:
    # What liferaft-guest writes: noise before, the script's output (here
    # without a final newline), a newline of its own, the end marker.
    data = (b"garbage\nLIFERAFT-GUEST-BEGIN abc123\nline one\n\nLIFERAFT-GUEST-END wrong 0\n"
            b"last\nLIFERAFT-GUEST-END abc123 3\nafter\n")  # fmt: skip
    channel, streamed = _channel(tmp_path, data)
    assert channel.exit_code == 3
    assert streamed == "".join(channel.lines) == "line one\n\nLIFERAFT-GUEST-END wrong 0\nlast"


def test_frame_keeps_the_scripts_final_newline(tmp_path: Path) -> None:
    data = b"LIFERAFT-GUEST-BEGIN abc123\nout\n\nLIFERAFT-GUEST-END abc123 0\n"
    channel, streamed = _channel(tmp_path, data)
    assert (channel.exit_code, streamed) == (0, "out\n")


def test_frame_reports_a_guest_error_and_waits_for_a_partial_marker(tmp_path: Path) -> None:
    channel, _ = _channel(tmp_path, b"LIFERAFT-GUEST-ERROR no medium labelled LRGUEST\n")
    assert channel.error == "no medium labelled LRGUEST" and not channel.started
    channel, _ = _channel(tmp_path, b"LIFERAFT-GUEST-BEGIN abc123\nx\n\nLIFERAFT-GUEST-END abc")
    assert channel.exit_code is None


def test_medium_is_labelled_and_carries_the_app(tmp_path: Path) -> None:
    image = make_medium(tmp_path, "echo hi\n", "n0nce", app=True)
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(image)],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert label == MEDIUM_LABEL
    listing = subprocess.run(
        ["xorriso", "-indev", str(image), "-find", "/", "-type", "f"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in ("/script.sh", "/nonce", "/app/rescue_app/cli.py"):
        assert f"'{name}'" in listing, listing[:2000]
    assert "__pycache__" not in listing


def test_guest_unit_runs_only_when_the_kernel_command_line_asks(tmp_path: Path) -> None:
    unit = (OVERLAY / "etc/systemd/system/liferaft-guest.service").read_text()
    conditions = [ln for ln in unit.splitlines() if ln.startswith("Condition")]
    # One condition, not a "|" trigger that another condition could satisfy.
    assert conditions == ["ConditionKernelCommandLine=liferaft.guest=1"]
    helper = (OVERLAY / "usr/local/sbin/liferaft-guest").read_text()
    assert "grep -qw 'liferaft\\.guest=1' /proc/cmdline || exit 0" in helper
    assert "liferaft.guest=1" in CMDLINE.split()
    # No profile's boot entries carry it, and a profile that adds it is refused.
    for name in list_profiles():
        ctx = BuildContext(load_profile(name), REPO, tmp_path, tmp_path, tmp_path)
        assert "liferaft.guest" not in ctx.kernel_cmdline
        check_profile(ctx)
    profile = load_profile("default")
    bad = BuildContext(dataclasses.replace(profile, kernel_cmdline="quiet liferaft.guest=1"),
                       REPO, tmp_path, tmp_path, tmp_path)  # fmt: skip
    with pytest.raises(ProfileError, match="liferaft.guest"):
        check_profile(bad)


def test_guest_unit_is_enabled_in_the_app_layer(tmp_path: Path) -> None:
    ctx = BuildContext(load_profile("default"), REPO, tmp_path, tmp_path, tmp_path)
    layers.configure_system(ctx, tmp_path / "root")
    wants = tmp_path / "root/etc/systemd/system/multi-user.target.wants/liferaft-guest.service"
    assert wants.is_symlink()
    assert str(wants.readlink()) == "/etc/systemd/system/liferaft-guest.service"
