"""The running rescue system's network: what is there, and DHCP or a static
address on one interface.

Reads come from ``ip -j`` (addresses, links, routes), ``networkctl --json``
(DNS per link, when systemd-networkd runs) and /etc/resolv.conf. Changes go
through systemd-networkd, as the profile's ``network`` section does at boot:
one runtime file ``/run/systemd/network/05-liferaft-IFACE.network`` per
interface, which sorts before the image's ``20-wired.network`` and so wins
for that interface, then ``networkctl reload`` and ``reconfigure``. A profile
with ``mode: none`` leaves networkd stopped; it is started on first use.

This module is the engine's: it never imports textual and runs every command
through ``rescue_app.run``. Validation of typed input (``parse_static``) is
pure and needs no root.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rescue_app.errors import CommandError, LiferaftError, NotRootError, UsageError
from rescue_app.run import have_tool, run

log = logging.getLogger("liferaft.network")
T = TypeVar("T")

RUNTIME_DIR = "/run/systemd/network"
DHCP_TIMEOUT = 20.0
STATIC_TIMEOUT = 10.0
RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_STUB = "127.0.0.53"
# Kernel interface names: at most 15 bytes, no slash or white space.
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class NetworkError(LiferaftError):
    """The network cannot be set up as asked (no DHCP answer, bad address...)."""


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Address:
    address: str
    prefix: int
    family: str  # "inet" or "inet6"
    scope: str  # "global", "link", "host"
    dynamic: bool  # from DHCP / router advertisement

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    state: str  # the kernel's operstate, lower case: up, down, unknown...
    carrier: bool
    addresses: tuple[Address, ...]
    gateway: str | None  # default route through this interface
    dns: tuple[str, ...]  # name servers networkd uses on this link
    setup: str  # networkd's view: configured, configuring, failed, unmanaged, "" = not running

    @property
    def global_addresses(self) -> tuple[Address, ...]:
        return tuple(a for a in self.addresses if a.scope == "global")

    @property
    def ipv4(self) -> tuple[Address, ...]:
        return tuple(a for a in self.global_addresses if a.family == "inet")

    @property
    def online(self) -> bool:
        return bool(self.gateway and self.global_addresses)

    def describe(self) -> str:
        addrs = ", ".join(str(a) for a in self.global_addresses) or "no address"
        via = f", gateway {self.gateway}" if self.gateway else ""
        dns = f", DNS {' '.join(self.dns)}" if self.dns else ""
        return f"{self.name}: {addrs}{via}{dns}"


@dataclass(frozen=True)
class NetworkStatus:
    interfaces: tuple[Interface, ...]  # loopback left out
    dns: tuple[str, ...]  # name servers of the whole system (resolv.conf, per-link DNS)

    @property
    def online(self) -> bool:
        return any(i.online for i in self.interfaces)

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def summary(self) -> str:
        """One line: online or not, and through what."""
        up = [i for i in self.interfaces if i.online]
        if up:
            first = up[0]
            dns = f"; DNS {' '.join(self.dns)}" if self.dns else "; no DNS server"
            return (
                f"online: {first.ipv4[0] if first.ipv4 else first.global_addresses[0]} "
                f"on {first.name}, gateway {first.gateway}{dns}"
            )
        if any(i.global_addresses for i in self.interfaces):
            return "no default route: only the local network is reachable"
        return "offline: no interface has an address"

    def to_json(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "dns": list(self.dns),
            "interfaces": [
                {
                    "name": i.name,
                    "mac": i.mac,
                    "state": i.state,
                    "carrier": i.carrier,
                    "setup": i.setup,
                    "gateway": i.gateway,
                    "dns": list(i.dns),
                    "online": i.online,
                    "addresses": [
                        {
                            "address": a.address,
                            "prefix": a.prefix,
                            "family": a.family,
                            "scope": a.scope,
                            "dynamic": a.dynamic,
                        }
                        for a in i.addresses
                    ],
                }
                for i in self.interfaces
            ],
        }


# ------------------------------------------------------------------ reading


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = run(["ip", "-j", *args], timeout=10).stdout.strip()
    data = json.loads(out) if out else []
    return data if isinstance(data, list) else []


def _networkd_links() -> dict[str, dict[str, Any]] | None:
    """networkd's JSON per interface name, or None if networkd does not answer."""
    if not have_tool("networkctl", "interfaces are shown without networkd's view"):
        return None
    try:
        proc = run(["networkctl", "--json=short", "list"], check=False, timeout=10)
    except LiferaftError:
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return None
    return {str(i.get("Name")): i for i in doc.get("Interfaces", []) if isinstance(i, dict)}


