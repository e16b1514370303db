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

# Boot straight to the console: nothing a rescue system does at boot needs
# the network first, and maintenance timers never run on a stick that lives
# for one session. systemd-resolved is enabled in multi-user.target by the
# app layer when the profile has a network; Debian's sysinit.target link
# would order every console behind it. rpcbind stays socket-activated for
# NFSv3 mounts.
sys="$root/etc/systemd/system"
rm -f "$sys/sysinit.target.wants/systemd-resolved.service" \
    "$sys/multi-user.target.wants/rpcbind.service" \
    "$sys/multi-user.target.wants/e2scrub_reap.service"
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    fstrim.timer e2scrub_reap.service; do
    rm -f "$sys/timers.target.wants/$unit"
    ln -sf /dev/null "$sys/$unit"
done
# Debian's systemd-resolved orders itself before sysinit.target, and
# systemd-user-sessions (which the gettys wait for) after network.target and
# remote-fs.target (for network home directories): either one holds the
# console until DHCP, resolved and the NFS client are up, which costs most
# of the userspace boot under emulation. The copies in /etc drop those orders;
# the app waits for the network itself when it needs it.
lib="$root/lib/systemd/system"
sed -e '/^Before=/s/sysinit\.target *//' "$lib/systemd-resolved.service" > "$sys/systemd-resolved.service"
sed -e '/^After=/s/remote-fs\.target *//' -e '/^After=/s/network\.target *//' \
    "$lib/systemd-user-sessions.service" > "$sys/systemd-user-sessions.service"
if grep -q '^Before=.*sysinit\.target' "$sys/systemd-resolved.service" ||
    grep -q '^After=.*network\.target' "$sys/systemd-user-sessions.service"; then
    echo "base-customize: Debian's resolved/user-sessions units changed; update the edits" >&2
    exit 1
fi

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
