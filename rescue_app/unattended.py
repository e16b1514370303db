"""Unattended mode: one restore or capture at boot, no person at the keyboard.

The action comes from the kernel command line (``liferaft.action=restore``,
``liferaft.repo=...``, ``liferaft.image=...``, ``liferaft.target=...``,
``liferaft.poweroff=1``, ``liferaft.grow=1``, ``liferaft.unlock=1``) or, for
any key the command line does not give, from the profile's ``unattended`` section
(/etc/liferaft/profile.yaml on the stick, read with the one profile loader,
rescue_app/profile.py: its defaults are the builder's, so the machine powers
off afterwards unless the profile or ``liferaft.poweroff=0`` says otherwise).
Everything is logged to the
console and to /var/log/liferaft-unattended.log; the end is a SUCCESS or
FAILED banner, then (if asked) the machine powers off.

``liferaft.repo`` is a directory, or ``DEVICE:PATH`` for a repository on a
disk that is not mounted yet; DEVICE is ``LABEL=x``, ``UUID=x``, a /dev path
or ``serial:XYZ`` (its first partition, or the whole disk if it has none).
``liferaft.target`` (and capture's sources, comma separated) is a device path
or ``serial:XYZ``.

``liferaft.credentials=`` names a credentials file (format:
rescue_app/engine/credentials.py) the same way: ``DEVICE:PATH`` on a medium
that is mounted read-only, read, and unmounted again before the action
starts, or a plain path. Secrets thus come from an attached stick, never from
the kernel command line (which any process can read in /proc/cmdline).
Without it the image's /etc/liferaft/credentials.yaml (baked in from the
profile) is used, if there is one. The Engine's credential chain has no
prompt: a secret nobody gave is one line naming it and where to put it.

This module uses the engine façade only; it never imports textual.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rescue_app.engine import human_rate, human_size
from rescue_app.errors import LiferaftError, UsageError
from rescue_app.profile import (
    Unattended,
    installed_profile_path,
    installed_trusted_keys,
    load_profile_file,
)
from rescue_app.progress import Progress

if TYPE_CHECKING:
    from rescue_app.engine import CredentialChain, CredentialsFile

log = logging.getLogger("liferaft.unattended")

LOG_FILE = Path(os.environ.get("LIFERAFT_UNATTENDED_LOG", "/var/log/liferaft-unattended.log"))
PROFILE_FILE = installed_profile_path()
REPO_MOUNT = Path("/run/liferaft/repo")
CREDENTIALS_MOUNT = Path("/run/liferaft/credentials")
DEVICE_WAIT_S = 30.0  # USB sticks appear a few seconds into the boot
# Mounted so that only root can read what is on them (no Unix modes on disk).
_NO_MODES = ("vfat", "msdos", "exfat", "ntfs", "ntfs3")
ACTIONS = ("restore", "capture")
_TRUE = ("1", "yes", "true", "on")


@dataclass(frozen=True)
class UnattendedAction:
    action: str  # restore | capture
    repo: str
    image: str
    targets: tuple[str, ...]  # restore: target disks; capture: source disks
    poweroff: bool
    grow: bool = False
    seed: bool = True  # liferaft.seed=0: write every chunk (restore --no-seed)
    unlock: bool = False  # capture: liferaft.unlock=1 opens LUKS volumes (capture --unlock)
    credentials: str | None = None  # DEVICE:PATH or a path; None: the image's own

    def describe(self) -> str:
        arrow = "->" if self.action == "restore" else "<-"
        return (
            f"{self.action} {self.image} {arrow} {', '.join(self.targets)} (repository {self.repo})"
        )


def parse_cmdline(text: str) -> dict[str, str]:
    """The ``liferaft.*`` arguments of a kernel command line, without the prefix."""
    out: dict[str, str] = {}
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    for word in words:
        if word.startswith("liferaft.") and "=" in word:
            key, value = word[len("liferaft.") :].split("=", 1)
            out[key] = value
        elif word.startswith("liferaft.") and word[len("liferaft.") :] in (
            "poweroff",
            "grow",
            "unlock",
        ):
            out[word[len("liferaft.") :]] = "1"
    return out


def resolve_action(
    cmdline: dict[str, str], profile_action: Unattended | None
) -> UnattendedAction | None:
    """Merge the profile's section (the schema's defaults without one) with command
    line values; None when nothing is asked."""
    section = dataclasses.asdict(profile_action or Unattended())
    merged: dict[str, Any] = {k: v for k, v in section.items() if v is not None}
    merged.update(cmdline)
    action = str(merged.get("action", "none"))
    if action in ("none", ""):
        return None
    if action not in ACTIONS:
        raise UsageError(f"liferaft.action={action} is not one of {', '.join(ACTIONS)}")
    missing = [k for k in ("repo", "image", "target") if not merged.get(k)]
    if missing:
        raise UsageError(
            f"unattended {action} needs " + ", ".join(f"liferaft.{k}=" for k in missing)
        )

    def flag(key: str, default: bool) -> bool:
        value = merged.get(key, default)
        return value if isinstance(value, bool) else str(value).lower() in _TRUE

    return UnattendedAction(
        action=action,
        repo=str(merged["repo"]),
        image=str(merged["image"]),
        targets=tuple(t for t in str(merged["target"]).split(",") if t),
        poweroff=flag("poweroff", Unattended.poweroff),
        grow=flag("grow", False),
        seed=flag("seed", True),
        unlock=flag("unlock", False),
        credentials=str(merged["credentials"]) if merged.get("credentials") else None,
    )


def _setup_logging() -> None:
    root = logging.getLogger("liferaft")
    root.setLevel(logging.DEBUG)
    for handler in [h for h in root.handlers if getattr(h, "_liferaft_unattended", False)]:
        root.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s liferaft: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO)
    console.setFormatter(fmt)
    console._liferaft_unattended = True  # type: ignore[attr-defined]
    root.addHandler(console)
    try:
        LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(LOG_FILE)
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        file._liferaft_unattended = True  # type: ignore[attr-defined]
        root.addHandler(file)
    except OSError as exc:
        log.warning("cannot write %s: %s", LOG_FILE, exc)


def _banner(ok: bool, what: str, detail: str) -> None:
    word = "SUCCESS" if ok else "FAILED"
    line = "=" * 64
    text = f"\n{line}\n  LIFERAFT UNATTENDED {what.upper()}: {word}\n  {detail}\n{line}\n"
    log.info("%s: %s", word, detail)
    sys.stdout.write(text)
    sys.stdout.flush()
    # The console may be the serial line; the person at the machine looks at
    # the screen, so the banner goes there too (on the stick only).
    if Path("/run/live/medium").exists():
        try:
            with open("/dev/tty1", "w") as tty:
                tty.write(text)
        except OSError:
            pass


class _ProgressLog:
    """Engine progress as a log line every 10 % (a console is not a progress bar)."""

    def __init__(self) -> None:
        self.next_percent = 0
        self.started = time.monotonic()

    def __call__(self, p: Progress) -> None:
        if p.phase == "notice" and p.notice:
            log.warning("%s: %s", p.item, p.notice)
        if p.total <= 0:
            return
        percent = 100 * p.done // p.total
        if percent >= self.next_percent:
            elapsed = max(time.monotonic() - self.started, 1e-3)
            log.info(
                "%s %3d%%  %s  %s of %s  %s",
                p.phase, percent, p.item, human_size(p.done), human_size(p.total),
                human_rate(p.done / elapsed),
            )  # fmt: skip
            self.next_percent = percent - percent % 10 + 10


def split_device_spec(spec: str) -> tuple[str | None, str]:
    """``DEVICE:PATH`` -> (DEVICE, PATH); a plain path or a URL -> (None, spec).

    DEVICE is ``LABEL=x``, ``UUID=x``, a /dev path or ``serial:XYZ``."""
    if "://" in spec or ":" not in spec:
        return None, spec
    device, _, path = spec.rpartition(":")
    if device.startswith("/") and not device.startswith("/dev/"):
        return None, spec  # a path that happens to hold a colon
    if not device or not (
        device.startswith(("LABEL=", "UUID=", "PARTUUID=", "PARTLABEL=", "/dev/", "serial:"))
    ):
        raise UsageError(
            f"{spec!r}: expected DEVICE:PATH with DEVICE LABEL=, UUID=, "
            "a /dev path or serial:XYZ, or a plain path"
        )
    return device, path or "/"


def _find_device(device: str, timeout: float = DEVICE_WAIT_S) -> str:
    """The /dev node of ``device``, waiting for it to appear."""
    deadline = time.monotonic() + timeout
    while True:
        node = _device_node(device)
        if node is not None:
            return node
        if time.monotonic() > deadline:
            raise LiferaftError(
                f"device {device} not found after {timeout:.0f} s",
                hint="check that the medium is attached and its label, "
                "UUID or serial (blkid lists them)",
            )
        time.sleep(1)


def _device_node(device: str) -> str | None:
    if device.startswith("serial:"):
        from rescue_app.engine import Engine

        try:
            disk = Engine().find_disk(device)
        except LiferaftError:
            return None
        return disk.partitions[0].path if disk.partitions else disk.path
    if device.startswith("/dev/"):
        return device if os.path.exists(device) else None
    from rescue_app.engine import Engine

    key, _, value = device.partition("=")
    return Engine().device_with_tag(key, value)


def _mount(device: str, mountpoint: Path, options: list[str], what: str) -> None:
    from rescue_app.engine import Engine

    mountpoint.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        Engine().mount(device, str(mountpoint), options=options)
    except LiferaftError as exc:
        raise LiferaftError(f"cannot mount {what} device {device}: {exc.message}") from None


def _unmount(mountpoint: Path) -> None:
    from rescue_app.engine import Engine

    if os.path.ismount(mountpoint):
        Engine().umount(str(mountpoint))


def _mount_repository(spec: str, writable: bool) -> str:
    """``DEVICE:PATH`` -> mount DEVICE under /run/liferaft/repo and return the path."""
    device, path = split_device_spec(spec)
    if device is None:
        return spec
    node = _find_device(device)
    _mount(node, REPO_MOUNT, ["rw" if writable else "ro"], "repository")
    return str(REPO_MOUNT / path.lstrip("/"))


def _unmount_repository() -> None:
    _unmount(REPO_MOUNT)


def load_credentials(spec: str) -> CredentialsFile:
    """Read the credentials file ``spec`` names (DEVICE:PATH or a path) for this
    run; a medium is mounted read-only and unmounted right after."""
    device, path = split_device_spec(spec)
    try:
        loaded = _read_credentials(device, path, spec)
    except LiferaftError as exc:
        raise LiferaftError(f"liferaft.credentials={spec}: {exc.message}", exc.hint) from None
    count = len(loaded.credentials().entries)
    log.info("credentials from %s: %d entr%s", spec, count, "y" if count == 1 else "ies")
    return loaded


def credential_chain(spec: str | None) -> CredentialChain:
    """This run's secrets: the environment, then the file ``spec`` names (else
    the image's own); no prompt, as nobody is at the keyboard."""
    from rescue_app.engine import CredentialChain

    return CredentialChain.standard(file=load_credentials(spec) if spec else None)