def _dns_of_link(link: dict[str, Any]) -> tuple[str, ...]:
    found = []
    for entry in link.get("DNS") or []:
        raw = entry.get("Address") if isinstance(entry, dict) else None
        if isinstance(raw, list) and len(raw) in (4, 16):
            found.append(str(ipaddress.ip_address(bytes(raw))))
    return tuple(dict.fromkeys(found))


def resolv_conf_servers(text: str) -> tuple[str, ...]:
    """Name servers in resolv.conf text; systemd-resolved's stub is left out
    (the real servers are per link)."""
    servers = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and words[1] != RESOLVED_STUB:
            servers.append(words[1])
    return tuple(servers)


def parse_status(
    addrs: list[dict[str, Any]],
    routes: list[dict[str, Any]],
    links: dict[str, dict[str, Any]] | None,
    resolv_conf: str,
) -> NetworkStatus:
    """A NetworkStatus from ``ip -j addr``, ``ip -j route show default`` (both
    families), networkd's link list and resolv.conf: pure, for tests."""
    gateways: dict[str, str] = {}
    for route in routes:
        dev, via = route.get("dev"), route.get("gateway")
        if dev and via and dev not in gateways:
            gateways[dev] = via
    interfaces = []
    for entry in addrs:
        name = str(entry.get("ifname", ""))
        flags = entry.get("flags") or []
        if not name or "LOOPBACK" in flags or entry.get("link_type") == "loopback":
            continue
        addresses = tuple(
            Address(
                str(a.get("local")),
                int(a.get("prefixlen", 0)),
                str(a.get("family")),
                str(a.get("scope", "")),
                bool(a.get("dynamic", False)),
            )
            for a in entry.get("addr_info") or []
            if a.get("family") in ("inet", "inet6") and a.get("local") and not a.get("tentative")
        )
        link = (links or {}).get(name, {})
        interfaces.append(
            Interface(
                name=name,
                mac=str(entry.get("address", "")),
                state=str(entry.get("operstate", "unknown")).lower(),
                carrier="LOWER_UP" in flags,
                addresses=addresses,
                gateway=gateways.get(name),
                dns=_dns_of_link(link),
                setup=str(link.get("AdministrativeState", "")) if links is not None else "",
            )
        )
    dns = list(resolv_conf_servers(resolv_conf))
    for i in interfaces:
        dns += [d for d in i.dns if d not in dns]
    return NetworkStatus(tuple(interfaces), tuple(dns))


def status() -> NetworkStatus:
    """Every interface with its state, MAC, addresses, gateway and DNS."""
    addrs = _ip_json("addr", "show")
    routes = _ip_json("route", "show", "default") + _ip_json("-6", "route", "show", "default")
    try:
        with open(RESOLV_CONF, encoding="utf-8", errors="replace") as f:
            resolv = f.read()
    except OSError:
        resolv = ""
    return parse_status(addrs, routes, _networkd_links(), resolv)


# ------------------------------------------------------------------ input


@dataclass(frozen=True)
class StaticConfig:
    iface: str
    address: IpInterface
    gateway: IpAddress | None
    dns: tuple[IpAddress, ...]


def _check_iface_name(iface: str) -> str:
    iface = iface.strip()
    if not _IFACE_RE.match(iface):
        raise UsageError(
            f"{iface!r} is not a network interface name",
            hint="see `liferaft net` for the interfaces of this machine",
        )
    return iface


