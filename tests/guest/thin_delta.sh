# `liferaft backup --thin-delta` inside the rescue system (tests/guest/
# test_online_vm.py runs it with --app): a 2 GiB thin ext4 LV, mounted,
# backed up twice with 1% of it changed in between; the second backup reads
# only the chunks thin_delta reports changed since the snapshot the first
# kept, and its image restores whole. Disks: vda source (PV of vg0: thin pool
# "pool", thin LV "thin"), vdb repository (ext4), vdc target.
# Prints "CHECK <name> ok" per passed check and "MEASURE <key> <value>".
set -euo pipefail
# The disks: vda, vdb, vdc when run alone; others when tests/guest/scenarios.sh
# runs it in one boot with other scenarios.
src=${1:-/dev/vda} repo=${2:-/dev/vdb} dst=${3:-/dev/vdc}
export LVM_SUPPRESS_FD_WARNINGS=1
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
MIB=$((1024 * 1024))
sums() { (cd "$1" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 -r sha256sum); }
uuid_of() { lvs --noheadings -o lv_uuid "vg0/$1" | tr -d ' '; }

mkdir -p /mnt/src /mnt/repo /mnt/chk
parted -s "$src" mklabel gpt mkpart lvm 1MiB 100% set 1 lvm on
partprobe "$src"; udevadm settle
pvcreate -q "${src}1"
vgcreate -q vg0 "${src}1"
lvcreate -q -y --type thin-pool -n pool -L 1536M vg0
lvcreate -q -y -n thin -V 2G --thinpool vg0/pool
mkfs.ext4 -q -L thin /dev/vg0/thin
mount /dev/vg0/thin /mnt/src
mkdir -p /mnt/src/files
for i in $(seq 1 40); do head -c $((10 * MIB)) /dev/urandom > "/mnt/src/files/f$i"; done
sync
mkfs.ext4 -q "$repo"; mount "$repo" /mnt/repo

liferaft backup --thin-delta --repo /mnt/repo/r --name t "$src" | tee /tmp/first
grep -q "thin_delta since" /tmp/first && fail "the first backup had no base to compare with"
base1=$(uuid_of liferaft-base-thin) || fail "no base kept: $(lvs -a vg0)"
lvs -a vg0
check base-kept
[ "$(blockdev --getro /dev/vg0/thin)" = 0 ] || fail "the backup left the thin LV in use read-only"
echo still-writable > /mnt/src/after-backup; sync || fail "the thin LV in use cannot be written after the backup"

# 1% of the LV: a new 10 MiB file and 10 MiB overwritten in place
head -c $((10 * MIB)) /dev/urandom > /mnt/src/files/new
dd if=/dev/urandom of=/mnt/src/files/f7 bs=1M count=10 seek=0 conv=notrunc status=none
sync
sums /mnt/src > /tmp/sum.second
liferaft backup --thin-delta --repo /mnt/repo/r --name t "$src" | tee /tmp/second
line=$(grep -o "thin_delta since [^:]*: [0-9]* of [0-9]* chunks read" /tmp/second) \
    || fail "the second backup did not use thin_delta"
read -r read_chunks _ all_chunks < <(grep -o '[0-9]* of [0-9]*' <<<"$line")
echo "MEASURE read_bytes $((read_chunks * 4 * MIB))"
echo "MEASURE disk_bytes $((all_chunks * 4 * MIB))"
[ $((read_chunks * 100)) -le $((all_chunks * 5)) ] || fail "read $read_chunks of $all_chunks chunks"
check reads-only-changes
base2=$(uuid_of liferaft-base-thin)
[ "$base2" != "$base1" ] || fail "the base was not replaced"
[ "$(lvs --noheadings -o lv_name vg0 | grep -c liferaft)" = 1 ] || fail "$(lvs -a vg0)"
check base-replaced

umount /mnt/src
vgchange -q -an vg0
wipefs -q -a "${src}1"   # the original disk "died"
liferaft restore --repo /mnt/repo/r --image t --to "$dst" --yes
vgchange -q -ay vg0 || fail "the restored pool does not activate"
e2fsck -fn /dev/vg0/thin || fail "e2fsck"
mount -o ro /dev/vg0/thin /mnt/chk
sums /mnt/chk > /tmp/sum.restored
umount /mnt/chk
cmp /tmp/sum.second /tmp/sum.restored || fail "the restored files differ"
vgchange -q -an vg0
check restores-whole
echo "ALL DONE"
