"""Unattended mode's argument handling, without a disk or root."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue_app import unattended
from rescue_app.errors import UsageError
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
    profile = {
        "action": "restore",
        "repo": "/mnt/nas",
        "image": "base",
        "target": "/dev/sda",
        "poweroff": False,
    }
    action = resolve_action(parse_cmdline("liferaft.image=web2"), profile)
    assert action is not None
    assert (action.repo, action.image, action.targets, action.poweroff) == (
        "/mnt/nas",
        "web2",
        ("/dev/sda",),
        False,
    )


def test_nothing_asked_is_none() -> None:
    assert resolve_action({}, None) is None
    assert resolve_action({}, {"action": "none", "repo": None}) is None


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
        {},
        power_off=lambda: calls.append("off"),
    )
    out = capsys.readouterr().out
    assert code != 0
    assert "LIFERAFT UNATTENDED RESTORE: FAILED" in out
    assert calls == ["off"]
    assert "FAILED" in (tmp_path / "u.log").read_text()


def test_no_action_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    assert run_unattended("quiet", {}, power_off=lambda: pytest.fail("powered off")) == 0


def test_default_route_detection():
    from rescue_app.unattended import _has_default_route

    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
    assert _has_default_route(header + "ens3\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\n")
    assert not _has_default_route(header + "ens3\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\n")
    assert not _has_default_route(header)
