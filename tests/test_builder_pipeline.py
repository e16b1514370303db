"""The build pipeline's pure parts, and how a failed or killed build cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from builder import cache, host, layers
from builder.context import READY_MARKER, BuildContext
from builder.profile import load_profile
from rescue_app.errors import ToolMissingError

REPO = Path(__file__).resolve().parent.parent


def context(tmp_path: Path, profile: str = "default") -> BuildContext:
    return BuildContext(
        profile=load_profile(profile),
        repo=REPO,
        cache_dir=tmp_path / "cache",
        build_dir=tmp_path / "build",
        output_dir=tmp_path / "dist",
    )


def test_missing_tool_names_the_package() -> None:
    with pytest.raises(ToolMissingError) as err:
        host.check_tools({"liferaft-no-such-tool": "liferaft-pkg"}, {"/no/such/file": "other-pkg"})
    msg = str(err.value)
    assert "liferaft-no-such-tool" in msg and "liferaft-pkg" in msg and "other-pkg" in msg
    assert "\n" not in msg


def test_base_key_covers_packages_not_titles(tmp_path: Path) -> None:
    default = context(tmp_path, "default")
    site = context(tmp_path, "example-site")
    assert cache.base_key(default) != cache.base_key(site)  # extra packages
    assert "nfs-common" in site.packages and "openssh-server" in site.packages
    base = cache.base_key(default)
    assert cache.app_key(default, base) != cache.app_key(site, base)


def test_every_image_has_the_server_disk_tools(tmp_path: Path) -> None:
    # Issue 12: LVM (thin pools need thin_check), LUKS and md RAID in every image,
    # kept from activating anything by themselves (tests/guest/ boots and checks).
    for name in ("default", "example-site"):
        packages = context(tmp_path, name).packages
        for package in ("lvm2", "thin-provisioning-tools", "cryptsetup-bin", "mdadm"):
            assert package in packages, (name, package)
    overlay = REPO / "overlay" / "etc"
    lvmlocal = (overlay / "lvm" / "lvmlocal.conf").read_text()
    assert "event_activation = 0" in lvmlocal and "auto_activation_volume_list = []" in lvmlocal
    for unit in ("mdmonitor.service", "lvm2-monitor.service"):
        assert os.readlink(overlay / "systemd" / "system" / unit) == "/dev/null"
    assert (overlay / "udev" / "rules.d" / "64-md-raid-assembly.rules").is_file()
    trim = (REPO / "builder" / "initramfs-trim.sh").read_text()
    assert "*-lvm.rules" in trim and "*-md-raid-*.rules" in trim


def test_nothing_at_boot_holds_the_consoles_or_scans_disks(tmp_path: Path) -> None:
    # Issue 17 (boot to the UI in 30 s): systemd-pcrphase.service orders itself
    # after remote-fs.target and before systemd-user-sessions, which the gettys
    # wait for: the consoles waited for DHCP, resolved and the NFS client.
    # Generators that find nothing on a live system only cost a start each.
    system = REPO / "overlay" / "etc" / "systemd" / "system"
    for unit in ("systemd-pcrphase.service", "systemd-pcrphase-sysinit.service"):
        assert os.readlink(system / unit) == "/dev/null", unit
    generators = REPO / "overlay" / "etc" / "systemd" / "system-generators"
    masked = {p.name for p in generators.iterdir() if os.readlink(p) == "/dev/null"}
    assert "systemd-gpt-auto-generator" in masked and "systemd-sysv-generator" in masked
    # The serial console's getty and the live root's /tmp come from these.
    assert not masked & {"systemd-getty-generator", "systemd-fstab-generator"}
    # No md personalities loaded (nor raid6 benchmarked) before the medium is found.
    trim = (REPO / "builder" / "initramfs-trim.sh").read_text()
    assert "conf/modules" in trim and "drivers/md" in trim
    cmdline = context(tmp_path).kernel_cmdline.split()
    assert "nonetworking" in cmdline and "modprobe.blacklist=floppy" in cmdline
    # The app's consoles skip login(1) and its PAM stack: agetty runs liferaft-start.
    for dropin in ("getty@tty1.service.d", "serial-getty@ttyS0.service.d"):
        conf = (system / dropin / "autologin.conf").read_text()
        assert "--login-program /usr/local/sbin/liferaft-start" in conf, dropin


def test_a_second_build_waits_for_the_wheels_the_first_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make deb` fetches the wheels without the cache's build lock; with
    `make iso` at once (the slow tests on two workers) the second fetch waits
    for the first, then finds the wheels complete and downloads nothing."""
    # Were it not to wait, pip would fail at once: no index, no configured links.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    ctx = context(tmp_path)
    wheels = ctx.cache_dir / "wheels" / cache.digest(cache.python_requirements(REPO))
    wheels.mkdir(parents=True)
    outcome: list[object] = []

    def second_build() -> None:
        try:
            outcome.append(layers.fetch_wheels(ctx))
        except Exception as exc:  # reported by the assertion below
            outcome.append(exc)

    with cache.file_lock(ctx.cache_dir / "wheels" / ".lock", "the test"):  # the first build
        second = threading.Thread(target=second_build)
        second.start()
        second.join(2)
        assert second.is_alive() and outcome == [], f"the second fetch did not wait: {outcome}"
        (wheels / ".complete").touch()  # the first build's wheels are complete
    second.join(30)
    assert outcome == [wheels]
    assert sorted(p.name for p in wheels.iterdir()) == [".complete"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out.iso"
    with pytest.raises(RuntimeError), cache.atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("xorriso died")
    assert list(tmp_path.iterdir()) == []
    with cache.atomic_path(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.iso"]


def test_overlay_renders_profile(tmp_path: Path) -> None:
    ctx = context(tmp_path, "example-site")
    root = tmp_path / "root"
    root.mkdir()
    layers.render_overlay(ctx, root)
    layers.configure_system(ctx, root)
    network = (root / "etc/systemd/network/20-wired.network").read_text()
    assert "Address=192.0.2.50/24" in network and "DHCP" not in network
    assert "Gateway=192.0.2.1" in network and "DNS=192.0.2.1" in network
    start = root / "usr/local/sbin/liferaft-start"
    assert os.access(start, os.X_OK)
    assert READY_MARKER in start.read_text()
    assert "liferaft tui" in start.read_text()
    profile = yaml.safe_load((root / "etc/liferaft/profile.yaml").read_text())
    assert profile["title"] == ctx.profile.title
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} >= {"ssh.service", "systemd-networkd.service"}
    assert "ssh-ed25519" in (root / "root/.ssh/authorized_keys").read_text()
    assert not list(root.rglob("*.j2"))


def _leftovers(tmp_path: Path) -> list[str]:
    """Mounts and processes that mention tmp_path."""
    found = [line for line in Path("/proc/self/mounts").read_text().splitlines()
             if str(tmp_path) in line]  # fmt: skip
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(tmp_path) in cmd and proc.name != str(os.getpid()):
                found.append(f"pid {proc.name}: {cmd}")
    return found


def _start_build(tmp_path: Path, profiles: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "--profiles-dir", str(profiles), "iso",
         "--profile", "bad", "--cache-dir", str(tmp_path / "cache"),
         "--build-dir", str(tmp_path / "build"), "--output-dir", str(tmp_path / "dist")],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _bad_profile(tmp_path: Path, packages: str) -> Path:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "default.yaml").write_text((REPO / "profiles/default.yaml").read_text())
    (profiles / "bad.yaml").write_text(f"extends: default\nname: bad\npackages: {packages}\n")
    return profiles


