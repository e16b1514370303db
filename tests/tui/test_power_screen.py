"""The power screen asks the engine (Engine.reboot / Engine.power_off), never systemctl."""

from __future__ import annotations

import pytest

from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.power import PowerModal
from tests.tui.fake_engine import FakeEngine
from tests.tui.pilot_helpers import run_async, settle, wait_for_screen


class PowerRecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def reboot(self) -> None:
        self.asked.append("reboot")

    def power_off(self, *, unattended: bool = False) -> bool:
        self.asked.append("poweroff")
        return True


@pytest.mark.parametrize("button", ["reboot", "poweroff"])
@run_async
async def test_power_buttons_call_the_engine(button: str) -> None:
    engine = PowerRecordingEngine()
    app = LiferaftApp(engine, media_filter=lambda d: False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await wait_for_screen(pilot, PowerModal)
        await pilot.click(f"#{button}")
        await settle(pilot)
    assert engine.asked == [button]
