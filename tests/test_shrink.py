"""Restore onto a smaller disk, the plan (no root, no disk): which partitions
shrink, how each is laid back, what is refused and how it is said."""

from __future__ import annotations

import dataclasses
import re
import tempfile

import pytest

from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.manifest import Manifest
from rescue_app.engine.plan import RestorePlan, plan_disk, seeded_partitions
from rescue_app.engine.shrink import (
    SCRATCH_MARGIN,
    minimum_size,
    parse_choice,
    scratch_need,
    shrinkable,
)
from rescue_app.engine.units import human_size
from rescue_app.errors import TargetRefusedError, UsageError
from tests.test_engine_units import MIB, _image, _part, _target


def _used(p, used):
    return dataclasses.replace(p, used_bytes=used)


def _plan(d) -> RestorePlan:
    m = Manifest("web", "20260101T000000Z", "2026-01-01T00:00:00Z", "web1", "0.1", 4 * MIB,
                 "sha256", "zstd", (d.image,))  # fmt: skip
    return RestorePlan(None, m, (d,))  # type: ignore[arg-type]


def _render(d) -> str:
    return _plan(d).render()


ESP_ROOT = _image(
    [_part(1, MIB, 100 * MIB, "vfat"), _used(_part(2, 101 * MIB, 800 * MIB), 400 * MIB)]
)


def test_last_partition_shrinks_file_level_the_esp_stays():
    d = plan_disk(ESP_ROOT, _target(700 * MIB), grow=False)
    esp, root = d.steps
    assert (esp.new.start, esp.new.size, esp.files, esp.shrunk) == (MIB, 100 * MIB, False, False)
    assert root.new.start == 101 * MIB and root.files and root.shrunk and not root.grown
    assert root.new.start + root.new.size == 700 * MIB - 33 * 512  # room for the backup GPT
    text = _render(d)
    assert "shrunk from 800.0 MiB" in text
    assert "a new ext4 with the same UUID, label and features" in text
    assert "partition(s) 2 by" in text


def test_a_shrunk_btrfs_says_its_snapshots_are_copied_in_full():
    image = _image(
        [
            _part(1, MIB, 100 * MIB, "vfat"),
            _used(_part(2, 101 * MIB, 800 * MIB, "btrfs"), 400 * MIB),
        ]
    )
    text = " ".join(_render(plan_disk(image, _target(700 * MIB), grow=False)).split())
    assert "a new btrfs with the same UUID" in text
    assert "new subvolume UUIDs and each snapshot is copied in full" in text
    assert "snapshot" not in " ".join(
        _render(plan_disk(ESP_ROOT, _target(700 * MIB), grow=False)).split()
    )


def test_data_larger_than_the_disk_is_refused_naming_partition_data_and_room():
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(ESP_ROOT, _target(500 * MIB), grow=False)
    msg = str(err.value)
    assert "partition 2 (ext4)" in msg and "400.0 MiB of data" in msg
    assert "only 399.0 MiB is left" in msg
    assert "at least" in err.value.hint


def test_a_chosen_partition_shrinks_after_the_last_and_the_next_moves():
    image = _image(
        [
            _used(_part(1, MIB, 800 * MIB), 100 * MIB),
            _used(_part(2, 801 * MIB, 800 * MIB), 700 * MIB),
        ],
        size=1700 * MIB,
    )
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(image, _target(1300 * MIB), grow=False)
    assert "--shrink 1" in err.value.hint
    d = plan_disk(image, _target(1300 * MIB), grow=False, shrink=[1])
    first, second = d.steps
    assert first.files and first.new.start == MIB
    assert first.new.size % MIB == 0 and first.new.size >= (minimum_size(first.source) or 0)
    # the last one keeps its size (it could not give any), laid back block-level, moved
    assert not second.files and second.new.size == 800 * MIB
    assert second.new.start == first.new.start + first.new.size
    assert "moved by" in second.why
    assert second.new.start + second.new.size <= 1300 * MIB - 33 * 512


@pytest.mark.parametrize(
    "fs, method, why",
    [
        ("vfat", "raw", "vfat is stored raw and cannot be copied file by file"),
        ("ntfs", "raw", "an NTFS stored raw cannot be shrunk"),
    ],
)
def test_what_cannot_shrink_is_refused_with_the_smallest_disk(fs, method, why):
    image = _image(
        [_part(1, MIB, 100 * MIB, "ext4"), _part(2, 101 * MIB, 800 * MIB, fs, method=method)]
    )
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(image, _target(700 * MIB), grow=False)
    assert "too small" in str(err.value) and why in str(err.value)
    assert "partition 2" in str(err.value)
    assert "at least 902.0 MiB" in err.value.hint