@pytest.mark.slow
@pytest.mark.root
def test_unknown_package_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    profiles = _bad_profile(tmp_path, "[liferaft-no-such-package]")
    proc = _start_build(tmp_path, profiles)
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    last = err.strip().splitlines()[-1]
    assert "liferaft-no-such-package" in last and "bad.yaml" in last, err[-2000:]
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
    assert not list((tmp_path / "cache" / "base").glob("*")) if (
        tmp_path / "cache" / "base").exists() else True  # fmt: skip
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.root
def test_killed_build_leaves_no_mounts_processes_or_output(tmp_path: Path) -> None:
    profiles = _bad_profile(tmp_path, "[]")
    proc = _start_build(tmp_path, profiles)
    # Wait until mmdebstrap is at work inside its namespace (its root has
    # mounts and apt runs), then stop the build.
    deadline = time.monotonic() + 300
    root_glob = tmp_path / "cache" / "base"
    while time.monotonic() < deadline:
        if list(root_glob.glob(".*.tmp/root/var/lib/apt/lists/*Packages*")):
            time.sleep(2)
            break
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    else:
        pytest.fail("mmdebstrap never started")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    time.sleep(1)
    assert _leftovers(tmp_path) == []
    assert not list(root_glob.glob(".*"))  # no half-made base root
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