def _read_credentials(device: str | None, path: str, spec: str) -> CredentialsFile:
    from rescue_app.engine import CredentialsFile

    if device is None:
        loaded = CredentialsFile.read(path, shown=spec)
    else:
        node = _find_device(device)
        from rescue_app.engine import Engine

        fstype = Engine().filesystem_type(node) or ""
        options = ["ro", "nosuid", "nodev", "noexec"]
        if fstype in _NO_MODES:
            options += ["uid=0", "gid=0", "umask=077"]
        _mount(node, CREDENTIALS_MOUNT, options, "credentials")
        try:
            loaded = CredentialsFile.read(str(CREDENTIALS_MOUNT / path.lstrip("/")), shown=spec)
        finally:
            _unmount(CREDENTIALS_MOUNT)
    return loaded


def _has_default_route(routes: str) -> bool:
    """True if /proc/net/route's text has a default route (destination 0)."""
    return any(line.split()[1:2] == ["00000000"] for line in routes.splitlines()[1:])


def _wait_for_network(timeout: float = 60) -> None:
    """The service starts after network.target, which does not mean DHCP is
    done; a network repository needs a route first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/net/route") as f:
                if _has_default_route(f.read()):
                    return
        except OSError:
            return
        time.sleep(1)
    log.warning("no default route after %.0f s; trying the repository anyway", timeout)


def _execute(action: UnattendedAction) -> str:
    from rescue_app.engine import Engine, RestoreChoices

    engine = Engine(
        credentials=credential_chain(action.credentials),
        trusted=installed_trusted_keys(PROFILE_FILE),
    )
    if "://" in action.repo:
        _wait_for_network()
    location = _mount_repository(action.repo, writable=action.action == "capture")
    progress = _ProgressLog()
    if action.action == "restore":
        repo = engine.open_repository(location)
        choices = RestoreChoices(grow=action.grow, seed=action.seed)
        plan = engine.plan_restore(repo, action.image, list(action.targets), choices)
        log.info("plan:\n%s", plan.render())
        # An unlocked LUKS volume's passphrase: the credentials file's entry
        # (match: luks:<UUID>, passphrase_file), never the kernel command line.
        luks_key = engine.luks_keys() if plan.manifest.luks_volumes else None
        result = engine.restore(plan, progress=progress, verify=True, luks_key=luks_key)
        checked = "verified" if result.verified else "NOT verified"
        return (
            f"restored {result.ref} to {', '.join(action.targets)}: {result.figures()}, {checked}"
        )
    repo = engine.open_repository(location, create=True)
    # liferaft.unlock=1: each LUKS volume's passphrase from the credentials
    # file (match: luks:<UUID>), as for a restore
    luks_key = engine.luks_keys() if action.unlock else None
    captured = engine.capture(
        repo, action.image, list(action.targets), progress=progress, luks_key=luks_key
    )
    return (
        f"captured {', '.join(action.targets)} as {captured.ref}: "
        f"{human_size(captured.data_bytes)} of data, "
        f"{human_size(captured.stored_bytes)} stored"
    )


def _load_profile_action() -> Unattended | None:
    """The profile's ``unattended`` section; None without a profile file. A
    broken file is a ProfileError naming file, key and line."""
    if not PROFILE_FILE.is_file():
        return None
    return load_profile_file(PROFILE_FILE, check_secrets=False).unattended


def _power_off() -> None:
    from rescue_app.engine import Engine

    try:
        Engine().power_off(unattended=True)
    except LiferaftError as exc:  # the action itself is done: say so, do not fail it
        log.warning("could not power off: %s", exc)


def run_unattended(
    cmdline_text: str | None = None,
    profile_action: Unattended | None = None,
    *,
    power_off: Callable[[], None] = _power_off,
) -> int:
    """Run the action the command line or profile asks for; 0 on success or nothing to do."""
    if cmdline_text is None:
        try:
            cmdline_text = Path("/proc/cmdline").read_text()
        except OSError:
            cmdline_text = ""
    _setup_logging()
    try:
        if profile_action is None:
            profile_action = _load_profile_action()
        action = resolve_action(parse_cmdline(cmdline_text), profile_action)
    except LiferaftError as exc:
        _banner(False, "mode", str(exc))
        return exc.exit_code
    if action is None:
        log.debug("no unattended action requested")
        return 0
    log.info("unattended %s", action.describe())
    started = time.monotonic()
    try:
        detail = _execute(action)
        ok, code = True, 0
    except LiferaftError as exc:
        detail, ok, code = str(exc), False, exc.exit_code
    except Exception as exc:  # the banner must appear whatever went wrong
        log.exception("unexpected error")
        detail, ok, code = f"unexpected error: {exc!r} (see {LOG_FILE})", False, 1
    finally:
        _unmount_repository()
    _banner(ok, action.action, f"{detail} ({time.monotonic() - started:.0f} s)")
    if action.poweroff:
        power_off()
    return code


def main(argv: list[str] | None = None) -> int:
    """`liferaft unattended [CMDLINE]`: CMDLINE defaults to /proc/cmdline."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_unattended(" ".join(args) if args else None)


if __name__ == "__main__":
    sys.exit(main())
