"""File servers on the host's loopback for smb:// and nfs:// repositories:
Samba's smbd and nfs-ganesha (NFSv4, VFS FSAL), each started in the
foreground over its own temp dir and stopped (with its children) at the end
of the ``with``, also when the test fails.

The host kernel cannot mount cifs or nfs; the clients are the rescue system
in QEMU (it reaches these servers at 10.0.2.2, QEMU's user network maps that
to 127.0.0.1) and, for quick checks of the servers themselves, smbclient and
libnfs' nfs-ls on the host.

Both listen on their standard ports (445, 2049): the guest's mount.cifs and
mount.nfs4 use them unless told otherwise, and a repository URL without a
port is what users write. A port already taken fails the fixture with a line
that says which.

SMB needs a Unix account for its user, and a test must not add one to the
machine it runs on: smbd and smbpasswd run under nss_wrapper
(libnss-wrapper, made by the Samba team for exactly this), which gives them
a passwd and group file of their own in the temp dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

SMB_PORT = 445
NFS_PORT = 2049
SMB_UID = 4242  # the SMB user's uid; exists only in nss_wrapper's passwd file
NSS_WRAPPER = "libnss_wrapper.so"


class PortInUse(RuntimeError):
    pass


def check_port_free(port: int, what: str) -> None:
    """PortInUse, with what holds it, if something on this host listens on ``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        raise PortInUse(
            f"port {port} on 127.0.0.1 is already in use, so the test's {what} "
            f"cannot start; stop what listens there (`ss -ltnp 'sport = :{port}'`)"
        )
    with socket.socket() as s:
        # As the servers bind: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(
                f"port {port} on 127.0.0.1 cannot be bound for the test's {what}: {exc.strerror}"
            ) from None


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: str, timeout: float) -> None:
    # Popen.args is typed as every command form; ours is always an argv list.
    argv = proc.args
    program = os.fsdecode(argv[0]) if isinstance(argv, list) else str(argv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{program} exited with {proc.returncode} before it listened "
                f"on port {port}:\n{_tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"{program} does not listen on 127.0.0.1:{port} after {timeout:.0f} s:\n{_tail(log)}"
    )


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen[bytes], grace: float, port: int) -> None:
    """SIGTERM to the server's process group (smbd forks helpers), SIGKILL after
    ``grace``; returns once nothing listens on ``port`` any more, so the next
    test's server can start."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while helpers of its group still run.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            return
        time.sleep(0.05)


@dataclass
class SmbServer:
    port: int
    share: str  # the share's name
    path: str  # the folder it serves
    user: str
    password: str
    log: str


def _nss_files(directory: str, user: str) -> dict[str, str]:
    passwd, group = os.path.join(directory, "passwd"), os.path.join(directory, "group")
    with open(passwd, "w") as f:
        f.write(
            "root:x:0:0:root:/root:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            f"{user}:x:{SMB_UID}:{SMB_UID}:liferaft test:/nonexistent:/usr/sbin/nologin\n"
        )
    with open(group, "w") as f:
        f.write(f"root:x:0:\nnogroup:x:65534:\n{user}:x:{SMB_UID}:\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    env.update(
        NSS_WRAPPER_PASSWD=passwd, NSS_WRAPPER_GROUP=group, LD_PRELOAD=NSS_WRAPPER, LC_ALL="C"
    )
    return env


@contextlib.contextmanager
def smbd(
    directory: str, user: str, password: str, share: str = "share", port: int = SMB_PORT
) -> Iterator[SmbServer]:
    """Samba's smbd serving ``directory``/share as the writable share ``share``
    to ``user`` with ``password`` (no guest access)."""
    check_port_free(port, "smbd")
    d = os.path.abspath(directory)
    for sub in ("share", "private", "lock", "state", "cache", "pid", "ncalrpc", "log"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    path = os.path.join(d, "share")
    env = _nss_files(d, user)
    conf = os.path.join(d, "smb.conf")
    log = os.path.join(d, "log", "smbd.log")
    with open(conf, "w") as f:
        f.write(f"""[global]
  server role = standalone server
  smb ports = {port}
  interfaces = lo
  bind interfaces only = yes
  passdb backend = tdbsam:{d}/private/passdb.tdb
  private dir = {d}/private
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  pid directory = {d}/pid
  ncalrpc dir = {d}/ncalrpc
  log file = {d}/log/log.%m
  log level = 1
  map to guest = never
  server min protocol = SMB2_10
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  disable netbios = yes

[{share}]
  path = {path}
  read only = no
  valid users = {user}
  # The test's temp dirs are 0700 root: files are reached as root.
  force user = root
  force group = root
""")
    # The password goes to smbpasswd on stdin, never in argv.
    subprocess.run(
        ["smbpasswd", "-c", conf, "-s", "-a", user],
        input=f"{password}\n{password}\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", conf],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_listening(port, proc, log, 30)
        yield SmbServer(port, share, path, user, password, log)
    finally:
        _stop_group(proc, 10, port)


@dataclass
class NfsServer:
    port: int
    pseudo: str  # the export's NFSv4 path, e.g. /export
    path: str  # the folder it serves
    log: str


@contextlib.contextmanager
def nfs_ganesha(
    directory: str, pseudo: str = "/export", port: int = NFS_PORT
) -> Iterator[NfsServer]:
    """nfs-ganesha exporting ``directory``/export read-write as ``pseudo``,
    NFSv4 only over TCP, root not squashed (the rescue system is root)."""
    check_port_free(port, "nfs-ganesha")
    d = os.path.abspath(directory)
    path = os.path.join(d, "export")
    for sub in ("export", "recovery"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    conf = os.path.join(d, "ganesha.conf")
    log = os.path.join(d, "ganesha.log")
    with open(conf, "w") as f:
        f.write(f"""NFS_CORE_PARAM {{
  Protocols = 4;
  NFS_Port = {port};
  Bind_addr = 127.0.0.1;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
}}
NFSV4 {{
  Graceless = true;
  RecoveryBackend = fs;
  RecoveryRoot = {d}/recovery;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
  Export_Id = 1;
  Path = {path};
  Pseudo = {pseudo};
  Protocols = 4;
  Transports = TCP;
  Access_Type = RW;
  Squash = No_Root_Squash;
  SecType = sys;
  FSAL {{ Name = VFS; }}
}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    proc = subprocess.Popen(
        ["ganesha.nfsd", "-F", "-f", conf, "-L", log, "-p", os.path.join(d, "ganesha.pid")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_listening(port, proc, log, 30)
        yield NfsServer(port, pseudo, path, log)
    finally:
        # ganesha takes a few seconds to shut its threads down
        _stop_group(proc, 20, port)
