"""Unattended mode's argument handling, without a disk or root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rescue_app import unattended
from rescue_app.errors import UsageError
from rescue_app.profile import Unattended
from rescue_app.unattended import parse_cmdline, resolve_action, run_unattended

CMDLINE = (
    "BOOT_IMAGE=/live/vmlinuz boot=live quiet liferaft.action=restore "
    "liferaft.repo=LABEL=REPO:/liferaft liferaft.image=web1@20261125T101500Z "
    "liferaft.target=serial:BLANK1 liferaft.poweroff=1"
)


def test_parse_cmdline_takes_only_liferaft_keys() -> None:
    args = parse_cmdline(CMDLINE)
    assert args == {
        "action": "restore",
        "repo": "LABEL=REPO:/liferaft",
        "image": "web1@20261125T101500Z",
        "target": "serial:BLANK1",
        "poweroff": "1",
    }


def test_command_line_overrides_profile() -> None:
    profile = Unattended(
        action="restore", repo="/mnt/nas", image="base", target="/dev/sda", poweroff=False
    )
    action = resolve_action(parse_cmdline("liferaft.image=web2"), profile)
    assert action is not None
    assert (action.repo, action.image, action.targets, action.poweroff) == (
        "/mnt/nas",
        "web2",
        ("/dev/sda",),
        False,
    )


def test_poweroff_default_is_the_profile_schema_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One default for the builder and unattended mode: a cmdline-only action on a
    rescue system whose profile says nothing about poweroff powers off."""
    asked = "liferaft.action=restore liferaft.repo=/r liferaft.image=x liferaft.target=/dev/x"
    action = resolve_action(parse_cmdline(asked), None)
    assert action is not None and action.poweroff is True
    action = resolve_action(parse_cmdline(asked + " liferaft.poweroff=0"), None)
    assert action is not None and action.poweroff is False
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "name: p\nlabel: P\ntitle: P\nsuite: bookworm\nmirror: http://m/\n"
        "unattended:\n  action: none\n"
    )
    monkeypatch.setattr(unattended, "PROFILE_FILE", profile)
    loaded = unattended._load_profile_action()
    assert loaded is not None and loaded.poweroff is True


def test_broken_profile_is_a_failed_banner_naming_file_key_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "name: p\nlabel: P\ntitle: P\nsuite: bookworm\nmirror: http://m/\n"
        "unattended:\n  poweroff: maybe\n"
    )
    monkeypatch.setattr(unattended, "PROFILE_FILE", profile)
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    code = run_unattended("liferaft.action=restore", power_off=lambda: pytest.fail("off"))
    out = capsys.readouterr().out
    assert code != 0
    assert f"{profile}:7: key 'unattended.poweroff': expected true or false" in out


def test_nothing_asked_is_none() -> None:
    assert resolve_action({}, None) is None
    assert resolve_action({}, Unattended(action="none", repo=None)) is None


def test_incomplete_or_unknown_action_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="liferaft.image="):
        resolve_action(
            parse_cmdline("liferaft.action=restore liferaft.repo=/r liferaft.target=/dev/x"), None
        )
    with pytest.raises(UsageError, match="format"):
        resolve_action({"action": "format"}, None)


def test_failure_prints_banner_and_powers_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    calls: list[str] = []
    code = run_unattended(
        f"liferaft.action=restore liferaft.repo={tmp_path / 'missing'} liferaft.image=x "
        "liferaft.target=/dev/null liferaft.poweroff=1",
        Unattended(),
        power_off=lambda: calls.append("off"),
    )
    out = capsys.readouterr().out
    assert code != 0
    assert "LIFERAFT UNATTENDED RESTORE: FAILED" in out
    assert calls == ["off"]
    assert "FAILED" in (tmp_path / "u.log").read_text()


def test_no_action_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    assert run_unattended("quiet", Unattended(), power_off=lambda: pytest.fail("powered off")) == 0


def test_default_route_detection():
    from rescue_app.unattended import _has_default_route

    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
    assert _has_default_route(header + "ens3\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\n")
    assert not _has_default_route(header + "ens3\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\n")
    assert not _has_default_route(header)


# -- liferaft.credentials= ------------------------------------------------------


def test_credentials_argument_is_parsed_and_overrides_the_profile() -> None:
    cmdline = CMDLINE + " liferaft.credentials=LABEL=LRSECRETS:/liferaft/credentials.yaml"
    action = resolve_action(parse_cmdline(cmdline), Unattended(credentials="/etc/other.yaml"))
    assert action is not None
    assert action.credentials == "LABEL=LRSECRETS:/liferaft/credentials.yaml"
    section = Unattended(credentials="UUID=1234-ABCD:/c.yaml")
    action = resolve_action(parse_cmdline(CMDLINE), section)
    assert action is not None and action.credentials == "UUID=1234-ABCD:/c.yaml"
    action = resolve_action(parse_cmdline(CMDLINE), None)
    assert action is not None and action.credentials is None  # the image's own file


