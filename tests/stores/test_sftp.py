"""Back up to and restore from an SSH server (OpenSSH's sshd on loopback)."""

from __future__ import annotations

import json
import os
import time

import pytest

from rescue_app.engine.kernel import reread_partitions
from tests.enginekit import (
    assert_one_line_error,
    check_restored,
    liferaft,
    secret_in_process_listing,
    start_liferaft,
)
from tests.stores.conftest import DISK_BYTES
from tests.stores.serverkit import sshd

pytestmark = pytest.mark.root

SECRET = "pw-Zq81-never-shown"


@pytest.fixture
def server(workdir, monkeypatch):
    with sshd(os.path.join(workdir, "sshd")) as server:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
        yield server.port


def test_capture_list_verify_restore_over_sftp(captured, server, loopdisk, workdir, monkeypatch):
    remote = os.path.join(workdir, "remote", "repo")
    url = f"sftp://root@127.0.0.1:{server}{remote}"
    # A password in the environment (unused: the key logs in) must show up
    # nowhere: not in process listings, the log, or the repository.
    monkeypatch.setenv("LIFERAFT_PASSWORD", SECRET)
    logfile = os.path.join(workdir, "liferaft.log")
    proc = start_liferaft(
        "--log", logfile, "capture", "--repo", url, "--name", "net", captured.source.dev
    )
    seen = False
    while proc.poll() is None:
        seen = seen or secret_in_process_listing(SECRET)
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert not seen
    assert "captured net@" in out
    assert os.path.exists(os.path.join(remote, "liferaft-repository.json"))
    assert not os.listdir(os.path.join(remote, "tmp"))  # every write renamed into place
    for folder, _dirs, names in os.walk(remote):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                assert SECRET.encode() not in f.read()
    with open(logfile) as f:
        text = f.read()
    at = text.find(SECRET)
    assert at < 0, text[max(0, at - 300) : at + 100]
    manifest = json.load(open(os.path.join(remote, "index.json")))["images"][0]
    assert manifest["name"] == "net"

    images = liferaft("images", "--repo", url).stdout
    assert "net@" in images
    assert ": OK" in liferaft("verify", "--repo", url).stdout
    target = loopdisk(DISK_BYTES)
    liferaft("restore", "--repo", url, "--image", "net", "--to", target, "--yes")
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


def test_wrong_password_and_missing_repository(server, workdir, monkeypatch):
    monkeypatch.delenv("LIFERAFT_SSH_KEY")
    monkeypatch.setenv("LIFERAFT_PASSWORD", SECRET)
    # root's password on this host is not SECRET: the login is refused.
    url = f"sftp://root@127.0.0.1:{server}{workdir}/nothing"
    proc = liferaft("images", "--repo", url, check=False)
    line = assert_one_line_error(
        proc, "refused the login of root", "wrong password", "LIFERAFT_PASSWORD"
    )
    assert SECRET not in proc.stderr + proc.stdout and SECRET not in line

    monkeypatch.undo()
    with sshd(os.path.join(workdir, "sshd2")) as server2:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server2.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server2.known_hosts)
        proc = liferaft(
            "images",
            "--repo",
            f"sftp://root@127.0.0.1:{server2.port}{workdir}/nothing",
            check=False,
        )
        assert_one_line_error(proc, "does not exist")
