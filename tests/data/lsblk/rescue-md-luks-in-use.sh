# How tests/data/lsblk/rescue-md-luks-in-use.json was recorded: run in the rescue
# system (tests/helpers/guest.py run_in_guest, two 512 MiB disks vda and vdb),
# 2026-12-04; its "=== LSBLK" section is the file. (It printed /proc/swaps and each
# device's sysfs holders/slaves/dm uuid too, before "=== END": not kept.)
# Capture lsblk/sysfs of a running system with md and LUKS in use (for tests/data).
set -eu
udevadm settle
sgdisk -Z -n1:0:+40M -n2:0:+80M -n3:0:+40M -n4:0:+40M -n5:0:+40M /dev/vda >/dev/null
sgdisk -Z -n1:0:+40M -n2:0:+40M /dev/vdb >/dev/null
partprobe /dev/vda /dev/vdb; udevadm settle
# md RAID1 mounted (vda1+vdb1), md RAID1 active but unused (vda4+vdb2)
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 /dev/vda1 /dev/vdb1 >/dev/null 2>&1
mdadm --create /dev/md1 --run --level=1 --raid-devices=2 --metadata=1.2 /dev/vda4 /dev/vdb2 >/dev/null 2>&1
mkfs.ext4 -q -L mdroot /dev/md0
mkdir -p /mnt/md && mount /dev/md0 /mnt/md
# LUKS open with LVM inside: root mounted, swap active
printf 'drill-passphrase' > /tmp/key
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 /dev/vda2 /tmp/key
cryptsetup open --key-file /tmp/key /dev/vda2 cryptlvm
pvcreate -q /dev/mapper/cryptlvm
vgcreate -q vgc /dev/mapper/cryptlvm
lvcreate -q -y -n root -L 40M vgc
lvcreate -q -y -n swap -L 16M vgc
mkfs.ext4 -q /dev/vgc/root
mkswap -q /dev/vgc/swap >/dev/null
swapon /dev/vgc/swap
mkdir -p /mnt/luks && mount /dev/vgc/root /mnt/luks
# LUKS open, unused (vda5); plain ext4 mounted (vda3)
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 /dev/vda5 /tmp/key
cryptsetup open --key-file /tmp/key /dev/vda5 idle
mkfs.ext4 -q -L plain /dev/vda3
mkdir -p /mnt/plain && mount /dev/vda3 /mnt/plain
udevadm settle
echo "=== LSBLK"
lsblk --json --bytes -o NAME,PATH,TYPE,MODEL,SERIAL,WWN,SIZE,LOG-SEC,PHY-SEC,TRAN,RM,RO,PTTYPE,PTUUID,FSTYPE,LABEL,UUID,PARTUUID,PARTTYPE,PARTLABEL,MOUNTPOINTS,PKNAME
echo "=== END"
