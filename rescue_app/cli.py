"""The ``liferaft`` command line: a thin layer over the engine.

Parses arguments, asks for confirmation, draws progress, and turns every
LiferaftError into one line on stderr and a nonzero exit (tracebacks only
with --debug). All real work is the engine's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TextIO

from rescue_app import __version__
from rescue_app.engine import (
    CredentialChain,
    Engine,
    Repository,
    RestoreChoices,
    RestorePlan,
    TerminalPrompt,
    human_duration,
    human_rate,
    human_size,
    image_time,
    last_good_backups,
)
from rescue_app.errors import LiferaftError, NotRootError, UsageError
from rescue_app.profile import installed_trusted_keys
from rescue_app.progress import CancelToken, Progress

if TYPE_CHECKING:  # imported by the commands that use them: `liferaft tui` starts faster
    from rescue_app.engine import KeepPolicy, PartitionRestorePlan, Schedule

log = logging.getLogger("liferaft")


class ProgressBar:
    """Draws Progress on a terminal: bar, bytes, rate, ETA. Plain lines when
    stderr is not a terminal (logs, serial consoles with no redraw)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 80) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = width
        self.started = time.monotonic()
        self.phase = ""
        self.last_draw = 0.0
        self.last_line = ""
        self.last_notice = 0.0
        self.noticed = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.phase == "notice":
            self._notice(p, now)
            return
        if p.phase != self.phase:
            self.finish_line()
            self.phase = p.phase
            self.started = now
            self.last_draw = 0.0
        if p.total <= 0:
            if p.message:
                self._emit(f"{p.phase}: {p.item}: {p.message}", final=not self.tty)
            return
        interval = 0.2 if self.tty else 5.0
        if now - self.last_draw < interval and p.done < p.total:
            return
        self.last_draw = now
        elapsed = now - self.started
        frac = min(1.0, p.done / p.total)
        text = f"{human_size(p.done)}/{human_size(p.total)}"
        if elapsed >= 0.5 and p.done:
            rate = p.done / elapsed
            eta = (p.total - p.done) / rate
            text += f" {human_rate(rate):>11} ETA {human_duration(eta)}"
        barw = max(10, self.width - len(text) - len(p.phase) - 6)
        filled = int(barw * frac)
        line = f"{p.phase} [{'#' * filled}{'.' * (barw - filled)}] {text}"
        self._emit(line, final=not self.tty)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        # Whatever ends the operation (an error, Ctrl-C), what follows starts
        # on a line of its own, not after the half-drawn bar.
        self.finish_line()

    def _notice(self, p: Progress, now: float) -> None:
        """A passing condition (a server retried), on a line of its own and at
        most every few seconds; the bar goes on below it."""
        if p.notice and now - self.last_notice < 5.0:
            return
        if not p.notice and not self.noticed:
            return
        self.finish_line()
        text = p.notice or "answering again"
        self.stream.write(f"{p.item}: {text}\n")
        self.stream.flush()
        self.noticed = bool(p.notice)
        self.last_notice = now if p.notice else 0.0
        self.last_draw = 0.0  # redraw the bar at the next progress

    def _emit(self, line: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + line[: self.width - 1].ljust(self.width - 1))
            self.last_line = line
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish_line(self) -> None:
        if self.tty and self.last_line:
            self.stream.write("\n")
            self.stream.flush()
            self.last_line = ""


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            f"{what} needs root to read and write disks", hint="run it with sudo, or as root"
        )


def _cancel_on_signals() -> CancelToken:
    token = CancelToken()

    def handler(signum: int, frame: object) -> None:
        token.cancel()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return token


def cmd_disks(engine: Engine, args: argparse.Namespace) -> int:
    from rescue_app.engine import disks_to_json, format_disks_table

    disks = engine.list_disks()
    if args.json:
        print(json.dumps(disks_to_json(disks), indent=1))
    else:
        print(format_disks_table(disks))
    return 0


