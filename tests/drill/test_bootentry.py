"""The pure parts of rescue_app.engine.bootentry: no root, no firmware."""

from __future__ import annotations

from rescue_app.engine.bootentry import (
    BootEntry,
    efibootmgr_argv,
    entry_exists,
    esp_partitions,
    find_loader,
    recreate_boot_entries,
)
from rescue_app.engine.diskmodel import BlockPartition
from tests.enginekit import block_disk

DEBIAN_ESP = [
    "EFI/debian/shimx64.efi", "EFI/debian/grubx64.efi", "EFI/debian/mmx64.efi",
    "EFI/debian/grub.cfg", "EFI/debian/BOOTX64.CSV", "EFI/BOOT/BOOTX64.EFI",
    "EFI/BOOT/grubx64.efi",
]  # fmt: skip


def test_shim_is_preferred_over_grub() -> None:
    assert find_loader(DEBIAN_ESP) == ("debian", "\\EFI\\debian\\shimx64.efi")


def test_grub_alone() -> None:
    assert find_loader(["EFI/arch/grubx64.efi"]) == ("arch", "\\EFI\\arch\\grubx64.efi")


def test_removable_path_needs_no_entry() -> None:
    assert find_loader(["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi"]) is None
    assert find_loader(["efi/boot/shimx64.efi"]) is None


def test_case_of_fat_names_is_kept_in_the_loader_path() -> None:
    assert find_loader(["EFI/ubuntu/SHIMX64.EFI"]) == ("ubuntu", "\\EFI\\ubuntu\\SHIMX64.EFI")


def test_other_files_and_depths_are_ignored() -> None:
    assert find_loader(["EFI/debian/fbx64.efi", "EFI/Microsoft/Boot/bootmgfw.efi",
                        "grubx64.efi", "EFI/grubx64.efi"]) is None  # fmt: skip


def test_vendor_order_does_not_depend_on_listing_order() -> None:
    files = ["EFI/zeta/grubx64.efi", "EFI/alpha/grubx64.efi"]
    assert find_loader(files) == find_loader(list(reversed(files))) == (
        "alpha", "\\EFI\\alpha\\grubx64.efi")  # fmt: skip


ENTRY = BootEntry("/dev/vda", 2, "0d3c1a5e-7f55-4c39-8b0e-6f1f1d2a9c11", "debian",
                  "\\EFI\\debian\\shimx64.efi")  # fmt: skip


def test_efibootmgr_argv() -> None:
    assert efibootmgr_argv(ENTRY) == [
        "efibootmgr", "--create", "--disk", "/dev/vda", "--part", "2",
        "--label", "debian", "--loader", "\\EFI\\debian\\shimx64.efi",
    ]  # fmt: skip


# `efibootmgr -v` of bookworm (efibootmgr 17) on OVMF
LISTING = """BootCurrent: 0001
Timeout: 0 seconds
BootOrder: 0003,0001,0000
Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-...)
Boot0001* UEFI QEMU DVD-ROM QM00003 \tPciRoot(0x0)/Pci(0x1,0x1)/Ata(1,0,0)N.....YM....R,Y.
Boot0003* debian\tHD(2,GPT,0D3C1A5E-7F55-4C39-8B0E-6F1F1D2A9C11,0x1000,0x20000)\
/File(\\EFI\\DEBIAN\\SHIMX64.EFI)
"""


def test_existing_entry_is_recognised() -> None:
    assert entry_exists(LISTING, ENTRY)


def test_entry_on_another_partition_or_loader_is_not_the_same() -> None:
    other_part = BootEntry("/dev/vda", 2, "11111111-2222-3333-4444-555555555555", "debian",
                           ENTRY.loader)  # fmt: skip
    other_loader = BootEntry("/dev/vda", 2, ENTRY.partuuid, "debian",
                             "\\EFI\\debian\\grubx64.efi")  # fmt: skip
    assert not entry_exists(LISTING, other_part)
    assert not entry_exists(LISTING, other_loader)
    assert not entry_exists("", ENTRY)


def _part(number: int, parttype: str | None) -> BlockPartition:
    return BlockPartition(
        path=f"/dev/vda{number}", number=number, start=number * 2**20, size=2**20,
        fstype=None, label=None, uuid=None, partuuid=f"uuid-{number}", parttype=parttype,
        partlabel=None, mountpoints=(),
    )  # fmt: skip


def test_esp_is_found_by_gpt_type() -> None:
    disk_parts = (
        _part(1, "21686148-6449-6e6f-744e-656564454649"),  # bios_grub
        _part(2, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        _part(3, "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"),  # swap
        _part(4, None),
    )  # fmt: skip
    disk = block_disk(
        "/dev/vda", 2**30, serial="LRDRILL", transport="virtio", pttype="gpt", partitions=disk_parts
    )
    assert esp_partitions(disk) == [(2, "/dev/vda2", "uuid-2")]


def test_bios_machine_gets_no_entry_and_no_note(tmp_path) -> None:
    assert recreate_boot_entries(["/dev/vda"], firmware=str(tmp_path / "no-efi")) == []
