# LVM round trip inside the rescue system (tests/guest/test_lvm_vm.py runs it
# through the guest runner with --app). Disks, in order:
#   vda 4 GiB  source: GPT, p1 ext4, p2 LVM PV of vg0 (root ext4 with
#              etc/os-release, data xfs, swap, thin pool "pool" with thin ext4 "thin")
#   vdb 12 GiB repository disk (ext4)
#   vdc 6 GiB  target of vda (larger: --grow)
#   vdd 1 GiB  source: GPT, p1 PV of vg1 ...
#   vde 1 GiB  ... and the whole disk a PV of vg1: LV "span" lies on both
#   vdf 1 GiB, vdg 2 GiB  targets of vdd, vde
# $OLD_APP (base64 tar.gz of rescue_app before LVM support), when set, captures
# vda the old way first, for the image size before/after.
# Prints "CHECK <name> ok" per passed check and "MEASURE <key> <bytes>"; exits
# nonzero at the first failure (set -e), saying which.
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
MIB=$((1024 * 1024))
sums() { (cd "$1" && find . -type f ! -name 'lost+found' -print0 | sort -z | xargs -0 -r sha256sum); }
fill() { # fill DIR MiB: files of random bytes, 1..16 MiB each
    local dir=$1 left=$2 i=0 n
    mkdir -p "$dir"
    while [ "$left" -gt 0 ]; do
        n=$(( (i % 16) + 1 )); [ "$n" -gt "$left" ] && n=$left
        head -c $((n * MIB)) /dev/urandom > "$dir/f$i"
        left=$((left - n)); i=$((i + 1))
    done
}
lvuuids() { lvs --noheadings -o lv_name,lv_uuid --config 'devices { use_devicesfile = 0 }' "$1" | sort; }
pvuuids() { pvs --noheadings -o pv_uuid,vg_name,vg_uuid "$@" | sort; }

mkdir -p /mnt/src /mnt/repo /mnt/chk
# ---------------------------------------------------------------- source vda
parted -s /dev/vda mklabel gpt mkpart boot ext4 1MiB 257MiB mkpart lvm 257MiB 100% set 2 lvm on
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L boot /dev/vda1
pvcreate -q /dev/vda2
vgcreate -q vg0 /dev/vda2
lvcreate -q -y -n root -L 1536M vg0 --addtag os
lvcreate -q -y -n data -L 768M vg0
lvcreate -q -y -n swap -L 128M vg0
lvcreate -q -y --type thin-pool -n pool -L 512M vg0
lvcreate -q -y -n thin -V 1G --thinpool vg0/pool
mkfs.ext4 -q -L root /dev/vg0/root
mkfs.xfs -q -L data /dev/vg0/data
mkswap -q -L lvswap /dev/vg0/swap
mkfs.ext4 -q -L thin /dev/vg0/thin
# 1 GiB of files (plus 160 MiB written and deleted: what a raw copy keeps)
mount /dev/vg0/root /mnt/src
mkdir -p /mnt/src/etc; cp /etc/os-release /mnt/src/etc/os-release
fill /mnt/src/files 560; fill /mnt/src/deleted 160; sync; rm -rf /mnt/src/deleted
sums /mnt/src > /tmp/sum.root; umount /mnt/src
mount /dev/vg0/data /mnt/src; fill /mnt/src/files 256; sums /mnt/src > /tmp/sum.data; umount /mnt/src
mount /dev/vg0/thin /mnt/src; fill /mnt/src/files 192; sums /mnt/src > /tmp/sum.thin; umount /mnt/src
mount /dev/vda1 /mnt/src; fill /mnt/src/files 16; sums /mnt/src > /tmp/sum.boot; umount /mnt/src
swap_id=$(blkid -o value -s UUID /dev/vg0/swap)
root_size=$(lvs --noheadings --units b --nosuffix -o lv_size vg0/root | tr -d ' ')
lvuuids vg0 > /tmp/lv.vg0; pvuuids /dev/vda2 > /tmp/pv.vg0
vgchange -q -an vg0

