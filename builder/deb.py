"""`make deb`: dist/liferaft_<version>_all.deb, liferaft for a Debian 12 server.

    build_deb(context) reads top to bottom:
        stage_app → stage_vendor → stage_units → stage_docs → write_launcher →
        compile → write_control → dpkg-deb

What goes where (README "Install on a server"): the app in
/usr/lib/liferaft/rescue_app, the Python libraries Debian 12 lacks (or has
too old) as pure-Python wheels in /usr/lib/liferaft/vendor, /usr/bin/liferaft
puts both before Debian's dist-packages; every other library is a Depends on
Debian's python3 package. deps/deb-python.txt decides which, per
distribution of the app's resolved requirements; one it does not name stops
the build. The systemd templates (packaging/systemd) go to /lib/systemd/system.
Nothing is fetched at install time: apt brings the Depends, the rest is in
the package.
"""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from builder.cache import atomic_path, file_lock, remove
from builder.commands import clean_env, run_logged
from builder.context import BuildContext
from builder.layers import fetch_wheels
from builder.log import complete_step, say
from rescue_app import __version__
from rescue_app.errors import LiferaftError

PYTHON_DEPS = "deps/deb-python.txt"
UNITS_DIR = "packaging/systemd"
LIB = Path("usr/lib/liferaft")
VENDOR = LIB / "vendor"
UNIT_DEST = Path("lib/systemd/system")  # bookworm's packages still ship units here
DOC = Path("usr/share/doc/liferaft")
VENDOR_MARK = "vendor"
NOT_NEEDED = "-"

# Not among the resolved wheels (pyparted comes from Debian only) or not Python.
EXTRA_DEPENDS = (
    "python3 (>= 3.11)",
    "python3-parted",
    "libfuse3-3",  # mfusepy loads it (liferaft mount)
    "partclone",
    "fdisk",
    "parted",
    "util-linux",
    "mount",
    "e2fsprogs",
)
# Recommends: the timers need systemd; the rest capture and restore more kinds of volume.
RECOMMENDS = ("systemd", "lvm2", "thin-provisioning-tools", "xfsprogs", "btrfs-progs",
              "dosfstools", "mtools", "fuse3")  # fmt: skip
SUGGESTS = ("ntfs-3g", "exfatprogs", "cifs-utils", "nfs-common", "cryptsetup-bin", "mdadm")

LAUNCHER = f'''#!/usr/bin/python3 -I
"""liferaft from the Debian package: the app and the Python libraries Debian 12
lacks are in /{LIB}, ahead of Debian's python3 packages."""
import sys

sys.path[:0] = ["/{LIB}", "/{VENDOR}"]
from rescue_app.cli import main

sys.exit(main())
'''

# dpkg runs these; a machine without a running systemd (a chroot) skips the reload.
RELOAD_UNITS = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"""

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: liferaft

Files: *
License: GPL-3.0-or-later
 On Debian systems, the full text of the GNU General Public License version 3
 can be found in /usr/share/common-licenses/GPL-3.

Files: usr/lib/liferaft/vendor/*
License: various
 Python libraries as published on PyPI, each with its licence in its
 *.dist-info folder.
"""


class DebBuildError(LiferaftError):
    """The Debian package cannot be built from this tree."""


@dataclass(frozen=True)
class PythonDeps:
    """deps/deb-python.txt: per distribution, a Depends entry, vendor or not needed."""

    entries: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> PythonDeps:
        entries: dict[str, str] = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, how = line.partition(" ")
            if not how.strip():
                raise DebBuildError(
                    f"{path}:{number}: {name} says nothing about how Debian gets it",
                    hint="give a Debian package, 'vendor' or '-'",
                )
            if normalize(name) in entries:
                raise DebBuildError(
                    f"{path}:{number}: {name} is listed twice", hint="keep one line for it"
                )
            entries[normalize(name)] = how.strip()
        return cls(entries)

    def depends(self) -> list[str]:
        return [h for h in self.entries.values() if h not in (VENDOR_MARK, NOT_NEEDED)]

    def vendored(self, wheels: list[Path], source: str) -> list[Path]:
        """The wheels to ship; every wheel's distribution must be listed."""
        unknown = sorted({wheel_name(w) for w in wheels} - set(self.entries))
        if unknown:
            raise DebBuildError(
                f"{source} does not say how Debian 12 gets {', '.join(unknown)}",
                hint="add a line for each: a python3-* package, 'vendor' or '-'",
            )
        chosen = [w for w in wheels if self.entries[wheel_name(w)] == VENDOR_MARK]
        binary = [w.name for w in chosen if not w.name.endswith("-none-any.whl")]
        if binary:
            raise DebBuildError(
                f"cannot vendor {', '.join(binary)}: the package is Architecture: all",
                hint=f"use Debian's package for it in {source}",
            )
        return chosen


