"""The build profile: one typed, frozen schema, one loader, one set of defaults.

The builder reads ``profiles/*.yaml`` (builder/profile.py names the folder);
the rescue system reads the merged copy the build puts at
/etc/liferaft/profile.yaml (the UI for its title and default repository,
unattended mode for its ``unattended`` section). All of them go through
``load_profile_file`` here, so a default (``unattended.poweroff``, say) has
one value everywhere. It lives in rescue_app because the rescue system is
installed without the builder.

The dataclasses below are the schema. Each YAML file is checked node by node
against them (PyYAML's node marks give the line), so an unknown key or a value
of the wrong type is an error naming file, key and line. ``extends: NAME``
loads the parent first; mappings merge key by key, anything else (strings,
lists, numbers) in the child replaces the parent's value.

This module reads files only; it never touches the host or runs commands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from rescue_app.errors import LiferaftError

if TYPE_CHECKING:
    from rescue_app.engine.signing import TrustedKeys

# Where the build puts the merged profile on the rescue system (secrets masked).
INSTALLED_PROFILE = Path("/etc/liferaft/profile.yaml")


class ProfileError(LiferaftError):
    """A profile file is missing, malformed or does not match the schema."""


@dataclass(frozen=True)
class Network:
    """How the rescue system configures its wired interfaces."""

    mode: Literal["dhcp", "static", "none"] = "dhcp"
    address: str | None = None  # static: "192.0.2.10/24"
    gateway: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ssh:
    """Remote help: sshd with key-only root login when enabled."""

    enabled: bool = False
    authorized_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unattended:
    """An action run at boot without a person; kernel arguments override it."""

    action: Literal["none", "restore", "capture"] = "none"
    repo: str | None = None
    image: str | None = None
    target: str | None = None  # device path or serial:XYZ
    poweroff: bool = True
    # capture: open each LUKS volume to store the used blocks inside (the
    # passphrase from the credentials file's luks:<UUID> entry; an encrypted
    # repository only), as `liferaft capture --unlock`
    unlock: bool = False
    # A credentials file on an attached medium (DEVICE:PATH) or a path; None:
    # the image's own (the `credentials` section).
    credentials: str | None = None


@dataclass(frozen=True)
class CredentialEntry:
    """A secret for one server, baked into /etc/liferaft/credentials.yaml (0600).

    ``match`` is ``user@host``, ``host`` or a URL prefix (see
    rescue_app/engine/credentials.py). Secrets are best given as files on the
    build host (``*_file``, relative to the profile file), so they need not sit
    in the profile in git; a literal ``password`` works and ``show`` masks it.
    """

    match: str
    user: str | None = None  # for URLs that name none (HTTP basic auth)
    password: str | None = None
    password_file: str | None = None
    ssh_key_file: str | None = None  # a private key without passphrase
    host_keys: tuple[str, ...] = ()  # the server's public keys, "ssh-ed25519 AAAA..."
    access_key_id: str | None = None  # S3
    secret_access_key: str | None = None
    secret_access_key_file: str | None = None
    object_lock_days: int | None = None  # S3 Object Lock of new objects (stores/s3.py)
    object_lock_mode: Literal["compliance", "governance"] | None = None
    origin: str = ""  # FILE:LINE that gave the entry (set by the loader)


# CredentialEntry key -> the key it becomes in the baked file
SECRET_FILES = {"password_file": "password", "ssh_key_file": "ssh_key",
                "secret_access_key_file": "secret_access_key"}  # fmt: skip
SECRET_VALUES = ("password", "secret_access_key")
MASK = "<hidden>"


@dataclass(frozen=True)
class Signing:
    """With keys, this rescue system restores and verifies only images signed
    by one of them (engine/signing.py): Ed25519 public keys, each a PEM block
    (``openssl pkey -pubout``) or an OpenSSH line (``ssh-ed25519 AAAA...``).
    Public keys, so they stay readable in /etc/liferaft/profile.yaml."""

    trusted_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Compression:
    algorithm: Literal["zstd", "xz", "gzip"] = "zstd"
    level: int = 15


@dataclass(frozen=True)
class Profile:
    name: str
    label: str  # ISO volume label, at most 32 characters
    title: str
    suite: str
    mirror: str
    packages: tuple[str, ...] = ()  # extra Debian packages on top of the base set
    kernel_cmdline: str = ""  # appended to boot=live ...
    locale: str = "C.UTF-8"
    keyboard: str = "us"
    timezone: str = "UTC"
    network: Network = field(default_factory=Network)
    repository: str | None = None  # default image repository shown first in the UI
    ssh: Ssh = field(default_factory=Ssh)
    unattended: Unattended = field(default_factory=Unattended)
    compression: Compression = field(default_factory=Compression)
    credentials: tuple[CredentialEntry, ...] = ()
    signing: Signing = field(default_factory=Signing)
    outputs: tuple[Literal["iso", "netboot"], ...] = ("iso",)
    # Where boot.ipxe finds the netboot files; iPXE expands ${next-server}.
    netboot_url: str | None = None
    source: str = ""  # the file the profile came from (set by the loader)

    def to_dict(self) -> dict[str, Any]:
        """Plain data with literal secrets masked (it is shown, dumped, hashed)."""
        data: dict[str, Any] = _plain(dataclasses.asdict(self))
        shown = []
        for entry in data["credentials"]:
            entry.pop("origin", None)
            for key in SECRET_VALUES:
                if entry.get(key) is not None:
                    entry[key] = MASK
            shown.append({k: v for k, v in entry.items() if v not in (None, [])})
        data["credentials"] = shown
        return data

    def trusted_keys(self) -> TrustedKeys | None:
        """The keys images must be signed by (``signing``); None: any image.
        ProfileError naming the file when one is not an Ed25519 public key."""
        from rescue_app.engine import signing

        try:
            return signing.trusted_from_texts(
                self.signing.trusted_keys, f"the profile {self.source}"
            )
        except LiferaftError as exc:
            raise ProfileError(
                f"{self.source}: key 'signing.trusted_keys': {exc.message}", hint=exc.hint
            ) from None

    def dump(self) -> str:
        """The merged profile as YAML, as ``liferaft-build show`` prints it and
        /etc/liferaft/profile.yaml holds it: secrets masked."""
        data = self.to_dict()
        data.pop("source", None)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

    def digest_data(self) -> str:
        """What build caches are keyed by: the masked profile and a hash of the
        secrets, so a changed password file rebuilds the image."""
        data = self.to_dict()
        if self.credentials:
            text = json.dumps(self.credentials_data(), sort_keys=True)
            data["credentials_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        return json.dumps(data, sort_keys=True)

    def credentials_data(self) -> list[dict[str, Any]]:
        """The entries as the engine's credentials file holds them, secret
        files read in. ProfileError if a secret file cannot be read."""
        out = []
        for entry in self.credentials:
            item: dict[str, Any] = {"match": entry.match}
            if entry.user is not None:
                item["user"] = entry.user
            for key in SECRET_VALUES:
                if getattr(entry, key) is not None:
                    item[key] = getattr(entry, key)
            for key, secret in SECRET_FILES.items():
                name = getattr(entry, key)
                if name is not None:
                    text = _read_secret(entry, key, name)
                    item[secret] = text if secret == "ssh_key" else text.rstrip("\r\n")
            if entry.access_key_id is not None:
                item["access_key_id"] = entry.access_key_id
            for key in ("object_lock_days", "object_lock_mode"):
                if getattr(entry, key) is not None:
                    item[key] = getattr(entry, key)
            if entry.host_keys:
                item["host_keys"] = list(entry.host_keys)
            out.append(item)
        return out

    def credentials_file_text(self) -> str | None:
        """/etc/liferaft/credentials.yaml of the image, None without credentials."""
        if not self.credentials:
            return None
        from rescue_app.engine import credentials

        data = {"credentials": self.credentials_data()}
        try:  # what the engine will refuse should fail the build, not the boot
            credentials.parse(data, "/etc/liferaft/credentials.yaml")
        except credentials.CredentialsError as exc:
            raise ProfileError(
                f"{self.source}: key 'credentials': {exc.message}", hint=exc.hint
            ) from None
        header = (
            f"# Baked from the profile {self.name} by liferaft-build; mode 0600, root.\n"
            "# Format: rescue_app/engine/credentials.py, profiles/README.md.\n"
        )
        return header + yaml.dump(
            data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
        )


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (SSH keys) as ``|`` blocks, as a person would write them."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_block)


def _read_secret(entry: CredentialEntry, key: str, name: str) -> str:
    try:
        return Path(name).read_text()
    except FileNotFoundError:
        raise _missing_secret(entry, key, name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"{entry.origin}: key 'credentials.{key}' of {entry.match}: cannot read {name}: {exc}"
        ) from None


def _missing_secret(entry: CredentialEntry, key: str, name: str) -> ProfileError:
    return ProfileError(
        f"{entry.origin}: key 'credentials.{key}' of {entry.match}: {name} does not exist",
        hint="create the file (chmod 600, keep it out of git) or fix the path; "
        "it is relative to the profile file",
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Loading

_LOADER_ONLY_KEYS = {"extends"}
_NOT_IN_FILES = {"source", "origin"}


def list_profiles(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(name: str, directory: Path) -> Profile:
    """Load ``directory/name.yaml`` with its ``extends`` chain into a Profile."""
    return load_profile_file(directory / f"{name}.yaml")


def load_profile_file(path: Path | str, *, check_secrets: bool = True) -> Profile:
    """Load one profile file (its ``extends`` parents beside it) into a Profile.

    ``check_secrets=False`` for the copy on the rescue system: its secret
    files stayed on the build host (the secrets are in credentials.yaml)."""
    path = Path(path)
    name, directory = path.stem, path.parent
    merged = _load_chain(name, directory, seen=())
    merged.setdefault("name", name)
    try:
        profile: Profile = _build(Profile, merged, str(path))
    except TypeError as exc:  # a required field missing after the merge
        raise ProfileError(f"{path}: {exc}") from exc
    if len(profile.label) > 32:
        raise ProfileError(f"{path}: key 'label': at most 32 characters, got {profile.label!r}")
    if profile.network.mode == "static" and not profile.network.address:
        raise ProfileError(f"{path}: key 'network.address' is required when mode is static")
    for entry in profile.credentials if check_secrets else ():
        _check_credential(entry)
    profile.trusted_keys()  # a key that is not one fails the build, not the restore
    return profile


def installed_profile_path() -> Path:
    """The rescue system's profile (LIFERAFT_PROFILE names another)."""
    return Path(os.environ.get("LIFERAFT_PROFILE", str(INSTALLED_PROFILE)))


