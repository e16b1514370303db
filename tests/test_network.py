"""The rescue system's network setup (`liferaft net`, engine.network).

The real tests build a small network on this host: two network namespaces
joined by a veth pair. The "site" namespace has dnsmasq as DHCP server (when a
test wants one); the "rescue" namespace runs systemd-networkd with its own
D-Bus in a private mount namespace (its own /run/systemd and /run/dbus, /sys
read-only so networkd does not wait for a udev that is not running), as the
rescue ISO does. `liferaft net ...` runs inside it through nsenter. Everything
is torn down also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rescue_app.engine import network
from rescue_app.errors import UsageError
from tests.stores.serverkit import stop as stop_process

REPO = Path(__file__).resolve().parents[1]
LIFERAFT = str(REPO / ".venv" / "bin" / "liferaft")
SUBNET = "10.77.0"
SITE_ADDR = f"{SUBNET}.1"

# Runs as the rescue namespace's first process: private mounts, D-Bus, then networkd.
RESCUE_INIT = """set -e
umount /sys && mount -t sysfs -o ro sysfs /sys
mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/network
mkdir -p /run/dbus && mount -t tmpfs tmpfs /run/dbus
dbus-daemon --system --nofork --nopidfile &
echo $! > "$1/dbus.pid"
exec /lib/systemd/systemd-networkd
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetLab:
    """A site namespace and a rescue namespace joined by a veth pair."""

    def __init__(self, workdir: str) -> None:
        tag = f"lr{os.getpid() % 100000}"
        self.dir = workdir
        self.site_ns, self.rescue_ns = f"{tag}site", f"{tag}resc"
        self.site_if, self.iface = f"{tag}s", f"{tag}r"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.networkd: subprocess.Popen[bytes] | None = None

    def start(self) -> NetLab:
        for tool in ("dnsmasq", "dbus-daemon", "nsenter", "unshare"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} is missing: run `make setup` (deps/apt-host.txt)")
        _ip("netns", "add", self.site_ns)
        _ip("netns", "add", self.rescue_ns)
        _ip("link", "add", self.site_if, "type", "veth", "peer", "name", self.iface)
        _ip("link", "set", self.site_if, "netns", self.site_ns)
        _ip("link", "set", self.iface, "netns", self.rescue_ns)
        _ip("-n", self.site_ns, "addr", "add", f"{SITE_ADDR}/24", "dev", self.site_if)
        for ns, dev in ((self.site_ns, self.site_if), (self.site_ns, "lo"), (self.rescue_ns, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        log = open(os.path.join(self.dir, "networkd.log"), "wb")
        self.networkd = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.rescue_ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                RESCUE_INIT,
                "sh",
                self.dir,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.procs.append(self.networkd)
        deadline = time.monotonic() + 20
        while self.rescue(["networkctl", "list"], check=False).returncode != 0:
            if self.networkd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"networkd did not start: {self.networkd_log()}")
            time.sleep(0.2)
        return self

    def networkd_log(self) -> str:
        return Path(self.dir, "networkd.log").read_text(errors="replace")

    def rescue(
        self, argv: list[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the rescue namespace (network and mounts)."""
        assert self.networkd is not None
        return subprocess.run(
            ["nsenter", "-t", str(self.networkd.pid), "-m", "-n", *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def liferaft(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.rescue([LIFERAFT, *args], check=False, timeout=timeout)

    def site(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.site_ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def dhcp_server(self) -> subprocess.Popen[bytes]:
        return self.site(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                f"--interface={self.site_if}",
                "--bind-interfaces",
                f"--dhcp-range={SUBNET}.50,{SUBNET}.99,255.255.255.0,1h",
                f"--dhcp-option=option:router,{SITE_ADDR}",
                f"--dhcp-option=option:dns-server,{SITE_ADDR}",
                f"--dhcp-leasefile={self.dir}/leases",
                "--log-dhcp",
            ]
        )

    def stop(self) -> None:
        pids = []
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(Path(self.dir, "dbus.pid").read_text()))
        for proc in reversed(self.procs):
            stop_process(proc)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        for ns in (self.site_ns, self.rescue_ns):  # takes the veth pair with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def state(self) -> dict[str, Any]:
        """`liferaft net --json`'s view of the rescue interface."""
        proc = self.liferaft("net", "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        return next(i for i in doc["interfaces"] if i["name"] == self.iface)

    def kernel_routes(self) -> list[dict[str, object]]:
        out = self.rescue(["ip", "-j", "route", "show", "default"]).stdout
        return json.loads(out) if out.strip() else []


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with tempfile.TemporaryDirectory(prefix="liferaft-net-") as d:
        lab = NetLab(d)
        try:
            yield lab.start()
        finally:
            lab.stop()


def _inet(state: dict[str, Any]) -> list[str]:
    return [
        a["address"] for a in state["addresses"] if a["family"] == "inet" and a["scope"] == "global"
    ]


@pytest.mark.root
def test_dhcp_gets_address_route_and_dns(lab: NetLab) -> None:
    lab.dhcp_server()
    web = lab.site([sys.executable, "-m", "http.server", "--bind", SITE_ADDR, "8765"], cwd=lab.dir)
    proc = lab.liferaft("net", "dhcp", lab.iface)
    assert proc.returncode == 0, proc.stderr + lab.networkd_log()
    state = lab.state()
    (addr,) = _inet(state)
    assert addr.startswith(f"{SUBNET}.") and 50 <= int(addr.rsplit(".", 1)[1]) <= 99
    assert state["gateway"] == SITE_ADDR and state["online"] is True
    assert state["dns"] == [SITE_ADDR]
    assert addr in proc.stdout
    routes = lab.kernel_routes()
    assert [(r["gateway"], r["dev"]) for r in routes] == [(SITE_ADDR, lab.iface)]
    # And the site is reachable through it (the web server may still be starting).
    fetch = (
        "import time, urllib.request as u\n"
        "for _ in range(50):\n"
        "    try:\n"
        f"        print(u.urlopen('http://{SITE_ADDR}:8765/', timeout=5).status); break\n"
        "    except OSError: time.sleep(0.2)\n"
    )
    got = lab.rescue([sys.executable, "-c", fetch])
    assert web.poll() is None and got.stdout.strip() == "200", got.stderr


@pytest.mark.root
def test_static_sets_address_route_and_dns(lab: NetLab) -> None:
    proc = lab.liferaft(
        "net",
        "static",
        lab.iface,
        f"{SUBNET}.7/24",
        "--gateway",
        SITE_ADDR,
        "--dns",
        f"{SUBNET}.2",
        "--dns",
        f"{SUBNET}.3",
    )
    assert proc.returncode == 0, proc.stderr + lab.networkd_log()
    state = lab.state()
    assert _inet(state) == [f"{SUBNET}.7"]
    assert state["gateway"] == SITE_ADDR
    assert state["dns"] == [f"{SUBNET}.2", f"{SUBNET}.3"]
    assert [(r["gateway"], r["dev"]) for r in lab.kernel_routes()] == [(SITE_ADDR, lab.iface)]
    # Static after static: the old address goes away.
    proc = lab.liferaft("net", "static", lab.iface, f"{SUBNET}.8/24")
    assert proc.returncode == 0, proc.stderr
    assert _inet(lab.state()) == [f"{SUBNET}.8"]
    assert lab.kernel_routes() == []


@pytest.mark.root
def test_no_dhcp_server_is_one_clear_line_within_the_timeout(lab: NetLab) -> None:
    started = time.monotonic()
    proc = lab.liferaft("net", "dhcp", lab.iface, "--timeout", "5")
    took = time.monotonic() - started
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"liferaft: error: no DHCP answer on {lab.iface} after 5 s (check the cable / the "
        "DHCP server, or set a static address)"
    )
    assert took < 5 + 6, took
    # No cable: the other end is down, and the message says so.
    _ip("-n", lab.site_ns, "link", "set", lab.site_if, "down")
    proc = lab.liferaft("net", "dhcp", lab.iface, "--timeout", "3")
    assert proc.returncode == 1
    assert "the link is down (no cable signal)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ------------------------------------------------------------- no root needed


@pytest.mark.parametrize(
    ("address", "gateway", "dns", "message"),
    [
        ("10.0.0.5", None, [], "has no prefix length"),
        ("10.0.0.300/24", None, [], "is not an IP address with a prefix"),
        ("10.0.0.0/24", None, [], "is the network address of 10.0.0.0/24"),
        ("10.0.0.255/24", None, [], "is the broadcast address"),
        ("127.0.0.5/8", None, [], "cannot be the address of a network card"),
        ("10.0.0.5/24", "10.0.1.1", [], "gateway 10.0.1.1 is outside the subnet 10.0.0.0/24"),
        ("10.0.0.5/24", "10.0.0.5", [], "is this machine's own address"),
        ("10.0.0.5/24", "router", [], "gateway 'router' is not an IP address"),
        ("10.0.0.5/24", None, ["1.1.1.1, dns.example"], "DNS server 'dns.example'"),
    ],
)
def test_static_input_is_checked(
    address: str, gateway: str | None, dns: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("(", r"\(")):
        network.parse_static("eth0", address, gateway, dns)


def test_static_input_accepted_and_rendered() -> None:
    cfg = network.parse_static(" eth0 ", "192.168.1.20/24", "192.168.1.1", ["192.168.1.1 9.9.9.9"])
    text = network.network_file(cfg.iface, cfg)
    assert "Name=eth0\n" in text and "Address=192.168.1.20/24\n" in text
    assert "Gateway=192.168.1.1\nDNS=192.168.1.1\nDNS=9.9.9.9\n" in text
    assert "DHCP=ipv4" in network.network_file("eth0")
    with pytest.raises(UsageError, match="not a network interface name"):
        network.parse_static("eth0/../x", "192.168.1.20/24")


# `ip -j addr`, `ip -j route show default` and networkctl's list, recorded on this host.
IP_ADDR = json.loads("""[
 {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"operstate":"UNKNOWN",
  "link_type":"loopback","address":"00:00:00:00:00:00",
  "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
 {"ifindex":5,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
  "operstate":"UP","link_type":"ether","address":"b2:41:93:2c:15:e3",
  "addr_info":[{"family":"inet","local":"10.55.0.68","prefixlen":24,"scope":"global",
                "dynamic":true},
               {"family":"inet6","local":"fe80::b041:93ff:fe2c:15e3","prefixlen":64,
                "scope":"link"}]},
 {"ifindex":6,"ifname":"eth1","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],
  "operstate":"DOWN","link_type":"ether","address":"52:54:00:12:34:57","addr_info":[]}]""")
ROUTES = [{"dst": "default", "gateway": "10.55.0.1", "dev": "eth0", "protocol": "dhcp"}]
LINKS: dict[str, dict[str, Any]] = {
    "eth0": {
        "AdministrativeState": "configured",
        "DNS": [{"Family": 2, "Address": [10, 55, 0, 1]}],
    },
    "eth1": {"AdministrativeState": "configuring"},
}


def test_status_from_recorded_output() -> None:
    net = network.parse_status(
        IP_ADDR, ROUTES, LINKS, "# stub\nnameserver 127.0.0.53\nsearch lan\n"
    )
    assert [i.name for i in net.interfaces] == ["eth0", "eth1"]
    eth0, eth1 = net.interfaces
    assert eth0.online and eth0.gateway == "10.55.0.1" and eth0.dns == ("10.55.0.1",)
    assert [str(a) for a in eth0.ipv4] == ["10.55.0.68/24"] and eth0.ipv4[0].dynamic
    assert not eth1.carrier and not eth1.online and eth1.setup == "configuring"
    assert net.online and net.dns == ("10.55.0.1",)
    assert net.summary() == "online: 10.55.0.68/24 on eth0, gateway 10.55.0.1; DNS 10.55.0.1"
    offline = network.parse_status(IP_ADDR[2:], [], None, "nameserver 10.0.0.1\n")
    assert not offline.online and offline.dns == ("10.0.0.1",)
    assert offline.summary() == "offline: no interface has an address"
    assert offline.interfaces[0].setup == ""


def test_cli_bad_input_is_one_line() -> None:
    proc = subprocess.run(
        [LIFERAFT, "net", "static", "eth0", "10.0.0.5/24", "--gateway", "10.9.9.9"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "liferaft: error: gateway 10.9.9.9 is outside the subnet 10.0.0.0/24 of 10.0.0.5/24 "
        "(the gateway must be on the same subnet; check the prefix length: /24 is "
        "255.255.255.0)"
    ]
