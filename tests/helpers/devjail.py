"""Run a tool that scans every disk of the machine so it sees only ours.

Some tools (Clonezilla's ocs-sr) probe every block device in /proc/partitions
while they look for the one they were given. On this machine the tests may
touch only the loop devices they made, so such a tool runs in a mount
namespace whose /dev is a fresh tmpfs holding the basic character devices and
the named block devices, nothing else: the host's disks are not there to
open. Mounts made inside the namespace stay there (unshare makes them private).
"""

from __future__ import annotations

import glob
import os
import shlex
from collections.abc import Sequence

_BASIC = ("null", "zero", "full", "random", "urandom", "tty")


def only_devices(argv: Sequence[str], devices: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that it runs with /dev holding only ``devices``
    (and their partitions) besides the basic character devices."""
    nodes: list[str] = []
    for dev in devices:
        nodes.append(dev)
        nodes += sorted(glob.glob(f"{dev}p[0-9]*")) + sorted(glob.glob(f"{dev}[0-9]*"))
    for node in nodes:
        if not os.path.realpath(node).startswith("/dev/"):
            raise ValueError(f"{node} is not a device node under /dev")
    names = " ".join(shlex.quote(os.path.basename(n)) for n in dict.fromkeys(nodes))
    basic = " ".join(_BASIC)
    script = f"""set -eu
old=$(mktemp -d)
mount --bind /dev "$old"
mount -t tmpfs -o mode=0755,size=1m liferaft-dev /dev
for n in {basic} {names}; do cp -a "$old/$n" /dev/; done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir /dev/pts /dev/shm
mount --bind "$old/pts" /dev/pts
mount -t tmpfs -o size=64m liferaft-shm /dev/shm
umount "$old"
rmdir "$old"
exec "$@"
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]
