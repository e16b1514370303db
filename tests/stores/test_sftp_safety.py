"""The SFTP store against OpenSSH's sshd on loopback, where it must be safe:

- every chunk and the manifest are fsynced on the server before they are
  renamed into place, the manifest after all chunks (seen with strace on
  the server, not taken on trust from the client);
- host keys: an unknown host is trusted on first use with its SHA256
  fingerprint printed; a fingerprint pinned in the URL is enforced; a
  known_hosts entry with another key is a one-line error naming the host
  and both fingerprints, and the restore writes nothing;
- the sshd session killed halfway through a restore: the store reconnects
  and the restore finishes, checksums equal.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from rescue_app.engine import CredentialChain
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.stores.retry import Watch
from rescue_app.engine.stores.sftp import SftpStore
from rescue_app.errors import CancelledError, RepositoryError
from rescue_app.progress import CancelToken, Progress
from tests.enginekit import (
    assert_one_line_error,
    check_restored,
    liferaft,
    start_liferaft,
)
from tests.stores.conftest import DISK_BYTES, Captured
from tests.stores.serverkit import CountingProxy, Sshd, free_port, sshd

pytestmark = pytest.mark.root


@pytest.fixture
def server(workdir, monkeypatch):
    with sshd(os.path.join(workdir, "sshd")) as s:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", s.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", s.known_hosts)
        monkeypatch.delenv("LIFERAFT_PASSWORD", raising=False)
        yield s


def _remote_copy(captured: Captured, workdir: str) -> str:
    """The captured repository where sshd serves it (the same file system)."""
    remote = os.path.join(workdir, "remote")
    shutil.copytree(captured.repo, remote)
    return remote


def _restore(url: str, target: str) -> subprocess.CompletedProcess[str]:
    return liferaft(
        "restore", "--repo", url, "--image", "src", "--to", target, "--yes", check=False
    )


def _all_zero(dev: str) -> bool:
    with open(dev, "rb") as f:
        while block := f.read(4 << 20):
            if block.count(0) != len(block):
                return False
    return True


# -- durability ------------------------------------------------------------------


def _traced(server: Sshd, out: str) -> subprocess.Popen[bytes]:
    """strace on sshd and every session it forks: file syscalls, fds with their paths."""
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-y", "-o", out, "-e",
         "trace=fsync,fdatasync,rename,renameat,renameat2", "-p", str(server.proc.pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{server.proc.pid}/status") as f:
            if re.search(r"^TracerPid:\s*[1-9]", f.read(), re.M):
                return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("strace did not attach to sshd")


def _whole_calls(trace: str) -> list[str]:
    """strace's lines in order of completion, each call whole: a call another
    process interrupted ("<unfinished ...>") is joined with its "<... resumed>"."""
    started: dict[str, str] = {}
    calls = []
    with open(trace) as f:
        for line in f:
            pid, rest = line.rstrip("\n").split(maxsplit=1)  # strace pads short pids
            if rest.endswith("<unfinished ...>"):
                started[pid] = rest.removesuffix("<unfinished ...>").rstrip()
            elif m := re.match(r"<\.\.\. \w+ resumed>(.*)", rest):
                calls.append(started.pop(pid, "") + m.group(1))
            else:
                calls.append(rest)
    return calls


def test_chunks_then_manifest_are_on_the_servers_disk_before_publishing(captured, server,
                                                                        workdir):  # fmt: skip
    remote = os.path.join(workdir, "fresh")
    url = f"sftp://root@127.0.0.1:{server.port}{remote}"
    trace = os.path.join(workdir, "strace.log")
    strace = _traced(server, trace)
    try:
        liferaft("capture", "--repo", url, "--name", "net", captured.source.dev)
    finally:
        strace.send_signal(signal.SIGINT)
        strace.wait(10)
    fsynced: set[str] = set()
    renames: list[tuple[str, str]] = []
    for line in _whole_calls(trace):
        if m := re.search(r"\bf(?:data)?sync\(\d+<([^>]+)>\)\s*= 0", line):
            fsynced.add(m.group(1))
        elif m := re.search(r'rename(?:at2?)?\((?:[^,]+, )?"([^"]+)", (?:[^,]+, )?"([^"]+)"'
                            r".*\)\s*= 0", line):  # fmt: skip
            old, new = m.group(1), m.group(2)
            # Each file reached its place only after its data was on disk.
            assert old in fsynced, f"{new} renamed into place without an fsync of {old}"
            renames.append((old, new))
    placed = [os.path.relpath(new, remote) for _old, new in renames]
    chunks = [i for i, rel in enumerate(placed) if rel.startswith("chunks/")]
    manifests = [i for i, rel in enumerate(placed) if rel.startswith("images/net/")]
    stored = sum(len(files) for _d, _s, files in os.walk(os.path.join(remote, "chunks")))
    assert len(chunks) == stored > 0
    assert len(manifests) == 1 and manifests[0] > max(chunks), placed
    assert placed.index("index.json") > manifests[0]
    assert placed[0] == "liferaft-repository.json"


# -- host keys ----------------------------------------------------------------------


def test_unknown_host_is_trusted_on_first_use_and_shown(captured, server, workdir,
                                                        monkeypatch):  # fmt: skip
    url = f"sftp://root@127.0.0.1:{server.port}{_remote_copy(captured, workdir)}"
    empty = os.path.join(workdir, "empty_known_hosts")
    open(empty, "w").close()
    monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", empty)
    fingerprint = server.fingerprint()
    proc = liferaft("images", "--repo", url)
    assert "src@" in proc.stdout
    warning = [ln for ln in proc.stderr.splitlines() if "trusting its key" in ln]
    assert len(warning) == 1, proc.stderr
    assert f"ssh-ed25519 {fingerprint}" in warning[0] and "127.0.0.1 port" in warning[0]
    assert f"?fingerprint={fingerprint}" in warning[0]

    # The fingerprint pinned in the URL: no question, no warning.
    pinned = liferaft("images", "--repo", f"{url}?fingerprint={fingerprint}")
    assert "src@" in pinned.stdout and "trusting" not in pinned.stderr
    # Listed in known_hosts: quiet too.
    monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
    quiet = liferaft("images", "--repo", url)
    assert "trusting" not in quiet.stderr

    wrong = "SHA256:" + "A" * 43
    proc = liferaft("images", "--repo", f"{url}?fingerprint={wrong}", check=False)
    assert_one_line_error(proc, "host key of 127.0.0.1", "has changed", wrong, fingerprint)


def _other_key(workdir: str, kind: str) -> tuple[str, str]:
    """(public key line, SHA256 fingerprint) of a new key that is not the server's."""
    path = os.path.join(workdir, f"other_{kind}")
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-f", path], check=True)
    line = open(path + ".pub").read().split()
    fp = subprocess.run(["ssh-keygen", "-l", "-f", path + ".pub"], check=True,
                        capture_output=True, text=True).stdout.split()[1]  # fmt: skip
    return f"{line[0]} {line[1]}", fp