def cmd_images(engine: Engine, args: argparse.Namespace) -> int:
    repo = engine.open_repository(args.repo)
    images = engine.list_images(repo)
    for problem in repo.damaged:
        print(
            f"liferaft: warning: skipped a damaged image: {problem} "
            "(run 'liferaft verify' for the whole state)",
            file=sys.stderr,
        )
    for problem in repo.untrusted:
        print(
            f"liferaft: warning: skipped an image that is not trusted: {problem}", file=sys.stderr
        )
    now = datetime.now(UTC)
    last_good = last_good_backups(images, now)
    if args.json:
        print(
            json.dumps(
                [
                    asdict(i)
                    | {"ref": i.ref, "format": repo.format_name}
                    | {
                        "last_good": last_good[i.name].ref == i.ref,
                        "age_seconds": int((now - image_time(i.created)).total_seconds()),
                    }
                    for i in images
                ],
                indent=1,
            )
        )
        return 0
    if not images:
        print(f"no images in {repo.location}")
        return 0
    fmt = repo.format_name
    print(f"{'IMAGE':<34} {'FORMAT':<10} {'HOST':<16} {'DATA':>10} {'DISKS'}")
    for i in images:
        print(
            f"{i.ref:<34} {fmt:<10} {i.host[:16]:<16} {human_size(i.data_bytes):>10} "
            f"{'; '.join(i.disks)}"
        )
        for raw in i.raw:
            print(f"  {raw}")
        for vg in i.volume_groups:
            print(f"  LVM volume group {vg.name} on {', '.join(vg.pvs)}:")
            for lv in vg.lvs:
                what = lv.filesystem or ("thin pool" if lv.segtype == "thin-pool" else "raw")
                print(f"    {lv.name:<20} {human_size(lv.size):>10}  {what}")
        for array in i.md_arrays:
            print(f"  {array}")
        for volume in i.luks_volumes:
            print(f"  {volume}")
    for good in last_good.values():
        print(f"{good.name}: {good.describe()} ({good.ref})")
    return 0


def cmd_capture(engine: Engine, args: argparse.Namespace) -> int:
    _require_root("capture")
    signer = engine.load_signing_key(args.sign_key) if args.sign_key else None
    repo = engine.open_repository(args.repo, create=True)
    unlock = args.unlock or args.unlock_key_file is not None
    luks_key = engine.luks_keys(args.unlock_key_file) if unlock else None
    with ProgressBar() as bar:
        result = engine.capture(
            repo,
            args.name,
            args.devices,
            progress=bar,
            cancel=_cancel_on_signals(),
            signer=signer,
            luks_key=luks_key,
        )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"captured {result.ref}: {human_size(result.data_bytes)} of data, "
        f"{human_size(result.stored_bytes)} newly stored "
        f"({result.chunks_new} of {result.chunks_total} chunks new) "
        f"in {human_duration(result.seconds)}"
    )
    return 0


def cmd_backup(engine: Engine, args: argparse.Namespace) -> int:
    from rescue_app.engine import BackupRequest

    _require_root("backup")
    signer = engine.load_signing_key(args.sign_key) if args.sign_key else None
    repo = engine.open_repository(args.repo, create=True)
    with ProgressBar() as bar:
        result, methods = engine.backup(
            repo,
            BackupRequest(args.name, tuple(args.devices), args.limit_rate, args.thin_delta),
            progress=bar,
            cancel=_cancel_on_signals(),
            signer=signer,
        )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for line in methods:
        print(line)
    print(
        f"backed up {result.ref}: {human_size(result.data_bytes)} of data, "
        f"{human_size(result.stored_bytes)} newly stored "
        f"({result.chunks_new} of {result.chunks_total} chunks new) "
        f"in {human_duration(result.seconds)}"
    )
    return 0


def _rate(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes per second") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of bytes per second")
    return value


def cmd_verify(engine: Engine, args: argparse.Namespace) -> int:
    repo = engine.open_repository(args.repo)
    with ProgressBar() as bar:
        report = engine.verify(repo, args.name, progress=bar, cancel=_cancel_on_signals())
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(
        f"verified {len(report.refs)} image(s), {report.chunks_checked} chunks, "
        f"{human_size(report.bytes_checked)}: {status}"
    )
    return 0 if report.ok else 1


_KEEP_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    func: Callable[[Engine, argparse.Namespace], int],
    summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """The subcommand ``liferaft X`` run by its handler ``cmd_X``; ``summary``
    is its line in ``liferaft --help``."""
    p = sub.add_parser(func.__name__.removeprefix("cmd_"), help=summary, description=description)
    p.set_defaults(func=func)
    return p


def _switches(p: argparse.ArgumentParser, **helps: str) -> None:
    """A command's on/off options: ``name=help`` adds ``--name`` (with dashes
    for underscores), off unless given."""
    for name, text in helps.items():
        p.add_argument("--" + name.replace("_", "-"), action="store_true", help=text)


def _add_image_args(p: argparse.ArgumentParser, *, cache: bool = False) -> None:
    """--repo and --image: the image a command reads; ``cache``: and the chunk
    cache of the commands that read it as files (mount, extract)."""
    p.add_argument("--repo", required=True)
    p.add_argument("--image", required=True, metavar="NAME[@DATE]")
    if cache:
        p.add_argument(
            "--cache", type=int, default=64, metavar="MIB", help="chunk cache in MiB (default 64)"
        )


def _add_keep_args(p: argparse.ArgumentParser) -> None:
    for rule in _KEEP_RULES:
        p.add_argument(f"--keep-{rule}", type=int, metavar="N")