def test_mbr_logical_shrinks_with_its_extended_container():
    image = _image(
        [
            _part(1, MIB, 100 * MIB, kind="primary"),
            _part(2, 101 * MIB, 800 * MIB, None, kind="extended", method="none"),
            _used(_part(5, 102 * MIB, 799 * MIB, "ext4", kind="logical"), 100 * MIB),
        ],
        table="dos",
    )
    d = plan_disk(image, _target(600 * MIB), grow=False)
    ends = {s.source.number: s.new.start + s.new.size for s in d.steps}
    assert ends == {1: 101 * MIB, 2: 600 * MIB, 5: 600 * MIB}


def test_shrink_choice_parsing():
    assert parse_choice(["2", "p3"], 1) == {0: [2, 3]}
    assert parse_choice(["disk2/p1"], 2) == {1: [1]}
    with pytest.raises(UsageError, match="--shrink 1"):
        parse_choice(["1"], 2)
    with pytest.raises(UsageError, match="--shrink disk3/p1"):
        parse_choice(["disk3/p1"], 2)


CHUNK_TREE = """chunk tree
	item 1 key (FIRST_CHUNK_TREE CHUNK_ITEM 13631488) itemoff 16105 itemsize 80
		length 8388608 owner 2 stripe_len 65536 type DATA|single
		num_stripes 1 sub_stripes 1
			stripe 0 devid 1 offset 13631488
	item 2 key (FIRST_CHUNK_TREE CHUNK_ITEM 22020096) itemoff 15993 itemsize 112
		length 8388608 owner 2 stripe_len 65536 type SYSTEM|DUP
		num_stripes 2 sub_stripes 1
			stripe 0 devid 1 offset 22020096
			stripe 1 devid 1 offset 30408704
	item 3 key (FIRST_CHUNK_TREE CHUNK_ITEM 30408704) itemoff 15881 itemsize 112
		length 53673984 owner 2 stripe_len 65536 type METADATA|DUP
		num_stripes 2 sub_stripes 1
			stripe 0 devid 1 offset 38797312
			stripe 1 devid 1 offset 92471296
"""
EXTENT_TREE = """extent tree
	item 2 key (22036480 METADATA_ITEM 0) itemoff 16202 itemsize 33
	item 3 key (30425088 EXTENT_ITEM 16384) itemoff 16133 itemsize 51
		refs 1 gen 6 flags TREE_BLOCK
	item 4 key (13631488 EXTENT_ITEM 4096) itemoff 16080 itemsize 53
		refs 1 gen 7 flags DATA
"""


def test_btrfs_tree_blocks_are_found_with_every_copy():
    """(capture adds these to partclone.btrfs's map, which missed subvolume
    trees; tests/test_shrink_restore.py restores such a Btrfs)"""
    from rescue_app.engine.usedmap import (
        parse_btrfs_chunks,
        parse_btrfs_tree_blocks,
        place_tree_blocks,
    )

    chunks = parse_btrfs_chunks(CHUNK_TREE)
    assert chunks == [
        (22020096, 8 * MIB, [22020096, 30408704]),
        (30408704, 53673984, [38797312, 92471296]),
    ]
    blocks = parse_btrfs_tree_blocks(EXTENT_TREE, 16384)
    assert sorted(blocks) == [(22036480, 16384), (30425088, 16384)]
    assert place_tree_blocks(chunks, blocks) == [
        (22036480, 16384),  # the system chunk's two copies
        (30425088, 16384),
        (38797312 + 16384, 16384),  # the metadata chunk's two copies
        (92471296 + 16384, 16384),
    ]


def test_the_ui_plan_shows_old_and_new_sizes_and_why():
    from rich.console import Console

    from rescue_app.tui.screens.target import plan_table

    d = plan_disk(ESP_ROOT, _target(700 * MIB), grow=False)
    console = Console(width=80, record=True)
    console.print(plan_table(_plan(d)))
    shown = console.export_text()
    assert "(was 800.0 MiB)" in shown
    assert "Partition 2: shrunk from 800.0 MiB" in shown
    assert "its files are copied from the image" in " ".join(shown.split())


def test_copy_tree_keeps_metadata_and_says_cancelled(tmp_path):
    """(no root: a user's own files; the root tests check owners, ACLs, devices)"""
    import os

    from rescue_app.engine.filetree import copy_tree
    from rescue_app.errors import CancelledError
    from rescue_app.progress import CancelToken

    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "d").mkdir(parents=True)
    dest.mkdir()
    (src / "d" / "f").write_bytes(b"x" * 5000)
    os.link(src / "d" / "f", src / "d" / "g")
    os.utime(src / "d" / "f", (1_500_000_000, 1_500_000_000))
    copy_tree(str(src), str(dest))
    got = os.lstat(dest / "d" / "f")
    assert got.st_mtime == 1_500_000_000 and got.st_ino == os.lstat(dest / "d" / "g").st_ino
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError, match="restore cancelled while copying files"):
        copy_tree(str(src), str(tmp_path / "other"), cancel=token)


