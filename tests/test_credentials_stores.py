"""Stores that take their secrets from the credentials file, against real
servers on loopback: SFTP with a password (paramiko's server side, as in the
drill: sshd would check the host's own accounts) and with a key (OpenSSH's
sshd), HTTP basic auth (nginx), S3 keys (moto_server). The secrets must show
up nowhere: not in process listings, the log, or the repository."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import paramiko
import pytest

from rescue_app.engine import CredentialChain, CredentialsFile
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.stores import open_store
from rescue_app.engine.stores.s3 import S3Store
from tests.drill.sftpkit import sftp_server
from tests.enginekit import (
    REPO_ROOT,
    assert_one_line_error,
    check_restored,
    cli_argv,
    liferaft,
    secret_in_process_listing,
)
from tests.stores.conftest import DISK_BYTES, captured  # noqa: F401 - a fixture
from tests.stores.serverkit import Nginx, free_port, running, sshd

SECRET = "pw-Cr3d-file-never-shown"


def _run_watching(argv: list[str], secret: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run the CLI; also report whether ``secret`` was ever in a process's argv
    (the CLI's, or anything it started) while it ran."""
    proc = subprocess.Popen(cli_argv(*argv), cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen = False
    while proc.poll() is None:
        seen = seen or secret_in_process_listing(secret)
        time.sleep(0.05)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), seen


def _nowhere_in(folder: str, secret: str) -> None:
    for top, _dirs, names in os.walk(folder):
        for name in names:
            with open(os.path.join(top, name), "rb") as f:
                assert secret.encode() not in f.read(), os.path.join(top, name)


@pytest.fixture
def creds_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """LIFERAFT_CREDENTIALS for this test, the environment's passwords and keys gone."""
    for name in ("LIFERAFT_PASSWORD", "LIFERAFT_SSH_KEY", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "credentials.yaml"
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", str(path))
    yield path


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


@pytest.mark.root
def test_sftp_capture_with_password_from_the_file(captured, creds_file, workdir):  # noqa: F811
    served = os.path.join(workdir, "served")
    os.makedirs(served)
    (creds_file.parent / "drill.pw").write_text(SECRET + "\n")
    (creds_file.parent / "drill.pw").chmod(0o600)
    _write(creds_file, "credentials:\n  - match: drill@127.0.0.1\n    password_file: drill.pw\n")
    log = os.path.join(workdir, "liferaft.log")
    with sftp_server(served, "drill", SECRET) as server:
        url = f"sftp://drill@127.0.0.1:{server.port}/repo"
        proc, seen = _run_watching(["--log", log, "capture", "--repo", url, "--name", "pw",
                                    captured.source.dev], SECRET)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "captured pw@" in proc.stdout
        assert not seen, "the password was in a process's command line"
        assert ": OK" in liferaft("verify", "--repo", url).stdout
        # the file's password is wrong: the server refuses, one line
        (creds_file.parent / "drill.pw").write_text("not-the-password\n")
        proc = liferaft("images", "--repo", url, check=False)
        assert_one_line_error(proc, "refused the login of drill")
    _nowhere_in(served, SECRET)  # manifests, index, chunks
    with open(log) as f:
        assert SECRET not in f.read()


@pytest.mark.root
def test_ssh_key_and_host_key_from_the_file_log_in_to_sshd(creds_file, workdir):
    """The entry's key and host key, as the credentials API hands them to an
    SFTP client, against OpenSSH's sshd; a host key that differs is refused."""
    with sshd(os.path.join(workdir, "sshd")) as server:
        port, client_key, known = server.port, server.client_key, server.known_hosts
        host_key = Path(known).read_text().split(None, 1)[1].strip()
        os.chmod(client_key, 0o600)
        _write(
            creds_file,
            f"""\
credentials:
  - match: sftp://root@127.0.0.1:{port}/
    ssh_key_file: {client_key}
    host_keys: ["{host_key}"]
""",
        )
        url = f"sftp://root@127.0.0.1:{port}{workdir}"
        entry = CredentialsFile().find(url)
        assert entry is not None and entry.password is None

        def connect(lines: list[str]) -> paramiko.SSHClient:
            client = paramiko.SSHClient()
            for line in lines:
                name, kind, data = line.split()[:3]
                client.get_host_keys().add(
                    name, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(data))
                )
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                "127.0.0.1",
                port,
                username="root",
                pkey=entry.private_key(),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            return client

        client = connect(entry.known_hosts_lines("127.0.0.1", port))
        try:
            assert os.path.basename(workdir) in client.open_sftp().listdir(os.path.dirname(workdir))
        finally:
            client.close()
        other = paramiko.Ed25519Key.from_private_key_file(client_key)  # not the host's key
        with pytest.raises(paramiko.SSHException):
            connect([f"[127.0.0.1]:{port} ssh-ed25519 {other.get_base64()}"])