def _keep_policy(args: argparse.Namespace) -> KeepPolicy:
    from rescue_app.engine import KeepPolicy

    return KeepPolicy(**{rule: getattr(args, f"keep_{rule}") or 0 for rule in _KEEP_RULES})


def cmd_forget(engine: Engine, args: argparse.Namespace) -> int:
    policy = _keep_policy(args)
    grace = _grace(engine, args)  # bad input: refused before anything is removed
    repo = engine.open_repository(args.repo)
    plan = engine.forget(repo, policy, name=args.name, dry_run=args.dry_run)
    for problem in repo.damaged:
        print(f"liferaft: warning: a damaged image is kept: {problem}", file=sys.stderr)
    print(plan.render())
    if args.dry_run:
        print("dry run: nothing was removed")
        return 0
    print(f"removed {len(plan.removed)} image(s); their chunks go with 'liferaft prune'")
    if args.prune:
        return _prune(engine, repo, grace)
    return 0


def _grace(engine: Engine, args: argparse.Namespace) -> timedelta | None:
    """--grace, or None for the engine's default."""
    return engine.parse_duration(args.grace) if args.grace is not None else None


def _prune(engine: Engine, repo: Repository, grace: timedelta | None) -> int:
    with ProgressBar() as bar:
        result = engine.prune(repo, grace=grace, progress=bar, cancel=_cancel_on_signals())
    if result.swept:
        print(
            f"freed {human_size(result.freed_bytes)} ({result.freed_chunks} chunks); "
            f"{result.rescued_chunks} marked chunk(s) were in use again and kept"
        )
    if result.marked_chunks:
        print(f"marked {result.marked_chunks} unused chunk(s) ({human_size(result.marked_bytes)})")
    if result.pending_chunks:
        print(
            f"{result.pending_chunks} marked chunk(s) are deleted by a prune run after "
            f"{result.deletable_after} (the grace period, longer than any backup)"
        )
    elif not result.swept and not result.locked_chunks:
        print("nothing to prune: every chunk is in use")
    if result.locked_chunks:
        print(
            f"skipped {result.locked_chunks} unused chunk(s) under S3 Object Lock (the store "
            f"refuses to delete them before {result.locked_until}); a prune after that frees them"
        )
    return 0


def cmd_prune(engine: Engine, args: argparse.Namespace) -> int:
    grace = _grace(engine, args)
    return _prune(engine, engine.open_repository(args.repo), grace)


def cmd_schedule(engine: Engine, args: argparse.Namespace) -> int:
    keeps = any(getattr(args, f"keep_{rule}") is not None for rule in _KEEP_RULES)
    action = args.list or args.remove or args.run
    if action and (args.repo or args.name or args.every or keeps or args.thin_delta):
        raise UsageError(
            "--list, --remove and --run take no --repo, --name, --every or --keep-...",
            hint="give one of them alone, or --repo and --name to schedule a backup",
        )
    if args.list:
        scheduled = engine.scheduled_backups(root=args.root)
        if not scheduled:
            print("no scheduled backups")
        for s in scheduled:
            timer = "enabled" if s.enabled else "DISABLED"
            rules = s.schedule.keep.describe() if s.schedule.keep else "all"
            print(f"{s.schedule.name:<16} every {s.schedule.every:<14} timer {timer:<9} "
                  f"{s.schedule.repo}  keep {rules}")  # fmt: skip
        return 0
    if args.remove:
        print(engine.unschedule(args.remove, root=args.root))
        return 0
    if args.run:
        return _run_schedule(engine, engine.load_schedule(args.run, root=args.root))
    if not args.repo or not args.name:
        raise UsageError(
            "schedule needs --repo and --name",
            hint="e.g. liferaft schedule --repo /srv/backups --name web1 --every daily "
            "--keep-daily 7; or --list, --remove NAME",
        )
    keep = _keep_policy(args) if keeps else None
    schedule, done, note = engine.schedule_backup(
        args.name, args.repo, args.every or "daily", keep, root=args.root,
        thin_delta=args.thin_delta,
    )  # fmt: skip
    print(f"scheduled {schedule.describe()}")
    print(done)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _run_schedule(engine: Engine, schedule: Schedule) -> int:
    """What liferaft-backup@NAME.service runs: each command of the schedule,
    the next only after the one before succeeded; the first failure is the
    unit's exit status (its one error line is in the journal)."""
    parser = build_parser()
    parser.exit_on_error = False
    for argv in schedule.commands():
        try:
            step = parser.parse_args(argv)
        except argparse.ArgumentError:
            raise UsageError(
                f"scheduled backup {schedule.name}: this liferaft has no '{argv[0]}' "
                "command, so nothing was backed up",
                hint="install a liferaft that has the online backup, or stop the timer "
                f"with 'liferaft schedule --remove {schedule.name}'",
            ) from None
        print(f"scheduled backup {schedule.name}: liferaft {shlex.join(argv)}", flush=True)
        status = int(step.func(engine, step))
        if status != 0:
            return status
    return 0


