"""The build pipelines: ``build_iso`` and ``build_netboot``, flat lists of named
steps over one frozen BuildContext.

    build_iso(context) reads top to bottom:
        check_host → build_layers (bootstrap_base, then the app layer:
        install_app → render_overlay → configure_system → bake_credentials →
        squash) → stage_boot_files → make_efi_image → make_iso

Where each job lives: builder/context.py (BuildContext, what every image
holds), cache.py (keys, atomic outputs, the cache lock), layers.py (the base
root and app squashfs layers), bootloaders.py (isolinux, shim, GRUB, the EFI
image), assemble.py (the ISO and the netboot folder), commands.py (how build
commands run).

Failure leaves nothing behind: commands that mount run inside their own
mount and PID namespace (``unshare --kill-child``), so their mounts and
processes die with them; outputs are written to a temporary name and renamed
into place last.
"""

from __future__ import annotations

import time
from pathlib import Path

from builder import host
from builder.assemble import make_iso, write_netboot
from builder.bootloaders import make_efi_image, stage_boot_files
from builder.cache import atomic_path, build_lock, digest, remove, tree_digest, up_to_date
from builder.context import BUILDER_DIR, BuildContext
from builder.layers import build_layers, private_if_secrets
from builder.log import complete_step, say
from rescue_app.profile import ProfileError

ISO_LIMIT_MB = 250  # issue 12 (was 300)
COLD_BUILD_LIMIT_S = 360


def check_host(ctx: BuildContext) -> None:
    host.check_root()
    host.check_tools()
    check_profile(ctx)


def check_profile(ctx: BuildContext) -> None:
    """No boot entry may ask for the test runner's script (liferaft-guest.service
    runs a script found on a disk when the command line holds liferaft.guest=1)."""
    if "liferaft.guest" in ctx.kernel_cmdline:
        raise ProfileError(
            f"{ctx.profile.source}: kernel_cmdline holds liferaft.guest, the test runner's "
            "switch that runs a script from a disk",
            hint="remove it; tests pass it themselves (tests/helpers/guest.py)",
        )


def build_iso(ctx: BuildContext) -> Path:
    """`liferaft-build iso`: the hybrid BIOS/UEFI/Secure Boot ISO."""
    started = time.monotonic()
    with complete_step("Checking the build host"):
        check_host(ctx)
    with build_lock(ctx):
        layers = build_layers(ctx)
        iso_key = digest([layers.key, ctx.kernel_cmdline, ctx.profile.digest_data(),
                          *tree_digest(sorted(BUILDER_DIR.glob("*.py")), ctx.repo)])  # fmt: skip
        stamp = ctx.output_dir / f".liferaft-{ctx.profile.name}.iso.key"
        if up_to_date(stamp, iso_key, ctx.iso_path):
            say(f"{ctx.iso_path} is up to date")
        else:
            staging = ctx.build_dir / "iso-staging"
            remove(staging)
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            remove(stamp)
            try:
                with complete_step("Staging boot loaders (isolinux, shim, GRUB)"):
                    stage_boot_files(ctx, layers, staging)
                    make_efi_image(ctx, staging)
                with complete_step("Writing the ISO (xorriso)"), atomic_path(ctx.iso_path) as tmp:
                    make_iso(ctx, staging, tmp)
                    private_if_secrets(ctx, tmp)
            finally:
                remove(staging)
            stamp.write_text(iso_key + "\n")
    report_targets(ctx.iso_path, time.monotonic() - started)
    return ctx.iso_path


def build_netboot(ctx: BuildContext, base_url: str | None = None) -> Path:
    """`liferaft-build netboot`: kernel, initrd, root image and an iPXE script."""
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
        key = digest([layers.key, url, ctx.kernel_cmdline])
        stamp = ctx.output_dir / f".netboot-{ctx.profile.name}.key"
        if up_to_date(stamp, key, ctx.netboot_dir):
            say(f"{ctx.netboot_dir} is up to date")
        else:
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            remove(stamp)
            with complete_step("Writing the netboot files"), atomic_path(ctx.netboot_dir) as tmp:
                write_netboot(ctx, layers, tmp, url)
            stamp.write_text(key + "\n")
    total = sum(f.stat().st_size for f in ctx.netboot_dir.iterdir())
    elapsed = time.monotonic() - started
    say(f"netboot files: {ctx.netboot_dir} ({total / 1e6:.0f} MB) in {elapsed:.0f} s")
    if ctx.profile.credentials:
        say(
            "note: root.iso holds the profile's credentials; serve it only where the "
            "machines that netboot can reach it, or pass liferaft.credentials= instead"
        )
    return ctx.netboot_dir


def report_targets(iso: Path, seconds: float) -> None:
    size_mb = iso.stat().st_size / 1e6
    size_ok = "ok" if size_mb <= ISO_LIMIT_MB else "OVER TARGET"
    say(f"ISO: {iso} {size_mb:.0f} MB (target ≤ {ISO_LIMIT_MB} MB: {size_ok})")
    say(f"build time: {seconds:.0f} s (target for a cold build ≤ {COLD_BUILD_LIMIT_S} s)")
