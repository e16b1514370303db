"""Each OS action has one home (issue 11): mount/umount in engine/mounts.py (the
network mounts too: stores/mount.py plans their source and options), power-off
and reboot in engine/power.py. A command line is a list literal starting with the
program's name; this finds every such list in rescue_app/. No root."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "rescue_app"

HOMES = {
    "mount": {"engine/mounts.py"},
    "umount": {"engine/mounts.py"},
    "ntfs-3g": {"engine/mounts.py"},
    "mount.exfat-fuse": {"engine/mounts.py"},
    "losetup": {"engine/mounts.py"},
    # every lvm2 command (issue 12)
    **dict.fromkeys(
        ("lvm", "pvs", "vgs", "lvs", "pvcreate", "vgcfgbackup", "vgcfgrestore"),
        {"engine/lvm.py"},
    ),
    **dict.fromkeys(("vgchange", "lvchange", "pvresize", "lvextend"), {"engine/lvm.py"}),
    "mdadm": {"engine/mdraid.py"},  # every mdadm command (issue 12)
    "cryptsetup": {"engine/luks.py"},  # every cryptsetup command (issue 12)
}
POWER = {"poweroff", "reboot", "halt", "shutdown"}


def _command_lists(tree: ast.AST) -> list[list[str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and node.elts:
            words = [
                e.value
                for e in node.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            ]
            if words:
                found.append(words)
    return found


def test_mount_and_power_commands_live_in_their_engine_modules() -> None:
    strays = []
    for path in sorted(APP.rglob("*.py")):
        rel = path.relative_to(APP).as_posix()
        for words in _command_lists(ast.parse(path.read_text())):
            program = words[0]
            if program in HOMES and rel not in HOMES[program]:
                strays.append(f"{rel}: {words}")
            if program == "systemctl" and POWER & set(words) and rel != "engine/power.py":
                strays.append(f"{rel}: {words}")
    assert strays == []
