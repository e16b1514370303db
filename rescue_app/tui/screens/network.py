"""Network: see whether the machine is online, set up an interface (DHCP or a
fixed address) when the profile did not, then type a repository URL, a user
and a password and open it; the images found there come next.

The password goes to the stores' password registry through NetworkSource,
never into the URL, the screen's labels or the log.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Static

from rescue_app.engine import Interface, NetworkStatus
from rescue_app.errors import LiferaftError, UsageError
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import RepositoryOpeningScreen
from rescue_app.tui.screens.netsetup import InterfaceSetupModal, NetSetup
from rescue_app.tui.sources import NetworkSource, url_with_user


def interface_row(i: Interface) -> tuple[str, str, str, str, str]:
    if not i.carrier:
        state = "no cable" if i.state != "down" else "down"
    else:
        state = i.setup if i.setup in ("configuring", "failed") else i.state
    addrs = ", ".join(str(a) for a in i.ipv4) or ", ".join(str(a) for a in i.global_addresses)
    return (i.name, state, i.mac, addrs or "-", i.gateway or "-")


class NetworkScreen(RepositoryOpeningScreen):
    BINDINGS = keymap.NETWORK

    def __init__(self, purpose: str = "restore") -> None:
        super().__init__()
        self.purpose = purpose  # "restore" or "verify"
        self.status: NetworkStatus | None = None
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Network interfaces (Enter: set up the highlighted one)", classes="section")
        table: DataTable[str] = DataTable(id="net-table", cursor_type="row")
        yield table
        yield Static("Looking at the network...", id="net-status", markup=False)
        yield Static(
            "Repository URL, and the user and password if the server asks:", classes="section"
        )
        yield Input(
            placeholder="https://server/liferaft  sftp://host/path  smb://host/share", id="net-url"
        )
        with Horizontal(id="net-credentials"):
            yield Input(placeholder="user", id="net-user")
            yield Input(placeholder="password", password=True, id="net-password")
        yield Static("", id="net-open-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Restore: network" if self.purpose == "restore" else "Verify: network"
        self.query_one("#net-table", DataTable).add_columns(
            "Interface", "State", "MAC", "Address", "Gateway"
        )
        self.query_one("#net-table", DataTable).focus()
        self.action_refresh()

    # ------------------------------------------------------------ interfaces

    def action_refresh(self) -> None:
        self.load_status()

    @work(thread=True, exclusive=True, exit_on_error=False, group="net-status")
    def load_status(self) -> None:
        status = self.lapp.engine.network_status()
        self.app.call_from_thread(self.show_status, status)

    def show_status(self, status: NetworkStatus, note: str = "") -> None:
        first = self.status is None
        self.status = status
        table = self.query_one("#net-table", DataTable)
        keep = table.cursor_row
        table.clear()
        for i in status.interfaces:
            table.add_row(*interface_row(i), key=i.name)
        if not status.interfaces:
            table.add_row("-", "", "no network card found", "", "")
        elif 0 <= keep < len(status.interfaces):
            table.move_cursor(row=keep)
        line = status.summary()
        line = line[0].upper() + line[1:]
        if not status.online:
            line += ". Choose an interface and press Enter (F2: DHCP, F3: fixed address)."
        self.set_status((note + "\n" if note else "") + line)
        if first and status.online and not self.busy:
            self.query_one("#net-url", Input).focus()

    def set_status(self, text: str) -> None:
        self.query_one("#net-status", Static).update(text)

    def highlighted(self) -> Interface | None:
        if self.status is None or not self.status.interfaces:
            return None
        row = self.query_one("#net-table", DataTable).cursor_row
        if 0 <= row < len(self.status.interfaces):
            return self.status.interfaces[row]
        return None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.ask_setup(static=False)

    def action_dhcp(self) -> None:
        iface = self.highlighted()
        if iface is not None:
            self.configure(NetSetup(iface.name, dhcp=True))

    def action_static(self) -> None:
        self.ask_setup(static=True)

    def ask_setup(self, *, static: bool) -> None:
        iface = self.highlighted()
        if iface is None or self.busy:
            return

        def chosen(setup: NetSetup | None) -> None:
            if setup is not None:
                self.configure(setup)

        self.app.push_screen(InterfaceSetupModal(iface, static=static), callback=chosen)

    def configure(self, setup: NetSetup) -> None:
        if self.busy:
            return
        self.busy = True
        if setup.dhcp:
            self.set_status(f"Asking for an address by DHCP on {setup.iface} (up to 20 s)...")
        else:
            self.set_status(f"Setting {setup.address} on {setup.iface}...")
        self.run_setup(setup)

    @work(thread=True, exclusive=True, exit_on_error=False, group="net-setup")
    def run_setup(self, setup: NetSetup) -> None:
        engine = self.lapp.engine
        try:
            if setup.dhcp:
                done = engine.network_dhcp(setup.iface)
            else:
                done = engine.network_static(
                    setup.iface,
                    setup.address,
                    gateway=setup.gateway or None,
                    dns=[setup.dns] if setup.dns else [],
                )
            status = engine.network_status()
        except BaseException as exc:
            self.app.call_from_thread(self.setup_done, None, None, exc)
            return
        self.app.call_from_thread(self.setup_done, done, status, None)

    def setup_done(
        self, done: Interface | None, status: NetworkStatus | None, error: BaseException | None
    ) -> None:
        self.busy = False
        if error is not None or done is None or status is None:
            self.set_status("The interface is not set up; see the message.")
            self.lapp.show_error(error or RuntimeError("no result"), then=self.action_refresh)
            return
        self.show_status(status, note=f"Set up {done.describe()}")
        self.query_one("#net-url", Input).focus()

    # ------------------------------------------------------------ repository

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "net-url":
            self.query_one("#net-user", Input).focus()
        elif event.input.id == "net-user":
            self.query_one("#net-password", Input).focus()
        else:
            self.action_open()

    def action_open(self) -> None:
        if self.busy:
            return
        url = self.query_one("#net-url", Input).value.strip()
        user = self.query_one("#net-user", Input).value.strip()
        password = self.query_one("#net-password", Input).value
        try:
            if not url:
                raise UsageError(
                    "type the repository's URL first",
                    hint="e.g. https://server/liferaft or sftp://user@host/path",
                )
            source = NetworkSource(url_with_user(url, user), password or None)
            if password and source.who is None:
                raise UsageError(
                    "a password was typed but no user name",
                    hint="type the user name too, or leave the password empty",
                )
        except LiferaftError as exc:  # a bad URL: NetworkSource says what is wrong
            self.lapp.show_error(exc)
            return
        self.busy = True
        self.show_opening(f"Opening {source.label}...")
        self.open_source(source)

    def show_opening(self, text: str) -> None:
        self.query_one("#net-open-status", Static).update(text)