def test_changed_host_key_is_refused_before_anything_is_written(captured, server, loopdisk,
                                                                workdir, monkeypatch):  # fmt: skip
    url = f"sftp://root@127.0.0.1:{server.port}{_remote_copy(captured, workdir)}"
    target = loopdisk(DISK_BYTES)
    real = server.fingerprint()
    for kind in ("ed25519", "rsa"):  # the same key type, and a type the server lacks
        pub, fp = _other_key(workdir, kind)
        known = os.path.join(workdir, f"known_{kind}")
        with open(known, "w") as f:
            f.write(f"[127.0.0.1]:{server.port} {pub}\n")
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", known)
        proc = _restore(url, target)
        line = assert_one_line_error(proc, "SSH host key of 127.0.0.1 port", "has changed",
                                     fp, real, "ssh-keygen -R")  # fmt: skip
        print(line)
        assert _all_zero(target), "the target was written to"
    # The hint's way out works: the right key in known_hosts, the restore goes through.
    monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
    proc = _restore(url, target)
    assert proc.returncode == 0, proc.stderr


def test_missing_known_hosts_file_is_one_line(server, workdir, monkeypatch):
    monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", os.path.join(workdir, "nope"))
    proc = liferaft("images", "--repo", f"sftp://root@127.0.0.1:{server.port}{workdir}",
                    check=False)  # fmt: skip
    assert_one_line_error(proc, "known_hosts file", "does not exist")


# -- dropped connection -----------------------------------------------------------------


def test_restore_goes_on_after_the_ssh_session_is_killed(captured, server, loopdisk, workdir,
                                                         monkeypatch):  # fmt: skip
    remote = _remote_copy(captured, workdir)
    # ~6 s of downloading through the proxy, so there is a middle to kill the session in.
    with CountingProxy(server.port, rate=captured.chunk_bytes / 6) as proxy:
        monkeypatch.setenv(
            "LIFERAFT_SSH_KNOWN_HOSTS",
            server.known_hosts_for(proxy.port, os.path.join(workdir, "kh")),
        )
        target = loopdisk(DISK_BYTES)
        url = f"sftp://root@127.0.0.1:{proxy.port}{remote}"
        started = time.monotonic()
        proc = start_liferaft("restore", "--repo", url, "--image", "src", "--to", target, "--yes")
        killed: list[int] = []
        while proc.poll() is None and not killed:
            if proxy.served > captured.chunk_bytes // 2:
                killed = server.sessions()
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        out, err = proc.communicate(timeout=300)
        served = proxy.served
    print(
        f"restore with a killed session: {time.monotonic() - started:.1f} s, "
        f"{served / 1e6:.1f} MB through the proxy for {captured.chunk_bytes / 1e6:.1f} MB "
        "of chunks"
    )
    assert killed, "the restore finished before the session could be killed"
    assert proc.returncode == 0, err
    assert "lost while reading" in err and "reconnected to 127.0.0.1" in err, err
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


