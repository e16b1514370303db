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

# -- LUKS: ocs-sr -luks yes opens each LUKS partition (its passphrase read from
# stdin), keeps its header (vda2-luksHeader.bin) and saves what is inside as
# ocs_luks_XXX.<fs>-ptcl-img.gz, or the PV inside (vda3: LUKS1 holding vgl).
# vda2 (LUKS2) holds ext4. The same passphrase opens both, as it would have to
# with ocs-sr restoredisk.
luksid() { cryptsetup luksUUID "$1"; }
pw=clonezilla-luks
limg=/mnt/cz/lukimg
lbefore=/mnt/cz/lbefore
if [ ! -e "$limg/luks-dev.list" ]; then
mkdir -p $lbefore
wipefs -q -a /dev/vda
parted -s /dev/vda mklabel gpt mkpart boot ext4 1MiB 17MiB mkpart enc 17MiB 97MiB \
    mkpart encl 97MiB 100%
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L lboot /dev/vda1
printf '%s' $pw | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 --key-file - /dev/vda2
printf '%s' $pw | cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 \
    --key-file - /dev/vda3
printf '%s' $pw | cryptsetup open --key-file - /dev/vda2 src2
printf '%s' $pw | cryptsetup open --key-file - /dev/vda3 src3
mkfs.ext4 -q -L secret /dev/mapper/src2
pvcreate -q /dev/mapper/src3; vgcreate -q vgl /dev/mapper/src3
lvcreate -q -y -n root -L 40M vgl; lvcreate -q -y -n swap -L 8M vgl
mkfs.ext4 -q -L lroot /dev/vgl/root; mkswap -q -L lswap /dev/vgl/swap
for dev in /dev/mapper/src2 /dev/vgl/root /dev/vda1; do
    mount "$dev" /mnt/src
    head -c $((3 * MIB)) /dev/urandom > /mnt/src/f; mkdir -p /mnt/src/d; echo "$dev" > /mnt/src/d/n
    sums /mnt/src > "$lbefore/sum.$(basename "$dev")"; umount /mnt/src
done
{ luksid /dev/vda2; luksid /dev/vda3; blkid -o export /dev/mapper/src2 | grep -E '^(UUID|LABEL)=';
  pvs --noheadings -o pv_uuid,vg_name | tr -s ' '; } > $lbefore/ids
vgchange -q -an vgl; cryptsetup close src2; cryptsetup close src3
printf '%s\n%s\n' $pw $pw | ocs-sr -b -q2 -j2 -z1p -sfsck -scs -senc -nogui -luks yes -p true \
    -or /mnt/cz savedisk lukimg vda > /tmp/ocs-luks.log 2>&1 \
    || { tail -30 /tmp/ocs-luks.log; fail "ocs-sr savedisk (LUKS)"; }
ls -l "$limg"; cat "$limg/luks-dev.list"
for f in luks-dev.list vda2-luksHeader.bin vda3-luksHeader.bin lvm_vgl.conf vgl-root.ext4-ptcl-img.gz; do
    [ -e "$limg/$f" ] || fail "ocs-sr did not write $f"
done
ls "$limg"/ocs_luks_*.ext4-ptcl-img.gz > /dev/null || fail "ocs-sr did not save the LUKS2 volume"
check ocs-sr-saved-luks
dd if=/dev/zero of=/dev/vda bs=1M status=none || true
sync; partprobe /dev/vda 2>/dev/null || true; udevadm settle
fi
wipefs -q -a /dev/vdc; partprobe /dev/vdc; udevadm settle

liferaft images --repo /mnt/cz | tee /tmp/images.txt
grep -q "LUKS2 volume .* (ext4), opened by Clonezilla" /tmp/images.txt \
    || fail "the listing does not show the LUKS volume"
LIFERAFT_LUKS_PASSPHRASE=$pw liferaft restore --repo /mnt/cz --image lukimg --to /dev/vdc \
    --grow --dry-run | tee /tmp/plan.txt
grep -q "LUKS2, unlocked: header as it was" /tmp/plan.txt || fail "the plan does not show LUKS2"
grep -q "LUKS1, unlocked: header as it was" /tmp/plan.txt || fail "the plan does not show LUKS1"
grep -q "Volume group vgl" /tmp/plan.txt || fail "the plan does not show vgl inside LUKS"
check luks-plan
if out=$(LIFERAFT_LUKS_PASSPHRASE=wrong liferaft restore --repo /mnt/cz --image lukimg \
        --to /dev/vdc --yes 2>&1); then
    fail "a wrong passphrase restored"
