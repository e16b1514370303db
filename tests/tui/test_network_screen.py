"""The network screen against a real web server: nginx on loopback serving a
real repository behind HTTP basic auth. A typed URL, user and password list
the images; a wrong password is an error modal with the engine's message; the
password shows up nowhere (screen, log, URL).

Setting up an interface (DHCP, fixed address) needs a network of its own:
tests/test_network.py does it in network namespaces, and the in-VM test
(test_tui_vm.py) drives it on the rescue ISO.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from textual.widgets import DataTable, Input

from rescue_app.engine import Engine
from rescue_app.tui.app import LiferaftApp
from rescue_app.tui.screens.error import ErrorModal
from rescue_app.tui.screens.images import ImagesScreen
from rescue_app.tui.screens.network import NetworkScreen
from rescue_app.tui.screens.source import SourceScreen
from tests.stores.serverkit import Nginx
from tests.tui.conftest import CapturedImage
from tests.tui.pilot_helpers import run_async, screen_text, settle, wait_for_screen
from tests.tui.webauth import nginx_with_basic_auth

pytestmark = pytest.mark.root

USER = "reader"
PASSWORD = "Tr0ub4dor&3-typed"


@pytest.fixture
def web_repo(captured: CapturedImage, workdir: str) -> Iterator[tuple[str, Nginx]]:
    """The captured repository served by nginx with basic auth: (URL, server)."""
    with nginx_with_basic_auth(
        captured.repo, os.path.join(workdir, "web"), USER, PASSWORD
    ) as server:
        yield f"http://127.0.0.1:{server.port}/", server


def make_app() -> LiferaftApp:
    return LiferaftApp(Engine(), media_filter=lambda d: False, scan_media=False)


async def open_network_screen(pilot) -> NetworkScreen:
    await settle(pilot)
    await pilot.press("r")  # Restore: the source screen, then its network entry
    await wait_for_screen(pilot, SourceScreen)
    await settle(pilot)
    await pilot.press("ctrl+n")
    screen = await wait_for_screen(pilot, NetworkScreen)
    await settle(pilot)
    return screen


async def type_into(pilot, screen: NetworkScreen, field: str, text: str) -> None:
    screen.query_one(f"#{field}", Input).focus()
    await pilot.pause()
    await pilot.press(*text)


@run_async
async def test_url_user_and_password_list_the_images(
    web_repo: tuple[str, Nginx], captured: CapturedImage
) -> None:
    url, server = web_repo
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_network_screen(pilot)
        # The machine's real interfaces are listed, and whether it is online.
        status = screen.status
        assert status is not None and status.interfaces
        table = screen.query_one("#net-table", DataTable)
        assert table.row_count == len(status.interfaces)
        assert status.summary()[1:] in screen_text(pilot)
        await type_into(pilot, screen, "net-url", url)
        await pilot.press("enter")  # to the user field
        await pilot.press(*USER, "enter")  # to the password field
        await pilot.press(*PASSWORD)
        assert PASSWORD not in screen_text(pilot)
        await pilot.press("enter")
        images = await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        assert [i.ref for i in images.images] == [captured.ref]
        assert "tuihost" in screen_text(pilot)
        assert images.repo.location.startswith("http://127.0.0.1:")
        logged = "\n".join(app.log_handler.lines())
        assert PASSWORD not in logged and PASSWORD not in images.repo.location
    # nginx saw the user's requests succeed (and 401s for none of them).
    statuses = [line.split()[1] for line in server.log_lines()]
    assert statuses and set(statuses) <= {"200", "206", "404"}, statuses


@run_async
async def test_wrong_password_is_an_error_modal_with_the_engine_message(
    web_repo: tuple[str, Nginx],
) -> None:
    url, server = web_repo
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_network_screen(pilot)
        await type_into(pilot, screen, "net-url", url)
        await type_into(pilot, screen, "net-user", USER)
        await type_into(pilot, screen, "net-password", "not-the-password")
        await pilot.press("ctrl+o")
        modal = await wait_for_screen(pilot, ErrorModal)
        await settle(pilot)
        text = screen_text(pilot)
        assert "refused access to liferaft-repository.json (HTTP 401)" in text, text
        assert "check the user name and the password" in text
        assert "not-the-password" not in text + "\n".join(app.log_handler.lines())
        assert modal.error is not None
        await pilot.press("enter")  # back to the form, the URL still typed
        back = await wait_for_screen(pilot, NetworkScreen)
        assert back.query_one("#net-url", Input).value == url
    assert any(line.split()[1] == "401" for line in server.log_lines())


@run_async
async def test_a_bad_url_and_a_password_without_user_are_explained() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_network_screen(pilot)
        await type_into(pilot, screen, "net-url", "gopher://host/x")
        await pilot.press("ctrl+o")
        await wait_for_screen(pilot, ErrorModal)
        assert "is not a repository URL" in screen_text(pilot)
        await pilot.press("enter")
        await wait_for_screen(pilot, NetworkScreen)
        screen.query_one("#net-url", Input).value = "https://host/repo"
        await type_into(pilot, screen, "net-password", "x")
        await pilot.press("ctrl+o")
        await wait_for_screen(pilot, ErrorModal)
        assert "a password was typed but no user name" in screen_text(pilot)


@run_async
async def test_user_without_password_is_asked_in_a_modal(
    web_repo: tuple[str, Nginx], captured: CapturedImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rescue_app.tui.screens.password import PasswordModal

    monkeypatch.delenv("LIFERAFT_PASSWORD", raising=False)
    url, _server = web_repo
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_network_screen(pilot)
        await type_into(pilot, screen, "net-url", url)
        await type_into(pilot, screen, "net-user", USER)
        await pilot.press("ctrl+o")
        await wait_for_screen(pilot, PasswordModal)
        assert f"the password of {USER}@127.0.0.1" in screen_text(pilot)
        await pilot.press(*PASSWORD, "enter")
        images = await wait_for_screen(pilot, ImagesScreen)
        await settle(pilot)
        assert [i.ref for i in images.images] == [captured.ref]
