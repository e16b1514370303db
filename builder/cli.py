"""`liferaft-build`: iso, netboot, profiles, show.

Errors print as one line (what happened, what to do); --debug shows tracebacks.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from builder import build, deb
from builder.context import REPO, BuildContext
from builder.log import say
from builder.profile import PROFILE_DIR, list_profiles, load_profile
from rescue_app.errors import LiferaftError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liferaft-build", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--profiles-dir", type=Path, default=PROFILE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="default", help="name of profiles/NAME.yaml")

    def with_dirs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cache-dir", type=Path, default=REPO / "cache")
        p.add_argument("--build-dir", type=Path, default=REPO / "build")
        p.add_argument("--output-dir", type=Path, default=REPO / "dist")

    iso = sub.add_parser("iso", help="build dist/liferaft-PROFILE.iso")
    with_profile(iso)
    with_dirs(iso)
    net = sub.add_parser("netboot", help="build dist/netboot-PROFILE/")
    with_profile(net)
    with_dirs(net)
    net.add_argument("--base-url", help="URL the iPXE script fetches the files from")
    every = sub.add_parser("build", help="build every output the profile lists (outputs:)")
    with_profile(every)
    with_dirs(every)
    package = sub.add_parser(
        "deb", help="build dist/liferaft_VERSION_all.deb (liferaft for a Debian 12 server)"
    )
    with_profile(package)
    with_dirs(package)
    sub.add_parser("profiles", help="list the profiles")
    show = sub.add_parser("show", help="print a profile merged with what it extends")
    with_profile(show)
    return parser


def _context(args: argparse.Namespace) -> BuildContext:
    profile = load_profile(args.profile, args.profiles_dir)
    return BuildContext(
        profile=profile,
        repo=REPO,
        cache_dir=args.cache_dir.resolve(),
        build_dir=(args.build_dir / profile.name).resolve(),
        output_dir=args.output_dir.resolve(),
    )


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM/SIGHUP into an exception so every `finally` runs: temporary
    # outputs are removed and running children (in their namespaces) killed.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        if args.command == "profiles":
            for name in list_profiles(args.profiles_dir):
                p = load_profile(name, args.profiles_dir)
                print(f"{name:20} {p.title}")
        elif args.command == "show":
            print(load_profile(args.profile, args.profiles_dir).dump(), end="")
        elif args.command == "iso":
            build.build_iso(_context(args))
        elif args.command == "netboot":
            build.build_netboot(_context(args), base_url=args.base_url)
        elif args.command == "deb":
            deb.build_deb(_context(args))
        elif args.command == "build":
            ctx = _context(args)
            if "iso" in ctx.profile.outputs:
                build.build_iso(ctx)
            if "netboot" in ctx.profile.outputs:
                build.build_netboot(ctx)
    except LiferaftError as exc:
        if args.debug:
            raise
        return exc.report("liferaft-build")
    except KeyboardInterrupt:
        say("interrupted; nothing was left behind")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