mkfs.ext4 -q /dev/vdb; mount /dev/vdb /mnt/repo

if [ -n "${OLD_APP:-}" ]; then
    mkdir -p /tmp/old; echo "$OLD_APP" | base64 -d | tar xz -C /tmp/old
    PYTHONPATH=/tmp/old /opt/liferaft/bin/python -m rescue_app.cli capture --repo /mnt/repo/old --name src /dev/vda
    echo "MEASURE before $(du -sb /mnt/repo/old/chunks | cut -f1)"
fi

# ---------------------------------------------------------------- capture
# An LV mounted read-write: refused in one line, nothing written, nothing left active.
lvchange -q -ay vg0/data; mount /dev/vg0/data /mnt/src
if out=$(liferaft capture --repo /mnt/repo/new --name src /dev/vda 2>&1); then
    fail "capture of a disk with an LV mounted read-write was not refused"
fi
umount /mnt/src; vgchange -q -an vg0
echo "$out" | grep -q "mounted read-write" || fail "refusal said: $out"
[ ! -e /mnt/repo/new ] || fail "the refused capture created the repository"
check refuses-mounted-lv
liferaft capture --repo /mnt/repo/new --name src /dev/vda
echo "MEASURE after $(du -sb /mnt/repo/new/chunks | cut -f1)"
active=$(dmsetup ls | grep -c '^vg0-' || true)
[ "$active" = 0 ] || fail "capture left $active LVs of vg0 active"
check capture-deactivates
liferaft images --repo /mnt/repo/new
liferaft images --repo /mnt/repo/new --json > /tmp/images.json
/opt/liferaft/bin/python - <<'EOF'
import json
image = json.load(open("/tmp/images.json"))[0]
vg = image["volume_groups"][0]
assert vg["name"] == "vg0" and vg["pvs"] == ["disk 1 partition 2"], vg
lvs = {lv["name"]: lv for lv in vg["lvs"]}
assert lvs["root"]["filesystem"] == "ext4" and lvs["root"]["holds_root"], lvs["root"]
assert lvs["data"]["filesystem"] == "xfs" and lvs["swap"]["method"] == "swap", lvs
assert lvs["thin"]["segtype"] == "thin" and lvs["pool"]["segtype"] == "thin-pool", lvs
assert not image["raw"], image["raw"]
EOF
check images-json-stack

# The original still attached: a restore would give LVM two PVs with one UUID.
if out=$(liferaft restore --repo /mnt/repo/new --image src --to /dev/vdc --grow --dry-run 2>&1); then
    fail "restore next to the original PV was not refused: $out"
fi
echo "$out" | grep -q "LVM would see the same volume twice" || fail "refusal said: $out"
check refuses-duplicate-pv
wipefs -q -a /dev/vda2   # the original disk "died"