def _confirm(plan_targets: Sequence[object], args: argparse.Namespace) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            "refusing to erase a disk without confirmation",
            hint="pass --yes to confirm, or run in a terminal",
        )
    for target in plan_targets:
        name = target.path.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        print(f"\nALL DATA on {target.describe()} will be ERASED.")  # type: ignore[attr-defined]
        answer = input(f"Type {name} to erase it, anything else cancels: ").strip()
        if answer != name:
            raise UsageError("not confirmed; nothing was written")


def cmd_restore(engine: Engine, args: argparse.Namespace) -> int:
    if not args.dry_run:
        _require_root("restore")
    repo = engine.open_repository(args.repo)
    with ProgressBar() as bar:  # a Clonezilla image is read whole first
        engine.load_manifest(repo, args.image, progress=bar, cancel=_cancel_on_signals())
    plan: RestorePlan | PartitionRestorePlan
    if engine.holds_partitions_only(repo, args.image):  # a Clonezilla saveparts image
        if args.grow_lv or args.shrink:
            raise UsageError(
                "--grow-lv and --shrink are for whole disks; this image holds partitions",
                hint="--grow grows each filesystem to fill its partition",
            )
        plan = engine.plan_partition_restore(repo, args.image, args.to, grow=args.grow)
    else:
        choices = RestoreChoices(
            grow=args.grow,
            grow_lv=args.grow_lv,
            shrink=tuple(args.shrink),
            scratch=args.scratch,
            seed=not args.no_seed,
            check_first=not args.no_check_first,
        )
        plan = engine.plan_restore(repo, args.image, args.to, choices)
    # (with --json, stdout holds only the JSON: the plan goes to stderr)
    print(plan.render(), file=sys.stderr if args.json else sys.stdout)
    if args.dry_run:
        if args.json:
            print(json.dumps({"dry_run": True, "plan": plan.render()}, indent=1))
        else:
            print("\ndry run: nothing was written")
        return 0
    _confirm([d.target for d in plan.disks], args)
    with ProgressBar() as bar:
        if isinstance(plan, RestorePlan):
            result = engine.restore(
                plan,
                progress=bar,
                cancel=_cancel_on_signals(),
                verify=args.verify,
                luks_key=engine.luks_keys(args.unlock_key_file),
            )
        else:
            result = engine.restore_partitions(
                plan, progress=bar, cancel=_cancel_on_signals(), verify=args.verify
            )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(result), indent=1))
        return 0
    checked = ", read back and verified" if result.verified else ""
    print(
        f"restored {result.ref} to {', '.join(result.targets)}: {result.figures()}"
        f"{checked} in {human_duration(result.seconds)}"
    )
    return 0


def cmd_import(engine: Engine, args: argparse.Namespace) -> int:
    repo = engine.open_repository(args.repo, create=True)
    with ProgressBar() as bar:
        result = engine.import_clonezilla(
            repo, args.image_dir, args.name, progress=bar, cancel=_cancel_on_signals()
        )
    print(
        f"imported Clonezilla image {result.source} as {result.ref}: "
        f"{human_size(result.data_bytes)} of data, {human_size(result.stored_bytes)} newly "
        f"stored ({result.chunks_new} of {result.chunks_total} chunks new)"
    )
    return 0


def _print_network(engine: Engine, as_json: bool) -> None:
    net = engine.network_status()
    if as_json:
        print(json.dumps(net.to_json(), indent=1))
        return
    print(f"{'IFACE':<12} {'STATE':<8} {'MAC':<17} {'ADDRESSES':<28} {'GATEWAY':<15} DNS")
    for i in net.interfaces:
        addrs = " ".join(str(a) for a in i.global_addresses) or "-"
        state = i.state if i.carrier or i.state == "down" else f"{i.state}/no-carrier"
        print(
            f"{i.name:<12} {state:<8} {i.mac or '-':<17} {addrs:<28} "
            f"{i.gateway or '-':<15} {' '.join(i.dns) or '-'}"
        )
    print(net.summary())


def cmd_net(engine: Engine, args: argparse.Namespace) -> int:
    if args.net_command == "dhcp":
        done = engine.network_dhcp(args.iface, timeout=args.timeout)
    elif args.net_command == "static":
        done = engine.network_static(
            args.iface, args.address, gateway=args.gateway, dns=args.dns or (), timeout=args.timeout
        )
    else:
        _print_network(engine, args.json)
        return 0
    if args.json:
        _print_network(engine, True)
    else:
        print(done.describe())
    return 0


def cmd_tui(engine: Engine, args: argparse.Namespace) -> int:
    from rescue_app.tui.app import run_app

    return run_app(engine, profile_path=args.profile)


