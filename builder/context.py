"""What a build knows: the profile, the paths, and what goes into every image.

``BuildContext`` is the one frozen object every step takes; ``Layers`` is what
the layer steps hand to the ISO and netboot assembly. Nothing here runs a
command or touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rescue_app.profile import Profile

REPO = Path(__file__).resolve().parent.parent
BUILDER_DIR = Path(__file__).resolve().parent
BASE_HOOK = BUILDER_DIR / "base-customize.sh"
INITRAMFS_HOOK = BUILDER_DIR / "initramfs-trim.sh"

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
    # signed images (Ed25519) and encrypted repositories (AEAD)
    "python3-cryptography",
    # encrypted repositories: argon2id wraps the master key (engine/envelope.py)
    "python3-argon2",
    "partclone",
    "parted",
    "fdisk",
    "gdisk",
    "e2fsprogs",
    "xfsprogs",
    "btrfs-progs",
    "dosfstools",
    # a FAT (EFI system partition) captured file by file is laid back with mcopy
    "mtools",
    "ntfs-3g",
    "exfatprogs",
    # liferaft mount (browse an image's files): libfuse 3 and fusermount3
    "fuse3",
    "zstd",
    "efibootmgr",
    "util-linux",
    "mount",
    # network repositories: smb:// and nfs:// are mounted with the kernel's clients
    "cifs-utils",
    "nfs-common",
    # server disks (issue 12): LVM (thin pools need thin_check to activate), LUKS
    # (cryptsetup-bin has luksOpen and luksHeaderBackup without crypttab's boot
    # scripts), md RAID. The overlay and initramfs-trim.sh keep them from
    # activating anything on their own: the engine activates explicitly.
    "lvm2",
    "thin-provisioning-tools",
    "cryptsetup-bin",
    "mdadm",
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

# Every boot of the live system starts with these. init_on_alloc=0: Debian's
# kernel zeroes each page it hands out, and the first programs of the live root
# (systemd, python3) spent 10-15 s of a 45 s TCG boot doing it; the rescue system
# runs nothing but its own app, so this hardening buys little here.
# nonetworking: live-boot would re-trigger every udev device and wait for them
# (udevadm trigger + settle, seconds under TCG) only to write an
# /etc/network/interfaces that nothing reads (systemd-networkd configures the
# network; netboot's fetch= brings its interface up before, unaffected).
# modprobe.blacklist=floppy: udev loads the floppy driver wherever the
# firmware reports a controller (QEMU's default machine always does) and then
# probes the empty drive; `modprobe floppy` by hand still loads it.
LIVE_BOOT = "boot=live init_on_alloc=0 nonetworking modprobe.blacklist=floppy"

# Netboot and ISO share these kernel arguments; the profile appends its own.
LIVE_CMDLINE = f"{LIVE_BOOT} console=tty0 console=ttyS0,115200n8"

# The tests that boot the ISO's kernel directly (-kernel/-append) use the serial
# console only.
SERIAL_CMDLINE = f"{LIVE_BOOT} console=ttyS0,115200n8 quiet"

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
