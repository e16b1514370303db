"""A FAT's DOS attributes: read-only, hidden, system, archive.

Owns reading them (through Linux's FAT_IOCTL_GET_ATTRIBUTES from a mounted
vfat; through mtools' ``mattrib`` from an unmounted FAT, a device or an
image file), their text form in a manifest, and setting them on a FAT made
anew (``mattrib``, unmounted). A FAT has no other place for them: a tar
archive or a Linux folder drops them, so a restored Windows or EFI system
partition would lose its hidden and system files' flags.

Only the entries whose attributes differ from what Linux and mtools give a
new entry are kept (a file: archive; a folder: none). Paths are relative
to the FAT's top, "/"-separated ("EFI/Microsoft/Boot/BCD"). Writes only to
the device it is given.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterable, Mapping

from rescue_app.errors import DiskError
from rescue_app.run import run

READ_ONLY, HIDDEN, SYSTEM, ARCHIVE = 0x01, 0x02, 0x04, 0x20
KEPT = READ_ONLY | HIDDEN | SYSTEM | ARCHIVE
_LETTERS = ((READ_ONLY, "R", "r"), (HIDDEN, "H", "h"), (SYSTEM, "S", "s"), (ARCHIVE, "A", "a"))
# _IOR('r', 0x10, __u32): linux/msdos_fs.h
FAT_IOCTL_GET_ATTRIBUTES = 0x80047210
# mtools on a device or an image file: no drive geometry to check; names in
# UTF-8 (in the C locale mtools shows a non-ASCII name as "_")
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
_BATCH = 200  # paths per mattrib call

FatAttributes = dict[str, int]


def default(is_dir: bool) -> int:
    """What a new entry gets from Linux's vfat and from mtools."""
    return 0 if is_dir else ARCHIVE


def from_mounted(root: str) -> FatAttributes:
    """The entries of the vfat mounted at ``root`` whose attributes are not
    the default; {} if ``root`` is not a vfat mount (the ioctl is unknown)."""
    out: FatAttributes = {}
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = os.path.join(folder, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # gone since listed
            try:
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                got = fcntl.ioctl(fd, FAT_IOCTL_GET_ATTRIBUTES, bytes(4))
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                    return {}  # not a FAT
                raise
            finally:
                os.close(fd)
            mask = struct.unpack("=I", got)[0] & KEPT
            if mask != default(is_dir):
                out[os.path.relpath(path, root)] = mask
    return out


def from_image(image: str, tree: str) -> FatAttributes:
    """The entries of the FAT on ``image`` (a device or an image file, not
    mounted) whose attributes are not the default; ``tree``: its files
    copied out (filetree.image_tree), which tells folders from files
    (``mattrib`` does not say)."""
    text = run(["mattrib", "-/", "-i", image, "::/"], env=MTOOLS_ENV).stdout
    out: FatAttributes = {}
    for line in text.splitlines():
        flags, sep, path = line.partition("::/")
        if not sep or not path:
            continue  # the top folder
        mask = 0
        for bit, letter, _off in _LETTERS:
            if letter in flags:
                mask |= bit
        if mask != default(os.path.isdir(os.path.join(tree, path))):
            out[path] = mask
    return out


def apply(node: str, attributes: Mapping[str, int]) -> None:
    """Give the entries of the FAT on ``node`` (not mounted) these attributes
    (the others keep what mtools made: the default)."""
    by_mask: dict[int, list[str]] = {}
    for path, mask in sorted(attributes.items()):
        by_mask.setdefault(mask, []).append(path)
    for mask, paths in sorted(by_mask.items()):
        flags = [("+" if mask & bit else "-") + off for bit, _on, off in _LETTERS]
        for i in range(0, len(paths), _BATCH):
            names = ["::/" + p for p in paths[i : i + _BATCH]]
            run(["mattrib", "-i", node, *flags, *names], env=MTOOLS_ENV)


def to_text(attributes: Mapping[str, int]) -> tuple[str, ...]:
    """The manifest's form: "RHSA path", "-" for a flag not set, by path."""
    return tuple(
        "".join(on if mask & bit else "-" for bit, on, _off in _LETTERS) + " " + path
        for path, mask in sorted(attributes.items())
    )


def from_text(lines: Iterable[str]) -> FatAttributes:
    out: FatAttributes = {}
    for line in lines:
        flags, _, path = line.partition(" ")
        if len(flags) != len(_LETTERS) or not path:
            raise DiskError(f"the manifest's FAT attributes line {line!r} is not 'RHSA path'")
        mask = 0
        for (bit, on, _off), flag in zip(_LETTERS, flags, strict=True):
            if flag == on:
                mask |= bit
            elif flag != "-":
                raise DiskError(f"the manifest's FAT attributes line {line!r} is not 'RHSA path'")
        out[path] = mask
    return out


__all__ = ["ARCHIVE", "HIDDEN", "READ_ONLY", "SYSTEM", "apply", "from_image", "from_mounted",
           "from_text", "to_text"]  # fmt: skip
