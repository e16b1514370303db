"""Asks for a password a store needs (``user@host``) or an encrypted
repository's passphrase (``repository URL``); the answer is masked on screen
and handed back to the engine only, never logged."""

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
        # the engine's prompt names "repository URL" for an encrypted
        # repository's passphrase, "user@host" for a login's password
        repository = (
            self.who.removeprefix("repository ") if self.who.startswith("repository ") else None
        )
        # (keychain names a LUKS volume "the LUKS volume UUID (disk N partition M ...)")
        luks = self.who if self.who.startswith("the LUKS volume ") else None
        word = "passphrase" if repository or luks else "password"
        with Vertical(classes="modal-box", id="password-box"):
            yield Static(word.capitalize(), classes="modal-title")
            if repository:
                text = f"The repository {repository} is encrypted: type its passphrase."
            elif luks:
                text = f"The image holds {luks}, unlocked when captured: type its passphrase."
            else:
                text = f"The server asks for the password of {self.who}."
            yield Static(text, markup=False)
            yield Input(
                password=True, placeholder=f"{word} (Enter: OK, Escape: none)", id="password-input"
            )

    def on_mount(self) -> None:
        self.query_one("#password-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