fi
echo "$out" | tail -2
[ "$(echo "$out" | grep -c '^liferaft: error')" = 1 ] || fail "not one error line: $out"
! echo "$out" | grep -q Traceback || fail "a traceback: $out"
echo "$out" | grep -q "passphrase does not open" || fail "the error does not say why: $out"
[ -z "$(blkid -p /dev/vdc || true)" ] || fail "a wrong passphrase wrote: $(blkid -p /dev/vdc)"
check luks-wrong-passphrase
started=$(date +%s)
LIFERAFT_LUKS_PASSPHRASE=$pw liferaft restore --repo /mnt/cz --image lukimg --to /dev/vdc \
    --grow --verify --yes
echo "MEASURE luks_restore $(( $(date +%s) - started ))"
[ -z "$(dmsetup ls | grep -v '^No devices' || true)" ] || fail "restore left: $(dmsetup ls)"
printf '%s' $pw | cryptsetup open --key-file - /dev/vdc2 dst2
printf '%s' $pw | cryptsetup open --key-file - /dev/vdc3 dst3
vgchange -q -ay vgl
{ luksid /dev/vdc2; luksid /dev/vdc3; blkid -o export /dev/mapper/dst2 | grep -E '^(UUID|LABEL)=';
  pvs --noheadings -o pv_uuid,vg_name | tr -s ' '; } > /tmp/lids
diff $lbefore/ids /tmp/lids || fail "LUKS, filesystem or PV UUIDs differ"
e2fsck -fn /dev/mapper/dst2; e2fsck -fn /dev/vgl/root; e2fsck -fn /dev/vdc1
for pair in src2:/dev/mapper/dst2 root:/dev/vgl/root vda1:/dev/vdc1; do
    mount -o ro "${pair#*:}" /mnt/chk; sums /mnt/chk > /tmp/lgot; umount /mnt/chk
    cmp "$lbefore/sum.${pair%%:*}" /tmp/lgot || fail "files of ${pair#*:} differ"
done
[ "$(blkid -o value -s LABEL /dev/vgl/swap)" = lswap ] || fail "the swap LV inside LUKS lost its label"
vgchange -q -an vgl; cryptsetup close dst2; cryptsetup close dst3
check luks-restored

# import: what was inside the LUKS volumes only into an encrypted repository
if liferaft import --repo /mnt/cz/plain "$limg" 2>/tmp/err; then fail "imported into a plain repository"; fi
grep -q "encrypted repository" /tmp/err || fail "import refusal does not say why: $(cat /tmp/err)"
export LIFERAFT_PASSPHRASE=repo-secret
liferaft init --repo /mnt/cz/sealed --encrypt
liferaft import --repo /mnt/cz/sealed "$limg" --name luks
liferaft verify --repo /mnt/cz/sealed
liferaft images --repo /mnt/cz/sealed | grep -q "LUKS volume .*unlocked" || fail "imported LUKS not shown"
check luks-import-verify

# -- an LVM PV on the whole disk (no partition table: ocs-sr leaves vda-pt.sf
# empty and names /dev/vda in lvm_vg_dev.list), restored onto a larger disk
wimg=/mnt/cz/wholeimg
if [ ! -e "$wimg/lvm_vgw.conf" ]; then
wipefs -q -a /dev/vda; dd if=/dev/zero of=/dev/vda bs=1M count=4 status=none
pvcreate -q /dev/vda; vgcreate -q vgw /dev/vda; lvcreate -q -y -n root -L 40M vgw
mkfs.ext4 -q -L wroot /dev/vgw/root
mount /dev/vgw/root /mnt/src; head -c $((2 * MIB)) /dev/urandom > /mnt/src/w
sums /mnt/src > $lbefore/sum.wroot; umount /mnt/src
{ pvs --noheadings -o pv_uuid,vg_name,vg_uuid /dev/vda; lvs --noheadings -o lv_name,lv_uuid vgw;
  blkid -o export /dev/vgw/root | grep -E '^(UUID|LABEL)='; } | tr -s ' ' > $lbefore/wids
vgchange -q -an vgw
ocs-sr -b -q2 -j2 -z1p -sfsck -scs -senc -nogui -p true -or /mnt/cz savedisk wholeimg vda \
    > /tmp/ocs-whole.log 2>&1 || { tail -30 /tmp/ocs-whole.log; fail "ocs-sr savedisk (whole-disk PV)"; }
