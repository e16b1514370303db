# The online backup of a volume group whose thin pool is in use, inside the
# rescue system (tests/guest/test_online_vm.py runs it with --app):
# a thin ext4 LV mounted and written to while `liferaft backup` runs, then
# restored onto another disk. Disks: vda source (GPT: p1 ext4, p2 PV of vg0
# with thin pool "pool" and thin LV "thin"), vdb repository (ext4), vdc target.
# Prints "CHECK <name> ok" per passed check; exits nonzero at the first failure.
set -euo pipefail
# The disks: vda, vdb, vdc when run alone; others when tests/guest/scenarios.sh
# runs it in one boot with other scenarios.
src=${1:-/dev/vda} repo=${2:-/dev/vdb} dst=${3:-/dev/vdc}
export LVM_SUPPRESS_FD_WARNINGS=1
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
lvuuids() { lvs --noheadings -o lv_name,lv_uuid vg0 | grep -v liferaft | sort; }

mkdir -p /mnt/src /mnt/repo /mnt/chk
parted -s "$src" mklabel gpt mkpart boot ext4 1MiB 129MiB mkpart lvm 129MiB 100% set 2 lvm on
partprobe "$src"; udevadm settle
mkfs.ext4 -q "${src}1"
pvcreate -q "${src}2"
vgcreate -q vg0 "${src}2"
lvcreate -q -y --type thin-pool -n pool -L 768M vg0
lvcreate -q -y -n thin -V 1G --thinpool vg0/pool
mkfs.ext4 -q -L thin /dev/vg0/thin
mount /dev/vg0/thin /mnt/src
mkdir -p /mnt/src/files /mnt/src/live
for i in $(seq 1 24); do head -c $((i * 512 * 1024)) /dev/urandom > "/mnt/src/files/f$i"; done
sync
sums /mnt/src/files > /tmp/sum.files
lvuuids > /tmp/lv.before
mkfs.ext4 -q "$repo"; mount "$repo" /mnt/repo

# A writer: each file written whole under a temporary name, then renamed; its
# last 64 bytes are the sha256 of the rest.
(
    n=0
    while [ ! -e /tmp/stop ]; do
        head -c $(( (n % 7 + 1) * 40000 )) /dev/urandom > /tmp/payload
        { cat /tmp/payload; sha256sum < /tmp/payload | cut -c1-64 | tr -d '\n'; } > /mnt/src/live/.tmp
        mv /mnt/src/live/.tmp "/mnt/src/live/w$((n % 20))"
        n=$((n + 1))
    done
    echo "$n" > /tmp/writes
) &
writer=$!
sleep 1
liferaft backup --repo /mnt/repo/r --name t "$src" | tee /tmp/out
touch /tmp/stop; wait "$writer"
echo "writer replaced $(cat /tmp/writes) files"
[ "$(cat /tmp/writes)" -gt 10 ] || fail "the writer hardly wrote"
grep -q "volume group vg0 lv thin: block level, used blocks (in use: read from the snapshot" /tmp/out \
    || grep -q "volume group vg0 .*thin.*snapshot" /tmp/out || fail "thin LV not read from its snapshot"
grep -q "stored raw" /tmp/out && fail "something was stored raw"
grep -q '"in use: read from a metadata snapshot of the pool"' /mnt/repo/r/images/t/*.json \
    || fail "the pool metadata was not read from a metadata snapshot"
lvs -a vg0 | grep -q liferaft && fail "a snapshot was left: $(lvs -a vg0)"
[ "$(blockdev --getro /dev/vg0/thin)" = 0 ] || fail "the backup left the thin LV in use read-only"
echo still-writable > /mnt/src/after-backup; sync || fail "the thin LV in use cannot be written after the backup"
check backed-up-online

umount /mnt/src
vgchange -q -an vg0
wipefs -q -a "${src}2"   # the original disk "died"
liferaft restore --repo /mnt/repo/r --image t --to "$dst" --yes
[ "$(lvuuids)" = "$(cat /tmp/lv.before)" ] || fail "LV UUIDs differ: $(lvuuids)"
vgchange -q -ay vg0 || fail "the restored thin pool does not activate"
lvs -a vg0
check pool-activates
e2fsck -fn /dev/vg0/thin || fail "e2fsck"
check fsck-clean
mount -o ro /dev/vg0/thin /mnt/chk
(cd /mnt/chk/files && sha256sum -c --quiet /tmp/sum.files) || fail "static files differ"
torn=0; present=0
for f in /mnt/chk/live/w*; do
    present=$((present + 1))
    size=$(stat -c %s "$f")
    want=$(tail -c 64 "$f")
    got=$(head -c $((size - 64)) "$f" | sha256sum | cut -c1-64)
    [ "$want" = "$got" ] || { echo "torn: $f"; torn=$((torn + 1)); }
done
echo "live files present: $present, torn: $torn"
if [ "$torn" != 0 ] || [ "$present" = 0 ]; then fail "torn or missing live files"; fi
umount /mnt/chk
vgchange -q -an vg0
check no-torn-files
echo "ALL DONE"
