"""Repositories on file servers the kernel mounts: ``smb://`` and ``nfs://``.

``smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH`` is mounted with the kernel's
CIFS client (cifs-utils), ``nfs://HOST[:PORT]/EXPORT/PATH`` with its NFSv4
client (nfs-common), on a private temporary folder; from then on the
repository is a local folder (LocalStore does the work, atomic renames and
syncfs included). ``close()`` unmounts. The SMB password goes to mount.cifs
in a credentials file readable only by root that is deleted as soon as the
mount is done -- never in argv, where any user could read it. What to mount
is planned purely (``plan_mount``), so the argv is testable without a kernel
client.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from rescue_app.engine import mounts
from rescue_app.engine.keychain import CredentialChain, SecretKind, SecretRequest
from rescue_app.engine.mounts import umount
from rescue_app.engine.stores import reject_password_in_url
from rescue_app.engine.stores.local import LocalStore
from rescue_app.errors import CommandError, RepositoryError

log = logging.getLogger("liferaft.stores.mount")

MOUNT_TIMEOUT = 60.0


@dataclass(frozen=True)
class MountPlan:
    fstype: str  # "cifs" or "nfs4"
    source: str  # //host/share or host:/export/path
    options: tuple[str, ...]  # never a password
    subdir: str  # the repository below the mounted folder
    location: str  # for people and logs
    user: str | None = None  # smb: goes into the credentials file
    domain: str | None = None


def plan_mount(url: str) -> MountPlan:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not host:
        raise RepositoryError(
            f"repository URL {url.split('?')[0]!r} has no host name",
            hint=f"write it as {scheme}://HOST/...",
        )
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = [unquote(p) for p in parts.path.split("/") if p]
    port = parts.port
    netloc = host if port is None else f"{host}:{port}"
    options: list[str] = []
    if scheme == "smb":
        if not path:
            raise RepositoryError(
                f"repository URL smb://{netloc}/ names no share",
                hint="write it as smb://[USER@]HOST/SHARE/PATH",
            )
        share, rest = path[0], path[1:]
        user = domain = None
        if parts.username:
            user = unquote(parts.username)
            if ";" in user:
                domain, user = user.split(";", 1)
        shown_user = f"{domain + ';' if domain else ''}{user}@" if user else ""
        location = f"smb://{shown_user}{netloc}/{'/'.join(path)}"
        reject_password_in_url(location, parts.password)
        if port is not None:
            options.append(f"port={port}")
        if user is None:
            options.append("guest")
        if "vers" in query:
            options.append(f"vers={query['vers']}")
        return MountPlan(
            "cifs", f"//{host}/{share}", tuple(options), "/".join(rest), location, user, domain
        )
    if scheme == "nfs":
        if parts.username or parts.password:
            raise RepositoryError(
                "an nfs:// URL holds no user name or password",
                hint="NFS trusts hosts, not passwords; write nfs://HOST/PATH",
            )
        if port is not None:
            options.append(f"port={port}")
        export = "/" + "/".join(path)
        options.append("soft" if query.get("soft") else "hard")
        return MountPlan("nfs4", f"{host}:{export}", tuple(options), "", f"nfs://{netloc}{export}")
    raise RepositoryError(f"{scheme}:// cannot be mounted", hint="use smb:// or nfs://")


def mount_options(plan: MountPlan, credentials: str | None) -> list[str]:
    options = list(plan.options)
    if credentials is not None:
        options.insert(0, f"credentials={credentials}")
    return options


def mount_argv(plan: MountPlan, mountpoint: str, credentials: str | None) -> list[str]:
    """The command engine/mounts.py runs for this plan (shown in tests and logs)."""
    return mounts.mount_argv(
        plan.source, mountpoint, fstype=plan.fstype, options=mount_options(plan, credentials)
    )


@contextlib.contextmanager
def credentials_file(directory: str, user: str, password: str, domain: str | None) -> Iterator[str]:
    """A mount.cifs credentials file, mode 0600 from its creation, removed after."""
    path = os.path.join(directory, "credentials")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"username={user}\npassword={password}\n")
            if domain:
                f.write(f"domain={domain}\n")
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _mount_error(plan: MountPlan, stderr: str) -> RepositoryError:
    """One line for what mount.cifs / mount.nfs4 said. Their words, as seen in
    the rescue system against smbd and nfs-ganesha: a wrong password is
    "mount error(13): Permission denied", an unknown share "mount error(2): No
    such file or directory", an unknown export "mount.nfs4: mounting H:/P
    failed, reason given by server: No such file or directory", a host that
    does not let us in "mount.nfs4: access denied by server while mounting"."""
    text = stderr.lower()
    smb = plan.fstype == "cifs"
    what = "SMB share" if smb else "NFS export"
    place = f"repository {plan.location}"
    if "unknown filesystem type" in text or "no such device" in text:
        pkg = "cifs" if smb else "nfs"
        return RepositoryError(
            f"{place}: this kernel cannot mount {pkg}",
            hint=f"use the liferaft rescue system, or load the {pkg} kernel module",
        )
    if "helper program" in text or "bad option" in text:
        pkg = "cifs-utils" if smb else "nfs-common"
        return RepositoryError(f"{place}: cannot mount the {what}", hint=f"install {pkg}")
    if "permission denied" in text or "error(13)" in text or "access denied" in text:
        if smb:
            return RepositoryError(
                f"{place}: the server refused the login (wrong user name or password?)",
                hint="check the user in the URL and the password (LIFERAFT_PASSWORD or "
                "the credentials file)",
            )
        return RepositoryError(
            f"{place}: the server refused access to the NFS export",
            hint="the export's client list on the server must allow this machine's address",
        )
    if "no such file" in text or "error(2)" in text or "error(6)" in text:
        if smb:
            share = plan.source.rsplit("/", 1)[-1]
            return RepositoryError(
                f"{place}: the server has no share named {share!r}",
                hint="check the share name in the URL: smb://[USER@]HOST/SHARE/PATH",
            )
        export = plan.source.split(":", 1)[1]
        return RepositoryError(
            f"{place}: the server exports no {export} (no such export or folder)",
            hint="check the export path in the URL: nfs://HOST/EXPORT/PATH",
        )
    if (
        "host is down" in text
        or "timed out" in text
        or "refused" in text
        or "unreachable" in text
        or "no route" in text
        or "did not finish" in text
        or any(f"error({n})" in text for n in (110, 111, 112, 113))
    ):
        return RepositoryError(
            f"{place}: cannot reach the server",
            hint="check the host name, that the server runs, and the network",
        )
    line = stderr.strip().splitlines()[-1] if stderr.strip() else "mount failed"
    return RepositoryError(f"{place}: cannot mount the {what}: {line}")


class MountStore(LocalStore):
    """A share mounted on a private folder while it is used: a LocalStore there."""

    def __init__(self, url: str, credentials: CredentialChain) -> None:
        self.credentials = credentials
        self.plan = plan_mount(url)
        self.location = self.plan.location
        self.mountpoint = tempfile.mkdtemp(prefix="liferaft-mnt-")
        self.mounted = False
        try:
            self._mount()
        except BaseException:
            os.rmdir(self.mountpoint)
            raise
        # LocalStore does the rest, with the share's URL in its messages.
        super().__init__(os.path.join(self.mountpoint, self.plan.subdir))
        self.location = self.plan.location
        # Callers that exit without close() (a CLI command) must not leave
        # the share mounted.
        atexit.register(self.close)

    def _mount(self) -> None:
        plan = self.plan
        if plan.fstype == "cifs" and plan.user is not None:
            host = plan.source.split("/")[2]
            wanted = SecretRequest(
                SecretKind.PASSWORD, url=plan.location, who=f"{plan.user}@{host}"
            )
            answer = self.credentials.lookup(wanted)
            if answer is None or answer.password is None:
                raise self.credentials.missing(wanted, plan.location)
            password = answer.password
            with (
                tempfile.TemporaryDirectory(prefix="liferaft-cred-") as d,
                credentials_file(d, plan.user, password, plan.domain) as cred,
            ):
                self._mount_with(cred)
        else:
            self._mount_with(None)
        self.mounted = True

    def _mount_with(self, credentials: str | None) -> None:
        try:
            mounts.mount(
                self.plan.source,
                self.mountpoint,
                fstype=self.plan.fstype,
                options=mount_options(self.plan, credentials),
                timeout=MOUNT_TIMEOUT,
            )
        except CommandError as exc:
            raise _mount_error(self.plan, exc.stderr or exc.message) from None

    def close(self) -> None:
        if self.mounted:
            # Busy or the server is gone: umount detaches it lazily.
            umount(self.mountpoint)
            self.mounted = False
        with contextlib.suppress(OSError):
            os.rmdir(self.mountpoint)
