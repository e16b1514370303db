"""How to set up one interface: DHCP or a fixed address, as a modal.

Returns a NetSetup (or None when cancelled). Typed static settings are
checked here with the engine's own parser, so a mistake is explained next to
the field instead of after a wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, RadioButton, RadioSet, Static

from rescue_app.engine import Engine, Interface
from rescue_app.errors import LiferaftError
from rescue_app.tui import keymap

# The chosen one also says so in text: with NO_COLOR the radio dot looks the same.
DHCP_LABEL = "Automatic address (DHCP)"
STATIC_LABEL = "Fixed address"


@dataclass(frozen=True)
class NetSetup:
    iface: str
    dhcp: bool
    address: str = ""
    gateway: str = ""
    dns: str = ""


class InterfaceSetupModal(ModalScreen["NetSetup | None"]):
    BINDINGS = keymap.INTERFACE_SETUP

    def __init__(self, iface: Interface, static: bool = False) -> None:
        super().__init__()
        self.iface = iface
        self.static = static

    def compose(self) -> ComposeResult:
        i = self.iface
        cable = "" if i.carrier else ", no cable signal"
        with Vertical(classes="modal-box", id="netsetup-box"):
            yield Static(
                f"Set up {i.name} ({i.mac or 'no MAC'}{cable})", classes="modal-title", markup=False
            )
            with RadioSet(id="netsetup-kind"):
                yield RadioButton(DHCP_LABEL, value=not self.static, id="netsetup-dhcp")
                yield RadioButton(STATIC_LABEL, value=self.static, id="netsetup-static")
            with Horizontal(classes="field"):
                yield Static("Address/prefix", classes="field-label")
                yield Input(placeholder="192.168.1.20/24", id="netsetup-address")
            with Horizontal(classes="field"):
                yield Static("Gateway", classes="field-label")
                yield Input(placeholder="192.168.1.1 (empty: none)", id="netsetup-gateway")
            with Horizontal(classes="field"):
                yield Static("DNS servers", classes="field-label")
                yield Input(placeholder="192.168.1.1 9.9.9.9", id="netsetup-dns")
            yield Static("", id="netsetup-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="netsetup-cancel")
                yield Button("Apply (ctrl+o)", id="netsetup-apply", variant="primary")

    def on_mount(self) -> None:
        self._show_fields()
        if self.static:
            self.query_one("#netsetup-address", Input).focus()
        else:
            self.query_one("#netsetup-kind", RadioSet).focus()

    def _dhcp_chosen(self) -> bool:
        return self.query_one("#netsetup-dhcp", RadioButton).value

    def _show_fields(self) -> None:
        dhcp = self._dhcp_chosen()
        for field in self.query(".field"):
            field.display = not dhcp
        mark = {True: "(chosen) ", False: ""}
        self.query_one("#netsetup-dhcp", RadioButton).label = mark[dhcp] + DHCP_LABEL
        self.query_one("#netsetup-static", RadioButton).label = mark[not dhcp] + STATIC_LABEL

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self._show_fields()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        order = ["netsetup-address", "netsetup-gateway", "netsetup-dns"]
        if event.input.id in order[:-1]:
            self.query_one(f"#{order[order.index(event.input.id) + 1]}", Input).focus()
        else:
            self.action_apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "netsetup-apply":
            self.action_apply()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_apply(self) -> None:
        if self._dhcp_chosen():
            self.dismiss(NetSetup(self.iface.name, dhcp=True))
            return
        address = self.query_one("#netsetup-address", Input).value.strip()
        gateway = self.query_one("#netsetup-gateway", Input).value.strip()
        dns = self.query_one("#netsetup-dns", Input).value.strip()
        try:
            Engine.check_static(self.iface.name, address, gateway, [dns])
        except LiferaftError as exc:
            self.query_one("#netsetup-error", Static).update(str(exc))
            self.query_one("#netsetup-address", Input).focus()
            return
        self.dismiss(
            NetSetup(self.iface.name, dhcp=False, address=address, gateway=gateway, dns=dns)
        )
