"""LVM, LUKS and md RAID in the rescue system, through the guest runner.

Two boots over the same two disks. The first builds the stacks (an LV with
ext4 and a file, a thin pool, LUKS2 with a key file, RAID1 over two
partitions), tears them down and replays udev's "add" events: nothing may
come back by itself. The second boot checks that nothing was activated at
boot (initrd or live root), activates each explicitly and reads the file,
sees this tree's rescue_app first on PYTHONPATH (--app), and ends with
`exit 3` after output without a final newline: both come back as written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.guest import sparse_disk

pytestmark = [pytest.mark.slow, pytest.mark.root]

MIB = 1024 * 1024

PRELUDE = """\
set -eu
trap 'echo "FAILED at line $LINENO"' ERR
fail() { echo "FAILED: $*"; exit 1; }  # `! cmd` would not stop set -e
nothing_active() {
    # No LV active, no md array, no dm-crypt mapping: the rescue system only reads.
    test -z "$(lvs --noheadings -S lv_active=active -o lv_name)" || fail "an LV is active"
    if grep '^md' /proc/mdstat; then fail "an md array is assembled"; fi
    if dmsetup ls --target crypt | grep -v 'No devices'; then fail "a LUKS volume is open"; fi
}
"""

BUILD = (
    PRELUDE
    + """\
lvmconfig global/event_activation activation/auto_activation_volume_list activation/monitoring
test "$(systemctl is-enabled mdmonitor.service || true)" = masked
test "$(systemctl is-enabled lvm2-monitor.service || true)" = masked

# LVM on /dev/vda: an LV with ext4 and a file, a thin pool with a thin LV.
pvcreate -q /dev/vda
vgcreate -q vgtest /dev/vda
lvcreate -q -y -n data -L 64M vgtest
mkfs.ext4 -q /dev/vgtest/data
mkdir -p /mnt/data && mount /dev/vgtest/data /mnt/data
echo "kept on LVM" > /mnt/data/file && umount /mnt/data
lvcreate -q -y --type thin-pool -L 32M -n pool vgtest
lvcreate -q -y -V 64M --thin -n thin vgtest/pool

# /dev/vdb: three partitions, LUKS2 on the first, RAID1 over the others.
printf 'label: gpt\\n,64M\\n,64M\\n,64M\\n' | sfdisk -q /dev/vdb
udevadm settle
printf 'secret key' > /tmp/key
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \\
    --pbkdf-force-iterations 1000 --key-file /tmp/key /dev/vdb1
cryptsetup luksOpen --key-file /tmp/key /dev/vdb1 crtest
mkfs.ext4 -q /dev/mapper/crtest
cryptsetup luksHeaderBackup /dev/vdb1 --header-backup-file /tmp/header
test -s /tmp/header
cryptsetup close crtest
mdadm --create /dev/md/r1 --run --quiet --level=1 --raid-devices=2 --metadata=1.2 \\
    /dev/vdb2 /dev/vdb3
mdadm --wait /dev/md/r1 || true
mdadm --detail --export /dev/md/r1 | grep MD_LEVEL=raid1
mkfs.ext4 -q /dev/md/r1
if systemctl -q is-active mdmonitor.service; then fail "mdmonitor is running"; fi

# Tear down, then replay the kernel's "add" events as at boot or on hot-plug.
vgchange -q -an vgtest
mdadm --stop /dev/md/r1
udevadm trigger --action=add --subsystem-match=block
udevadm settle
sleep 3  # lvm's udev rule would start vgchange through systemd-run, asynchronously
nothing_active
echo "stacks built, nothing came back by itself"
"""
)

CHECK = (
    PRELUDE
    + """\
nothing_active
echo "nothing active after boot"
vgchange -q -ay vgtest
mkdir -p /mnt/data && mount -o ro /dev/vgtest/data /mnt/data
cat /mnt/data/file
umount /mnt/data
lvs --noheadings -o lv_name,lv_attr vgtest/thin
vgchange -q -an vgtest
printf 'wrong key' > /tmp/key
if cryptsetup luksOpen --readonly --key-file /tmp/key /dev/vdb1 crtest; then fail "wrong key"; fi
printf 'secret key' > /tmp/key
cryptsetup luksOpen --readonly --key-file /tmp/key /dev/vdb1 crtest
blkid -o value -s TYPE /dev/mapper/crtest
cryptsetup close crtest
mdadm --assemble --readonly /dev/md/r1 /dev/vdb2 /dev/vdb3
mdadm --detail --export /dev/md/r1 | grep -E 'MD_LEVEL|MD_DEVICES'
mdadm --stop /dev/md/r1
# --app: the working tree's engine comes first.
/opt/liferaft/bin/python -c 'import rescue_app; print(rescue_app.__file__)'
printf "explicit activation works"  # no final newline: the output comes back as written
exit 3
"""
)


def test_lvm_luks_raid_in_the_guest(guest, tmp_path: Path) -> None:
    disks = [sparse_disk(tmp_path / "a.img", 256 * MIB), sparse_disk(tmp_path / "b.img", 256 * MIB)]

    built = guest(BUILD, disks)
    assert built.exit_code == 0, built.output
    assert "stacks built, nothing came back by itself" in built.output
    for setting in ("event_activation=0", "auto_activation_volume_list=[]", "monitoring=0"):
        assert setting in built.output.replace(" ", ""), built.output
    print(f"guest boot to script: {built.boot_seconds:.1f} s, script end {built.seconds:.1f} s")

    checked = guest(CHECK, disks, app=True)
    assert checked.exit_code == 3, checked.output
    out = checked.output
    assert "nothing active after boot" in out and "kept on LVM" in out, out
    assert "crypto_LUKS" not in out and "ext4" in out  # the filesystem inside LUKS
    assert "MD_LEVEL=raid1" in out and "MD_DEVICES=2" in out
    assert "/run/liferaft-guest/app/rescue_app/__init__.py\n" in out
    assert out.endswith("\nexplicit activation works"), out
    print(f"guest boot to script: {checked.boot_seconds:.1f} s, script end {checked.seconds:.1f} s")