def test_key_and_host_key_from_the_credentials_file(captured, server, workdir, monkeypatch):
    """The store takes the entry's SSH key and host keys: no known_hosts, no
    first-use warning; an entry whose host key differs is refused."""
    url = f"sftp://root@127.0.0.1:{server.port}{_remote_copy(captured, workdir)}"
    for name in ("LIFERAFT_SSH_KEY", "LIFERAFT_SSH_KNOWN_HOSTS"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", workdir)  # no ~/.ssh keys or known_hosts of this machine
    creds = os.path.join(workdir, "credentials.yaml")
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", creds)
    other, other_fp = _other_key(workdir, "ed25519")
    for host_key in (server.host_pub(), other):
        with open(creds, "w") as f:
            f.write(f"credentials:\n  - match: sftp://root@127.0.0.1:{server.port}/\n"
                    f"    ssh_key_file: {server.client_key}\n"
                    f"    host_keys: [\"{' '.join(host_key.split()[:2])}\"]\n")  # fmt: skip
        os.chmod(creds, 0o600)
        proc = liferaft("images", "--repo", url, check=False)
        if host_key == other:
            assert_one_line_error(proc, "has changed", other_fp, server.fingerprint())
        else:
            assert proc.returncode == 0 and "src@" in proc.stdout, proc.stderr
            assert "trusting" not in proc.stderr


@contextlib.contextmanager
def _store_whose_server_is_gone(
    captured: Captured, workdir: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SftpStore]:
    """A store that read from sshd, then sshd and its sessions killed: nothing listens."""
    remote = _remote_copy(captured, workdir)
    with sshd(os.path.join(workdir, "sshd")) as server:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
        store = SftpStore(
            f"sftp://root@127.0.0.1:{server.port}{remote}", CredentialChain.standard()
        )
        try:
            assert store.read("liferaft-repository.json")
            sessions = server.sessions()
            server.proc.kill()
            server.proc.wait(5)
            for pid in sessions:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while store._alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            yield store
        finally:
            store.close()


def test_server_gone_for_good_is_one_line_after_the_retries(captured, workdir, monkeypatch):
    """Reconnects follow the stores' one retry policy: notices on the running
    operation's progress while they last (issue 10 item 6), then one line naming
    host, what failed and for how long (LIFERAFT_RETRY_SECONDS)."""
    monkeypatch.setenv("LIFERAFT_RETRY_SECONDS", "2")
    seen: list[Progress] = []
    with _store_whose_server_is_gone(captured, workdir, monkeypatch) as store:
        store.watch = Watch(store.location, seen.append)
        started = time.monotonic()
        with pytest.raises(RepositoryError) as info:
            store.read("index.json")
        took = time.monotonic() - started
    text = str(info.value)
    assert "\n" not in text
    assert "the connection to 127.0.0.1 was lost while reading index.json" in text, text
    assert "tried for 2 s" in text and "connection refused" in text, text
    assert took < 4, took
    notices = [p.notice for p in seen if p.phase == "notice"]
    assert notices and all(
        re.fullmatch(r"server unreachable \(.+\), retrying \(\d s of 2\)", n) for n in notices
    ), notices
    assert "connection refused" in notices[-1], notices
    assert {p.item for p in seen} == {store.location}


def test_cancel_while_reconnecting_says_cancelled(captured, workdir, monkeypatch):
    """Ctrl-C (the CancelToken) during reconnects ends the wait at once."""
    monkeypatch.setenv("LIFERAFT_RETRY_SECONDS", "60")
    cancel = CancelToken()

    def progress(p: Progress) -> None:
        if p.phase == "notice" and p.notice:
            threading.Timer(0.5, cancel.cancel).start()

    with _store_whose_server_is_gone(captured, workdir, monkeypatch) as store:
        store.watch = Watch(store.location, progress, cancel)
        started = time.monotonic()
        with pytest.raises(CancelledError) as info:
            store.read("index.json")
        took = time.monotonic() - started
    assert took < 5, took
    assert "cancelled" in str(info.value) and "tried for" not in str(info.value)


def test_unreachable_server_at_first_contact_is_one_line_within_seconds(workdir):
    """A port nobody listens on, a host name that does not resolve: a few tries
    in the policy's first-contact window, then one line (not a minute)."""
    for url, reason in (
        (f"sftp://root@127.0.0.1:{free_port()}{workdir}", "connection refused"),
        (f"sftp://root@no-such-host.invalid{workdir}", "unknown host name"),
    ):
        started = time.monotonic()
        proc = liferaft("images", "--repo", url, check=False)
        assert_one_line_error(proc, "cannot connect to", reason)
        assert time.monotonic() - started < 5