def installed_trusted_keys(path: Path | None = None) -> TrustedKeys | None:
    """The keys the rescue system's profile (or ``path``) requires images to
    be signed by; None where there is no profile (not a rescue stick) or it
    names none."""
    path = path or installed_profile_path()
    if not path.is_file():
        return None
    return load_profile_file(path, check_secrets=False).trusted_keys()


def _check_credential(entry: CredentialEntry) -> None:
    """One source per secret, at least one secret, and its files there."""
    where = f"{entry.origin}: credentials entry {entry.match}"
    for key, secret in SECRET_FILES.items():
        if secret in SECRET_VALUES and getattr(entry, key) and getattr(entry, secret):
            raise ProfileError(f"{where}: give {secret!r} or {key!r}, not both")
        name = getattr(entry, key)
        if name is not None and not Path(name).is_file():
            raise _missing_secret(entry, key, name)
    if not (
        entry.password
        or entry.password_file
        or entry.ssh_key_file
        or entry.secret_access_key
        or entry.secret_access_key_file
    ):
        raise ProfileError(
            f"{where}: no secret",
            hint="give password_file, ssh_key_file or secret_access_key_file "
            "(or a literal password)",
        )


def _load_chain(name: str, directory: Path, seen: tuple[str, ...]) -> dict[str, Any]:
    if name in seen:
        raise ProfileError(f"profile {name!r}: extends loops through {' -> '.join(seen)}")
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_profiles(directory)) or "none"
        raise ProfileError(f"no profile {name!r} ({path} not found)", hint=f"known: {known}")
    data = parse_file(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return merge(_load_chain(parent, directory, (*seen, name)), data)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; any other value in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_file(path: Path) -> dict[str, Any]:
    """Check one file against the schema; return its values as plain data.

    Every key is optional here: required fields are checked after ``extends``
    has been merged.
    """
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if node is None:
        return {}
    return _check_mapping(Profile, node, str(path), prefix="", top=True)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _fail(path: str, node: yaml.Node, key: str, what: str) -> ProfileError:
    return ProfileError(f"{path}:{_line(node)}: key '{key}': {what}")


def _check_mapping(
    cls: type, node: yaml.Node, path: str, prefix: str, top: bool = False
) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise ProfileError(f"{path}:{_line(node)}: key '{prefix or '<top>'}': expected a mapping")
    hints = get_type_hints(cls)
    allowed = {f.name for f in dataclasses.fields(cls)} - _NOT_IN_FILES
    if top:
        allowed |= _LOADER_ONLY_KEYS
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{prefix}{key}"
        if not isinstance(key_node, yaml.ScalarNode) or key not in allowed:
            raise ProfileError(
                f"{path}:{_line(key_node)}: unknown key '{dotted}'",
                hint=f"allowed here: {', '.join(sorted(allowed))}",
            )
        if key in out:
            raise ProfileError(f"{path}:{_line(key_node)}: key '{dotted}' given twice")
        expected: Any = str if key == "extends" else hints[key]
        out[key] = _check_value(expected, value_node, path, dotted)
    if cls is CredentialEntry:
        _locate_credential(out, path, node)
    return out


def _locate_credential(entry: dict[str, Any], path: str, node: yaml.Node) -> None:
    """Secret files are relative to the profile file that names them (which
    may be a parent the profile extends); the entry remembers where it was."""
    if "match" not in entry:
        raise ProfileError(
            f"{path}:{_line(node)}: key 'credentials.match' is required",
            hint="user@host, host, or a URL prefix",
        )
    entry["origin"] = f"{path}:{_line(node)}"
    for key in SECRET_FILES:
        if isinstance(entry.get(key), str):
            entry[key] = str(Path(path).resolve().parent / Path(entry[key]).expanduser())


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", bool: "true or false"}.get(tp, str(tp))


def _check_value(tp: Any, node: yaml.Node, path: str, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        errors = []
        for option in options:
            try:
                return _check_value(option, node, path, key)
            except ProfileError as exc:
                errors.append(exc)
        raise _fail(path, node, key, "expected " + " or ".join(_type_name(o) for o in options))
    if dataclasses.is_dataclass(tp):
        return _check_mapping(tp, node, path, prefix=f"{key}.")  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(node, yaml.SequenceNode):
            raise _fail(path, node, key, f"expected {_type_name(tp)}")
        (item_tp, _ellipsis) = get_args(tp)
        return [_check_value(item_tp, item, path, key) for item in node.value]
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(path, node, key, f"expected {_type_name(tp)}")
    value = _construct(node)
    if origin is Literal:
        if value not in get_args(tp):
            raise _fail(path, node, key, f"expected {_type_name(tp)}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise _fail(path, node, key, "expected null")
        return None
    # bool is an int in Python; YAML's `yes` must not pass as a number, nor 1 as a bool.
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(path, node, key, f"expected an integer, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise _fail(path, node, key, f"expected true or false, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise _fail(path, node, key, f"expected a string, got {value!r}")
    return value


def _build(cls: Any, data: dict[str, Any], source: str) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "source" and cls is Profile:
            kwargs["source"] = source
            continue
        if f.name not in data:
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], source)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, source: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source)
    if get_origin(tp) in (Union, types.UnionType):
        for option in get_args(tp):
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _build(option, value, source)
        return value
    if get_origin(tp) is tuple:
        return tuple(_convert(get_args(tp)[0], v, source) for v in value)
    return value


__all__ = [
    "Profile",
    "Network",
    "Ssh",
    "Unattended",
    "Compression",
    "CredentialEntry",
    "Signing",
    "ProfileError",
    "load_profile",
    "load_profile_file",
    "list_profiles",
    "parse_file",
    "merge",
]