def cmd_unattended(engine: Engine, args: argparse.Namespace) -> int:
    from rescue_app.unattended import run_unattended

    return run_unattended(args.cmdline)


def cmd_serve(engine: Engine, args: argparse.Namespace) -> int:
    options = engine.serve_options(
        append_only=args.append_only,
        user=args.user,
        password_file=args.password_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        quiet=args.quiet,
    )
    root = engine.served_folder(args.repo, append_only=args.append_only)
    try:
        server = engine.serve_repository(root, args.bind, args.port, options)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}",
            hint="choose another --port or --bind address",
        ) from None
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    scheme = "https" if options.tls_cert else "http"
    mode = "append-only: uploads kept, never replaced or deleted" if args.append_only else ""
    mode = mode or "read-only"
    print(f"serving {root} {mode} at {scheme}://{host}:{port}/ (Ctrl-C stops)", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _cache_bytes(args: argparse.Namespace) -> int:
    if args.cache < 8:
        raise UsageError(
            f"--cache {args.cache} is too small", hint="give at least 8 (MiB): one chunk is 4 MiB"
        )
    return int(args.cache) << 20


def cmd_mount(engine: Engine, args: argparse.Namespace) -> int:
    # The handlers come first: a signal then reaches this thread, which takes
    # the mount down in order (the FUSE library leaves handled signals alone).
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: stop.set())
    cache = _cache_bytes(args)
    engine.check_mount_point(args.mountpoint)
    repo = engine.open_repository(args.repo)
    with engine.mount_image(repo, args.image, args.mountpoint, cache_bytes=cache) as m:
        print(f"mounted {m.manifest.ref} read-only on {m.point}:")
        for part in m.partitions:
            files = f"{part.files}/" if part.folder in m.mounted else ""
            shown = ", ".join(x for x in (part.image, files) if x) or "(its files cannot be shown)"
            swap = " (swap: nothing stored)" if part.swap else ""
            print(f"  {part.folder}/  {part.describe()}{swap}: {shown}")
        for note in m.notes:
            print(f"note: {note}", file=sys.stderr)
        print(
            f"serving in the foreground; 'liferaft umount {m.point}' or Ctrl-C ends it",
            flush=True,
        )
        m.wait(stop)
    print(f"unmounted {m.point}", flush=True)
    return 0


def cmd_umount(engine: Engine, args: argparse.Namespace) -> int:
    engine.unmount_image(args.mountpoint)
    return 0


def cmd_extract(engine: Engine, args: argparse.Namespace) -> int:
    cache = _cache_bytes(args)
    engine.check_extract_destination(args.to)
    repo = engine.open_repository(args.repo)
    with ProgressBar() as bar:
        result = engine.extract(
            repo,
            args.image,
            args.paths,
            args.to,
            partition=args.partition,
            cache_bytes=cache,
            progress=bar,
            cancel=_cancel_on_signals(),
        )
    print(
        f"extracted {len(result.copied)} path(s) of {result.partition} into {result.to}: "
        f"{human_size(result.bytes)} in {human_duration(result.seconds)}"
    )
    return 0


def _new_passphrase(what: str, given: str | None = None) -> str:
    """A new passphrase: ``given`` (the environment or the credentials file),
    else typed twice at the terminal; never echoed, logged or shown."""
    if given:
        return given
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(
            f"no passphrase for {what} was given",
            hint="set LIFERAFT_PASSPHRASE (LIFERAFT_NEW_PASSPHRASE for 'key add'), put "
            "passphrase_file in the credentials file, or run liferaft in a terminal",
        )
    import getpass

    first = getpass.getpass(f"new passphrase for {what}: ")
    if getpass.getpass("the same passphrase again: ") != first:
        raise UsageError("the two passphrases differ; nothing was written", hint="try again")
    return first


def cmd_init(engine: Engine, args: argparse.Namespace) -> int:
    passphrase = None
    if args.encrypt:
        passphrase = _new_passphrase(args.repo, engine.given_passphrase(args.repo))
    repo = engine.init_repository(args.repo, passphrase=passphrase)
    kind = "encrypted repository" if repo.encrypted else "repository"
    print(f"created the {kind} {repo.location}")
    if repo.encrypted:
        print(
            "keep a copy of its key apart from it: 'liferaft key export --paper --repo "
            f"{repo.location}' prints one (without it, a lost passphrase loses every image)"
        )
    return 0


