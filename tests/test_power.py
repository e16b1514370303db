"""Power-off and reboot go through the engine façade (engine/power.py), for the UI's
power screen and for unattended mode alike."""

from __future__ import annotations

import pytest

from rescue_app.engine import Engine, power


def test_unattended_power_off_does_nothing_off_the_rescue_system(monkeypatch, tmp_path):
    monkeypatch.setattr(power, "LIVE_MEDIUM", tmp_path / "no-live-medium")
    monkeypatch.delenv("LIFERAFT_ALLOW_POWEROFF", raising=False)
    assert Engine().power_off(unattended=True) is False


def test_unknown_power_action_is_refused():
    with pytest.raises(ValueError):
        power.switch("hibernate", asked_by_person=True)