if [ ! -e "$wimg/vda-pt.sf" ] || [ -s "$wimg/vda-pt.sf" ]; then fail "vda-pt.sf is not empty"; fi
grep -q "^vgw /dev/vda " "$wimg/lvm_vg_dev.list" || fail "lvm_vg_dev.list: $(cat "$wimg/lvm_vg_dev.list")"
check ocs-sr-saved-whole-disk-pv
vgchange -q -an vgw; dmsetup remove_all 2>/dev/null || true  # (ocs-sr leaves LVs active)
dd if=/dev/zero of=/dev/vda bs=1M status=none || true
sync; pvscan --cache > /dev/null 2>&1 || true
fi
wipefs -q -a /dev/vdc; dd if=/dev/zero of=/dev/vdc bs=1M count=128 status=none; udevadm settle
liferaft restore --repo /mnt/cz --image wholeimg --to /dev/vdc --grow --dry-run | tee /tmp/plan.txt
grep -q "New layout (no partition table)" /tmp/plan.txt || fail "the plan writes a partition table"
grep -q "Volume group vgw (LVM, on disk 1)" /tmp/plan.txt || fail "the plan lacks the PV on the disk"
liferaft restore --repo /mnt/cz --image wholeimg --to /dev/vdc --grow --verify --yes
vgchange -q -ay vgw
{ pvs --noheadings -o pv_uuid,vg_name,vg_uuid /dev/vdc; lvs --noheadings -o lv_name,lv_uuid vgw;
  blkid -o export /dev/vgw/root | grep -E '^(UUID|LABEL)='; } | tr -s ' ' > /tmp/wids
diff $lbefore/wids /tmp/wids || fail "PV, VG, LV or filesystem UUIDs differ"
e2fsck -fn /dev/vgw/root
mount -o ro /dev/vgw/root /mnt/chk; sums /mnt/chk > /tmp/wgot; umount /mnt/chk
cmp $lbefore/sum.wroot /tmp/wgot || fail "files of vgw/root differ"
pvsize=$(pvs --noheadings --units b --nosuffix -o pv_size /dev/vdc | tr -d ' ')
[ "$pvsize" -gt $((300 * MIB)) ] || fail "the PV did not grow onto the larger disk: $pvsize"
[ -z "$(sfdisk -d /dev/vdc 2>/dev/null || true)" ] || fail "a partition table was written"
vgchange -q -an vgw
check whole-disk-pv-restored

# -- a thin pool: ocs-sr saves each thin LV (vgt-thin1.ext4-ptcl-img.gz), not
# the pool's metadata; liferaft makes fresh metadata naming the thin LVs,
# writes it where tp_tmeta lies, activates the pool and writes thin1 through it
timg=/mnt/cz/thinimg
tids() { # PV, VG, LV and filesystem UUIDs of vgt
    pvs --noheadings -o pv_uuid,vg_name,vg_uuid -S vg_name=vgt
    lvs --noheadings -o lv_name,lv_uuid,pool_lv vgt  # (no segtype: a grown LV has two segments)
    for lv in lin thin1; do blkid -o export /dev/vgt/$lv | grep -E '^(UUID|LABEL)='; done
}
if [ ! -e "$timg/lvm_vgt.conf" ]; then
wipefs -q -a /dev/vda; dd if=/dev/zero of=/dev/vda bs=1M count=4 status=none
parted -s /dev/vda mklabel gpt mkpart boot ext4 1MiB 17MiB mkpart lvm 17MiB 100% set 2 lvm on
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L tboot /dev/vda1
pvcreate -q /dev/vda2; vgcreate -q vgt /dev/vda2
lvcreate -q -y -n lin -L 32M vgt; mkfs.ext4 -q -L lin /dev/vgt/lin
lvcreate -q -y --type thin-pool -n tp -L 64M vgt
lvcreate -q -y -n thin1 -V 100M --thinpool vgt/tp; mkfs.ext4 -q -L thin1 /dev/vgt/thin1
for lv in lin thin1; do
    mount /dev/vgt/$lv /mnt/src; head -c $((3 * MIB)) /dev/urandom > /mnt/src/t
    sums /mnt/src > "$lbefore/sum.t$lv"; umount /mnt/src
done
tids | tr -s ' ' > $lbefore/tids
vgchange -q -an vgt
ocs-sr -b -q2 -j2 -z1p -sfsck -scs -senc -nogui -p true -or /mnt/cz savedisk thinimg vda \
    > /tmp/ocs-thin.log 2>&1 || { tail -30 /tmp/ocs-thin.log; fail "ocs-sr savedisk (thin pool)"; }