def test_an_unknown_shrink_partition_is_one_line_even_when_nothing_shrinks():
    from rescue_app.engine.shrink import check_choice

    check_choice(ESP_ROOT, [1, 2])
    with pytest.raises(UsageError, match="--shrink 7: disk 1 of the image has no such") as err:
        check_choice(ESP_ROOT, [7])
    assert err.value.hint == "choose from: 1, 2"


def test_ntfs_shrinks_with_ntfsresize_and_says_so_with_its_scratch_space():
    image = _image(
        [
            _part(1, MIB, 100 * MIB, "vfat"),
            _part(2, 101 * MIB, 16 * MIB, None, method="raw"),  # an MSR
            dataclasses.replace(
                _part(3, 117 * MIB, 800 * MIB, "ntfs"),
                used_bytes=200 * MIB,
                used_map=ExtentMap([(0, 100 * MIB), (700 * MIB, 100 * MIB)]),
            ),
        ]
    )
    d = plan_disk(image, _target(600 * MIB), grow=False)
    esp, msr, ntfs = d.steps
    assert not esp.shrunk and not msr.shrunk
    assert ntfs.resize and not ntfs.files and ntfs.shrunk
    assert ntfs.new.start + ntfs.new.size == 600 * MIB - 33 * 512
    # the 100 MiB beyond the new end are moved below it by ntfsresize: the
    # scratch copy holds them twice
    need = scratch_need(ntfs.source, ntfs.new.size)
    assert need == 300 * MIB + SCRATCH_MARGIN
    text = " ".join(_render(d).split())
    assert f"NTFS p3: shrink with ntfsresize 800.0 MiB → {human_size(ntfs.new.size)}" in text
    assert f"takes up to {human_size(need)} in the scratch folder (--scratch, else TMPDIR)" in text
    assert seeded_partitions(d) == ()  # its blocks are not the image's


def test_ntfs_whose_data_does_not_fit_is_refused_naming_data_and_room():
    image = _image(
        [_part(1, MIB, 100 * MIB, "vfat"), _used(_part(2, 101 * MIB, 800 * MIB, "ntfs"), 500 * MIB)]
    )
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(image, _target(500 * MIB), grow=False)
    assert "partition 2 (ntfs) does not fit" in str(err.value)
    assert "500.0 MiB of data" in str(err.value) and "at least" in err.value.hint


def test_shrinkable_lists_the_partitions_a_user_may_choose():
    image = _image(
        [
            _part(1, MIB, 100 * MIB, "vfat"),
            _used(_part(2, 101 * MIB, 400 * MIB, "ntfs"), 100 * MIB),
            _used(_part(3, 501 * MIB, 400 * MIB, "ext4"), 100 * MIB),
            _used(_part(4, 901 * MIB, 90 * MIB, "ext4"), 10 * MIB),
        ]
    )
    # the ESP may shrink too (made anew with mtools); the last one (4) shrinks first anyway
    assert [p.number for p in shrinkable(image)] == [1, 2, 3]


def test_scratch_space_too_small_is_refused_in_one_line(tmp_path, monkeypatch):
    from rescue_app.engine import ntfsshrink

    gib = 1024 * MIB
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    big = _image([_used(_part(1, MIB, 800 * gib, "ntfs"), 500 * gib)], size=801 * gib)
    plan = _plan(plan_disk(big, _target(700 * gib), grow=False))
    step = plan.disks[0].steps[0]
    need = scratch_need(step.source, step.new.size)
    with pytest.raises(TargetRefusedError) as err:  # no test machine has 500 GiB free
        ntfsshrink.check_scratch_space(plan)
    msg = str(err.value)
    assert msg.startswith(f"shrinking NTFS partition 1 needs {human_size(need)} of scratch space")
    assert f"in {tmp_path}, which has " in msg and "\n" not in msg
    assert "give a folder with at least" in err.value.hint and "--scratch" in err.value.hint
    small = _image([_used(_part(1, MIB, 800 * MIB, "ntfs"), 8 * MIB)])
    ntfsshrink.check_scratch_space(_plan(plan_disk(small, _target(600 * MIB), grow=False)))


