#!/bin/sh
# mmdebstrap customize hook for the cached base root. $1 is the root.
# Part of the base cache key: editing this file rebuilds the base.
set -eu
root="$1"

# The package cache was synced out to the host already; keep the image small.
rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
rm -rf "$root"/var/lib/apt/lists/*
# Host keys baked into every stick would be shared by every stick: sshd makes
# its own at boot (overlay drop-in runs ssh-keygen -A).
rm -f "$root"/etc/ssh/ssh_host_*
# A stable machine-id would be the same on every machine booted from the stick.
: > "$root/etc/machine-id"
echo liferaft > "$root/etc/hostname"
# Mount point for the app layer's venv while it is installed (see install_app).
mkdir -p "$root/opt/liferaft"

# Kernel modules a rescue system cannot use: no firmware is installed for the
# big GPU and wireless drivers, and sound, media, InfiniBand and Bluetooth do
# not help restore a disk. About a fifth of the module tree; the ISO size
# target (300 MB) needs the room.
for kdir in "$root"/lib/modules/*/kernel; do
    [ -d "$kdir" ] || continue
    rm -rf "$kdir/drivers/gpu/drm/amd" "$kdir/drivers/gpu/drm/radeon" \
        "$kdir/drivers/gpu/drm/nouveau" "$kdir/drivers/net/wireless" \
        "$kdir/drivers/infiniband" "$kdir/drivers/media" "$kdir/drivers/staging" \
        "$kdir/drivers/bluetooth" "$kdir/sound" "$kdir/net/bluetooth" "$kdir/net/mac80211" \
        "$kdir/net/wireless"
    chroot "$root" depmod -a "$(basename "$(dirname "$kdir")")"
done

if [ -n "${LIFERAFT_LOCALE:-}" ] && [ "$LIFERAFT_LOCALE" != "C.UTF-8" ] && [ -x "$root/usr/sbin/locale-gen" ]; then
    echo "$LIFERAFT_LOCALE ${LIFERAFT_LOCALE#*.}" > "$root/etc/locale.gen"
    chroot "$root" /usr/sbin/locale-gen
fi
