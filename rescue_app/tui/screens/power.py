"""Reboot / Power off, asked first."""

from __future__ import annotations

import functools

from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from rescue_app.errors import LiferaftError
from rescue_app.tui import keymap


class PowerModal(ModalScreen[None]):
    BINDINGS = keymap.POWER

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Static("Reboot or power off", classes="modal-title")
            yield Static(
                "Remove the rescue stick first if the machine should boot from its own disk."
            )
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button("Reboot", id="reboot")
                yield Button("Power off", id="poweroff")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        choice = event.button.id
        app = self.app
        self.dismiss(None)
        if choice in ("reboot", "poweroff"):
            # The app's worker, not this modal's: the modal is gone already.
            app.run_worker(
                functools.partial(_switch, app, choice),
                thread=True,
                exit_on_error=False,
                group="power",
            )


def _switch(app: App[object], choice: str) -> None:
    """Unmount what the UI opened, then reboot or power off: off the UI thread."""
    release = getattr(app, "release_source", None)
    if callable(release):
        release()
    engine = getattr(app, "engine", None)
    try:
        if engine is not None and choice == "reboot":
            engine.reboot()
        elif engine is not None:
            engine.power_off()
    except LiferaftError as exc:
        show = getattr(app, "show_error", None)
        if callable(show):
            app.call_from_thread(show, exc)
