# A Clonezilla image of an LVM disk, made by the real ocs-sr (Debian's
# clonezilla and drbl .debs from the runner's medium, unpacked into the RAM
# root), restored by liferaft (this tree's engine, --app); then imported into
# a repository and verified. tests/guest/test_clonezilla_lvm_vm.py runs it.
# Disks: vda source (GPT: p1 ext4, p2 PV of vg0: root ext4 in two segments,
# swap, data ext4), vdb scratch (ext4: Clonezilla's image root and a
# repository), vdc target (larger).
# Prints "CHECK <name> ok" per passed check; exits nonzero at the first failure.
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
ids() { # PV, VG and LV UUIDs and the filesystems' UUIDs and labels
    pvs --noheadings -o pv_uuid,vg_name,vg_uuid | sort
    lvs --noheadings -o lv_name,lv_uuid vg0 | sort
    for lv in root swap data; do blkid -o export /dev/vg0/$lv | grep -E '^(TYPE|UUID|LABEL)='; done
}
MIB=$((1024 * 1024))

mkdir -p /mnt/src /mnt/cz /mnt/chk
before=/mnt/cz/before   # what the source held: IDs and checksums
img=/mnt/cz/lvmimg
# (a rerun on the same scratch disk, by hand: the image is there, restore only)
blkid -p /dev/vdb > /dev/null 2>&1 || mkfs.ext4 -q /dev/vdb
mount /dev/vdb /mnt/cz
if [ ! -e "$img/lvm_vg0.conf" ]; then
mkdir -p $before
started=$(date +%s)
# (unpacked, not installed: no maintainer scripts or triggers, seconds not a minute)
for deb in "$LIFERAFT_GUEST_MEDIUM"/files/*.deb; do dpkg-deb -x "$deb" /; done
mkdir -p /usr/share/drbl/conf; ln -sf /etc/drbl/drbl.conf /usr/share/drbl/conf/  # (clonezilla's postinst)
echo "MEASURE install $(( $(date +%s) - started ))"

parted -s /dev/vda mklabel gpt mkpart boot ext4 1MiB 17MiB mkpart lvm 17MiB 100% set 2 lvm on
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L boot /dev/vda1
pvcreate -q /dev/vda2; vgcreate -q vg0 /dev/vda2
lvcreate -q -y -n root -L 32M vg0
lvcreate -q -y -n swap -L 8M vg0
lvcreate -q -y -n data -L 48M vg0
lvextend -q -L +32M vg0/root   # root: two segments, around swap and data
mkfs.ext4 -q -L root /dev/vg0/root; mkswap -q -L lvswap /dev/vg0/swap; mkfs.ext4 -q -L data /dev/vg0/data
for lv in root data; do
    mount /dev/vg0/$lv /mnt/src
    for i in 1 2 3 4; do head -c $((i * 700 * 1024)) /dev/urandom > /mnt/src/f$i; done
    mkdir /mnt/src/d; echo "$lv" > /mnt/src/d/name
    sums /mnt/src > $before/sum.$lv; umount /mnt/src
done
mount /dev/vda1 /mnt/src; echo boot > /mnt/src/b; sums /mnt/src > $before/sum.boot; umount /mnt/src
[ "$(lvs --noheadings --segments vg0/root | wc -l)" = 2 ] || fail "root is not in two segments"
ids > $before/ids
vgchange -q -an vg0

started=$(date +%s)
ocs-sr -b -q2 -j2 -z1p -sfsck -scs -senc -nogui -p true -or /mnt/cz savedisk lvmimg vda \
    > /tmp/ocs.log 2>&1 || { tail -30 /tmp/ocs.log; fail "ocs-sr savedisk"; }
echo "MEASURE savedisk $(( $(date +%s) - started ))"
img=/mnt/cz/lvmimg
ls -l "$img"
for f in lvm_vg_dev.list lvm_logv.list; do echo "== $f"; cat "$img/$f"; done
for f in lvm_vg0.conf vg0-root.ext4-ptcl-img.gz vg0-data.ext4-ptcl-img.gz swappt-vg0-swap.info; do
    [ -e "$img/$f" ] || fail "ocs-sr did not write $f"
done
check ocs-sr-saved-lvm
dmsetup remove_all 2>/dev/null || true
vgchange -q -an vg0 2>/dev/null || true
# the original disk "died"
dd if=/dev/zero of=/dev/vda bs=1M status=none || true
sync; partprobe /dev/vda 2>/dev/null || true; udevadm settle
pvscan --cache > /dev/null 2>&1 || true

fi

liferaft images --repo /mnt/cz
liferaft restore --repo /mnt/cz --image lvmimg --to /dev/vdc --grow --dry-run | tee /tmp/plan.txt
grep -q "Volume group vg0" /tmp/plan.txt || fail "the plan does not show the volume group"
grep -q "root" /tmp/plan.txt || fail "the plan lacks the root LV"
grep -q "data" /tmp/plan.txt || fail "the plan lacks the data LV"
check plan-shows-stack
started=$(date +%s)
liferaft restore --repo /mnt/cz --image lvmimg --to /dev/vdc --grow --verify --yes
echo "MEASURE restore $(( $(date +%s) - started ))"
active=$(dmsetup ls | grep -c '^vg0-' || true)
[ "$active" = 0 ] || fail "restore left $active LVs of vg0 active"
check restore-deactivates
vgchange -q -ay vg0
ids | sed 's#/dev/vdc#/dev/vda#' > /tmp/ids.after
diff $before/ids /tmp/ids.after || fail "UUIDs or labels differ"
check same-uuids
e2fsck -fn /dev/vg0/root; e2fsck -fn /dev/vg0/data; e2fsck -fn /dev/vdc1
check fsck-clean
for lv in root data; do
    mount -o ro /dev/vg0/$lv /mnt/chk; sums /mnt/chk > /tmp/got.$lv; umount /mnt/chk
    cmp $before/sum.$lv /tmp/got.$lv || fail "files of $lv differ"
done
mount -o ro /dev/vdc1 /mnt/chk; sums /mnt/chk > /tmp/got.boot; umount /mnt/chk
cmp $before/sum.boot /tmp/got.boot || fail "files of the plain partition differ"
check checksums-equal
grown=$(lvs --noheadings --units b --nosuffix -o lv_size vg0/data | tr -d ' ')
blocks=$(dumpe2fs -h /dev/vg0/data 2>/dev/null | sed -n 's/^Block count: *//p')
bsize=$(dumpe2fs -h /dev/vg0/data 2>/dev/null | sed -n 's/^Block size: *//p')
[ "$grown" -gt $((48 * MIB + 64 * MIB)) ] || fail "data LV not grown: $grown"
[ $((blocks * bsize)) -eq "$grown" ] || fail "data ext4 not grown: $((blocks * bsize)) of $grown"
check grown
vgchange -q -an vg0
wipefs -q -a /dev/vdc2; wipefs -q -a /dev/vdc; partprobe /dev/vdc; udevadm settle

