"""The two live layers: the base root (Debian, kernel, live-boot, engine tools)
squashed into ``00-base.squashfs``, and the app layer (the rescue app's venv,
overlay/ rendered with the profile, system settings, baked credentials) in
``10-app.squashfs``, which live-boot stacks on top. Each is cached by key
(builder/cache.py): changing only the app or overlay rebuilds the second.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from builder.cache import (
    app_key,
    atomic_path,
    base_key,
    digest,
    file_lock,
    link_or_copy,
    python_requirements,
    remove,
)
from builder.commands import clean_env, isolated, run_logged
from builder.context import (
    BASE_HOOK,
    DPKG_EXCLUDES,
    INITRAMFS_HOOK,
    READY_MARKER,
    BuildContext,
    Layers,
)
from builder.log import complete_step, say
from rescue_app.errors import CommandError, LiferaftError
from rescue_app.profile import Profile, ProfileError


def _comp_args(profile: Profile) -> list[str]:
    algorithm = profile.compression.algorithm
    level = profile.compression.level
    if algorithm == "gzip":
        return ["-comp", "gzip", "-Xcompression-level", str(max(1, min(level, 9)))]
    if algorithm == "xz":
        return ["-comp", "xz"]
    return ["-comp", "zstd", "-Xcompression-level", str(max(1, min(level, 22)))]


def bootstrap_base(ctx: BuildContext) -> Path:
    """Debian root with kernel, live-boot and engine tools; squashed, cached by key."""
    key = base_key(ctx)
    out = ctx.cache_dir / "base" / key
    if (out / "00-base.squashfs").exists():
        say(f"base root {key} is cached")
        return out
    ctx.apt_cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        root = tmp / "root"
        argv = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--include=" + ",".join(ctx.packages),
            *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
            # Keep downloaded .debs for the next cold build (mmdebstrap's
            # documented package-cache recipe).
            "--skip=download/empty",
            "--skip=essential/unlink",
            '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
            # Before the kernel is installed, so its initrd is made with it.
            f"--setup-hook=install -D -m 755 {INITRAMFS_HOOK} "
            '"$1"/etc/initramfs-tools/hooks/liferaft-trim',
            f"--setup-hook=sync-in {ctx.apt_cache} /var/cache/apt/archives/",
            f"--customize-hook=sync-out /var/cache/apt/archives {ctx.apt_cache}",
            f'--customize-hook=sh {BASE_HOOK} "$1"',
            ctx.profile.suite,
            str(root),
            ctx.profile.mirror,
        ]
        env = {"LIFERAFT_LOCALE": ctx.profile.locale}
        try:
            run_logged(ctx, isolated(argv), env=env, timeout=1800)
        except CommandError as exc:
            unknown = re.findall(r"Unable to locate package (\S+)", exc.stderr)
            if unknown:
                raise ProfileError(
                    f"{ctx.profile.source}: unknown Debian package "
                    f"{', '.join(sorted(set(unknown)))} in {ctx.profile.suite}",
                    hint="fix the name in `packages`",
                ) from exc
            raise
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        initrds = sorted((root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise LiferaftError("the base root has no kernel or initrd in /boot")
        shutil.copy2(kernels[-1], tmp / "vmlinuz")
        shutil.copy2(initrds[-1], tmp / "initrd.img")
        run_logged(
            ctx,
            ["mksquashfs", str(root), str(tmp / "00-base.squashfs"), "-noappend", "-quiet",
             *_comp_args(ctx.profile), "-e", "boot"],
            timeout=1800,
        )  # fmt: skip
        (tmp / "packages.txt").write_text("\n".join(ctx.packages) + "\n")
    # Keep only the newest few base roots.
    bases = sorted((ctx.cache_dir / "base").iterdir(), key=lambda p: p.stat().st_mtime)
    for old in bases[:-3]:
        remove(old)
    return out


def fetch_wheels(ctx: BuildContext) -> Path:
    """The app's Python dependencies as wheels, downloaded on the host once."""
    reqs = python_requirements(ctx.repo)
    wheels = ctx.cache_dir / "wheels" / digest(reqs)
    # `make deb` fetches them without the cache's build lock (it makes no
    # layer): a second fetch waits for the first, then finds them complete.
    with file_lock(ctx.cache_dir / "wheels" / ".lock", "another build fetching the wheels"):
        if not (wheels / ".complete").exists():
            wheels.mkdir(parents=True, exist_ok=True)
            # Same Debian 12 Python 3.11 / x86_64 as the image, so host wheels fit.
            run_logged(
                ctx,
                [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                 "-d", str(wheels), *reqs],
                timeout=900,
            )  # fmt: skip
            (wheels / ".complete").touch()
    return wheels


