"""Boot loaders of the ISO: isolinux for BIOS, shim and Debian's signed GRUB for
UEFI and Secure Boot, and the El Torito EFI image that carries them."""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.cache import link_or_copy
from builder.context import LIVE_CMDLINE, BuildContext, Layers
from rescue_app.run import run

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
        link_or_copy(src, live / name)
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