# a damaged LV image: one line naming it, nothing written
cp -a "$img" /mnt/cz/bad
part=vg0-data.ext4-ptcl-img.gz
size=$(stat -c %s "/mnt/cz/bad/$part")
printf 'X' | dd of="/mnt/cz/bad/$part" bs=1 seek=$((size / 2)) conv=notrunc status=none
if out=$(liferaft restore --repo /mnt/cz --image bad --to /dev/vdc --yes 2>&1); then
    fail "a damaged LV image was restored"
fi
echo "$out" | tail -3
echo "$out" | grep -q "vg0/data" || fail "the error does not name the LV: $out"
[ -z "$(blkid -p /dev/vdc || true)" ] || fail "the damaged image wrote: $(blkid -p /dev/vdc)"
check damaged-lv-image
rm -rf /mnt/cz/bad

liferaft import --repo /mnt/cz/repo /mnt/cz/lvmimg --name lvm
liferaft verify --repo /mnt/cz/repo
liferaft images --repo /mnt/cz/repo --json > /tmp/images.json
/opt/liferaft/bin/python - <<'EOF'
import json
image = json.load(open("/tmp/images.json"))[0]
(vg,) = image["volume_groups"]
assert vg["name"] == "vg0" and vg["pvs"] == ["disk 1 partition 2"], vg
lvs = {lv["name"]: lv for lv in vg["lvs"]}
assert lvs["root"]["filesystem"] == "ext4" and lvs["swap"]["method"] == "swap", lvs
EOF
check import-verify
umount /mnt/cz
echo "ALL DONE"