@pytest.mark.root
def test_sftp_store_takes_key_and_host_key_from_the_file(
    captured,  # noqa: F811
    creds_file,
    workdir,
    tmp_path,
    monkeypatch,
):
    """liferaft itself against sshd: no key in the environment or ~/.ssh, the
    entry's key logs in; a host key other than the entry's is refused."""
    for name in ("LIFERAFT_KNOWN_HOSTS", "LIFERAFT_SSH_KNOWN_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(other)],
                   check=True)  # fmt: skip
    with sshd(os.path.join(workdir, "sshd")) as server:
        port, client_key, known = server.port, server.client_key, server.known_hosts
        host_key = Path(known).read_text().split(None, 1)[1].strip()
        os.chmod(client_key, 0o600)
        url = f"sftp://root@127.0.0.1:{port}{captured.repo}"

        def entry(key: str, host: str) -> None:
            _write(
                creds_file,
                f"credentials:\n  - match: sftp://root@127.0.0.1:{port}/\n"
                f'    ssh_key_file: {key}\n    host_keys: ["{host}"]\n',
            )

        entry(str(other), host_key)  # a key sshd does not know
        assert_one_line_error(
            liferaft("images", "--repo", url, check=False), "refused the login of root"
        )
        entry(client_key, host_key)
        assert "src@" in liferaft("images", "--repo", url).stdout
        entry(client_key, (other.parent / "other.pub").read_text().strip())
        proc = liferaft("images", "--repo", url, check=False)
        assert_one_line_error(proc, "host key", "127.0.0.1")
        assert "PRIVATE KEY" not in proc.stderr + proc.stdout


def _basic_auth_nginx(nginx: Nginx, user: str, password: str) -> None:
    """serverkit's nginx with basic auth in front of its root."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    users = os.path.join(nginx.dir, "htpasswd")
    with open(users, "w") as f:
        f.write(f"{user}:{{SHA}}{digest}\n")
    conf = Path(nginx.conf)
    text = conf.read_text().replace(
        "    root ", f'    auth_basic "liferaft"; auth_basic_user_file {users};\n    root ', 1
    )
    conf.write_text(text)


@pytest.mark.root
def test_http_basic_auth_from_the_file(captured, creds_file, loopdisk, workdir):  # noqa: F811
    nginx = Nginx(captured.repo, os.path.join(workdir, "nginx"))
    _basic_auth_nginx(nginx, "rescue", SECRET)
    log = os.path.join(workdir, "liferaft.log")
    with nginx:
        url = f"http://127.0.0.1:{nginx.port}/"
        _write(creds_file, "credentials: []\n")
        proc = liferaft("images", "--repo", url, check=False)
        assert_one_line_error(proc, "refused access", "HTTP 401")
        # the URL people see names no user: the entry gives user and password
        _write(
            creds_file,
            f"""\
credentials:
  - match: http://127.0.0.1:{nginx.port}/
    user: rescue
    password: "{SECRET}"
""",
        )
        target = loopdisk(DISK_BYTES)
        proc, seen = _run_watching(["--log", log, "restore", "--repo", url, "--image", "src",
                                    "--to", target, "--yes"], SECRET)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert not seen
        check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))
        assert "src@" in liferaft("images", "--repo", f"http://rescue@127.0.0.1:{nginx.port}/"
                                  ).stdout  # fmt: skip
        assert any(" 200 " in ln for ln in nginx.log_lines())
    with open(log) as f:
        assert SECRET not in f.read()
    assert SECRET not in proc.stdout + proc.stderr


def test_s3_keys_from_the_file_environment_wins(creds_file, monkeypatch):
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    _write(
        creds_file,
        f"""\
credentials:
  - match: s3://backups/site
    access_key_id: AKIDFROMFILE
    secret_access_key: "{SECRET}"
""",
    )
    with running([moto, "-H", "127.0.0.1", "-p", str(port)], port):
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y"
        ).create_bucket(Bucket="backups")

        def signed_with(url: str) -> str:
            store = open_store(url, CredentialChain.standard())
            assert isinstance(store, S3Store)
            seen: list[str] = []
            store.client.meta.events.register(
                "before-send.s3",
                lambda request, **_: seen.append(str(request.headers.get("Authorization", ""))),
            )
            store.write("probe", b"data", durable=True)
            assert store.read("probe") == b"data"
            store.close()
            assert SECRET not in store.location and SECRET not in "".join(seen)
            return seen[0]

        assert "Credential=AKIDFROMFILE/" in signed_with(f"s3://backups/site?endpoint={endpoint}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
        assert "Credential=AKIDFROMENV/" in signed_with(f"s3://backups/site?endpoint={endpoint}")
