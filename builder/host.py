"""Checks against the build host: tools and files the pipeline needs.

Each missing item ends the build with one line naming the Debian package to
install (all of them are in deps/apt-host.txt, so `make setup` brings them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rescue_app.errors import LiferaftError, ToolMissingError

# program -> Debian package
BUILD_TOOLS: dict[str, str] = {
    "mmdebstrap": "mmdebstrap",
    "mksquashfs": "squashfs-tools",
    "xorriso": "xorriso",
    "mkfs.msdos": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "unshare": "util-linux",
    "chroot": "coreutils",
}

# file -> Debian package
BOOT_FILES: dict[str, str] = {
    "/usr/lib/ISOLINUX/isolinux.bin": "isolinux",
    "/usr/lib/ISOLINUX/isohdpfx.bin": "isolinux",
    "/usr/lib/syslinux/modules/bios/ldlinux.c32": "syslinux-common",
    "/usr/lib/shim/shimx64.efi.signed": "shim-signed",
    "/usr/lib/shim/mmx64.efi.signed": "shim-signed",
    "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed": "grub-efi-amd64-signed",
}


def check_tools(programs: dict[str, str] = BUILD_TOOLS, files: dict[str, str] = BOOT_FILES) -> None:
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing: dict[str, list[str]] = {}
    for program, package in programs.items():
        if shutil.which(program, path=search) is None:
            missing.setdefault(package, []).append(program)
    for path, package in files.items():
        if not Path(path).exists():
            missing.setdefault(package, []).append(path)
    if missing:
        what = "; ".join(f"{', '.join(items)} (package {pkg})" for pkg, items in missing.items())
        raise ToolMissingError(
            f"missing on the build host: {what}",
            hint=f"apt-get install {' '.join(sorted(missing))}, or run `make setup`",
        )


def check_root() -> None:
    if os.geteuid() != 0:
        raise LiferaftError(
            "building an image needs root (mmdebstrap, chroot, device nodes)",
            hint="run `make iso` as root",
        )