# ---------------------------------------------------------------- restore, grown
liferaft restore --repo /mnt/repo/new --image src --to /dev/vdc --grow --dry-run | tee /tmp/plan.txt
grep -q "Volume group vg0" /tmp/plan.txt || fail "the plan does not show the volume group"
grep -q "root .*grows into the new space" /tmp/plan.txt || fail "the plan does not say which LV grows"
check plan-shows-stack
liferaft restore --repo /mnt/repo/new --image src --to /dev/vdc --grow --verify --yes
active=$(dmsetup ls | grep -c '^vg0-' || true)
[ "$active" = 0 ] || fail "restore left $active LVs of vg0 active"
check restore-deactivates
[ "$(pvuuids /dev/vdc2)" = "$(sed 's#/dev/vda2#/dev/vdc2#' /tmp/pv.vg0)" ] || fail "PV/VG UUIDs differ"
[ "$(lvuuids vg0)" = "$(cat /tmp/lv.vg0)" ] || fail "LV UUIDs differ: $(lvuuids vg0)"
check same-uuids
lvs --noheadings -o lv_tags vg0/root | grep -q os || fail "LV tag lost"
vgchange -q -ay vg0
new_root=$(lvs --noheadings --units b --nosuffix -o lv_size vg0/root | tr -d ' ')
[ "$new_root" -gt $((root_size + 1024 * MIB)) ] || fail "root LV not grown: $new_root"
e2fsck -fn /dev/vg0/root; e2fsck -fn /dev/vg0/thin; xfs_repair -n /dev/vg0/data; e2fsck -fn /dev/vdc1
check fsck-clean
blocks=$(dumpe2fs -h /dev/vg0/root 2>/dev/null | sed -n 's/^Block count: *//p')
[ $((blocks * 4096)) -eq "$new_root" ] || fail "root filesystem not grown: $blocks blocks"
check grown-lv-and-fs
[ "$(blkid -o value -s UUID /dev/vg0/swap)" = "$swap_id" ] || fail "swap UUID differs"
[ "$(blkid -o value -s LABEL /dev/vg0/swap)" = lvswap ] || fail "swap label differs"
check swap-recreated
for lv in root data thin; do
    mount -o ro /dev/vg0/$lv /mnt/chk; sums /mnt/chk > /tmp/got.$lv; umount /mnt/chk
    cmp /tmp/sum.$lv /tmp/got.$lv || fail "files of $lv differ"
done
mount -o ro /dev/vdc1 /mnt/chk; sums /mnt/chk > /tmp/got.boot; umount /mnt/chk
cmp /tmp/sum.boot /tmp/got.boot || fail "files of the plain partition differ"
check checksums-equal
vgchange -q -an vg0

# ---------------------------------------------------------------- a VG on two disks
parted -s /dev/vdd mklabel gpt mkpart pv 1MiB 100%
partprobe /dev/vdd; udevadm settle
pvcreate -q /dev/vdd1 /dev/vde
vgcreate -q vg1 /dev/vdd1 /dev/vde
lvcreate -q -y -n span -l 100%FREE vg1
mkfs.ext4 -q /dev/vg1/span
mount /dev/vg1/span /mnt/src; fill /mnt/src/files 96; sums /mnt/src > /tmp/sum.span; umount /mnt/src
lvuuids vg1 > /tmp/lv.vg1
span_size=$(lvs --noheadings --units b --nosuffix -o lv_size vg1/span | tr -d ' ')
vgchange -q -an vg1
liferaft capture --repo /mnt/repo/new --name span /dev/vdd /dev/vde
wipefs -q -a /dev/vdd1 /dev/vde
liferaft restore --repo /mnt/repo/new --image span --to /dev/vdf --to /dev/vdg --grow \
    --grow-lv vg1/span --yes
[ "$(lvuuids vg1)" = "$(cat /tmp/lv.vg1)" ] || fail "vg1 LV UUIDs differ"
[ "$(pvs --noheadings -o pv_name,vg_name | awk '$2 == "vg1" {print $1}' | sort | tr '\n' ' ')" = "/dev/vdf1 /dev/vdg " ] \
    || fail "vg1 is not on vdf1 and vdg: $(pvs)"
vgchange -q -ay vg1
e2fsck -fn /dev/vg1/span
new_span=$(lvs --noheadings --units b --nosuffix -o lv_size vg1/span | tr -d ' ')
[ "$new_span" -gt $((span_size + 512 * MIB)) ] || fail "span LV not grown: $new_span"
mount -o ro /dev/vg1/span /mnt/chk; sums /mnt/chk > /tmp/got.span; umount /mnt/chk
cmp /tmp/sum.span /tmp/got.span || fail "files of the spanning LV differ"
vgchange -q -an vg1
check spanning-vg
umount /mnt/repo
echo "ALL DONE"
