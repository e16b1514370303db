"""The build pipeline: one frozen BuildContext, flat named steps.

    build_iso(context) reads top to bottom:
        check_host → bootstrap_base → install_app → render_overlay →
        configure_system → squash_app → stage_boot_files → make_efi_image →
        make_iso

Layers: the base root (Debian, kernel, live-boot, engine tools) is cached
under a key made of everything that goes into it and squashed once into
``00-base.squashfs``; the app and overlay go into ``10-app.squashfs``, which
live-boot stacks on top (it sorts /live/*.squashfs and puts later ones
above). Changing only the app or overlay rebuilds the second layer only.

Failure leaves nothing behind: commands that mount run inside their own
mount and PID namespace (``unshare --kill-child``), so their mounts and
processes die with them; outputs are written to a temporary name and renamed
into place last.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from builder import host
from builder.log import complete_step, say
from builder.profile import Profile, ProfileError
from rescue_app.errors import CommandError, LiferaftError
from rescue_app.run import run

REPO = Path(__file__).resolve().parent.parent
BUILDER_DIR = Path(__file__).resolve().parent
BASE_HOOK = BUILDER_DIR / "base-customize.sh"
INITRAMFS_HOOK = BUILDER_DIR / "initramfs-trim.sh"

# Bump to invalidate every cached base root.
BASE_FORMAT = 1

# What every image has: live-boot and its kernel, Python for the app, and the
# tools the engine runs. Profiles add to this with `packages`.
BASE_PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "live-boot",
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "systemd-resolved",
    "netbase",
    "ca-certificates",
    "procps",
    "less",
    "python3",
    "python3-venv",
    "python3-parted",
    "partclone",
    "parted",
    "fdisk",
    "gdisk",
    "e2fsprogs",
    "xfsprogs",
    "btrfs-progs",
    "dosfstools",
    "ntfs-3g",
    "exfatprogs",
    "zstd",
    "efibootmgr",
    "util-linux",
    "mount",
    # network repositories: smb:// and nfs:// are mounted with the kernel's clients
    "cifs-utils",
    "nfs-common",
)

# Trimmed from the image; documentation and translations are most of the
# weight a rescue system does not need.
DPKG_EXCLUDES: tuple[str, ...] = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)

# Netboot and ISO share these kernel arguments; the profile appends its own.
LIVE_CMDLINE = "boot=live console=tty0 console=ttyS0,115200n8"

# Kept in sync with overlay/usr/local/sbin/liferaft-start: the boot tests wait for it.
READY_MARKER = "liferaft rescue environment ready"

# The image's Python dependencies come from pyproject.toml's [project] table.
APP_SOURCES = ("rescue_app", "pyproject.toml")


@dataclass(frozen=True)
class BuildContext:
    profile: Profile
    repo: Path  # the liferaft source tree
    cache_dir: Path  # kept between builds: apt archives, wheels, base roots, layers
    build_dir: Path  # scratch for this profile; may be deleted any time
    output_dir: Path  # dist/

    @property
    def apt_cache(self) -> Path:
        return self.cache_dir / "apt-archives"

    @property
    def iso_path(self) -> Path:
        return self.output_dir / f"liferaft-{self.profile.name}.iso"

    @property
    def netboot_dir(self) -> Path:
        return self.output_dir / f"netboot-{self.profile.name}"

    @property
    def packages(self) -> tuple[str, ...]:
        extra = list(self.profile.packages)
        if self.profile.ssh.enabled:
            extra.append("openssh-server")
        if self.profile.locale != "C.UTF-8":
            extra.append("locales")
        if self.profile.keyboard != "us":
            extra.append("console-setup")
        return tuple(dict.fromkeys((*BASE_PACKAGES, *extra)))

    @property
    def kernel_cmdline(self) -> str:
        return f"{LIVE_CMDLINE} {self.profile.kernel_cmdline}".strip()


@dataclass(frozen=True)
class Layers:
    """What the squash steps produced: where the live files are and their keys."""

    base_dir: Path  # holds 00-base.squashfs, vmlinuz, initrd.img
    app_dir: Path  # holds 10-app.squashfs
    key: str  # covers both layers

    @property
    def live_files(self) -> dict[str, Path]:
        return {
            "vmlinuz": self.base_dir / "vmlinuz",
            "initrd.img": self.base_dir / "initrd.img",
            "00-base.squashfs": self.base_dir / "00-base.squashfs",
            "10-app.squashfs": self.app_dir / "10-app.squashfs",
        }


# --------------------------------------------------------------------------
# Helpers


def _digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:20]


def _tree_digest(paths: Iterable[Path], root: Path) -> list[str | bytes]:
    """Names, modes and contents of every file under ``paths``, in a stable order."""
    parts: list[str | bytes] = []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*"))
        for path in files:
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            st = path.lstat()
            parts.append(f"{path.relative_to(root)}:{stat.S_IMODE(st.st_mode):o}")
            if path.is_symlink():
                parts.append(os.readlink(path))
            elif path.is_file():
                parts.append(path.read_bytes())
    return parts


def _comp_args(profile: Profile) -> list[str]:
    algorithm = profile.compression.algorithm
    level = profile.compression.level
    if algorithm == "gzip":
        return ["-comp", "gzip", "-Xcompression-level", str(max(1, min(level, 9)))]
    if algorithm == "xz":
        return ["-comp", "xz"]
    return ["-comp", "zstd", "-Xcompression-level", str(max(1, min(level, 22)))]


def _isolated(argv: list[str]) -> list[str]:
    """Run ``argv`` in its own mount and PID namespace.

    Mounts made inside vanish when the last process of the namespace ends, and
    --kill-child kills the whole namespace if we are killed: a failed or
    interrupted build leaves no mounts and no processes.
    """
    return [
        "unshare", "--mount", "--propagation", "private",
        "--pid", "--fork", "--kill-child", "--", *argv,
    ]  # fmt: skip


def _clean_env() -> dict[str, str]:
    # The host's pip settings (find-links, require-virtualenv) must not leak
    # into the image's offline install.
    return {k: "" for k in os.environ if k.startswith("PIP_")}


def _run_logged(ctx: BuildContext, argv: list[str], **kwargs: object) -> str:
    """Run a build command; on failure keep its full output in build.log."""
    log_path = ctx.build_dir / "build.log"
    try:
        proc = run(argv, **kwargs)  # type: ignore[arg-type]
    except CommandError as exc:
        ctx.build_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{exc.stderr}\n")
        raise CommandError(str(exc), hint=f"full output in {log_path}", stderr=exc.stderr) from exc
    return proc.stdout


@contextlib.contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path next to ``final``, renamed onto it only on success."""
    tmp = final.with_name(f".{final.name}.tmp")
    _remove(tmp)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old")
            _remove(old)
            final.rename(old)
            tmp.rename(final)
            _remove(old)
        else:
            tmp.rename(final)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def build_lock(ctx: BuildContext) -> Iterator[None]:
    """One build at a time per cache: two would fight over the same layers."""
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(ctx.cache_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another build using the same cache…")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------
# Keys


def base_key(ctx: BuildContext) -> str:
    p = ctx.profile
    return _digest(
        [
            f"format={BASE_FORMAT}",
            f"suite={p.suite}",
            f"mirror={p.mirror}",
            f"locale={p.locale}",
            "packages=" + ",".join(sorted(ctx.packages)),
            "dpkg=" + ",".join(DPKG_EXCLUDES),
            f"compression={p.compression}",
            BASE_HOOK.read_bytes(),
            INITRAMFS_HOOK.read_bytes(),
        ]
    )


def python_requirements(repo: Path) -> list[str]:
    import tomllib

    with open(repo / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def app_key(ctx: BuildContext, base: str) -> str:
    sources = [ctx.repo / s for s in APP_SOURCES] + [ctx.repo / "overlay"]
    builder_files = sorted(BUILDER_DIR.glob("*.py")) + [BASE_HOOK, INITRAMFS_HOOK]
    return _digest(
        [
            f"base={base}",
            ctx.profile.digest_data(),
            *_tree_digest(sources, ctx.repo),
            *_tree_digest(builder_files, ctx.repo),
        ]
    )


# --------------------------------------------------------------------------
# Steps


def check_host(ctx: BuildContext) -> None:
    host.check_root()
    host.check_tools()


def bootstrap_base(ctx: BuildContext) -> Path:
    """Debian root with kernel, live-boot and engine tools; squashed, cached by key."""
    key = base_key(ctx)
    out = ctx.cache_dir / "base" / key
    if (out / "00-base.squashfs").exists():
        say(f"base root {key} is cached")
        return out
    ctx.apt_cache.mkdir(parents=True, exist_ok=True)
    with _atomic_path(out) as tmp:
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
            f'--setup-hook=install -D -m 755 {INITRAMFS_HOOK} '
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
            _run_logged(ctx, _isolated(argv), env=env, timeout=1800)
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
        _run_logged(
            ctx,
            ["mksquashfs", str(root), str(tmp / "00-base.squashfs"), "-noappend", "-quiet",
             *_comp_args(ctx.profile), "-e", "boot"],
            timeout=1800,
        )  # fmt: skip
        (tmp / "packages.txt").write_text("\n".join(ctx.packages) + "\n")
    # Keep only the newest few base roots.
    bases = sorted((ctx.cache_dir / "base").iterdir(), key=lambda p: p.stat().st_mtime)
    for old in bases[:-3]:
        _remove(old)
    return out


def fetch_wheels(ctx: BuildContext) -> Path:
    """The app's Python dependencies as wheels, downloaded on the host once."""
    reqs = python_requirements(ctx.repo)
    wheels = ctx.cache_dir / "wheels" / _digest(reqs)
    if not (wheels / ".complete").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        # Same Debian 12 Python 3.11 / x86_64 as the image, so host wheels fit.
        _run_logged(
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
    _remove(src)
    src.mkdir(parents=True)
    shutil.copytree(ctx.repo / "rescue_app", src / "rescue_app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    shutil.copy2(ctx.repo / "pyproject.toml", src / "pyproject.toml")
    readme = ctx.repo / "README.md"
    if readme.exists():
        shutil.copy2(readme, src / "README.md")
    else:
        (src / "README.md").write_text("liferaft\n")
    _run_logged(
        ctx,
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(out), str(src)],
        timeout=600,
    )  # fmt: skip
    _remove(src)


def install_app(ctx: BuildContext, base: Path, app_root: Path) -> None:
    """A venv at /opt/liferaft made by the image's python3, filled offline."""
    wheels = fetch_wheels(ctx)
    local = ctx.build_dir / "wheels"
    _remove(local)
    local.mkdir(parents=True)
    for w in wheels.glob("*.whl"):
        _link_or_copy(w, local / w.name)
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
    _run_logged(
        ctx,
        _isolated(["sh", "-c", script, "sh", str(venv), str(base / "root"), str(local)]),
        env={**_clean_env(), "HOME": "/root"},
        timeout=900,
    )
    _remove(local)
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
    _remove(etc / "localtime")
    (etc / "localtime").symlink_to(f"/usr/share/zoneinfo/{p.timezone}")
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    if p.unattended.action != "none":
        (etc / "liferaft").mkdir(exist_ok=True)
        (etc / "liferaft" / "unattended").write_text(p.unattended.action + "\n")
    units = ["liferaft-unattended.service"]
    if p.network.mode != "none":
        units += ["systemd-networkd.service", "systemd-resolved.service"]
    if p.ssh.enabled:
        units.append("ssh.service")
    for unit in units:
        target = (
            f"/etc/systemd/system/{unit}" if unit.startswith("liferaft")
            else f"/lib/systemd/system/{unit}"
        )  # fmt: skip
        _remove(wants / unit)
        (wants / unit).symlink_to(target)
    if p.ssh.authorized_keys:
        ssh = app_root / "root" / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = ssh / "authorized_keys"
        keys.write_text("\n".join(p.ssh.authorized_keys) + "\n")
        keys.chmod(0o600)


def _private_if_secrets(ctx: BuildContext, path: Path) -> None:
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
    _remove(path)
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
    _remove(app_root)
    app_root.mkdir(parents=True)
    try:
        with complete_step("Installing the rescue app"):
            install_app(ctx, base, app_root)
        with complete_step("Rendering overlay/"):
            render_overlay(ctx, app_root)
        with complete_step("Configuring autologin, network and units"):
            configure_system(ctx, app_root)
            bake_credentials(ctx, app_root)
        with complete_step("Squashing the app layer"), _atomic_path(out) as tmp:
            tmp.mkdir(parents=True)
            _run_logged(
                ctx,
                ["mksquashfs", str(app_root), str(tmp / "10-app.squashfs"), "-noappend",
                 "-quiet", "-all-root", *_comp_args(ctx.profile)],
                timeout=900,
            )  # fmt: skip
            _private_if_secrets(ctx, tmp / "10-app.squashfs")
    finally:
        _remove(app_root)
    apps = sorted((ctx.cache_dir / "app").iterdir(), key=lambda p: p.stat().st_mtime)
    for old in apps[:-5]:
        _remove(old)
    return out


def build_layers(ctx: BuildContext) -> Layers:
    with complete_step("Bootstrapping the base root (mmdebstrap)"):
        base = bootstrap_base(ctx)
    with complete_step("Building the app layer"):
        app = build_app_layer(ctx, base)
    return Layers(base_dir=base, app_dir=app, key=_digest([base.name, app.name]))


# ---- boot loaders and the ISO


ISOLINUX_CFG = """\
SERIAL 0 115200
DEFAULT liferaft
PROMPT 0
TIMEOUT {timeout}
SAY {title}
LABEL liferaft
  MENU LABEL {title}
  KERNEL /live/vmlinuz
  APPEND initrd=/live/initrd.img {cmdline}
"""

GRUB_CFG = """\
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout={timeout}
set default=0
menuentry "{title}" {{
    linux /live/vmlinuz {cmdline}
    initrd /live/initrd.img
}}
menuentry "{title} (failsafe: no quiet, nomodeset)" {{
    linux /live/vmlinuz {failsafe}
    initrd /live/initrd.img
}}
"""

# Inside efi.img: Debian's signed GRUB finds the ISO by /.disk/info itself;
# this stub covers a GRUB that starts from the ESP without doing so.
GRUB_STUB = """\
search --no-floppy --set=root --file /.disk/info
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
"""

EFI_FILES = {
    "EFI/boot/bootx64.efi": "/usr/lib/shim/shimx64.efi.signed",
    "EFI/boot/grubx64.efi": "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
    "EFI/boot/mmx64.efi": "/usr/lib/shim/mmx64.efi.signed",
}


def stage_boot_files(ctx: BuildContext, layers: Layers, staging: Path) -> None:
    p = ctx.profile
    live = staging / "live"
    live.mkdir(parents=True)
    for name, src in layers.live_files.items():
        _link_or_copy(src, live / name)
    iso = staging / "isolinux"
    iso.mkdir()
    shutil.copy2("/usr/lib/ISOLINUX/isolinux.bin", iso / "isolinux.bin")
    shutil.copy2("/usr/lib/syslinux/modules/bios/ldlinux.c32", iso / "ldlinux.c32")
    (iso / "isolinux.cfg").write_text(
        ISOLINUX_CFG.format(timeout=10, title=p.title, cmdline=ctx.kernel_cmdline)
    )
    grub = staging / "boot" / "grub"
    grub.mkdir(parents=True)
    failsafe = f"{LIVE_CMDLINE} nomodeset " + p.kernel_cmdline.replace("quiet", "").strip()
    (grub / "grub.cfg").write_text(
        GRUB_CFG.format(timeout=1, title=p.title, cmdline=ctx.kernel_cmdline,
                        failsafe=failsafe.strip())
    )  # fmt: skip
    disk = staging / ".disk"
    disk.mkdir()
    (disk / "info").write_text(f"liferaft {p.name} {p.suite} amd64\n")
    for rel, efi_binary in EFI_FILES.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(efi_binary, staging / rel)


def make_efi_image(ctx: BuildContext, staging: Path) -> None:
    """The El Torito EFI image (and, in the hybrid, the ESP): shim, GRUB, stub config."""
    img = staging / "boot" / "grub" / "efi.img"
    run(["mkfs.msdos", "-C", "-n", "LIFERAFT", str(img), "10240"])
    stub = ctx.build_dir / "grub-stub.cfg"
    stub.write_text(GRUB_STUB)
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", str(img), "::/EFI", "::/EFI/boot", "::/boot", "::/boot/grub"], env=env)
    for rel, src in EFI_FILES.items():
        run(["mcopy", "-i", str(img), src, f"::/{rel}"], env=env)
    run(["mcopy", "-i", str(img), str(stub), "::/boot/grub/grub.cfg"], env=env)
    stub.unlink()


def make_iso(ctx: BuildContext, staging: Path, out: Path) -> None:
    _run_logged(
        ctx,
        [
            "xorriso", "-as", "mkisofs",
            "-iso-level", "3", "-full-iso9660-filenames", "-joliet", "-rational-rock",
            "-volid", ctx.profile.label,
            "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin",
            "-partition_offset", "16",
            "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
            "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
            "-eltorito-alt-boot",
            "-e", "boot/grub/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
            "-o", str(out),
            str(staging),
        ],
        timeout=900,
    )  # fmt: skip


def _up_to_date(stamp: Path, key: str, output: Path) -> bool:
    return output.exists() and stamp.exists() and stamp.read_text().strip() == key


def build_iso(ctx: BuildContext) -> Path:
    """`liferaft-build iso`: the hybrid BIOS/UEFI/Secure Boot ISO."""
    started = time.monotonic()
    with complete_step("Checking the build host"):
        check_host(ctx)
    with build_lock(ctx):
        layers = build_layers(ctx)
        iso_key = _digest([layers.key, ctx.kernel_cmdline, ctx.profile.digest_data(),
                           *_tree_digest(sorted(BUILDER_DIR.glob("*.py")), ctx.repo)])  # fmt: skip
        stamp = ctx.output_dir / f".liferaft-{ctx.profile.name}.iso.key"
        if _up_to_date(stamp, iso_key, ctx.iso_path):
            say(f"{ctx.iso_path} is up to date")
        else:
            staging = ctx.build_dir / "iso-staging"
            _remove(staging)
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            _remove(stamp)
            try:
                with complete_step("Staging boot loaders (isolinux, shim, GRUB)"):
                    stage_boot_files(ctx, layers, staging)
                    make_efi_image(ctx, staging)
                with complete_step("Writing the ISO (xorriso)"), _atomic_path(ctx.iso_path) as tmp:
                    make_iso(ctx, staging, tmp)
                    _private_if_secrets(ctx, tmp)
            finally:
                _remove(staging)
            stamp.write_text(iso_key + "\n")
    report_targets(ctx.iso_path, time.monotonic() - started)
    return ctx.iso_path


IPXE_SCRIPT = """\
#!ipxe
# liferaft netboot ({name}): serve this directory over HTTP and chain this script.
set base {base_url}
kernel ${{base}}vmlinuz initrd=initrd.img {cmdline} fetch=${{base}}root.iso
initrd ${{base}}initrd.img
boot
"""


def build_netboot(ctx: BuildContext, base_url: str | None = None) -> Path:
    """`liferaft-build netboot`: kernel, initrd, root image and an iPXE script.

    The root image is a small ISO holding /live/*.squashfs: live-boot's fetch=
    takes one file, and for an .iso it mounts it and stacks the layers inside.
    """
    started = time.monotonic()
    url = (
        base_url
        or ctx.profile.netboot_url
        or f"http://${{next-server}}/netboot-{ctx.profile.name}/"
    )
    if not url.endswith("/"):
        url += "/"
    with complete_step("Checking the build host"):
        check_host(ctx)
    with build_lock(ctx):
        layers = build_layers(ctx)
        key = _digest([layers.key, url, ctx.kernel_cmdline])
        stamp = ctx.output_dir / f".netboot-{ctx.profile.name}.key"
        if _up_to_date(stamp, key, ctx.netboot_dir):
            say(f"{ctx.netboot_dir} is up to date")
        else:
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            _remove(stamp)
            with complete_step("Writing the netboot files"), _atomic_path(ctx.netboot_dir) as tmp:
                tmp.mkdir()
                files = layers.live_files
                _link_or_copy(files["vmlinuz"], tmp / "vmlinuz")
                _link_or_copy(files["initrd.img"], tmp / "initrd.img")
                staging = ctx.build_dir / "netboot-staging"
                _remove(staging)
                (staging / "live").mkdir(parents=True)
                try:
                    for name in ("00-base.squashfs", "10-app.squashfs"):
                        _link_or_copy(files[name], staging / "live" / name)
                    _run_logged(
                        ctx,
                        ["xorriso", "-as", "mkisofs", "-iso-level", "3", "-volid",
                         ctx.profile.label, "-o", str(tmp / "root.iso"), str(staging)],
                        timeout=600,
                    )  # fmt: skip
                finally:
                    _remove(staging)
                (tmp / "boot.ipxe").write_text(
                    IPXE_SCRIPT.format(name=ctx.profile.name, base_url=url,
                                       cmdline=ctx.kernel_cmdline)
                )  # fmt: skip
            stamp.write_text(key + "\n")
    total = sum(f.stat().st_size for f in ctx.netboot_dir.iterdir())
    elapsed = time.monotonic() - started
    say(f"netboot files: {ctx.netboot_dir} ({total / 1e6:.0f} MB) in {elapsed:.0f} s")
    if ctx.profile.credentials:
        say("note: root.iso holds the profile's credentials; serve it only where the "
            "machines that netboot can reach it, or pass liferaft.credentials= instead")
    return ctx.netboot_dir


ISO_LIMIT_MB = 300
COLD_BUILD_LIMIT_S = 360


def report_targets(iso: Path, seconds: float) -> None:
    size_mb = iso.stat().st_size / 1e6
    size_ok = "ok" if size_mb <= ISO_LIMIT_MB else "OVER TARGET"
    say(f"ISO: {iso} {size_mb:.0f} MB (target ≤ {ISO_LIMIT_MB} MB: {size_ok})")
    say(f"build time: {seconds:.0f} s (target for a cold build ≤ {COLD_BUILD_LIMIT_S} s)")
