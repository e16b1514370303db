"""Assembling the outputs from the layers: the hybrid BIOS/UEFI ISO (xorriso
over a staging tree with the boot loaders) and the netboot folder (kernel,
initrd, a root image for live-boot's fetch= and an iPXE script)."""

from __future__ import annotations

from pathlib import Path

from builder.cache import link_or_copy, remove
from builder.commands import run_logged
from builder.context import BuildContext, Layers


def make_iso(ctx: BuildContext, staging: Path, out: Path) -> None:
    run_logged(
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


IPXE_SCRIPT = """\
#!ipxe
# liferaft netboot ({name}): serve this directory over HTTP and chain this script.
set base {base_url}
kernel ${{base}}vmlinuz initrd=initrd.img {cmdline} fetch=${{base}}root.iso
initrd ${{base}}initrd.img
boot
"""


def write_netboot(ctx: BuildContext, layers: Layers, out: Path, url: str) -> None:
    """vmlinuz, initrd.img, root.iso and boot.ipxe in the new folder ``out``.

    The root image is a small ISO holding /live/*.squashfs: live-boot's fetch=
    takes one file, and for an .iso it mounts it and stacks the layers inside.
    """
    out.mkdir()
    files = layers.live_files
    link_or_copy(files["vmlinuz"], out / "vmlinuz")
    link_or_copy(files["initrd.img"], out / "initrd.img")
    staging = ctx.build_dir / "netboot-staging"
    remove(staging)
    (staging / "live").mkdir(parents=True)
    try:
        for name in ("00-base.squashfs", "10-app.squashfs"):
            link_or_copy(files[name], staging / "live" / name)
        run_logged(
            ctx,
            ["xorriso", "-as", "mkisofs", "-iso-level", "3", "-volid",
             ctx.profile.label, "-o", str(out / "root.iso"), str(staging)],
            timeout=600,
        )  # fmt: skip
    finally:
        remove(staging)
    (out / "boot.ipxe").write_text(
        IPXE_SCRIPT.format(name=ctx.profile.name, base_url=url, cmdline=ctx.kernel_cmdline)
    )
