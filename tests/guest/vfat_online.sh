# The DOS attributes of a mounted vfat through the online backup, inside the
# rescue system (its kernel mounts vfat; the host's cannot): tests/guest/
# test_online_vm.py runs it with --app. Disks: vda source (GPT, an ESP),
# vdb repository (ext4), vdc target. Prints "CHECK <name> ok" per check.
set -euo pipefail
# The disks: vda, vdb, vdc when run alone; others when tests/guest/scenarios.sh
# runs it in one boot with other scenarios.
src=${1:-/dev/vda} repo=${2:-/dev/vdb} dst=${3:-/dev/vdc}
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
export MTOOLS_SKIP_CHECK=1 LC_ALL=C.UTF-8
attrs() { mattrib -/ -i "$1" ::/ | sort -k2; }

sfdisk -q "$src" <<'TABLE'
label: gpt
size=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI
TABLE
partprobe "$src"; udevadm settle
mkfs.fat -F 32 -n ESP -i 4A1B2C3D "${src}1" >/dev/null
echo boot > /tmp/boot.efi; echo hello > /tmp/plain.txt; echo grüße > /tmp/gruss.txt
mmd -i "${src}1" ::/EFI ::/EFI/BOOT
mcopy -i "${src}1" /tmp/boot.efi ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "${src}1" /tmp/plain.txt ::/plain.txt
mcopy -i "${src}1" /tmp/gruss.txt ::/Grüße.txt
mattrib -i "${src}1" +h +s +r ::/EFI/BOOT/BOOTX64.EFI
mattrib -i "${src}1" +h ::/EFI
mattrib -i "${src}1" -a ::/plain.txt
attrs "${src}1" > /tmp/before
cat /tmp/before
grep -q ' A  SHR .*BOOTX64.EFI' /tmp/before || fail "mattrib did not set the attributes"

mkfs.ext4 -q "$repo"
mkdir -p /mnt/repo /mnt/esp
mount "$repo" /mnt/repo
mount -t vfat "${src}1" /mnt/esp
out=$(liferaft backup --repo /mnt/repo/r --name esp "$src")
echo "$out"
grep -q "partition 1 (vfat): file by file from the mounted tree" <<<"$out" \
    || fail "the mounted vfat was not backed up file by file"
check backed-up-file-by-file
umount /mnt/esp
grep -h '"fat_attributes"' -A4 /mnt/repo/r/images/esp/*.json || fail "no fat_attributes in the manifest"
check manifest-has-attributes

liferaft restore --repo /mnt/repo/r --image esp --to "$dst" --yes
partprobe "$dst"; udevadm settle
attrs "${dst}1" > /tmp/after
diff /tmp/before /tmp/after || fail "the restored ESP's attributes differ"
check attributes-restored
fsck.fat -n "${dst}1" >/dev/null || fail "fsck.fat"
check fsck-clean