@pytest.mark.parametrize("spec, expected", [
    ("LABEL=LRSECRETS:/liferaft/c.yaml", ("LABEL=LRSECRETS", "/liferaft/c.yaml")),
    ("UUID=1234-ABCD:/c.yaml", ("UUID=1234-ABCD", "/c.yaml")),
    ("/dev/sdb1:/c.yaml", ("/dev/sdb1", "/c.yaml")),
    ("serial:USB123:/c.yaml", ("serial:USB123", "/c.yaml")),
    ("/run/live/medium/liferaft/c.yaml", (None, "/run/live/medium/liferaft/c.yaml")),
    ("/mnt/a:b/c.yaml", (None, "/mnt/a:b/c.yaml")),
    ("sftp://u@h/repo", (None, "sftp://u@h/repo")),
])  # fmt: skip
def test_device_specs(spec: str, expected: tuple[str | None, str]) -> None:
    assert unattended.split_device_spec(spec) == expected


def test_bad_device_spec_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="DEVICE:PATH"):
        unattended.split_device_spec("sdb1:/c.yaml")


SECRET = "drill-like-Pw-31x-on-a-stick"


@pytest.mark.root
def test_credentials_from_a_labelled_medium(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loopdisk: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real ext4 stick with a label: mounted read-only, the file and the key
    it names are read, the stick is unmounted, the stores see the password.
    A file others can read makes the run fail with one line, secret unshown."""
    from tests.helpers.diskkit import make_fs, mounted

    label = f"LRCRED{os.getpid() % 10000}"
    dev = loopdisk(16 * 1024 * 1024)
    make_fs(dev, "ext4", label=label)
    with mounted(dev, "ext4") as point:
        folder = Path(point) / "liferaft"
        folder.mkdir()
        (folder / "nas.pw").write_text(SECRET + "\n")
        (folder / "nas.pw").chmod(0o600)
        creds = folder / "credentials.yaml"
        creds.write_text("credentials:\n  - match: backup@nas.example.com\n"
                         "    password_file: nas.pw\n")  # fmt: skip
        creds.chmod(0o600)
    mountpoint = tmp_path / "medium"
    monkeypatch.setattr(unattended, "CREDENTIALS_MOUNT", mountpoint)
    monkeypatch.delenv("LIFERAFT_PASSWORD", raising=False)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", "/nonexistent/credentials.yaml")
    chain = unattended.credential_chain(f"LABEL={label}:/liferaft/credentials.yaml")
    assert chain.password("backup@nas.example.com", ask=False) == SECRET
    assert not os.path.ismount(mountpoint)
    assert dev not in Path("/proc/self/mounts").read_text()

    with mounted(dev, "ext4") as point:
        (Path(point) / "liferaft" / "credentials.yaml").chmod(0o644)
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    code = run_unattended(
        f"liferaft.action=restore liferaft.repo={tmp_path / 'repo'} liferaft.image=x "
        f"liferaft.target=/dev/null liferaft.credentials={dev}:/liferaft/credentials.yaml",
        Unattended(), power_off=lambda: None,
    )  # fmt: skip
    out = capsys.readouterr().out
    log = (tmp_path / "u.log").read_text()
    assert code != 0
    banner = next(ln for ln in out.splitlines() if "liferaft.credentials=" in ln)
    assert f"liferaft.credentials={dev}:/liferaft/credentials.yaml" in banner
    assert "readable by others (mode 0644)" in banner and "chmod 600" in banner
    assert "LIFERAFT UNATTENDED RESTORE: FAILED" in out
    assert SECRET not in out + log
    assert not os.path.ismount(mountpoint)


@pytest.mark.root
def test_unattended_capture_of_a_mounted_disk_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loopdisk: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 10 item 1 in unattended mode: the engine's refusal, a FAILED banner, no repo."""
    from tests.helpers.diskkit import make_fs, mounted

    dev = loopdisk(64 * 1024 * 1024)
    make_fs(dev, "ext4", label="LIVEDISK")
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    repo = tmp_path / "repo"
    with mounted(dev, "ext4") as point:
        code = run_unattended(
            f"liferaft.action=capture liferaft.repo={repo} liferaft.image=live "
            f"liferaft.target={dev}",
            Unattended(),
            power_off=lambda: None,
        )
    out = capsys.readouterr().out
    assert code != 0
    assert "LIFERAFT UNATTENDED CAPTURE: FAILED" in out
    assert "mounted read-write" in out and point in out
    assert not repo.exists()
