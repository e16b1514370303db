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
done
