# The online backup of an LVM root in use (issue 14), inside the rescue
# system (tests/guest/test_online_lvm_vm.py runs it with --app). Disks:
#   vda 1 GiB  source: GPT, p1 LVM PV of vg0 with "root" (ext4, mounted
#              read-write while a writer keeps replacing files, each carrying
#              its own sha256) and free extents for the snapshot
#   vdb 1 GiB  target
# Prints "CHECK <name> ok" per passed check; exits nonzero at the first failure.
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
fail() { echo "FAIL: $*"; exit 1; }
check() { echo "CHECK $1 ok"; }
PY=/opt/liferaft/bin/python

parted -s /dev/vda mklabel gpt mkpart lvm 1MiB 100% set 1 lvm on
partprobe /dev/vda; udevadm settle
pvcreate -q /dev/vda1; vgcreate -q vg0 /dev/vda1
lvcreate -q -y -n root -L 400M vg0
mkfs.ext4 -q -L root /dev/vg0/root
mkdir -p /mnt/root /mnt/chk
mount /dev/vg0/root /mnt/root
mkdir -p /mnt/root/etc /mnt/root/live
cp /etc/os-release /mnt/root/etc/os-release
for i in $(seq 1 40); do head -c $((i * 40000)) /dev/urandom > "/mnt/root/etc/f$i"; done
(cd /mnt/root && sha256sum etc/f*) > /tmp/static.sum
# a snapshot a crashed backup left behind
lvcreate -q -y -s -n liferaft-snap-root -L 32M vg0/root
cat > /tmp/writer.py <<'PY'
import hashlib, os, random, sys, time
n = 0
while not os.path.exists("/tmp/stop"):
    payload = random.randbytes(random.choice([2000, 80_000, 600_000]))
    tmp = f"/mnt/root/live/.t{n}"
    with open(tmp, "wb") as f:
        f.write(payload + hashlib.sha256(payload).hexdigest().encode())
        f.flush(); os.fsync(f.fileno())
    os.rename(tmp, f"/mnt/root/live/w{n % 20}.dat")
    n += 1
    time.sleep(0.01)
print(n, file=open("/tmp/writes", "w"))
PY
$PY /tmp/writer.py &
sleep 2
liferaft backup --repo /tmp/repo --name g /dev/vda 2>&1 | tee /tmp/backup.txt
grep -q "logical volume root (ext4): block level, used blocks (in use: read from the snapshot liferaft-snap-root" /tmp/backup.txt \
    || fail "the summary does not name the snapshot"
check names-snapshot
[ -z "$(lvs --noheadings -o lv_name vg0 | grep liferaft-snap || true)" ] || fail "a snapshot was left: $(lvs vg0)"
check snapshots-removed
grep -q " /mnt/root ext4 rw" /proc/mounts || fail "root is no longer mounted read-write"
check origin-untouched
touch /tmp/stop; wait
echo "writer replaced $(cat /tmp/writes) files"
umount /mnt/root; vgchange -q -an vg0
wipefs -q -a /dev/vda1   # the original disk "died"
liferaft restore --repo /tmp/repo --image g --to /dev/vdb --yes
vgchange -q -ay vg0
e2fsck -f -n /dev/vg0/root || fail "restored root is not clean"
check fsck-clean
mount -o ro /dev/vg0/root /mnt/chk
(cd /mnt/chk && sha256sum -c --quiet /tmp/static.sum) || fail "static files differ"
check static-equal
n=0
for f in /mnt/chk/live/w*.dat; do
    $PY -c "import hashlib,sys; b=open(sys.argv[1],'rb').read(); sys.exit(hashlib.sha256(b[:-64]).hexdigest().encode()!=b[-64:])" "$f" \
        || fail "$f is torn"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "no writer file in the image"
check no-torn-file
umount /mnt/chk; vgchange -q -an vg0
