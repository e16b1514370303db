"""The credentials file: lookup, safety checks, and what errors may say. No root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue_app.engine import CredentialChain, CredentialsFile, credentials
from rescue_app.engine.credentials import CredentialsError
from rescue_app.engine.diskparse import mount_holding, parse_mountinfo
from tests.enginekit import assert_one_line_error, liferaft

SECRET = "pw-Kq7-credentials-never-shown"


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No credentials from the host."""
    monkeypatch.delenv("LIFERAFT_PASSWORD", raising=False)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", "/nonexistent/credentials.yaml")
    yield


ENTRIES = f"""\
credentials:
  - match: nas.example.com
    user: guest
    password: host-only
  - match: backup@nas.example.com
    password: user-at-host
  - match: sftp://backup@nas.example.com/srv/images
    password: url-prefix
  - match: sftp://backup@nas.example.com/srv/images/special
    password: longer-prefix
  - match: https://web.example.com:8443/repo/
    user: rescue
    password: "{SECRET}"
  - match: s3://bucket/site
    access_key_id: AKIDFILE
    secret_access_key: file-secret
"""


def test_most_specific_entry_wins(tmp_path: Path) -> None:
    creds = credentials.load(str(write_private(tmp_path / "c.yaml", ENTRIES)))

    def pw(url: str | None = None, who: str | None = None) -> str | None:
        entry = creds.find(url, who=who)
        return entry.password if entry else None

    assert pw("sftp://backup@nas.example.com/srv/images/special/x") == "longer-prefix"
    assert pw("sftp://backup@nas.example.com/srv/images") == "url-prefix"
    # a path prefix is whole folders: /srv/images2 is not below /srv/images
    assert pw("sftp://backup@nas.example.com/srv/images2") == "user-at-host"
    assert pw("smb://backup@nas.example.com/share") == "user-at-host"
    assert pw("smb://guest@nas.example.com/share") == "host-only"
    assert pw("smb://other@nas.example.com/share") is None  # the host entry is guest's
    # only user@host known (the SMB mount asks so)
    assert pw(who="backup@nas.example.com") == "user-at-host"
    assert pw("https://web.example.com:8443/repo/images/x.json") == SECRET
    assert pw("https://web.example.com/repo/") is None  # another port
    assert pw("http://web.example.com:8443/repo/") is None  # another scheme
    assert pw("https://rescue@web.example.com:8443/repo/") == SECRET
    assert pw("https://bob@web.example.com:8443/repo/") is None  # the entry is rescue's
    s3 = creds.find("s3://bucket/site/a")
    assert s3 is not None and (s3.access_key_id, s3.secret_access_key) == (
        "AKIDFILE",
        "file-secret",
    )
    assert creds.find("s3://bucket/other") is None
    assert SECRET not in repr(creds) and "file-secret" not in repr(creds)


def test_password_order_ui_environment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_private(tmp_path / "c.yaml", ENTRIES)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", str(path))
    chain = CredentialChain.standard()
    assert chain.password("backup@nas.example.com", ask=False) == "user-at-host"
    assert (
        chain.password(
            "backup@nas.example.com", ask=False, url="sftp://backup@nas.example.com/srv/images"
        )
        == "url-prefix"
    )
    assert chain.password("nobody@elsewhere", ask=False) is None
    monkeypatch.setenv("LIFERAFT_PASSWORD", "from-env")
    assert chain.password("backup@nas.example.com", ask=False) == "from-env"
    chain.remember("backup@nas.example.com", "typed-in-ui")
    assert chain.password("backup@nas.example.com", ask=False) == "typed-in-ui"
    # a changed file is read again
    monkeypatch.delenv("LIFERAFT_PASSWORD")
    chain = CredentialChain.standard()
    write_private(
        path, "credentials:\n  - match: backup@nas.example.com\n    password: changed-value\n"
    )
    os.utime(path, ns=(1, 1))
    assert chain.password("backup@nas.example.com", ask=False) == "changed-value"


