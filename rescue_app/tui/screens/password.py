"""Asks for a password a store needs (``user@host``); the answer is masked
on screen and handed back to the store only, never logged."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from rescue_app.tui import keymap


class PasswordModal(ModalScreen["str | None"]):
    BINDINGS = keymap.PASSWORD

    def __init__(self, who: str) -> None:
        super().__init__()
        self.who = who

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="password-box"):
            yield Static("Password", classes="modal-title")
            yield Static(f"The server asks for the password of {self.who}.", markup=False)
            yield Input(
                password=True, placeholder="password (Enter: OK, Escape: none)", id="password-input"
            )

    def on_mount(self) -> None:
        self.query_one("#password-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