def cmd_key(engine: Engine, args: argparse.Namespace) -> int:
    action = args.key_command
    repo = engine.open_repository(args.repo, unlock=action not in ("list", "import"))
    if action == "list":
        for slot in engine.key_slots(repo):
            print(f"{slot.slot}  created {slot.created}")
        return 0
    if action == "add":
        phrase = _new_passphrase(repo.location, os.environ.get("LIFERAFT_NEW_PASSPHRASE"))
        print(f"added key slot {engine.add_key(repo, phrase)}")
        if repo.key_slot:  # (changing a passphrase: add the new one, remove the old one)
            print(
                f"note: the passphrase used now opens key slot {repo.key_slot}; to change it "
                f"rather than add one: liferaft key remove --repo {repo.location} {repo.key_slot}",
                file=sys.stderr,
            )
        return 0
    if action == "remove":
        engine.remove_key(repo, args.slot)
        print(f"removed key slot {args.slot}")
        return 0
    if action == "export":
        if not args.paper:
            raise UsageError("say how to export the key", hint="liferaft key export --paper")
        print(engine.paper_key(repo))
        return 0
    # import: the paper key from a file or standard input, a new passphrase
    if args.file in (None, "-"):
        text = sys.stdin.read() if not sys.stdin.isatty() else _typed_paper_key()
    else:
        try:
            with open(args.file) as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read the paper key {args.file}: {exc.strerror}") from None
    phrase = _new_passphrase(repo.location, engine.given_passphrase(repo.location))
    print(f"imported the paper key: new key slot {engine.import_paper_key(repo, text, phrase)}")
    return 0