def parse_static(
    iface: str, address: str, gateway: str | None = None, dns: Sequence[str] = ()
) -> StaticConfig:
    """Check typed static settings; UsageError with what is wrong and an example."""
    iface = _check_iface_name(iface)
    text = address.strip()
    if "/" not in text:
        raise UsageError(
            f"address {text!r} has no prefix length",
            hint="write it with the prefix, e.g. 192.168.1.20/24",
        )
    addr = _parsed(
        ipaddress.ip_interface,
        text,
        f"{text!r} is not an IP address with a prefix",
        hint="write e.g. 192.168.1.20/24",
    )
    net = addr.network
    if addr.ip.is_loopback or addr.ip.is_multicast or addr.ip.is_unspecified:
        raise UsageError(
            f"{addr.ip} cannot be the address of a network card",
            hint="use an address of your local network, e.g. 192.168.1.20/24",
        )
    if (
        addr.version == 4
        and net.prefixlen < 31
        and addr.ip in (net.network_address, net.broadcast_address)
    ):
        what = "network" if addr.ip == net.network_address else "broadcast"
        raise UsageError(
            f"{addr.ip} is the {what} address of {net}",
            hint=f"choose an address between them, e.g. {net.network_address + 1}/{net.prefixlen}",
        )
    gw: IpAddress | None = None
    if gateway and gateway.strip():
        gw = _parsed(
            ipaddress.ip_address,
            gateway.strip(),
            f"gateway {gateway.strip()!r} is not an IP address",
            hint="write e.g. 192.168.1.1, or leave it empty",
        )
        if gw.version != addr.version or gw not in net:
            raise UsageError(
                f"gateway {gw} is outside the subnet {net} of {addr}",
                hint="the gateway must be on the same subnet; check the "
                "prefix length: /24 is 255.255.255.0",
            )
        if gw == addr.ip:
            raise UsageError(
                f"gateway {gw} is this machine's own address", hint="type the router's address"
            )
    servers = []
    for item in dns:
        for word in item.replace(",", " ").split():
            servers.append(
                _parsed(
                    ipaddress.ip_address,
                    word,
                    f"DNS server {word!r} is not an IP address",
                    hint="write e.g. 192.168.1.1; separate several by spaces",
                )
            )
    return StaticConfig(iface, addr, gw, tuple(servers))


def _parsed(parse: Callable[[str], T], text: str, wrong: str, *, hint: str) -> T:
    """``parse(text)``, its ValueError as the UsageError ``wrong`` with ``hint``."""
    try:
        return parse(text)
    except ValueError:
        raise UsageError(wrong, hint=hint) from None


# ------------------------------------------------------------------ changing


def network_file(iface: str, static: StaticConfig | None = None) -> str:
    """The runtime .network file for DHCP (``static`` None) or a static address."""
    lines = [
        "# Written by liferaft (the network screen / `liferaft net`).",
        "[Match]",
        f"Name={iface}",
        "",
        "[Network]",
    ]
    if static is None:
        lines += ["DHCP=ipv4", "", "[DHCPv4]", "UseHostname=no", "ClientIdentifier=mac"]
    else:
        lines += [f"Address={static.address}"]
        if static.gateway is not None:
            lines += [f"Gateway={static.gateway}"]
        lines += [f"DNS={d}" for d in static.dns]
    return "\n".join(lines) + "\n"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError("setting up the network needs root", hint="run it with sudo, or as root")


def _require_iface(iface: str) -> Interface:
    now = status()
    found = now.interface(iface)
    if found is None:
        names = ", ".join(i.name for i in now.interfaces) or "none"
        raise UsageError(
            f"there is no network interface {iface}", hint=f"interfaces of this machine: {names}"
        )
    return found


def _ensure_networkd() -> None:
    if _networkd_links() is not None:
        return
    if os.path.isdir("/run/systemd/system"):  # systemd is the init: start it
        log.info("starting systemd-networkd and systemd-resolved")
        try:
            run(["systemctl", "start", "systemd-networkd.service"], timeout=60)
        except CommandError as exc:
            raise NetworkError(
                f"cannot start systemd-networkd: {exc.message}",
                hint="see `journalctl -u systemd-networkd` in the shell",
            ) from exc
        # Name resolution: the rescue image's resolv.conf points at resolved's stub.
        run(["systemctl", "start", "systemd-resolved.service"], check=False, timeout=60)
        deadline = time.monotonic() + 10
        while _networkd_links() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if _networkd_links() is not None:
            return
    raise NetworkError(
        "systemd-networkd is not running, so liferaft cannot set up the network",
        hint="start it (systemctl start systemd-networkd) or configure the "
        "interface by hand in the shell (ip addr, ip route)",
    )