def build_app_wheel(ctx: BuildContext, out: Path) -> None:
    """A wheel of this repository (the liferaft package), without dependencies."""
    src = ctx.build_dir / "app-src"
    remove(src)
    src.mkdir(parents=True)
    shutil.copytree(ctx.repo / "rescue_app", src / "rescue_app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    shutil.copy2(ctx.repo / "pyproject.toml", src / "pyproject.toml")
    readme = ctx.repo / "README.md"
    if readme.exists():
        shutil.copy2(readme, src / "README.md")
    else:
        (src / "README.md").write_text("liferaft\n")
    run_logged(
        ctx,
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(out), str(src)],
        timeout=600,
    )  # fmt: skip
    remove(src)


def install_app(ctx: BuildContext, base: Path, app_root: Path) -> None:
    """A venv at /opt/liferaft made by the image's python3, filled offline."""
    wheels = fetch_wheels(ctx)
    local = ctx.build_dir / "wheels"
    remove(local)
    local.mkdir(parents=True)
    for w in wheels.glob("*.whl"):
        link_or_copy(w, local / w.name)
    build_app_wheel(ctx, local)
    venv = app_root / "opt" / "liferaft"
    venv.mkdir(parents=True)
    # The venv is built in place inside the base root (so its python is the
    # image's) but written to the app layer through a bind mount; the mounts
    # live in a private namespace and vanish with it.
    script = (
        "set -eu\n"
        'mount --bind "$1" "$2/opt/liferaft"\n'
        'mount --bind "$3" "$2/mnt"\n'
        'mount --rbind /dev "$2/dev"\n'
        'mount -t proc proc "$2/proc"\n'
        'chroot "$2" /usr/bin/python3 -m venv --system-site-packages /opt/liferaft\n'
        'chroot "$2" /opt/liferaft/bin/python -m pip install -q --no-cache-dir'
        " --no-index --find-links /mnt liferaft\n"
    )
    run_logged(
        ctx,
        isolated(["sh", "-c", script, "sh", str(venv), str(base / "root"), str(local)]),
        env={**clean_env(), "HOME": "/root"},
        timeout=900,
    )
    remove(local)
    bindir = app_root / "usr" / "local" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "liferaft").symlink_to("/opt/liferaft/bin/liferaft")


def render_overlay(ctx: BuildContext, app_root: Path) -> None:
    """Copy overlay/ into the app layer; ``*.j2`` files are rendered with the profile."""
    import jinja2

    src = ctx.repo / "overlay"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(src)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    variables = {
        "profile": ctx.profile,
        "profile_yaml": ctx.profile.dump(),
        "kernel_cmdline": ctx.kernel_cmdline,
        "ready_marker": READY_MARKER,
    }
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.name in (".gitkeep", "README.md") and path.parent == src:
            continue
        if path.is_dir() and not path.is_symlink():
            (app_root / rel).mkdir(parents=True, exist_ok=True)
            continue
        dest = app_root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".j2":
            dest = dest.with_suffix("")
            text = env.get_template(rel.as_posix()).render(**variables)
            if not text.strip():
                continue  # rendered to nothing: no file (20-wired.network, network.mode none)
            dest.write_text(text)
            shutil.copymode(path, dest)
        else:
            shutil.copy2(path, dest, follow_symlinks=False)


