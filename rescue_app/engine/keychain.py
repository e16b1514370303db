"""Where secrets come from: a chain of credential sources, injected into the Engine.

A store that needs a secret (a login's password, an SSH key, S3 keys) asks
the CredentialChain it was opened with, never a module global and never the
URL. The chain asks its sources in order and the first that knows wins:

1. ``SessionSecrets``: what was typed in this session (the UI's password
   field), held by this chain only;
2. ``Environment``: LIFERAFT_PASSWORD, LIFERAFT_PASSPHRASE (an encrypted
   repository's), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY -- an explicit
   choice for this run;
3. ``CredentialsFile``: the credentials file (rescue_app/engine/credentials.py:
   LIFERAFT_CREDENTIALS, /etc/liferaft/credentials.yaml, or a file unattended
   mode read from a medium);
4. a prompt: ``TerminalPrompt`` (getpass, only on a terminal) for the CLI,
   ``CallbackPrompt`` for the UI's password dialog; none in unattended mode.

Each question is a ``SecretRequest``: what kind of secret, for which
repository URL and which ``user@host``. A source answers with a
``Credential`` (the credentials file's entry type, whose repr leaves secrets
out) or None. When nobody knows, ``CredentialChain.missing`` words one line
that names what is missing and where a person can put it.

Two Engines with two chains share nothing: a test can run several in one
process, and the repository keys of later formats take the same path. This
module never logs a secret, only which source answered.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from rescue_app.engine import credentials as _file
from rescue_app.engine.credentials import Credential, Credentials, CredentialsError
from rescue_app.errors import RepositoryError

log = logging.getLogger("liferaft.keychain")

PASSWORD_VARIABLE = "LIFERAFT_PASSWORD"
PASSPHRASE_VARIABLE = "LIFERAFT_PASSPHRASE"  # an encrypted repository's
LUKS_VARIABLE = "LIFERAFT_LUKS_PASSPHRASE"  # a LUKS volume's (capture/restore --unlock)
LUKS_PREFIX = "luks:"  # a LUKS volume's "URL": luks:<its UUID>


class SecretKind(enum.Enum):
    """What a store asks for; the value is how people read it."""

    PASSWORD = "password"  # a login's: SFTP, SMB, HTTP basic auth
    SSH_KEY = "SSH key"  # a private key for an SFTP login
    HOST_KEYS = "SSH host keys"  # the server's public keys: not secret, kept with the key
    S3_KEYS = "S3 keys"  # access key id and secret access key
    USER = "user name"  # for a URL that names none (kept with the password)
    PASSPHRASE = "passphrase"  # an encrypted repository's (engine/keys.py), asked by URL
    LUKS = "LUKS passphrase"  # a LUKS volume's, asked by "luks:<UUID>" (engine/luks.py)


@dataclass(frozen=True)
class SecretRequest:
    """One question to the chain. ``url``: the repository, without password
    or query (an entry for a URL prefix matches it); ``who``: ``user@host``."""

    kind: SecretKind
    url: str | None = None
    who: str | None = None

    def describe(self) -> str:
        """'the password of backup@nas' -- for messages; holds no secret."""
        return f"the {self.kind.value} " + (
            f"of {self.who}" if self.who else f"for {self.url or 'this repository'}"
        )


def answers(credential: Credential, kind: SecretKind) -> bool:
    """Whether ``credential`` holds a secret of ``kind``."""
    if kind is SecretKind.PASSWORD:
        return bool(credential.password)
    if kind is SecretKind.SSH_KEY:
        return bool(credential.ssh_key)
    if kind is SecretKind.HOST_KEYS:
        return bool(credential.host_keys)
    if kind is SecretKind.S3_KEYS:
        return bool(credential.secret_access_key)
    if kind in (SecretKind.PASSPHRASE, SecretKind.LUKS):
        return bool(credential.passphrase)
    return bool(credential.user)


class CredentialSource(Protocol):
    """One place secrets come from."""

    @property
    def name(self) -> str:
        """Where answers come from, for logs ("LIFERAFT_PASSWORD"); never a secret."""
        ...

    @property
    def interactive(self) -> bool:
        """True if it asks a person (a store may want to try a key first)."""
        ...

    def lookup(self, request: SecretRequest) -> Credential | None:
        """The secret asked for, None if this source does not know it."""
        ...

    def hint(self, request: SecretRequest) -> str | None:
        """How a person gives this source the secret ("set LIFERAFT_PASSWORD"), or None."""
        ...


# --------------------------------------------------------------------------
# The sources


class SessionSecrets:
    """Secrets typed in this session (the UI's password field), per kind and
    ``user@host`` (or repository URL); they live as long as this object."""

    name = "typed in this session"
    interactive = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[tuple[SecretKind, str], str] = {}

    def __repr__(self) -> str:
        return f"<SessionSecrets: {len(self._secrets)} held>"

    def remember(self, key: str, secret: str, kind: SecretKind = SecretKind.PASSWORD) -> None:
        """Keep ``secret`` for ``key`` (``user@host``, or a repository URL)."""
        with self._lock:
            self._secrets[(kind, key)] = secret

    def forget(self) -> None:
        with self._lock:
            self._secrets.clear()

    def lookup(self, request: SecretRequest) -> Credential | None:
        if request.kind not in (SecretKind.PASSWORD, SecretKind.PASSPHRASE):
            return None
        with self._lock:
            for key in (request.who, request.url):
                if key and (request.kind, key) in self._secrets:
                    return _secret_credential(request, key, self._secrets[(request.kind, key)])
        return None

    def hint(self, request: SecretRequest) -> str | None:
        return None


def _secret_credential(request: SecretRequest, match: str, secret: str) -> Credential:
    """What a typed secret answers: a password, or a repository's passphrase."""
    if request.kind in (SecretKind.PASSPHRASE, SecretKind.LUKS):
        return Credential(match=match, passphrase=secret)
    return Credential(match=match, password=secret)


class Environment:
    """LIFERAFT_PASSWORD (any login's password) and AWS_ACCESS_KEY_ID with
    AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN): an explicit choice for this
    run, as in every AWS tool. ``environ``: os.environ, read at each question."""

    name = "the environment"
    interactive = False

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def __repr__(self) -> str:
        return "<Environment>"  # the variables hold secrets

    def lookup(self, request: SecretRequest) -> Credential | None:
        env = os.environ if self._environ is None else self._environ
        if request.kind is SecretKind.PASSWORD and request.who:
            # A password with no user to go with it logs nobody in.
            password = env.get(PASSWORD_VARIABLE)
            return Credential(match=PASSWORD_VARIABLE, password=password) if password else None
        if request.kind is SecretKind.PASSPHRASE:
            phrase = env.get(PASSPHRASE_VARIABLE)
            return Credential(match=PASSPHRASE_VARIABLE, passphrase=phrase) if phrase else None
        if request.kind is SecretKind.LUKS:
            phrase = env.get(LUKS_VARIABLE)
            return Credential(match=LUKS_VARIABLE, passphrase=phrase) if phrase else None
        if request.kind is SecretKind.S3_KEYS and env.get("AWS_ACCESS_KEY_ID"):
            return Credential(
                match="AWS_ACCESS_KEY_ID",
                access_key_id=env["AWS_ACCESS_KEY_ID"],
                secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
                session_token=env.get("AWS_SESSION_TOKEN"),
            )
        return None

    def hint(self, request: SecretRequest) -> str | None:
        if request.kind is SecretKind.PASSWORD:
            return f"set {PASSWORD_VARIABLE}"
        if request.kind is SecretKind.PASSPHRASE:
            return f"set {PASSPHRASE_VARIABLE}"
        if request.kind is SecretKind.LUKS:
            return f"set {LUKS_VARIABLE}"
        if request.kind is SecretKind.S3_KEYS:
            return "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        return None


class CredentialsFile:
    """A credentials file (format: rescue_app/engine/credentials.py).

    ``CredentialsFile()``: LIFERAFT_CREDENTIALS, else /etc/liferaft/credentials.yaml,
    read again when it changes; a default file that is not there is no error,
    one LIFERAFT_CREDENTIALS names must exist. ``CredentialsFile.of(loaded,
    shown)``: a file already read (unattended mode's medium, unmounted since)."""

    interactive = False

    def __init__(self, path: str | None = None) -> None:
        self._path = path
        self._fixed: Credentials | None = None
        self._shown: str | None = None
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, int, int], Credentials] | None = None

    @classmethod
    def read(cls, path: str, shown: str | None = None) -> CredentialsFile:
        """The file at ``path`` read now, once (its medium may go away);
        ``shown``: how to name it to people (``LABEL=x:/path``)."""
        return cls.of(_file.load(path), shown)

    @classmethod
    def of(cls, loaded: Credentials, shown: str | None = None) -> CredentialsFile:
        source = cls(loaded.path)
        source._fixed = loaded
        source._shown = shown
        return source

    @property
    def path(self) -> str:
        """The file people are told to edit."""
        if self._shown:
            return self._shown
        return self._path or os.environ.get(_file.ENV_PATH) or _file.DEFAULT_PATH

    @property
    def name(self) -> str:
        return f"the credentials file {self.path}"

    def __repr__(self) -> str:
        return f"<CredentialsFile {self.path}>"

    def credentials(self) -> Credentials:
        """The file's entries now; CredentialsError if it is unsafe or broken."""
        if self._fixed is not None:
            return self._fixed
        named = self._path or os.environ.get(_file.ENV_PATH)
        where = named or _file.DEFAULT_PATH
        with self._lock:
            try:
                st = os.stat(where)
            except FileNotFoundError:
                if named:
                    by = "" if self._path else f" ({_file.ENV_PATH})"
                    raise CredentialsError(
                        f"credentials file {where}{by} does not exist",
                        hint=f"fix the path or unset {_file.ENV_PATH}",
                    ) from None
                return Credentials(where)
            except OSError as exc:
                raise CredentialsError(
                    f"cannot read credentials file {where}: {exc.strerror}"
                ) from None
            key = (where, st.st_mtime_ns, st.st_size)
            if self._cached is None or self._cached[0] != key:
                self._cached = (key, _file.load(where))
                log.debug("credentials from %s: %d entries", where, len(self._cached[1].entries))
            return self._cached[1]

    def find(self, url: str | None = None, *, who: str | None = None) -> Credential | None:
        """The file's most specific entry for ``url`` or ``who`` (any kind)."""
        return self.credentials().find(url, who=who)

    def lookup(self, request: SecretRequest) -> Credential | None:
        # The most specific entry, as the file's format says; if it lacks what is
        # asked, a vaguer entry does not stand in for it.
        entry = self.find(request.url, who=request.who)
        return entry if entry is not None and answers(entry, request.kind) else None

    def hint(self, request: SecretRequest) -> str | None:
        key = {
            SecretKind.PASSWORD: "password",
            SecretKind.SSH_KEY: "ssh_key_file",
            SecretKind.HOST_KEYS: "host_keys",
            SecretKind.S3_KEYS: "access_key_id and secret_access_key",
            SecretKind.USER: "user",
            SecretKind.PASSPHRASE: "passphrase_file",
            SecretKind.LUKS: "passphrase_file",
        }[request.kind]
        match = request.who or request.url or "the server"
        return f"add an entry 'match: {match}' with {key} to the credentials file {self.path}"