def test_file_readable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_private(tmp_path / "c.yaml", ENTRIES, mode=0o644)
    with pytest.raises(CredentialsError) as err:
        credentials.load(str(path))
    assert "readable by others (mode 0644)" in str(err.value)
    assert f"chmod 600 {path}" in str(err.value)
    path.chmod(0o640)
    with pytest.raises(CredentialsError, match="mode 0640"):
        credentials.load(str(path))
    path.chmod(0o602)  # someone else could swap the passwords
    with pytest.raises(CredentialsError, match="writable by others"):
        credentials.load(str(path))
    # through the CLI: one line, no traceback, the secret not shown
    path.chmod(0o644)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", str(path))
    proc = liferaft("images", "--repo", "https://web.example.com:8443/repo/", check=False)
    assert_one_line_error(proc, "credentials file", "readable by others", "chmod 600")
    assert SECRET not in proc.stderr + proc.stdout
    # a secret file an entry names is held to the same rule
    key = write_private(tmp_path / "pw", "x\n", mode=0o604)
    path.chmod(0o600)
    path.write_text("credentials:\n  - match: h\n    password_file: pw\n")
    with pytest.raises(CredentialsError, match=f"password_file of h: {key} is readable"):
        credentials.load(str(path))


def test_named_file_must_exist_default_may_be_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CredentialsError, match="LIFERAFT_CREDENTIALS.*does not exist"):
        CredentialsFile().find(who="a@b")
    monkeypatch.delenv("LIFERAFT_CREDENTIALS")
    monkeypatch.setattr(credentials, "DEFAULT_PATH", "/nonexistent/default.yaml")
    assert CredentialsFile().find(who="a@b") is None


@pytest.mark.parametrize("text, needles", [
    # a YAML error: line and column, never the line itself
    (f"credentials:\n  - match: h\n    password: \"{SECRET}\n  - [", ("not valid YAML", "line")),
    # a value of the wrong type: the key, never the value
    ("credentials:\n  - match: h\n    password: 12345678\n", ("'password' must be a string",)),
    (f"credentials:\n  - match: h\n    pasword: {SECRET}\n", ("unknown key 'pasword'",)),
    (f"credentials:\n  - password: {SECRET}\n", ("'match' is missing",)),
    ("credentials:\n  - match: h\n    user: x\n", ("no secret",)),
    (f"- match: h\n  password: {SECRET}\n", ("one key, 'credentials'",)),
    (f"credentials:\n  - match: h\n    password: {SECRET}\n    host_keys: [nonsense]\n",
     ("not a public key",)),
])  # fmt: skip
def test_errors_never_quote_secrets(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    path = write_private(tmp_path / "c.yaml", text)
    with pytest.raises(CredentialsError) as err:
        credentials.load(str(path))
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    assert SECRET not in message and "12345678" not in message


def test_ssh_key_file_and_host_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f",
                    str(keys / "id")], check=True)  # fmt: skip
    public = (keys / "id.pub").read_text().strip()
    path = write_private(
        tmp_path / "c.yaml",
        f"""\
credentials:
  - match: sftp://backup@files:2222/
    ssh_key_file: keys/id
    host_keys: ["{public} root@files"]
""",
    )
    entry = credentials.load(str(path)).find("sftp://backup@files:2222/srv")
    assert entry is not None and entry.ssh_key is not None
    assert entry.private_key().get_base64() == public.split()[1]
    assert entry.known_hosts_lines("files", 2222) == [f"[files]:2222 {public}"]
    assert "PRIVATE KEY" not in repr(entry)
    (keys / "id").chmod(0o644)
    with pytest.raises(CredentialsError, match="ssh_key_file of .*readable by others"):
        credentials.load(str(path))


def test_filesystems_without_unix_modes_are_recognised() -> None:
    mountinfo = (
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        "40 22 8:17 / /run/liferaft/credentials ro,nosuid - vfat /dev/sdb1 ro,fmask=0077\n"
        "41 22 0:5 / /run/live/medium ro - iso9660 /dev/sr0 ro\n"
    )
    mounts = parse_mountinfo(mountinfo)

    def fstype(path: str) -> str | None:
        mount = mount_holding(mounts, path)
        return mount.fstype if mount else None

    assert fstype("/run/liferaft/credentials/c.yaml") == "vfat"
    assert fstype("/run/liferaft/credentialsX") == "ext4"
    assert fstype("/run/live/medium/liferaft/c.yaml") == "iso9660"
    # a mount over another on the same point: the one on top holds the files
    over = mountinfo + "42 40 8:18 / /run/liferaft/credentials rw - ext4 /dev/sdb2 rw\n"
    top = mount_holding(parse_mountinfo(over), "/run/liferaft/credentials/c.yaml")
    assert top is not None and top.fstype == "ext4"
    assert {"vfat", "iso9660", "exfat", "ntfs3"} <= credentials.NO_UNIX_MODES