def _typed_paper_key() -> str:
    print("type the paper key, lines as printed; an empty line ends it:", file=sys.stderr)
    lines = []
    while line := input().strip():
        lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liferaft", description="Bare-metal backup and restore.")
    parser.add_argument("--version", action="version", version=f"liferaft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log", metavar="FILE", help="also write a detailed log to FILE")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, cmd_disks, "list disks and partitions")
    p.add_argument("--json", action="store_true")

    p = _command(
        sub, cmd_images, "list the images in a repository (or a folder of Clonezilla images)"
    )
    p.add_argument("--repo", required=True)
    p.add_argument("--json", action="store_true")

    p = _command(
        sub, cmd_import, "convert a Clonezilla image into a repository (every checksum checked)"
    )
    p.add_argument("--repo", required=True, help="repository folder (created if missing)")
    p.add_argument("--name", help="image name in the repository (default: the folder's name)")
    p.add_argument("image_dir", metavar="CZDIR", help="the Clonezilla image's folder")

    p = _command(sub, cmd_capture, "capture whole disks into a repository")
    p.add_argument("--repo", required=True, help="repository folder (created if missing)")
    p.add_argument("--name", required=True, help="image name, e.g. the host name")
    _sign_key_argument(p)
    _switches(
        p,
        unlock="open each LUKS volume (passphrase from LIFERAFT_LUKS_PASSPHRASE, the "
        "credentials file's 'luks:<UUID>' entry, or asked) and capture the filesystem "
        "inside by its used blocks; only into an encrypted repository",
    )
    p.add_argument(
        "--unlock-key-file", metavar="FILE", help="like --unlock, with this LUKS key file"
    )
    p.add_argument("devices", nargs="+", metavar="DEV")

    p = _command(
        sub,
        cmd_backup,
        "back up the running system's disks while in use (mounted filesystems file "
        "by file, Btrfs from snapshots, the rest block by block)",
    )
    p.add_argument("--repo", required=True, help="repository (created if missing)")
    p.add_argument("--name", required=True, help="image name, e.g. the host name")
    p.add_argument(
        "--limit-rate",
        type=_rate,
        default=0,
        metavar="BYTES",
        help="read at most this many bytes per second (default: no limit; I/O is at idle "
        "priority either way)",
    )
    p.add_argument(
        "--thin-delta",
        action="store_true",
        help="keep each thin LV's snapshot (liferaft-base-LV) after the backup and, next time, "
        "read only the blocks thin_delta reports changed since it (the kept snapshot holds "
        "pool space for what changes until then)",
    )
    _sign_key_argument(p)
    p.add_argument(
        "devices",
        nargs="*",
        metavar="DISK",
        help="the disks (default: those holding /, /boot and /boot/efi)",
    )

    p = _command(sub, cmd_init, "create an empty repository (--encrypt: an encrypted one)")
    p.add_argument("--repo", required=True, help="a new or empty folder, or a URL")
    _switches(
        p,
        encrypt="encrypt everything in it; the passphrase comes from LIFERAFT_PASSPHRASE, "
        "the credentials file or is asked twice",
    )

    p = _command(sub, cmd_key, "the passphrases and paper key of an encrypted repository")
    keys = p.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    q = keys.add_parser("list", help="list the key slots")
    q.add_argument("--repo", required=True)
    q = keys.add_parser("add", help="add a passphrase (LIFERAFT_NEW_PASSPHRASE or asked twice)")
    q.add_argument("--repo", required=True)
    q = keys.add_parser("remove", help="remove a key slot (never the last one)")
    q.add_argument("--repo", required=True)
    q.add_argument("slot", metavar="SLOT")
    q = keys.add_parser("export", help="print the master key to keep apart from the repository")
    q.add_argument("--repo", required=True)
    q.add_argument("--paper", action="store_true", help="as text with a checksum, to print")
    q = keys.add_parser("import", help="regain access with the paper key: a new key slot")
    q.add_argument("--repo", required=True)
    q.add_argument("file", nargs="?", metavar="FILE", help="the paper key's text (default: stdin)")

    p = _command(sub, cmd_verify, "check every chunk of an image (or of all images)")
    p.add_argument("--repo", required=True)
    p.add_argument("name", nargs="?", metavar="NAME[@DATE]")
    _trust_key_argument(p)

    p = _command(sub, cmd_forget, "remove images a retention policy does not keep")
    p.add_argument("--repo", required=True)
    p.add_argument("--name", help="only images of this name (default: each name apart)")
    _add_keep_args(p)
    _switches(p, dry_run="list kept and removed, remove nothing", prune="then run 'liferaft prune'")
    p.add_argument("--grace", help="with --prune: see 'liferaft prune --help'")

    p = _command(sub, cmd_prune, "delete chunks no image needs (safe with running backups)")
    p.add_argument("--repo", required=True)
    p.add_argument(
        "--grace",
        metavar="DURATION",
        help="how long marked chunks wait before deletion (24h, 30m, 7d); longer than any "
        "backup takes (default 24h)",
    )

    p = _command(
        sub,
        cmd_schedule,
        "back this machine up on a schedule (a systemd timer per image name)",
        description="Write and enable liferaft-backup@NAME.timer: it runs 'liferaft backup "
        "--repo REPO --name NAME', then, with --keep-... rules, 'liferaft forget --prune'. "
        "Secrets come from /etc/liferaft/credentials.yaml, never from the command line. "
        "The units come with the Debian package (make deb).",
    )
    p.add_argument("--repo", help="repository (a URL without a password, or a folder)")
    p.add_argument("--name", help="image name, e.g. the host name")
    p.add_argument(
        "--every",
        metavar="WHEN",
        help="daily (default), hourly, weekly, or a systemd OnCalendar value ('*-*-* 02:30')",
    )
    _add_keep_args(p)
    p.add_argument(
        "--thin-delta",
        action="store_true",
        help="the backups run with --thin-delta (see liferaft backup --help)",
    )
    p.add_argument("--list", action="store_true", help="list the scheduled backups")
    p.add_argument("--remove", metavar="NAME", help="disable and delete a scheduled backup")
    p.add_argument("--run", metavar="NAME", help="run a scheduled backup now (what the timer does)")
    p.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="write into the system under DIR (an image or chroot being prepared): enabled "
        "there with systemctl --root, nothing started",
    )

    p = _command(sub, cmd_restore, "restore an image onto disks (erases them)")
    _add_image_args(p)
    p.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="DEV",
        help="target disk: /dev/X or serial:XYZ; once per disk of the image",
    )
    _switches(
        p,
        yes="do not ask for confirmation",
        dry_run="print the plan, write nothing",
        verify="read back and check what was written",
        grow="on a larger disk, extend the last partition and its filesystem (of a "
        "Clonezilla saveparts image: each filesystem fills its target partition)",
        no_seed="write every chunk (default: where the target's table already places a "
        "partition, only the chunks that differ from what it holds are fetched and written)",
        no_check_first="start writing at once (default: every chunk the restore needs is read "
        "and checked first, so a damaged or tampered one stops it before the target is touched; "
        "over a network the checked chunks are kept in a local spool, not fetched twice)",
        json="print the result as JSON (the plan goes to stderr)",
    )
    p.add_argument(
        "--unlock-key-file",
        metavar="FILE",
        help="key file of the image's unlocked LUKS volumes (else LIFERAFT_LUKS_PASSPHRASE, "
        "the credentials file, or asked)",
    )
    _trust_key_argument(p)
    p.add_argument(
        "--grow-lv",
        metavar="VG/LV",
        help="with --grow, when the last partition is an LVM PV: the logical volume "
        "that takes the new space (default: the one holding /, else the last)",
    )
    p.add_argument(
        "--shrink",
        action="append",
        default=[],
        metavar="PART",
        help="on a smaller disk, a partition (N, or diskD/pN) that may shrink after the "
        "last one (its files are copied onto a new filesystem; NTFS is shrunk by "
        "ntfsresize in a scratch copy, see --scratch); repeatable",
    )
    p.add_argument(
        "--scratch",
        metavar="DIR",
        help="folder for the scratch copy of an NTFS that shrinks, on a disk that is not "
        "a target (it takes about the partition's used size; default: TMPDIR, else /tmp)",
    )

    p = _command(
        sub, cmd_serve, "serve a local repository over HTTP: read-only, or append-only for backups"
    )
    p.add_argument("--repo", required=True, help="repository folder on this machine")
    _switches(
        p,
        append_only="accept captures (PUT of new files); never replace or delete a file: prune "
        "here, on the folder itself",
        quiet="no line per request on stderr (client, request, range, status, bytes, time)",
    )
    p.add_argument("--user", help="require HTTP basic auth as this user")
    p.add_argument("--password-file", metavar="FILE", help="the --user's password (first line)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    p.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )

    p = _command(
        sub,
        cmd_mount,
        "mount an image read-only (FUSE): each partition's files and raw image",
        description="Mount an image read-only on an empty folder: DIR/diskD/pN/pN.img is "
        "the partition, DIR/diskD/pN/files/ its files (ext2/3/4, XFS, Btrfs, and vfat, "
        "NTFS, exFAT where their drivers are installed). Data is fetched chunk by chunk "
        "as it is read. Runs in the foreground until 'liferaft umount DIR', Ctrl-C or "
        "SIGTERM; run it in the background with '&' or another terminal.",
    )
    _add_image_args(p, cache=True)
    p.add_argument("mountpoint", metavar="DIR", help="an empty folder")

    p = _command(sub, cmd_umount, "end an image mount made by 'liferaft mount'")
    p.add_argument("mountpoint", metavar="DIR")

    p = _command(
        sub, cmd_extract, "copy files out of an image, with owners, modes, times, xattrs and ACLs"
    )
    _add_image_args(p, cache=True)
    p.add_argument(
        "--partition",
        metavar="N",
        help="partition number, or diskD/pN (default: the image's only partition with files)",
    )
    p.add_argument("--to", required=True, metavar="DIR", help="folder to copy into (created)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="paths inside the partition")

    p = _command(sub, cmd_net, "show the network; set up DHCP or a static address")
    p.add_argument("--json", action="store_true")
    p.set_defaults(net_command=None)
    net = p.add_subparsers(dest="net_command", metavar="ACTION")
    q = net.add_parser("dhcp", help="get an address by DHCP on an interface")
    q.add_argument("iface", metavar="IFACE")
    q.add_argument("--timeout", type=float, default=20.0, help="seconds to wait (default 20)")
    q.add_argument("--json", action="store_true")
    q = net.add_parser("static", help="give an interface a fixed address")
    q.add_argument("iface", metavar="IFACE")
    q.add_argument("address", metavar="ADDR/PREFIX", help="e.g. 192.168.1.20/24")
    q.add_argument("--gateway", metavar="GW", help="default route, on the same subnet")
    q.add_argument("--dns", action="append", metavar="IP", help="name server (repeatable)")
    q.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    q.add_argument("--json", action="store_true")

    p = _command(sub, cmd_tui, "the terminal user interface")
    p.add_argument("--profile", help="profile YAML (default: the rescue stick's)")

    p = _command(sub, cmd_unattended, "run the action given on the kernel command line")
    p.add_argument("--cmdline", help="use this text instead of /proc/cmdline")
    return parser


def _sign_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sign-key",
        metavar="FILE",
        help="sign the image with this Ed25519 private key (PEM or OpenSSH); restore and "
        "verify check it with --trust-key",
    )


def _trust_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-key",
        action="append",
        metavar="FILE.pub",
        help="accept only images signed by this Ed25519 public key (repeatable; default: "
        "the rescue stick's profile's signing.trusted_keys)",
    )