def _apply(iface: str, text: str, config_dir: str) -> None:
    _ensure_networkd()
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, f"05-liferaft-{iface}.network")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    log.info("wrote %s", path)
    # reload reads the files; reconfigure makes the link drop what it had and
    # apply the new file even when networkd thinks nothing changed.
    run(["networkctl", "reload"], timeout=30)
    run(["networkctl", "reconfigure", iface], timeout=30)


def _wait(
    iface: str, timeout: float, done: Callable[[Interface], bool], *, settled: bool = True
) -> Interface | None:
    """Poll until ``done(interface)`` (and, if ``settled``, networkd is through
    with the link); the interface then, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        now = status().interface(iface)
        if now is not None and now.setup == "failed":
            raise NetworkError(
                f"systemd-networkd could not set up {iface}",
                hint=f"see `networkctl status {iface}` and `journalctl -u "
                "systemd-networkd` in the shell",
            )
        # Right after `reconfigure` the old lease's address can still be there:
        # wait for networkd to call the link configured ("" = it does not answer).
        # A static address is checked exactly instead: with it networkd stays
        # "configuring" while it waits for IPv6 router advertisements that may never come.
        ready = not settled or now is None or now.setup in ("configured", "")
        if now is not None and ready and done(now):
            return now
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


def dhcp(iface: str, *, timeout: float = DHCP_TIMEOUT, config_dir: str = RUNTIME_DIR) -> Interface:
    """Ask for an address by DHCP on ``iface``; wait for it and the default route."""
    iface = _check_iface_name(iface)
    _require_root()
    _require_iface(iface)
    _apply(iface, network_file(iface), config_dir)
    log.info("DHCP on %s: waiting up to %.0f s", iface, timeout)
    got = _wait(iface, timeout, lambda i: bool(i.ipv4))
    if got is None:
        last = status().interface(iface)
        if last is not None and not last.carrier:
            raise NetworkError(
                f"no DHCP answer on {iface} after {timeout:.0f} s: the link is "
                "down (no cable signal)",
                hint="check that the cable is plugged in at both ends, or choose another interface",
            )
        raise NetworkError(
            f"no DHCP answer on {iface} after {timeout:.0f} s",
            hint="check the cable / the DHCP server, or set a static address",
        )
    # networkd adds the route with the lease; give it a moment if the lease has one.
    with_route = _wait(iface, 3.0, lambda i: bool(i.gateway))
    result = with_route or got
    log.info("DHCP on %s: %s", iface, result.describe())
    return result


def static(
    config: StaticConfig, *, timeout: float = STATIC_TIMEOUT, config_dir: str = RUNTIME_DIR
) -> Interface:
    """Give ``config.iface`` a fixed address (and gateway and DNS)."""
    _require_root()
    _require_iface(config.iface)
    _apply(config.iface, network_file(config.iface, config), config_dir)
    want = str(config.address.ip)
    gw = str(config.gateway) if config.gateway is not None else None

    def applied(i: Interface) -> bool:
        return any(a.address == want for a in i.addresses) and (gw is None or i.gateway == gw)

    got = _wait(config.iface, timeout, applied, settled=False)
    if got is None:
        last = status().interface(config.iface)
        if last is not None and not last.carrier:
            raise NetworkError(
                f"{config.iface}: the link is down (no cable signal), so "
                f"{config.address} is not in use yet",
                hint="check that the cable is plugged in at both ends",
            )
        raise NetworkError(
            f"{config.iface}: {config.address} was not applied within {timeout:.0f} s",
            hint=f"see `networkctl status {config.iface}` and the log",
        )
    log.info("static on %s: %s", config.iface, got.describe())
    return got
