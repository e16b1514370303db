"""Block devices as the engine sees them: probe, describe, find, protect.

Reads the system with ``lsblk --json --bytes`` (and /proc, /sys) into frozen
models. Owns the rule that the disk holding the running system, the boot
medium and any disk with a mounted or in-use partition are never restore
targets. Writes nothing to any disk.

CONTRACT (implemented by the disks work):

    @dataclass(frozen=True)
    class BlockPartition:
        path: str; number: int; start: int  # bytes from disk start
        size: int; fstype: str | None; label: str | None; uuid: str | None
        partuuid: str | None; parttype: str | None; partlabel: str | None
        mountpoints: tuple[str, ...]

    @dataclass(frozen=True)
    class BlockDisk:
        path: str; name: str; model: str | None; serial: str | None; wwn: str | None
        size: int; logical_sector_size: int; physical_sector_size: int
        transport: str          # nvme, sata, usb, virtio, scsi, loop, ...
        removable: bool; read_only: bool
        pttype: str | None      # "gpt", "dos" or None
        ptuuid: str | None
        fstype: str | None      # filesystem on the whole disk, if any
        partitions: tuple[BlockPartition, ...]
        in_use: tuple[str, ...] # reasons it is not a restore target, e.g.
                                # "holds the running system", "boot medium",
                                # "/dev/sda1 is mounted on /home", "swap /dev/sda2 is active"
        backing_file: str | None  # loop devices
        @property restorable -> bool   (not in_use)
        def describe(self) -> str  # "QEMU HARDDISK, serial ABC123, 4.0 GiB (/dev/sdb)"

    def list_disks() -> list[BlockDisk]
    def find_disk(spec: str) -> BlockDisk     # /dev/x, serial:XYZ, wwn:...; DiskError if none
    def ensure_restorable(disk: BlockDisk) -> None   # TargetRefusedError naming the reason
    def reread_partitions(disk_path: str, expected: int, timeout: float = 10) -> list[str]
        # BLKRRPART/partprobe, then wait until `expected` partition nodes exist as
        # block devices (no udev on the host); returns their paths in order
    def human_size(n: int) -> str            # "4.0 GiB"
"""
