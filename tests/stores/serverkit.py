"""Servers on loopback for the network store tests: nginx, a byte-counting
TCP proxy, sshd. Each is a context manager that stops what it started, also
when the test fails."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def self_signed_cert(directory: str) -> tuple[str, str]:
    """(certificate, key) for 127.0.0.1, made with openssl."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Nginx:
    """nginx in one process (master_process off), so a SIGKILL takes all of it."""

    def __init__(
        self,
        root: str,
        directory: str,
        *,
        port: int | None = None,
        tls: tuple[str, str] | None = None,
        limit_rate: str | None = None,
        methods: bool = False,
        autoindex: bool = False,
    ) -> None:
        """``methods``: each access log line starts with the request's method
        (GET, HEAD), for a test that tells downloads from look-ups;
        ``autoindex``: folders are listed (an HTML page of links)."""
        self.root = root
        self.dir = directory
        self.port = port or free_port()
        self.tls = tls
        self.limit_rate = limit_rate
        self.access_log = os.path.join(directory, "access.log")
        self.proc: subprocess.Popen[bytes] | None = None
        os.makedirs(directory, exist_ok=True)
        self.conf = os.path.join(directory, "nginx.conf")
        d = directory
        ssl = ""
        method = "$request_method " if methods else ""
        if tls:
            ssl = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"
        with open(self.conf, "w") as f:
            f.write(f"""
daemon off; master_process off; worker_processes 1; user root root;
error_log {d}/error.log info; pid {d}/nginx.pid;
events {{ worker_connections 128; }}
http {{
  log_format counted '{method}$request_uri $status $bytes_sent "$http_range"';
  access_log {d}/access.log counted;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  default_type application/octet-stream;
  sendfile on; keepalive_timeout 30;
  server {{
    listen 127.0.0.1:{self.port}{" ssl" if tls else ""};
    {ssl}
    root {root};
    {"autoindex on;" if autoindex else ""}
    {f"limit_rate {limit_rate};" if limit_rate else ""}
    location /tmp/ {{ return 404; }}
  }}
}}
""")

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(
            ["nginx", "-c", self.conf, "-p", self.dir],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_lines(self) -> list[str]:
        try:
            with open(self.access_log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []


class CountingProxy:
    """Forwards 127.0.0.1:port to an upstream port and counts the bytes the
    upstream sent to clients: what a restore really downloaded. ``rate``
    slows each connection down, so a test can act halfway through."""

    def __init__(self, upstream: int, rate: float | None = None) -> None:
        self.upstream = upstream
        self.rate = rate  # bytes per second to each client, None: as fast as it goes
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.served = 0
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.sock.close()
        with self.lock:
            for s in list(self.open):
                with contextlib.suppress(OSError):
                    s.close()
        self.thread.join(5)

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), 2)
        except OSError:
            client.close()
            return
        with self.lock:
            self.open |= {client, upstream}
        try:
            while self.running:
                ready, _, _ = select.select([client, upstream], [], [], 0.5)
                for s in ready:
                    data = s.recv(256 * 1024)
                    if not data:
                        return
                    if s is upstream:
                        client.sendall(data)
                        with self.lock:
                            self.served += len(data)
                        if self.rate:
                            time.sleep(len(data) / self.rate)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()
            with self.lock:
                self.open -= {client, upstream}


@contextlib.contextmanager
def running(
    argv: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        wait_port(port, proc=proc)
        yield proc
    finally:
        stop(proc)


@dataclass
class Sshd:
    port: int
    client_key: str  # logs in as root
    known_hosts: str  # the host key for [127.0.0.1]:port
    host_key: str  # the private host key; its .pub beside it
    log: str  # sshd's stderr
    proc: subprocess.Popen[bytes]

    def host_pub(self) -> str:
        with open(self.host_key + ".pub") as f:
            return f.read().strip()

    def fingerprint(self) -> str:
        """SHA256:... of the host key, as `ssh-keygen -l` prints it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", self.host_key + ".pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def known_hosts_for(self, port: int, path: str) -> str:
        """A known_hosts file naming this host key for [127.0.0.1]:port (a proxy's)."""
        with open(path, "w") as f:
            f.write(f"[127.0.0.1]:{port} {self.host_pub()}\n")
        return path

    def sessions(self) -> list[int]:
        """The pids of the per-connection processes (children of the listener)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]


@contextlib.contextmanager
def sshd(directory: str) -> Iterator[Sshd]:
    """OpenSSH's sshd on loopback with its own host key and authorized_keys;
    logins as root by key. Its log goes to a file (a pipe nobody reads
    would stall it)."""
    os.makedirs(directory, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)
    host_key = os.path.join(directory, "host_ed25519")
    client_key = os.path.join(directory, "client_ed25519")
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key],
            check=True,
            capture_output=True,
        )
    authorized = os.path.join(directory, "authorized_keys")
    with open(client_key + ".pub") as src, open(authorized, "w") as dst:
        dst.write(src.read())
    port = free_port()
    known = os.path.join(directory, "known_hosts")
    with open(host_key + ".pub") as src, open(known, "w") as dst:
        dst.write(f"[127.0.0.1]:{port} {src.read()}")
    conf = os.path.join(directory, "sshd_config")
    with open(conf, "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {authorized}
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
MaxSessions 50
Subsystem sftp internal-sftp
""")
    log = os.path.join(directory, "sshd.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", conf],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Sshd(port, client_key, known, host_key, log, proc)
    try:
        wait_port(port, proc=proc)
        yield server
    finally:
        for pid in server.sessions():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop(proc)


@contextlib.contextmanager
def moto_s3(directory: str) -> Iterator[str]:
    """moto_server on loopback, its endpoint URL. Its request log goes to a
    file: a pipe fills after a few hundred requests and moto then stops
    answering. The caller puts test keys in the environment."""
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with open(os.path.join(directory, f"moto-{port}.log"), "wb") as log:
        proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