# user@host -> the password, "repository URL" -> its passphrase; None: not given
PasswordPrompt = Callable[[str], "str | None"]
REPOSITORY_PREFIX = "repository "


def _asked_for(request: SecretRequest) -> str | None:
    """Whom a prompt names: ``user@host`` for a password, ``repository URL``
    for a passphrase; None: a prompt does not ask for this."""
    if request.kind is SecretKind.PASSWORD:
        return request.who
    if request.kind is SecretKind.PASSPHRASE and request.url:
        return REPOSITORY_PREFIX + request.url
    if request.kind is SecretKind.LUKS and request.url:
        return "the LUKS volume " + request.url.removeprefix(LUKS_PREFIX)
    return None


class TerminalPrompt:
    """The CLI's: asks for a password with getpass, only when stdin is a terminal."""

    name = "the terminal"
    interactive = True

    def __repr__(self) -> str:
        return "<TerminalPrompt>"

    @staticmethod
    def _tty() -> bool:
        return sys.stdin is not None and sys.stdin.isatty()

    def lookup(self, request: SecretRequest) -> Credential | None:
        who = _asked_for(request)
        if who is None or not self._tty():
            return None
        import getpass

        secret = getpass.getpass(f"{request.kind.value} for {who}: ")
        return _secret_credential(request, who, secret) if secret else None

    def hint(self, request: SecretRequest) -> str | None:
        if _asked_for(request) is not None and not self._tty():
            return "run liferaft in a terminal to be asked"
        return None