def normalize(name: str) -> str:
    """PEP 503: 'Markdown_It.py' -> 'markdown-it-py'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(wheel: Path) -> str:
    return normalize(wheel.name.split("-", 1)[0])


def project_version(repo: Path) -> str:
    with open(repo / "pyproject.toml", "rb") as f:
        version = str(tomllib.load(f)["project"]["version"])
    if version != __version__:
        raise DebBuildError(
            f"pyproject.toml says version {version}, rescue_app/__init__.py {__version__}",
            hint="make them the same",
        )
    return version


def deb_path(ctx: BuildContext) -> Path:
    return ctx.output_dir / f"liferaft_{project_version(ctx.repo)}_all.deb"


def stage_app(ctx: BuildContext, root: Path) -> None:
    shutil.copytree(ctx.repo / "rescue_app", root / LIB / "rescue_app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip


def stage_vendor(ctx: BuildContext, root: Path, deps: PythonDeps) -> None:
    wheels = sorted(fetch_wheels(ctx).glob("*.whl"))
    chosen = deps.vendored(wheels, PYTHON_DEPS)
    target = root / VENDOR
    run_logged(
        ctx,
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-compile", "--disable-pip-version-check", "--target", str(target),
         *map(str, chosen)],
        env={**clean_env(), "PIP_REQUIRE_VIRTUALENV": ""},
        timeout=600,
    )  # fmt: skip
    remove(target / "bin")  # console scripts with this host's paths in them
    say(f"vendored: {', '.join(wheel_name(w) for w in chosen)}")


def stage_units(ctx: BuildContext, root: Path) -> None:
    dest = root / UNIT_DEST
    dest.mkdir(parents=True)
    for unit in sorted((ctx.repo / UNITS_DIR).iterdir()):
        shutil.copyfile(unit, dest / unit.name)


def stage_docs(ctx: BuildContext, root: Path) -> None:
    doc = root / DOC
    doc.mkdir(parents=True)
    shutil.copyfile(ctx.repo / "README.md", doc / "README.md")
    for page in sorted((ctx.repo / "docs").glob("*.md")):
        shutil.copyfile(page, doc / page.name)
    (doc / "copyright").write_text(COPYRIGHT)


def write_launcher(root: Path) -> None:
    path = root / "usr" / "bin" / "liferaft"
    path.parent.mkdir(parents=True)
    path.write_text(LAUNCHER)
    path.chmod(0o755)


def compile_python(ctx: BuildContext, root: Path) -> None:
    """Byte-code made now by the same Python 3.11 as Debian 12's, owned by the
    package (a first run as root would otherwise leave files dpkg does not know)."""
    run_logged(
        ctx,
        ["/usr/bin/python3", "-m", "compileall", "-q", "-j0",
         "--invalidation-mode", "checked-hash", "-s", str(root), "-p", "/", str(root / LIB)],
        timeout=600,
    )  # fmt: skip


def write_control(root: Path, version: str, deps: PythonDeps) -> None:
    size_kib = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) // 1024
    depends = list(dict.fromkeys([*EXTRA_DEPENDS, *deps.depends()]))
    control = root / "DEBIAN" / "control"
    control.parent.mkdir()
    control.write_text(
        "Package: liferaft\n"
        f"Version: {version}\n"
        "Architecture: all\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Maintainer: liferaft developers <liferaft@localhost>\n"
        f"Installed-Size: {size_kib}\n"
        f"Depends: {', '.join(depends)}\n"
        f"Recommends: {', '.join(RECOMMENDS)}\n"
        f"Suggests: {', '.join(SUGGESTS)}\n"
        "Description: bare-metal backup and restore of Linux machines\n"
        " liferaft captures whole disks (partition tables, LVM, file systems by used\n"
        " blocks) into deduplicated repositories (a folder, SFTP, S3, SMB, NFS),\n"
        " restores them from its rescue stick, and backs a server up on a schedule\n"
        " (liferaft schedule: systemd timers liferaft-backup@NAME.timer).\n"
    )
    for script in ("postinst", "postrm"):
        path = root / "DEBIAN" / script
        path.write_text(RELOAD_UNITS)
        path.chmod(0o755)


def build_deb(ctx: BuildContext) -> Path:
    """`liferaft-build deb`: the package, built from this tree and the wheel cache."""
    version = project_version(ctx.repo)
    deps = PythonDeps.load(ctx.repo / PYTHON_DEPS)
    out = deb_path(ctx)
    root = ctx.build_dir / "deb-root"
    # A second `make deb` on the same folders waits: it would remove this
    # one's tree and write the same temporary package.
    with file_lock(ctx.build_dir / ".deb-lock", "another package build in the same folder"):
        _build_deb(ctx, deps, version, root, out)
    say(f"built {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


def _build_deb(ctx: BuildContext, deps: PythonDeps, version: str, root: Path, out: Path) -> None:
    remove(root)
    root.mkdir(parents=True)
    try:
        with complete_step("Staging the package tree"):
            stage_app(ctx, root)
            stage_vendor(ctx, root, deps)
            stage_units(ctx, root)
            stage_docs(ctx, root)
            write_launcher(root)
        with complete_step("Compiling the Python modules"):
            compile_python(ctx, root)
        write_control(root, version, deps)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        with complete_step(f"Packing {out.name}"), atomic_path(out) as tmp:
            run_logged(
                ctx,
                # zstd: 0.6 s where xz takes 30 (botocore's data); dpkg reads it since 1.21.18
                ["dpkg-deb", "--root-owner-group", "-Zzstd", "--build", str(root), str(tmp)],
                timeout=600,
            )
    finally:
        remove(root)