def _engine(args: argparse.Namespace) -> Engine:
    """Secrets from the environment and the credentials file, else typed at
    the terminal when asked (the TUI puts its own dialog in the prompt's place).
    Images must be signed by --trust-key, else by the keys the rescue stick's
    profile names (none: signatures are not checked)."""
    paths = getattr(args, "trust_key", None)
    trusted = Engine.load_trusted_keys(paths) if paths else installed_trusted_keys()
    return Engine(credentials=CredentialChain.standard(prompt=TerminalPrompt()), trusted=trusted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.log:
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )
    if args.log:
        handlers[1].setLevel(logging.DEBUG)
        logging.getLogger().setLevel(logging.DEBUG)
        handlers[0].setLevel(logging.DEBUG if args.debug else logging.WARNING)
    try:
        return int(args.func(_engine(args), args))
    except LiferaftError as exc:
        if args.debug:
            raise
        return exc.report("liferaft")
    except KeyboardInterrupt:
        print("\nliferaft: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `liferaft disks | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports SIGPIPE
    except Exception as exc:  # a bug: one line for the user, the traceback in the log
        if args.debug:
            raise
        log.debug("internal error", exc_info=True)
        print(
            f"liferaft: error: internal error: {type(exc).__name__}: {exc} (run it again "
            "with --debug and report the traceback)",
            file=sys.stderr,
        )
        return 70  # EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