def configure_system(ctx: BuildContext, app_root: Path) -> None:
    """Settings that are links rather than files: time zone and enabled units."""
    p = ctx.profile
    etc = app_root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    remove(etc / "localtime")
    (etc / "localtime").symlink_to(f"/usr/share/zoneinfo/{p.timezone}")
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    if p.unattended.action != "none":
        (etc / "liferaft").mkdir(exist_ok=True)
        (etc / "liferaft" / "unattended").write_text(p.unattended.action + "\n")
    # liferaft-guest runs only with liferaft.guest=1 on the kernel command line
    # (its ConditionKernelCommandLine): the test runner's hook, inert otherwise.
    units = ["liferaft-unattended.service", "liferaft-guest.service"]
    if p.network.mode != "none":
        units += ["systemd-networkd.service", "systemd-resolved.service"]
    if p.ssh.enabled:
        units.append("ssh.service")
    for unit in units:
        target = (
            f"/etc/systemd/system/{unit}" if unit.startswith("liferaft")
            else f"/lib/systemd/system/{unit}"
        )  # fmt: skip
        remove(wants / unit)
        (wants / unit).symlink_to(target)
    if p.ssh.authorized_keys:
        ssh = app_root / "root" / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = ssh / "authorized_keys"
        keys.write_text("\n".join(p.ssh.authorized_keys) + "\n")
        keys.chmod(0o600)


def private_if_secrets(ctx: BuildContext, path: Path) -> None:
    """An image holding the profile's credentials is readable by root only."""
    if ctx.profile.credentials:
        path.chmod(0o600)


def bake_credentials(ctx: BuildContext, app_root: Path) -> None:
    """The profile's secrets as /etc/liferaft/credentials.yaml, mode 0600 from
    its creation (root: the layer is squashed with -all-root). Written here,
    not rendered from overlay/, so they pass through no template and no log."""
    text = ctx.profile.credentials_file_text()
    if text is None:
        return
    path = app_root / "etc" / "liferaft" / "credentials.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    remove(path)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)
    say(f"{len(ctx.profile.credentials)} credentials entries -> /etc/liferaft/credentials.yaml")


def build_app_layer(ctx: BuildContext, base: Path) -> Path:
    """The second squashfs: app venv, overlay and system config; cached by key."""
    key = app_key(ctx, base.name)
    out = ctx.cache_dir / "app" / key
    if (out / "10-app.squashfs").exists():
        say(f"app layer {key} is cached")
        return out
    app_root = ctx.build_dir / "app-root"
    remove(app_root)
    app_root.mkdir(parents=True)
    try:
        with complete_step("Installing the rescue app"):
            install_app(ctx, base, app_root)
        with complete_step("Rendering overlay/"):
            render_overlay(ctx, app_root)
        with complete_step("Configuring autologin, network and units"):
            configure_system(ctx, app_root)
            bake_credentials(ctx, app_root)
        with complete_step("Squashing the app layer"), atomic_path(out) as tmp:
            tmp.mkdir(parents=True)
            run_logged(
                ctx,
                ["mksquashfs", str(app_root), str(tmp / "10-app.squashfs"), "-noappend",
                 "-quiet", "-all-root", *_comp_args(ctx.profile)],
                timeout=900,
            )  # fmt: skip
            private_if_secrets(ctx, tmp / "10-app.squashfs")
    finally:
        remove(app_root)
    apps = sorted((ctx.cache_dir / "app").iterdir(), key=lambda p: p.stat().st_mtime)
    for old in apps[:-5]:
        remove(old)
    return out


def build_layers(ctx: BuildContext) -> Layers:
    with complete_step("Bootstrapping the base root (mmdebstrap)"):
        base = bootstrap_base(ctx)
    with complete_step("Building the app layer"):
        app = build_app_layer(ctx, base)
    return Layers(base_dir=base, app_dir=app, key=digest([base.name, app.name]))
