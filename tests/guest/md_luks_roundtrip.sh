# md RAID and LUKS round trips inside the rescue system
# (tests/guest/test_md_luks_vm.py runs it through the guest runner with --app).
# Disks, in order (MiB):
#   vda 128, vdb 128  source RAID1 (GPT, p1 each, metadata 1.2, name "oldhost:root", ext4)
#   vdc 1024          repository disk (ext4)
#   vdd 192, vde 192  targets of the RAID1 (larger: --grow grows the array's ext4)
#   vdf 96, vdg 96    source RAID5 of three slots, one missing (degraded), ext4
#   vdh 64            source LUKS2 (ext4 inside)
# Later steps reuse wiped sources as targets: vda+vdb take the RAID5, vdf+vdg
# hold LVM on a RAID1 restored onto vdd+vde with --grow, vdf takes the LUKS
# (larger than vdh: each LUKS restore uses --grow); vdh is made again with
# LVM inside LUKS.
# Prints "CHECK <name> ok" per passed check and "TIME <name> <seconds>"; exits
# nonzero at the first failure (set -e), saying which.
set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
MIB=$((1024 * 1024))
sums() { (cd "$1" && find . -type f ! -name 'lost+found' -print0 | sort -z | xargs -0 -r sha256sum); }
fill() { # fill DIR MiB: files of random bytes, 1..8 MiB each
    local dir=$1 left=$2 i=0 n
    mkdir -p "$dir"
    while [ "$left" -gt 0 ]; do
        n=$(( (i % 8) + 1 )); [ "$n" -gt "$left" ] && n=$left
        head -c $((n * MIB)) /dev/urandom > "$dir/f$i"
        left=$((left - n)); i=$((i + 1))
    done
}
timed() { local name=$1 t0; shift; t0=$(date +%s); "$@"; echo "TIME $name $(( $(date +%s) - t0 ))"; }
one_part() { for d in "$@"; do parted -s "$d" mklabel gpt mkpart r 1MiB 100% set 1 raid on; done; partprobe "$@"; udevadm settle; }
md_uuid() { mdadm --detail --export "$1" | sed -n 's/^MD_UUID=//p'; }
md_name() { mdadm --detail --export "$1" | sed -n 's/^MD_NAME=//p'; }
ext_size() { dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Block count/ {c=$2} /^Block size/ {b=$2} END {print c*b}'; }
pv_size() { pvs --noheadings --units b --nosuffix -o pv_size -S vg_name="$1" | tr -d ' '; }
lv_size() { lvs --noheadings --units b --nosuffix -o lv_size "$1" | tr -d ' '; }
stopped() { ! grep -q '^md' /proc/mdstat || fail "arrays left running: $(cat /proc/mdstat)"; }
mkdir -p /mnt/src /mnt/repo /mnt/chk
mkfs.ext4 -q /dev/vdc; mount /dev/vdc /mnt/repo
REPO=/mnt/repo/r

# ---------------------------------------------------------------- RAID1
one_part /dev/vda /dev/vdb
mdadm --create /dev/md/src1 --run --metadata=1.2 --level=1 --raid-devices=2 \
    --name=oldhost:root /dev/vda1 /dev/vdb1 </dev/null
mdadm --wait /dev/md/src1 || true
mkfs.ext4 -q -L mdroot /dev/md/src1
mount /dev/md/src1 /mnt/src; fill /mnt/src/files 64; sums /mnt/src > /tmp/sum.r1; umount /mnt/src
r1_uuid=$(md_uuid /dev/md/src1); r1_fs=$(blkid -o value -s UUID /dev/md/src1)
r1_size=$(blockdev --getsize64 /dev/md/src1)
mdadm --stop /dev/md/src1
timed capture-raid1 liferaft capture --repo $REPO --name raid1 /dev/vda /dev/vdb
stopped
check raid1-capture-stops-array
liferaft images --repo $REPO | tee /tmp/images.txt
grep -q "md array oldhost:root (raid1, metadata 1.2, UUID $r1_uuid) on disk 1 partition 1, disk 2 partition 1: ext4" /tmp/images.txt \
    || fail "images does not show the array"
liferaft images --repo $REPO --json > /tmp/images.json
/opt/liferaft/bin/python - <<'PY'
import json
image = json.load(open("/tmp/images.json"))[0]
assert len(image["md_arrays"]) == 1 and not image["raw"], image
PY
# stored once: the data is about 64 MiB, not twice that
stored=$(du -sm $REPO/chunks | cut -f1)
[ "$stored" -lt 100 ] || fail "the RAID1 took $stored MiB: captured per member?"
check raid1-images-stack
# The original still attached: refused (the system would see two arrays with one UUID).
if out=$(liferaft restore --repo $REPO --image raid1 --to /dev/vdd --to /dev/vde --dry-run 2>&1); then
    fail "restore next to the original members was not refused: $out"
fi
echo "$out" | grep -q "would see the array twice" || fail "refusal said: $out"
check raid1-refuses-duplicate
mdadm --zero-superblock /dev/vda1 /dev/vdb1   # the original disks "died"
liferaft restore --repo $REPO --image raid1 --to /dev/vdd --to /dev/vde --grow --dry-run | tee /tmp/plan.txt
grep -q "md RAID member (device 0) of array oldhost:root" /tmp/plan.txt || fail "plan: no member line"
grep -q "md RAID array oldhost:root (raid1, metadata 1.2), same UUID $r1_uuid" /tmp/plan.txt \
    || fail "plan: no array"
grep -q "grows with its members" /tmp/plan.txt || fail "plan: array does not grow"
check raid1-plan-shows-stack
timed restore-raid1 liferaft restore --repo $REPO --image raid1 --to /dev/vdd --to /dev/vde --grow --verify --yes \
    | tee /tmp/r1.out
stopped
check raid1-restore-stops-array
# the mark is cleared last, after the array's contents (engine/restoremark.py)
if liferaft disks | grep -q "incomplete restore"; then fail "restored disks still marked incomplete"; fi
# a resync md has not finished is in the result, with how far it got
if grep -q "resyncing" /tmp/r1.out; then
    grep -q "oldhost:root: array resyncing, [0-9]*% — do not remove disks until done" /tmp/r1.out \
        || fail "resync note: $(grep resyncing /tmp/r1.out)"
fi
check raid1-restore-complete
# assembles by its UUID, as a restored system's mdadm.conf ARRAY line would say
mdadm --assemble /dev/md/chk --uuid="$r1_uuid" /dev/vdd1 /dev/vde1
[ "$(md_uuid /dev/md/chk)" = "$r1_uuid" ] || fail "array UUID differs"
[ "$(md_name /dev/md/chk)" = "oldhost:root" ] || fail "array name differs: $(md_name /dev/md/chk)"
[ "$(blkid -o value -s UUID /dev/md/chk)" = "$r1_fs" ] || fail "filesystem UUID differs"
check raid1-same-uuid
mdadm --detail /dev/md/chk
timed resync mdadm --wait /dev/md/chk || true
md_sys="/sys/block/$(basename "$(readlink -f /dev/md/chk)")/md"
echo check > "$md_sys/sync_action"; sleep 1
mdadm --wait /dev/md/chk || true
mismatch=$(cat "$md_sys/mismatch_cnt")
[ "$mismatch" = 0 ] || fail "members differ after the resync: mismatch_cnt $mismatch"
check raid1-members-agree
e2fsck -fn /dev/md/chk
check raid1-fsck-clean
new_size=$(blockdev --getsize64 /dev/md/chk)
blocks=$(dumpe2fs -h /dev/md/chk 2>/dev/null | sed -n 's/^Block count: *//p')
[ "$new_size" -gt $((r1_size + 32 * MIB)) ] || fail "array not grown: $new_size"
[ $((blocks * 4096)) -gt $((r1_size + 32 * MIB)) ] || fail "ext4 not grown: $blocks blocks"
check raid1-grown
mount -o ro /dev/md/chk /mnt/chk; sums /mnt/chk > /tmp/got.r1; umount /mnt/chk
cmp /tmp/sum.r1 /tmp/got.r1 || fail "files of the RAID1 differ"
check raid1-checksums-equal
# each member alone holds the data (a disk of the mirror can die)
mdadm --stop /dev/md/chk
mdadm --assemble --run --readonly /dev/md/half /dev/vde1
mount -o ro /dev/md/half /mnt/chk; sums /mnt/chk > /tmp/got.half; umount /mnt/chk
cmp /tmp/sum.r1 /tmp/got.half || fail "the second member alone differs"
mdadm --stop /dev/md/half
check raid1-second-member-whole

# ---------------------------------------------------------------- RAID5, degraded
one_part /dev/vdf /dev/vdg
mdadm --create /dev/md/src5 --run --level=5 --chunk=64 --raid-devices=3 \
    /dev/vdf1 missing /dev/vdg1 </dev/null
mkfs.ext4 -q -L r5 /dev/md/src5
mount /dev/md/src5 /mnt/src; fill /mnt/src/files 48; sums /mnt/src > /tmp/sum.r5; umount /mnt/src
r5_uuid=$(md_uuid /dev/md/src5)
mdadm --stop /dev/md/src5
timed capture-raid5 liferaft capture --repo $REPO --name raid5 /dev/vdf /dev/vdg
stopped
mdadm --zero-superblock /dev/vdf1 /dev/vdg1
mdadm --zero-superblock /dev/vdd1 /dev/vde1
wipefs -q -a /dev/vda /dev/vdb
liferaft restore --repo $REPO --image raid5 --to /dev/vda --to /dev/vdb --dry-run | tee /tmp/plan5.txt
grep -q "degraded as captured: 1 of 3 members missing" /tmp/plan5.txt || fail "plan: not degraded"
timed restore-raid5 liferaft restore --repo $REPO --image raid5 --to /dev/vda --to /dev/vdb --yes
stopped
mdadm --assemble --run /dev/md/chk5 /dev/vda1 /dev/vdb1
[ "$(md_uuid /dev/md/chk5)" = "$r5_uuid" ] || fail "RAID5 UUID differs"
mdadm --detail /dev/md/chk5 | tee /tmp/d5.txt
grep -q "Chunk Size : 64K" /tmp/d5.txt || fail "chunk size differs"
grep -q "Raid Devices : 3" /tmp/d5.txt || fail "slots differ"
e2fsck -fn /dev/md/chk5
mount -o ro /dev/md/chk5 /mnt/chk; sums /mnt/chk > /tmp/got.r5; umount /mnt/chk
cmp /tmp/sum.r5 /tmp/got.r5 || fail "files of the RAID5 differ"
mdadm --stop /dev/md/chk5
check raid5-degraded-restored

# ---------------------------------------------------------------- LVM on RAID1
# vdf+vdg again: RAID1 holding an LVM PV; restored onto vdd+vde
mdadm --zero-superblock /dev/vda1 /dev/vdb1 2>/dev/null || true  # the RAID5 copy
one_part /dev/vdf /dev/vdg
mdadm --create /dev/md/srcl --run --metadata=1.2 --level=1 --raid-devices=2 \
    --name=oldhost:lvm /dev/vdf1 /dev/vdg1 </dev/null
wipefs -q -a /dev/md/srcl  # the RAID5's ext4 at the same data offset
pvcreate -q /dev/md/srcl; vgcreate -q mdvg /dev/md/srcl
lvcreate -q -y -n root -L 48M mdvg; mkfs.ext4 -q -m 0 /dev/mdvg/root
mount /dev/mdvg/root /mnt/src; fill /mnt/src/files 16; sums /mnt/src > /tmp/sum.mdlvm
# an online backup of the array in use (its LV mounted): one line, nothing stored
if out=$(liferaft backup --repo $REPO --name busy /dev/vdf /dev/vdg 2>&1); then
    fail "the online backup took an md array in use"
fi
echo "$out"
[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "the refusal is not one line"
grep -q "is a member of the md array .* which is in use (/dev/mapper/mdvg-root is mounted on /mnt/src)" \
    <<< "$out" || fail "the refusal does not name the array in use"
if liferaft images --repo $REPO | grep -q busy; then fail "the refused backup stored an image"; fi
check md-in-use-refused
umount /mnt/src
lvs --noheadings -o lv_name,lv_uuid mdvg | sort > /tmp/lv.mdlvm
rl_uuid=$(md_uuid /dev/md/srcl)
rl_pv=$(pv_size mdvg)
rl_lv=$(lv_size mdvg/root)
vgchange -q -an mdvg; mdadm --stop /dev/md/srcl
timed capture-md-lvm liferaft capture --repo $REPO --name mdlvm /dev/vdf /dev/vdg
stopped
mdadm --zero-superblock /dev/vdf1 /dev/vdg1
# onto the larger vdd+vde with --grow: members -> array -> PV (pvresize) -> LV root -> ext4
liferaft restore --repo $REPO --image mdlvm --to /dev/vdd --to /dev/vde --grow --dry-run | tee /tmp/planm.txt
grep -q "Volume group mdvg (LVM, on md array on disk 1 partition 1)" /tmp/planm.txt || fail "plan: no VG on md"
grep -q "root .* grows into the new space" /tmp/planm.txt || fail "plan: LV root does not grow"
timed restore-md-lvm liferaft restore --repo $REPO --image mdlvm --to /dev/vdd --to /dev/vde --grow --verify --yes
stopped
mdadm --assemble /dev/md/chkl --uuid="$rl_uuid" /dev/vdd1 /dev/vde1
vgchange -q -ay mdvg
[ "$(lvs --noheadings -o lv_name,lv_uuid mdvg | sort)" = "$(cat /tmp/lv.mdlvm)" ] || fail "LV UUIDs on md differ"
e2fsck -fn /dev/mdvg/root
pv_now=$(pv_size mdvg)
lv_now=$(lv_size mdvg/root)
fs_now=$(ext_size /dev/mdvg/root)
echo "md+LVM grown: PV $rl_pv -> $pv_now, LV root $rl_lv -> $lv_now, ext4 $fs_now"
[ "$pv_now" -gt $((rl_pv + 64 * MIB)) ] || fail "the PV on md did not grow: $pv_now"
[ "$lv_now" -gt $((rl_lv + 64 * MIB)) ] || fail "LV root did not grow: $lv_now"
[ "$fs_now" -gt $((rl_lv + 64 * MIB)) ] || fail "ext4 in LV root did not grow: $fs_now"
check md-lvm-grown
mount -o ro /dev/mdvg/root /mnt/chk; sums /mnt/chk > /tmp/got.mdlvm; umount /mnt/chk
cmp /tmp/sum.mdlvm /tmp/got.mdlvm || fail "files of the LV on md differ"
vgchange -q -an mdvg; mdadm --stop /dev/md/chkl
mdadm --zero-superblock /dev/vdd1 /dev/vde1
check md-lvm-roundtrip

# ---------------------------------------------------------------- LUKS
# vdh: GPT, p1 LUKS2 with ext4 inside: 12 MiB of files kept, 20 MiB written
# and deleted (ciphertext a locked capture must keep, an unlocked one need not)
PASS='correct horse battery'
luks_open() { printf %s "$1" | cryptsetup open --key-file - "$2" "$3"; }
parted -s /dev/vdh mklabel gpt mkpart c 1MiB 100%; partprobe /dev/vdh; udevadm settle
printf %s "$PASS" | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 /dev/vdh1 -
luks_uuid=$(cryptsetup luksUUID /dev/vdh1)
luks_open "$PASS" /dev/vdh1 src
mkfs.ext4 -q -m 0 -L inside /dev/mapper/src
mount /dev/mapper/src /mnt/src; fill /mnt/src/files 12; fill /mnt/src/gone 20; sync
rm -rf /mnt/src/gone; sums /mnt/src > /tmp/sum.luks; umount /mnt/src
luks_fs=$(blockdev --getsize64 /dev/mapper/src); cryptsetup close src

# locked (default): ciphertext, raw, byte for byte
chunks_before=$(du -sb $REPO/chunks | cut -f1)
timed capture-luks-raw liferaft capture --repo $REPO --name luksraw /dev/vdh 2>&1 | tee /tmp/cap.txt
echo "MEASURE locked $(( $(du -sb $REPO/chunks | cut -f1) - chunks_before ))"
grep -q "LUKS (encrypted): stored as ciphertext" /tmp/cap.txt || fail "no LUKS note"
wipefs -q -a /dev/vdf
# onto the larger vdf with --grow: the partition grows, the ciphertext keeps its size
liferaft restore --repo $REPO --image luksraw --to /dev/vdf --grow --dry-run | tee /tmp/planl.txt
grep -q "no used-blocks saving" /tmp/planl.txt \
    || grep -q "used-blocks saving is possible without the key" /tmp/planl.txt || fail "plan: no LUKS line"
grep -q "the partition grows; the LUKS volume and its contents keep their size" /tmp/planl.txt \
    || fail "plan: no line on the locked LUKS volume's size"
timed restore-luks-raw liferaft restore --repo $REPO --image luksraw --to /dev/vdf --grow --yes
[ "$(blockdev --getsize64 /dev/vdf1)" -gt $(( $(blockdev --getsize64 /dev/vdh1) + 16 * MIB )) ] \
    || fail "the locked LUKS partition did not grow"
cmp -n "$(blockdev --getsize64 /dev/vdh1)" /dev/vdh1 /dev/vdf1 || fail "the LUKS partition differs"
luks_open "$PASS" /dev/vdf1 dst
e2fsck -fn /dev/mapper/dst
inside=$(ext_size /dev/mapper/dst)
[ "$inside" -le "$luks_fs" ] || fail "ext4 in the locked LUKS volume changed size: $inside"
check luks-raw-grow-keeps-volume
mount -o ro /dev/mapper/dst /mnt/chk; sums /mnt/chk > /tmp/got.luks; umount /mnt/chk
cryptsetup close dst
cmp /tmp/sum.luks /tmp/got.luks || fail "files in the LUKS volume differ"
check luks-raw-roundtrip

# --unlock into a plain repository: one line, nothing written
export LIFERAFT_LUKS_PASSPHRASE="$PASS"
images_before=$(find $REPO/images -type f | wc -l)
if out=$(liferaft capture --repo $REPO --name unlocked --unlock /dev/vdh 2>&1); then
    fail "--unlock into a plain repository was not refused"
fi
echo "$out"
echo "$out" | grep -q "may only go into an encrypted repository" || fail "refusal said: $out"
! echo "$out" | grep -q Traceback || fail "a traceback"
[ "$(find $REPO/images -type f | wc -l)" = "$images_before" ] || fail "an image was written"
check luks-unlock-refused-plain

# --unlock into an encrypted repository (needs the ISO's argon2 and cryptography;
# an ISO built before them gets the host's copies, $EXTRA_PY)
if ! /opt/liferaft/bin/python -c 'import argon2, cryptography' 2>/dev/null; then
    mkdir -p /tmp/extra; echo "$EXTRA_PY" | base64 -d | tar xz -C /tmp/extra
    export PYTHONPATH="$PYTHONPATH:/tmp/extra"
fi
export LIFERAFT_PASSPHRASE='repository passphrase'
ENC=/mnt/repo/enc
liferaft init --repo $ENC --encrypt
if out=$(LIFERAFT_LUKS_PASSPHRASE=wrong liferaft capture --repo $ENC --name u --unlock /dev/vdh 2>&1); then
    fail "a wrong LUKS passphrase was accepted"
fi
echo "$out"
echo "$out" | grep -q "does not open the LUKS volume /dev/vdh1; nothing was written" || fail "said: $out"
[ -z "$(liferaft images --repo $ENC --json | tr -d '[] \n')" ] || fail "an image was written"
check luks-wrong-passphrase
timed capture-luks-unlocked liferaft capture --repo $ENC --name u --unlock /dev/vdh
liferaft images --repo $ENC
echo "MEASURE unlocked $(du -sb $ENC/chunks | cut -f1)"
wipefs -q -a /dev/vdf1 /dev/vdf
liferaft restore --repo $ENC --image u --to /dev/vdf --dry-run | tee /tmp/planu.txt
grep -q "LUKS2, unlocked: header as it was" /tmp/planu.txt || fail "plan: no unlocked LUKS line"
! grep -q "grows:" /tmp/planu.txt || fail "plan: grows without --grow"
liferaft restore --repo $ENC --image u --to /dev/vdf --grow --dry-run | tee /tmp/planu.txt
grep -q "grows: partition → LUKS volume → ext4" /tmp/planu.txt || fail "plan: the LUKS volume does not grow"
# wrong passphrase at restore: one line, the target untouched
if LIFERAFT_LUKS_PASSPHRASE=wrong liferaft restore --repo $ENC --image u --to /dev/vdf --yes; then
    fail "restore with a wrong passphrase went on"
fi
[ -z "$(blkid -p /dev/vdf || true)" ] || fail "the refused restore wrote to /dev/vdf"
timed restore-luks-unlocked liferaft restore --repo $ENC --image u --to /dev/vdf --grow --verify --yes
[ "$(cryptsetup luksUUID /dev/vdf1)" = "$luks_uuid" ] || fail "LUKS UUID differs"
luks_open "$PASS" /dev/vdf1 dst
[ "$(blkid -o value -s UUID /dev/mapper/dst)" = "$(luks_open "$PASS" /dev/vdh1 src2; blkid -o value -s UUID /dev/mapper/src2; cryptsetup close src2)" ] \
    || fail "the filesystem UUID inside differs"
e2fsck -fn /dev/mapper/dst
grown=$(ext_size /dev/mapper/dst)
echo "LUKS grown: volume $luks_fs -> $(blockdev --getsize64 /dev/mapper/dst), ext4 $grown"
[ "$(blockdev --getsize64 /dev/mapper/dst)" -gt $((luks_fs + 16 * MIB)) ] || fail "the LUKS volume did not grow"
[ "$grown" -gt $((luks_fs + 16 * MIB)) ] || fail "ext4 in the LUKS volume did not grow: $grown"
check luks-unlocked-grown
mount -o ro /dev/mapper/dst /mnt/chk; sums /mnt/chk > /tmp/got.luksu; umount /mnt/chk
cryptsetup close dst
cmp /tmp/sum.luks /tmp/got.luksu || fail "files in the unlocked LUKS volume differ"
if [ -e /dev/mapper/liferaft-vdh1 ] || [ -e /dev/mapper/liferaft-vdf1 ]; then
    fail "a LUKS volume left open"
fi
check luks-unlocked-roundtrip

# LVM inside LUKS (the installers' "encrypted LVM"): the PV is the opened volume
printf %s "$PASS" | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 /dev/vdh1 -
luks_open "$PASS" /dev/vdh1 src
pvcreate -q /dev/mapper/src; vgcreate -q cryptvg /dev/mapper/src
lvcreate -q -y -n root -L 24M cryptvg; mkfs.ext4 -q -m 0 /dev/cryptvg/root
mount /dev/cryptvg/root /mnt/src; fill /mnt/src/files 8; sums /mnt/src > /tmp/sum.clvm; umount /mnt/src
lvs --noheadings -o lv_name,lv_uuid cryptvg | sort > /tmp/lv.clvm
cl_pv=$(pv_size cryptvg)
cl_uuid=$(cryptsetup luksUUID /dev/vdh1)
vgchange -q -an cryptvg; cryptsetup close src
timed capture-luks-lvm liferaft capture --repo $ENC --name clvm --unlock /dev/vdh
[ ! -e /dev/mapper/liferaft-vdh1 ] || fail "capture left the LUKS volume open"
liferaft images --repo $ENC --json > /tmp/images.json
/opt/liferaft/bin/python - <<'PY'
import json
image = [i for i in json.load(open("/tmp/images.json")) if i["name"] == "clvm"][0]
vg = image["volume_groups"][0]
assert vg["name"] == "cryptvg", vg
assert [(lv["name"], lv["filesystem"], lv["method"]) for lv in vg["lvs"]] == [
    ("root", "ext4", "used-blocks")
], vg
PY
wipefs -q -a /dev/vdf1 /dev/vdf
# onto the larger vdf with --grow: partition -> LUKS volume -> PV (pvresize) -> LV root -> ext4
liferaft restore --repo $ENC --image clvm --to /dev/vdf --grow --dry-run | tee /tmp/planc.txt
grep -q "Volume group cryptvg (LVM, on LUKS on disk 1 partition 1)" /tmp/planc.txt || fail "plan: no VG in LUKS"
grep -q "grows: partition → LUKS volume → LVM physical volume" /tmp/planc.txt || fail "plan: the PV does not grow"
grep -q "root .* grows into the new space" /tmp/planc.txt || fail "plan: LV root does not grow"
timed restore-luks-lvm liferaft restore --repo $ENC --image clvm --to /dev/vdf --grow --verify --yes
[ ! -e /dev/mapper/liferaft-vdf1 ] || fail "restore left the LUKS volume open"
luks_open "$PASS" /dev/vdf1 dst
vgchange -q -ay cryptvg
[ "$(lvs --noheadings -o lv_name,lv_uuid cryptvg | sort)" = "$(cat /tmp/lv.clvm)" ] || fail "LV UUIDs differ"
e2fsck -fn /dev/cryptvg/root
[ "$(cryptsetup luksUUID /dev/vdf1)" = "$cl_uuid" ] || fail "LUKS UUID (LVM inside) differs"
pv_now=$(pv_size cryptvg)
lv_now=$(lv_size cryptvg/root)
fs_now=$(ext_size /dev/cryptvg/root)
echo "LUKS+LVM grown: PV $cl_pv -> $pv_now, LV root $((24 * MIB)) -> $lv_now, ext4 $fs_now"
[ "$pv_now" -gt $((cl_pv + 16 * MIB)) ] || fail "the PV in LUKS did not grow: $pv_now"
[ "$lv_now" -gt $((40 * MIB)) ] || fail "LV root in LUKS did not grow: $lv_now"
[ "$fs_now" -gt $((40 * MIB)) ] || fail "ext4 in LV root in LUKS did not grow: $fs_now"
check luks-lvm-grown
mount -o ro /dev/cryptvg/root /mnt/chk; sums /mnt/chk > /tmp/got.clvm; umount /mnt/chk
vgchange -q -an cryptvg; cryptsetup close dst
cmp /tmp/sum.clvm /tmp/got.clvm || fail "files of the LV inside LUKS differ"
check luks-lvm-roundtrip
umount /mnt/repo
echo "ALL DONE"
