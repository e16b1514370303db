#!/bin/sh
# initramfs-tools hook (installed into the base root before the kernel): the
# live initrd only has to find the boot medium (CD, USB, disk or network).
# Graphics, InfiniBand and Fibre Channel drivers are left to the real root,
# which has every module; a smaller initrd loads and unpacks faster.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
set -e
for dir in "$DESTDIR"/usr/lib/modules/*/kernel; do
    [ -d "$dir" ] || continue
    rm -rf "$dir/drivers/gpu" "$dir/drivers/infiniband" "$dir/sound" \
        "$dir/drivers/scsi/lpfc" "$dir/drivers/scsi/qla2xxx" "$dir/drivers/scsi/qla4xxx" \
        "$dir/drivers/scsi/bfa" "$dir/drivers/scsi/qedf" "$dir/drivers/scsi/bnx2fc" \
        "$dir/drivers/scsi/fnic" "$dir/drivers/scsi/csiostor" "$dir/drivers/scsi/be2iscsi" \
        "$dir/drivers/scsi/qedi" "$dir/drivers/scsi/bnx2i" "$dir/drivers/scsi/cxgbi"
    # The live medium is iso9660/squashfs (or fetched over HTTP/NFS); the
    # filesystems of the disks being rescued are mounted from the real root.
    # RAID HBAs and tunnel/WAN links never carry the boot medium.
    rm -rf "$dir/fs/btrfs" "$dir/fs/xfs" "$dir/fs/f2fs" "$dir/fs/jfs" "$dir/fs/reiserfs" \
        "$dir/fs/jffs2" "$dir/fs/hfs" "$dir/fs/hfsplus" "$dir/fs/smb" "$dir/fs/ocfs2" \
        "$dir/fs/gfs2" "$dir/fs/nilfs2" "$dir/fs/ubifs" \
        "$dir/drivers/scsi/megaraid" "$dir/drivers/scsi/mpt3sas" "$dir/drivers/scsi/aic7xxx" \
        "$dir/drivers/scsi/pm8001" "$dir/drivers/scsi/mpi3mr" "$dir/drivers/scsi/isci" \
        "$dir/drivers/scsi/aacraid" "$dir/drivers/scsi/fcoe" "$dir/drivers/scsi/libfc" \
        "$dir/drivers/net/wireguard" "$dir/drivers/net/vxlan" "$dir/drivers/net/ppp" \
        "$dir/drivers/net/fddi" "$dir/drivers/net/wwan" "$dir/drivers/net/ieee802154" \
        "$dir/drivers/net/fjes"
done
# lvm2's and mdadm's hooks (they run before this one, from /usr/share) give the
# initrd their udev rules, which activate every volume group and assemble every
# array they see while udev probes the disks: on the machine being rescued,
# before the rescue system has even started. The live medium is never on LVM or
# md, so the initrd gets none of it; the real root activates only when the
# engine asks (overlay/etc/lvm/lvmlocal.conf, overlay/etc/udev/rules.d/).
rm -f "$DESTDIR"/usr/lib/udev/rules.d/*-lvm.rules "$DESTDIR"/lib/udev/rules.d/*-lvm.rules \
    "$DESTDIR"/usr/lib/udev/rules.d/*-md-raid-*.rules "$DESTDIR"/lib/udev/rules.d/*-md-raid-*.rules \
    "$DESTDIR"/etc/udev/rules.d/*-md-raid-*.rules \
    "$DESTDIR"/usr/sbin/lvm "$DESTDIR"/usr/sbin/vgchange "$DESTDIR"/usr/sbin/mdadm \
    "$DESTDIR"/usr/sbin/mdmon "$DESTDIR"/sbin/lvm "$DESTDIR"/sbin/vgchange "$DESTDIR"/sbin/mdadm \
    "$DESTDIR"/sbin/mdmon "$DESTDIR"/scripts/local-top/lvm2 "$DESTDIR"/scripts/local-block/lvm2 \
    "$DESTDIR"/scripts/local-block/mdadm "$DESTDIR"/scripts/local-bottom/mdadm
rm -rf "$DESTDIR/etc/lvm" "$DESTDIR/etc/mdadm"
# mdadm's hook also lists the md personalities in conf/modules, which the
# initrd loads one by one before it looks for the medium: eight modprobes, and
# raid456 pulls in raid6_pq and xor, which benchmark the CPU when loaded. The
# real root loads them when an array is assembled.
if [ -f "$DESTDIR/conf/modules" ]; then
    sed -i -E '/^(linear|multipath|raid0|raid1|raid456|raid5|raid6|raid10)$/d' "$DESTDIR/conf/modules"
fi
for dir in "$DESTDIR"/usr/lib/modules/*/kernel; do
    [ -d "$dir" ] || continue
    rm -rf "$dir/drivers/md" "$dir/lib/raid6" "$dir/crypto/async_tx"
done