[ -e "$timg/vgt-thin1.ext4-ptcl-img.gz" ] || fail "ocs-sr did not save thin1"
check ocs-sr-saved-thin
# the same two partitions saved as partitions (ocs-sr saveparts: no disk)
ocs-sr -b -q2 -j2 -z1p -sfsck -scs -senc -nogui -p true -or /mnt/cz saveparts thinparts \
    "vda1 vda2" > /tmp/ocs-parts.log 2>&1 || { tail -30 /tmp/ocs-parts.log; fail "ocs-sr saveparts"; }
if [ ! -e /mnt/cz/thinparts/lvm_vgt.conf ] || [ -e /mnt/cz/thinparts/disk ]; then
    fail "ocs-sr saveparts did not write a saveparts image of vgt"
fi
# while the source's volume group is active, a restore of its copy is refused
# (ocs-sr activated every VG it found: vgw on vdc too)
vgchange -q -an; dmsetup remove_all 2>/dev/null || true
vgchange -q -ay vgt
head -c $MIB /dev/vdc | sha256sum > /tmp/vdc.before
if out=$(liferaft restore --repo /mnt/cz --image thinimg --to /dev/vdc --yes 2>&1); then
    fail "restored a copy of an active volume group"
fi
echo "$out" | grep -q "volume group vgt .* is active on this machine" || fail "not said: $out"
head -c $MIB /dev/vdc | sha256sum | cmp -s - /tmp/vdc.before || fail "the refused restore wrote"
check active-vg-refused
vgchange -q -an vgt; dmsetup remove_all 2>/dev/null || true
dd if=/dev/zero of=/dev/vda bs=1M status=none || true
sync; partprobe /dev/vda 2>/dev/null || true; udevadm settle; pvscan --cache > /dev/null 2>&1 || true
fi
wipefs -q -a /dev/vdc; dd if=/dev/zero of=/dev/vdc bs=1M count=8 status=none; udevadm settle
liferaft restore --repo /mnt/cz --image thinimg --to /dev/vdc --grow --verify --yes
vgchange -q -ay vgt || fail "the restored thin pool does not activate"
tids | tr -s ' ' | sed 's#/dev/vdc#/dev/vda#' > /tmp/tids
diff $lbefore/tids /tmp/tids || fail "thin pool: UUIDs differ"
e2fsck -fn /dev/vgt/lin; e2fsck -fn /dev/vgt/thin1; e2fsck -fn /dev/vdc1
for lv in lin thin1; do
    mount -o ro /dev/vgt/$lv /mnt/chk; sums /mnt/chk > /tmp/tgot; umount /mnt/chk
    cmp "$lbefore/sum.t$lv" /tmp/tgot || fail "files of vgt/$lv differ"
done
lvs -a vgt
vgchange -q -an vgt
check thin-restored

# LVM in a saveparts image: restored onto partitions the user names (here a
# larger PV partition: --grow grows the PV), the volume group recreated on it
wipefs -q -a /dev/vdc; dd if=/dev/zero of=/dev/vdc bs=1M count=8 status=none
parted -s /dev/vdc mklabel gpt mkpart a 1MiB 21MiB mkpart b 21MiB 100%
partprobe /dev/vdc; udevadm settle
liferaft restore --repo /mnt/cz --image thinparts --to /dev/vdc1 --to /dev/vdc2 --grow \
    --dry-run | tee /tmp/plan.txt
grep -q "an LVM physical volume: its volume group below is recreated on it" /tmp/plan.txt \
    || fail "the plan does not say the PV's volume group is recreated"
grep -q "Volume group vgt" /tmp/plan.txt || fail "the plan lacks the volume group"
liferaft restore --repo /mnt/cz --image thinparts --to /dev/vdc1 --to /dev/vdc2 --grow --verify --yes
vgchange -q -ay vgt || fail "the volume group from the saveparts image does not activate"
tids | tr -s ' ' | sed 's#/dev/vdc#/dev/vda#' > /tmp/tids
diff $lbefore/tids /tmp/tids || fail "saveparts LVM: UUIDs differ"
e2fsck -fn /dev/vgt/lin; e2fsck -fn /dev/vgt/thin1
for lv in lin thin1; do
    mount -o ro /dev/vgt/$lv /mnt/chk; sums /mnt/chk > /tmp/tgot; umount /mnt/chk
    cmp "$lbefore/sum.t$lv" /tmp/tgot || fail "files of vgt/$lv differ (saveparts)"
done
pvsize=$(pvs --noheadings --units b --nosuffix -o pv_size /dev/vdc2 | tr -d ' ')
[ "$pvsize" -gt $((300 * MIB)) ] || fail "the PV did not grow into its larger partition: $pvsize"
vgchange -q -an vgt
check saveparts-lvm-restored
umount /mnt/cz
echo "ALL DONE"
