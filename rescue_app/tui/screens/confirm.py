"""The last gate before a restore: type the target's device name to erase it
(of a Clonezilla saveparts image: each target partition's name; each is
shown with its disk's model, serial and size)."""

from __future__ import annotations

import os

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from rescue_app.engine import PartitionRestorePlan, RestorePlan, describe_contents
from rescue_app.tui import keymap


def matches_device(typed: str, path: str) -> bool:
    """The full path or the kernel name: "/dev/sdb" or "sdb"; nothing looser."""
    typed = typed.strip()
    return bool(typed) and typed in (path, os.path.basename(path))


class ConfirmEraseModal(ModalScreen[bool]):
    BINDINGS = keymap.CONFIRM_ERASE

    def __init__(self, plan: RestorePlan | PartitionRestorePlan) -> None:
        super().__init__()
        self.plan = plan
        self.paths = [d.target.path for d in plan.disks]

    def erased(self) -> tuple[list[str], str]:
        """What each target loses, and what the user types the names of."""
        if isinstance(self.plan, PartitionRestorePlan):
            lines = [f"ERASES {s.target.describe()}" for s in self.plan.steps]
            lines.append("The partition tables and the other partitions stay as they are.")
            return lines, "target partition"
        return [
            f"ERASES {d.target.describe()}\n  now: {describe_contents(d.target)}"
            for d in self.plan.disks
        ], "target disk"

    def compose(self) -> ComposeResult:
        lines, kind = self.erased()
        with Vertical(classes="modal-box", id="confirm-box"):
            yield Static("Erase and restore?", classes="modal-title")
            for line in lines:
                yield Static(line, markup=False)
            yield Static(
                f"To go on, type the name of each {kind} ({', '.join(self.paths)}):",
                markup=False,
            )
            for i, path in enumerate(self.paths):
                # Not the name itself: without colour a placeholder reads as typed text.
                yield Input(placeholder=f"(type {path.rsplit('/', 1)[-1]} here)", id=f"confirm-{i}")
            yield Static("", id="confirm-status", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button("Erase and restore", id="erase", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-0", Input).focus()

    def typed_ok(self) -> bool:
        return all(
            matches_device(self.query_one(f"#confirm-{i}", Input).value, path)
            for i, path in enumerate(self.paths)
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_one("#erase", Button).disabled = not self.typed_ok()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.typed_ok():
            self.dismiss(True)
            return
        self.query_one("#confirm-status", Static).update(
            "That is not the target's name; nothing was written. Type it exactly, "
            "or press Escape to go back."
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "erase" and self.typed_ok():
            self.dismiss(True)
        elif event.button.id == "cancel":
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
