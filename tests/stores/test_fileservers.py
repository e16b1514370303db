"""The smbd and nfs-ganesha fixtures work, checked from the host with
userspace clients (the host kernel cannot mount cifs or nfs; the real
mounts happen in tests/boot/test_netstores_vm.py): the SMB user logs in
with its password and writes, a wrong password and an unknown share are
refused, the NFSv4 export lists, an unknown export does not, and a busy
port fails the fixture with a clear line."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.stores.fileservers import PortInUse, check_port_free, nfs_ganesha, smbd

pytestmark = pytest.mark.root

PASSWORD = "smb-Fx-31-never-shown"


def _smbclient(
    service: str, user: str, password: str, command: str, cwd: str
) -> subprocess.CompletedProcess[str]:
    # The password through a credentials file: argv is readable by anyone.
    auth = os.path.join(cwd, "auth")
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"username={user}\npassword={password}\n")
    return subprocess.run(
        ["smbclient", service, "-A", auth, "-m", "SMB3", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_smbd_serves_its_user_only(workdir):
    with open(os.path.join(workdir, "hello.txt"), "w") as f:
        f.write("hello\n")
    with smbd(os.path.join(workdir, "smb"), "lrbackup", PASSWORD) as server:
        ok = _smbclient("//127.0.0.1/share", "lrbackup", PASSWORD, "put hello.txt; ls", workdir)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        with open(os.path.join(server.path, "hello.txt")) as f:
            assert f.read() == "hello\n"
        wrong = _smbclient("//127.0.0.1/share", "lrbackup", "not-it", "ls", workdir)
        assert wrong.returncode != 0 and "NT_STATUS_LOGON_FAILURE" in wrong.stdout + wrong.stderr
        share = _smbclient("//127.0.0.1/nosuch", "lrbackup", PASSWORD, "ls", workdir)
        assert share.returncode != 0
        assert "NT_STATUS_BAD_NETWORK_NAME" in share.stdout + share.stderr
        with (
            pytest.raises(PortInUse, match="port 445 on 127.0.0.1 is already in use"),
            smbd(os.path.join(workdir, "smb2"), "lrbackup", PASSWORD),
        ):
            pass
    with open(server.log, errors="replace") as f:
        assert PASSWORD not in f.read()
    check_port_free(server.port, "smbd")  # stopped: the port is free again


def test_ganesha_exports_over_nfs4(workdir):
    with nfs_ganesha(os.path.join(workdir, "nfs")) as server:
        os.makedirs(os.path.join(server.path, "repo"))
        with open(os.path.join(server.path, "repo", "a.txt"), "w") as f:
            f.write("nfs\n")
        ls = subprocess.run(
            ["nfs-ls", "nfs://127.0.0.1/export/repo?version=4"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert ls.returncode == 0 and "a.txt" in ls.stdout, ls.stdout + ls.stderr
        bad = subprocess.run(
            ["nfs-ls", "nfs://127.0.0.1/nosuch?version=4"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert bad.returncode != 0 and "NOENT" in bad.stdout + bad.stderr
        with pytest.raises(PortInUse, match="port 2049"), nfs_ganesha(os.path.join(workdir, "n2")):
            pass
    check_port_free(server.port, "nfs-ganesha")
