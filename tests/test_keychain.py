"""Where secrets come from (rescue_app/engine/keychain.py): the chain's order,
one chain per Engine with nothing shared between two in one process, the
UI's dialog in the prompt's place, a missing secret as one line naming where
to put it, and no secret in a repr or a log. Real servers on loopback (a
paramiko SFTP server, a Python HTTP server); no root."""

from __future__ import annotations

import ast
import base64
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue_app import unattended
from rescue_app.engine import CredentialChain, CredentialsFile, Engine, TerminalPrompt
from rescue_app.engine.keychain import (
    CallbackPrompt,
    Environment,
    SecretKind,
    SecretRequest,
    SessionSecrets,
)
from rescue_app.errors import RepositoryError
from rescue_app.profile import Unattended
from tests.drill.sftpkit import sftp_server

SECRET = "pw-Kc9-keychain-never-shown"
WHO = "backup@nas.example.com"
ENGINE = Path(__file__).resolve().parent.parent / "rescue_app" / "engine"


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def no_host_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No password, key or credentials file of the machine running the tests;
    LIFERAFT_CREDENTIALS is an empty file of this test's (returned)."""
    for name in ("LIFERAFT_PASSWORD", "LIFERAFT_SSH_KEY", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys or known_hosts
    known = tmp_path / "known_hosts"
    known.write_text("")
    monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", str(known))
    path = private_file(tmp_path / "credentials.yaml", "credentials: []\n")
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", str(path))
    return path


def test_chain_order_typed_beats_environment_beats_file_beats_prompt(tmp_path: Path) -> None:
    path = private_file(tmp_path / "c.yaml", f"credentials:\n  - match: {WHO}\n"
                        "    password: from-file\n")  # fmt: skip
    environ: dict[str, str] = {}
    asked: list[str] = []

    def dialog(who: str) -> str | None:
        asked.append(who)
        return "from-prompt"

    chain = CredentialChain.standard(
        file=CredentialsFile(str(path)), prompt=CallbackPrompt(dialog), environ=environ
    )
    # nothing but the prompt knows other@host; the prompt is asked only if allowed
    assert chain.password("other@host", ask=False) is None and asked == []
    assert chain.password("other@host") == "from-prompt" and asked == ["other@host"]
    assert chain.password(WHO) == "from-file"
    environ["LIFERAFT_PASSWORD"] = "from-env"
    assert chain.password(WHO) == "from-env"
    chain.remember(WHO, "typed")
    assert chain.password(WHO) == "typed"
    assert asked == ["other@host"]  # never asked while another source knew
    # the prompt comes last whatever its place in the constructor's order
    assert [type(s) for s in chain.sources] == [
        SessionSecrets,
        Environment,
        CredentialsFile,
        CallbackPrompt,
    ]


def test_two_engines_with_different_typed_passwords_each_reach_their_own_server(
    tmp_path: Path, no_host_secrets: Path
) -> None:
    """Same user, same host, two servers with two passwords: each Engine's
    typed password is its own. With one process-wide registry the second
    password typed would have replaced the first."""
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name / "repo"
        folder.mkdir(parents=True)
        (folder / "liferaft-repository.json").write_text(
            json.dumps({"format": "liferaft-repository", "version": 1})
        )
        folders.append(str(tmp_path / name))
    first, second = Engine(), Engine()
    first.remember_password("ann@127.0.0.1", "password-of-a")
    second.remember_password("ann@127.0.0.1", "password-of-b")
    with (
        sftp_server(folders[0], "ann", "password-of-a") as a,
        sftp_server(folders[1], "ann", "password-of-b") as b,
    ):
        url_a = f"sftp://ann@127.0.0.1:{a.port}/repo"
        url_b = f"sftp://ann@127.0.0.1:{b.port}/repo"
        for engine, url in ((first, url_a), (second, url_b)):
            repo = engine.open_repository(url)
            try:
                assert engine.list_images(repo) == []
            finally:
                repo.close()
        with pytest.raises(RepositoryError, match="refused the login of ann"):
            first.open_repository(url_b)
        # an Engine nobody typed a password into has none
        with pytest.raises(RepositoryError, match="no password was given"):
            Engine().open_repository(url_a)


def test_no_secret_lives_in_module_state() -> None:
    """No engine module keeps a secret, a password registry or a prompt in a
    module global (the state issue 11 removed from stores/__init__.py and
    credentials.py): no ``global`` of such a name, no module-level container."""
    word = ("pass", "secret", "credential", "prompt", "override")
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found += [f"{path.name}: global {n}" for n in node.names if any(w in n.lower()
                          for w in word)]  # fmt: skip
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign) and node.value is not None
                else []
            )
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            value = getattr(node, "value", None)
            mutable = isinstance(value, ast.Dict | ast.List | ast.Set) or (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id in ("dict", "list", "set")
            )
            found += [f"{path.name}: {n}" for n in names if mutable and any(w in n.lower()
                      for w in word)]  # fmt: skip
        if path.name in ("credentials.py", "keychain.py"):
            # the credentials file's old process-wide override and cache
            assert not any(isinstance(n, ast.ClassDef) and n.name == "_State" for n in tree.body)
    assert found == []