class CallbackPrompt:
    """A UI's password dialog: ``ask(user@host)`` returns what was typed, None if cancelled."""

    interactive = True

    def __init__(self, ask: PasswordPrompt, name: str = "the password dialog") -> None:
        self._ask = ask
        self.name = name

    def __repr__(self) -> str:
        return f"<CallbackPrompt {self.name}>"

    def lookup(self, request: SecretRequest) -> Credential | None:
        who = _asked_for(request)
        if who is None:
            return None
        secret = self._ask(who)
        return _secret_credential(request, who, secret) if secret else None

    def hint(self, request: SecretRequest) -> str | None:
        return None


# --------------------------------------------------------------------------
# The chain


class CredentialChain:
    """Sources asked in order; the first answer wins. A prompt, if any, comes last."""

    def __init__(self, *sources: CredentialSource) -> None:
        self._sources = list(sources)
        self._lock = threading.Lock()

    @classmethod
    def standard(
        cls,
        *,
        file: CredentialsFile | None = None,
        prompt: CredentialSource | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> CredentialChain:
        """Typed in this session, the environment, the credentials file, then ``prompt``."""
        sources: list[CredentialSource] = [
            SessionSecrets(),
            Environment(environ),
            file if file is not None else CredentialsFile(),
        ]
        if prompt is not None:
            sources.append(prompt)
        return cls(*sources)

    def __repr__(self) -> str:
        return f"<CredentialChain {' > '.join(s.name for s in self.sources)}>"

    @property
    def sources(self) -> tuple[CredentialSource, ...]:
        with self._lock:
            return tuple(self._sources)

    def lookup(self, request: SecretRequest, *, ask: bool = True) -> Credential | None:
        """The first answer of the sources, in order; ``ask=False`` leaves out
        the prompts (an SFTP login tries its keys before asking for a password)."""
        for source in self.sources:
            if source.interactive and not ask:
                continue
            answer = source.lookup(request)
            if answer is not None and answers(answer, request.kind):
                log.debug("%s: from %s", request.describe(), source.name)
                return answer
        return None

    def password(self, who: str, *, url: str | None = None, ask: bool = True) -> str | None:
        """The password of ``who`` (``user@host``), None if nobody knows it.
        ``url`` lets a credentials entry for a URL prefix win over one for the host."""
        answer = self.lookup(SecretRequest(SecretKind.PASSWORD, url=url, who=who), ask=ask)
        return answer.password if answer is not None else None

    def user(self, url: str) -> str | None:
        """The user name for a ``url`` that names none (a credentials entry's ``user``)."""
        answer = self.lookup(SecretRequest(SecretKind.USER, url=url), ask=False)
        return answer.user if answer is not None else None

    def remember(self, who: str, password: str) -> None:
        """A UI hands over the password of ``who`` it asked for; the chain's
        SessionSecrets keep it for this session."""
        for source in self.sources:
            if isinstance(source, SessionSecrets):
                source.remember(who, password)
                return
        raise RuntimeError("this credential chain keeps no secrets typed in the session")

    def use_prompt(self, prompt: CredentialSource | None) -> CredentialSource | None:
        """Ask with ``prompt`` (last, instead of the prompt there was); returns the
        one it replaces so a UI can put it back when it ends."""
        with self._lock:
            old = [s for s in self._sources if s.interactive]
            self._sources = [s for s in self._sources if not s.interactive]
            if prompt is not None:
                self._sources.append(prompt)
        return old[0] if old else None

    def hints(self, request: SecretRequest) -> str:
        """Where a person can put the secret, as one clause: the credentials
        file first (the place that lasts), then the other sources in order."""
        ordered = sorted(self.sources, key=lambda s: not isinstance(s, CredentialsFile))
        found = [h for s in ordered if (h := s.hint(request))]
        if not found:
            return "none of this run's credential sources can give it"
        return found[0] if len(found) == 1 else ", ".join(found[:-1]) + " or " + found[-1]

    def missing(self, request: SecretRequest, location: str) -> RepositoryError:
        """The one-line error for a secret nobody gave."""
        return RepositoryError(
            f"repository {location}: no {request.describe().removeprefix('the ')} was given",
            hint=self.hints(request),
        )