def test_windows_layout_with_recovery_last_shrinks_c_when_chosen():
    # ESP, MSR, C: and a nearly full Recovery partition last (Windows 10/11)
    image = _image(
        [
            _part(1, MIB, 100 * MIB, "vfat"),
            _part(2, 101 * MIB, 16 * MIB, None, method="raw"),
            _used(_part(3, 117 * MIB, 800 * MIB, "ntfs"), 200 * MIB),
            _used(_part(4, 917 * MIB, 80 * MIB, "ntfs"), 70 * MIB),
        ]
    )
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(image, _target(700 * MIB), grow=False)
    assert "--shrink 3" in err.value.hint
    d = plan_disk(image, _target(700 * MIB), grow=False, shrink=[3])
    steps = {s.source.number: s for s in d.steps}
    assert steps[3].resize and steps[3].shrunk and "NTFS p3: shrink with ntfsresize" in steps[3].why
    # the recovery partition keeps its size and bytes, moved towards the start
    assert not steps[4].resize and not steps[4].shrunk and "moved by" in steps[4].why
    assert steps[4].new.start == steps[3].new.start + steps[3].new.size
    assert steps[4].new.start + steps[4].new.size <= 700 * MIB - 33 * 512


def test_ntfsresize_refusing_the_size_is_one_line_naming_its_reason(tmp_path):
    from rescue_app.engine import ntfsshrink
    from rescue_app.run import run

    volume = tmp_path / "ntfs.img"
    with open(volume, "wb") as f:
        f.truncate(100 * MIB)
    run(["mkntfs", "-Q", "-F", "-q", str(volume)])
    p = _used(_part(3, MIB, 100 * MIB, "ntfs"), 3 * MIB)
    with pytest.raises(TargetRefusedError) as err:  # below what its metadata takes
        ntfsshrink.shrink(str(volume), p, 2 * MIB)
    msg = str(err.value)
    assert msg.startswith("NTFS partition 3 (3.0 MiB of data) cannot shrink to 2.0 MiB: ")
    assert "ntfsresize says: " in msg and "\n" not in msg
    # with the target's size: the smallest disk that would do, from what
    # ntfsresize --info says it might resize at (a few MiB for an empty volume)
    least = ntfsshrink.smallest_size(str(volume))
    assert least is not None and 2 * MIB < least <= 16 * MIB
    with pytest.raises(TargetRefusedError) as err:
        ntfsshrink.shrink(str(volume), p, 2 * MIB, 500 * MIB)
    disk = 500 * MIB + least - 2 * MIB
    assert str(err.value).startswith("NTFS partition 3 (3.0 MiB of data) cannot shrink to 2.0 MiB")
    assert (
        f"by data; it shrinks to {human_size(least)} at the least: the smallest disk that would "
        f"do is {human_size(disk)} ({disk} bytes)"
    ) in str(err.value)
    assert f"choose a disk of at least {human_size(disk)}" in err.value.hint
    ntfsshrink.shrink(str(volume), p, 50 * MIB)  # a size it takes
    out = run(["ntfsresize", "--info", "--force", str(volume)]).stdout
    size = re.search(r"Current volume size: (\d+) bytes", out)
    assert size is not None and 49 * MIB < int(size.group(1)) < 50 * MIB, out


def test_a_chosen_esp_is_made_anew_with_its_volume_id_and_says_so():
    image = _image(
        [
            _used(_part(1, MIB, 300 * MIB, "vfat"), 20 * MIB),
            _used(_part(2, 301 * MIB, 600 * MIB), 400 * MIB),
        ]
    )
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(image, _target(560 * MIB), grow=False)
    assert "--shrink 1" in err.value.hint
    d = plan_disk(image, _target(560 * MIB), grow=False, shrink=[1])
    esp, root = d.steps
    assert esp.files and esp.shrunk and not esp.resize and root.files
    # 20 MiB of data: 10% and 4 MiB above it, at least the 33 MiB a FAT32 needs
    assert minimum_size(esp.source) == 33 * MIB and esp.new.size >= 33 * MIB
    text = " ".join(_render(d).split())
    assert f"vfat p1: made anew at {human_size(esp.new.size)} (was 300.0 MiB)" in text
    assert "same volume ID, label and FAT type" in text and "with mtools" in text
    # of 4096-byte sectors a FAT32 needs eight times the room
    assert minimum_size(esp.source, 4096) == 264 * MIB


def test_the_refusal_suggests_the_partition_that_gives_the_most():
    image = _image(
        [
            _part(1, MIB, 200 * MIB, "vfat"),  # 100 MiB used: gives 86 MiB
            _used(_part(2, 201 * MIB, 500 * MIB), 100 * MIB),  # gives 326 MiB
            _used(_part(3, 701 * MIB, 200 * MIB), 190 * MIB),
        ]
    )
    with pytest.raises(TargetRefusedError) as err:
        plan_disk(image, _target(600 * MIB), grow=False)
    assert "(--shrink 2)" in err.value.hint