def test_the_ui_dialog_takes_the_prompts_place_and_gives_it_back() -> None:
    terminal = TerminalPrompt()
    engine = Engine(credentials=CredentialChain.standard(prompt=terminal, environ={}))
    engine.ask_passwords_with(lambda who: "from-dialog")
    assert isinstance(engine.credentials.sources[-1], CallbackPrompt)
    assert engine.credentials.password("x@y", url="sftp://x@y/") == "from-dialog"
    engine.ask_passwords_with(None)  # the UI ends
    last: object = engine.credentials.sources[-1]
    assert last is terminal
    assert sum(s.interactive for s in engine.credentials.sources) == 1


def test_missing_password_in_unattended_mode_is_one_line_naming_store_and_file(
    tmp_path: Path,
    no_host_secrets: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An SMB share whose password nobody gave: no prompt (nobody is at the
    keyboard), nothing mounted; one line naming the share, the user, and the
    credentials file the run was given."""
    creds = private_file(tmp_path / "stick.yaml", "credentials: []\n")
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    monkeypatch.setattr(unattended, "_wait_for_network", lambda timeout=60: None)
    code = run(
        "liferaft.action=restore liferaft.repo=smb://backup@127.0.0.1/share/repo "
        f"liferaft.image=web1 liferaft.target=/dev/null liferaft.credentials={creds}"
    )
    out = capsys.readouterr().out
    assert code != 0 and "LIFERAFT UNATTENDED RESTORE: FAILED" in out
    line = out.split("RESTORE: FAILED", 1)[1].splitlines()[1]  # the banner's detail
    for needle in ("smb://backup@127.0.0.1/share/repo", "no password of backup@127.0.0.1",
                   f"credentials file {creds}", "match: backup@127.0.0.1"):  # fmt: skip
        assert needle in line, line
    # without liferaft.credentials=: the image's own file is named
    code = run(
        "liferaft.action=restore liferaft.repo=smb://backup@127.0.0.1/share/repo "
        "liferaft.image=web1 liferaft.target=/dev/null"
    )
    out = capsys.readouterr().out
    assert code != 0 and f"credentials file {no_host_secrets}" in out


def run(cmdline: str) -> int:
    return unattended.run_unattended(cmdline, Unattended(), power_off=lambda: None)


class _BasicAuth(http.server.BaseHTTPRequestHandler):
    """401 unless the request carries reader's password; records what it got."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        got = self.headers.get("Authorization", "")
        self.seen.append(got)
        if got != "Basic " + base64.b64encode(b"reader:" + SECRET.encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="liferaft"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"format": "liferaft-repository", "version": 1}).encode()
        self.send_response(200 if self.path == "/liferaft-repository.json" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def basic_auth_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BasicAuth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://reader@127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_http_user_without_password_names_where_to_put_it(
    basic_auth_server: str, no_host_secrets: Path
) -> None:
    engine = Engine(credentials=CredentialChain.standard())  # nobody to ask
    with pytest.raises(RepositoryError) as err:
        engine.open_repository(basic_auth_server)
    line = str(err.value)
    assert "\n" not in line
    assert "no password of reader@127.0.0.1 was given" in line
    assert f"to the credentials file {no_host_secrets}" in line and "LIFERAFT_PASSWORD" in line
    engine.remember_password("reader@127.0.0.1", SECRET)
    engine.open_repository(basic_auth_server).close()


def test_secrets_never_in_repr_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = private_file(
        tmp_path / "c.yaml",
        f'credentials:\n  - match: {WHO}\n    password: "{SECRET}-file"\n'
        f'  - match: s3://bucket\n    access_key_id: AKID\n    secret_access_key: "{SECRET}-s3"\n',
    )
    file = CredentialsFile(str(path))
    chain = CredentialChain.standard(
        file=file,
        prompt=CallbackPrompt(lambda who: f"{SECRET}-prompt"),
        environ={"AWS_ACCESS_KEY_ID": "AKENV", "AWS_SECRET_ACCESS_KEY": f"{SECRET}-aws"},
    )
    chain.remember("typed@host", f"{SECRET}-typed")
    caplog.set_level(logging.DEBUG)
    answers = [
        chain.lookup(SecretRequest(SecretKind.PASSWORD, who="typed@host")),
        chain.lookup(SecretRequest(SecretKind.PASSWORD, who=WHO)),
        chain.lookup(SecretRequest(SecretKind.PASSWORD, who="asked@host")),
        chain.lookup(SecretRequest(SecretKind.S3_KEYS, url="s3://bucket/x")),
    ]
    assert [a.password or a.secret_access_key for a in answers if a] == [
        f"{SECRET}-typed",
        f"{SECRET}-file",
        f"{SECRET}-prompt",
        f"{SECRET}-aws",
    ]
    shown = [repr(chain), repr(Engine(credentials=chain).credentials), repr(file.credentials())]
    shown += [repr(s) for s in chain.sources] + [repr(a) for a in answers]
    shown += [str(chain.missing(SecretRequest(SecretKind.PASSWORD, who=WHO), "smb://x/y"))]
    text = "\n".join(shown) + "\n" + caplog.text
    assert SECRET not in text
    assert "from the credentials file" in caplog.text  # which source answered is logged
