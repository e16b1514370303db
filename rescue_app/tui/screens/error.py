"""The error modal: what happened, what to do, and the log one key away."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from rescue_app.errors import LiferaftError
from rescue_app.tui import keymap


def explain(error: BaseException) -> tuple[str, str]:
    """(what happened, what to do) for any exception."""
    if isinstance(error, LiferaftError):
        return error.message, error.hint or "Press Enter to go back and try another choice."
    return (
        f"liferaft met an internal error: {error.__class__.__name__}: {error}",
        "Nothing more was done. Press l for the log, go back and try again; "
        "if it happens again, report it with the log.",
    )


class ErrorModal(ModalScreen[None]):
    BINDINGS = keymap.ERROR

    def __init__(self, error: BaseException, title: str | None = None) -> None:
        super().__init__()
        self.error = error
        self.heading = title or ("Error" if isinstance(error, LiferaftError) else "Internal error")

    def compose(self) -> ComposeResult:
        what, todo = explain(self.error)
        with Vertical(id="error-box", classes="modal-box"):
            yield Static(self.heading, classes="modal-title")
            yield Static(what, id="error-what")
            yield Static(f"What to do: {todo}", id="error-hint")
            yield Button("OK", id="error-ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#error-ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_dismiss_error(self) -> None:
        self.dismiss(None)
