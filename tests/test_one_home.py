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


# -- one home for each setting and policy (issue 11): the rules the text names

UNITS = "engine/units.py"
SIZE_FORMATTERS = {"human_size", "human_rate", "human_duration"}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(APP).as_posix(), ast.parse(path.read_text()))
        for path in sorted(APP.rglob("*.py"))
    ]


def test_sizes_rates_and_durations_are_written_by_engine_units_only() -> None:
    """One human_size: no other module defines one, nor a table of binary
    units (a second formatter in the making)."""
    strays = []
    for rel, tree in _modules():
        if rel == UNITS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name.lstrip("_") in SIZE_FORMATTERS
            ):
                strays.append(f"{rel}:{node.lineno}: def {node.name}")
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if {"KiB", "MiB"} <= words:
                    strays.append(f"{rel}:{node.lineno}: a table of units")
    assert strays == []


NETWORK_CLIENTS = {"requests", "paramiko", "boto3", "botocore"}


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _method_calls(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, owner, name) of each call ``owner.name(...)`` (owner "" when it
    is not a plain name: ``self.x.sleep()``)."""
    return [
        (node.lineno, node.func.value.id if isinstance(node.func.value, ast.Name) else "",
         node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]  # fmt: skip


def test_every_network_store_retries_under_the_one_retry_policy() -> None:
    """One retry policy (stores/retry.py: backoff, a deadline, notices): each
    store that talks to a server uses it, and no other store module sleeps
    (a backoff loop of its own)."""
    strays = []
    for rel, tree in _modules():
        if not rel.startswith("engine/stores/") or rel == "engine/stores/retry.py":
            continue
        stores = [
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "Store" for b in node.bases)
        ]
        imported = _imported(tree)
        retries = "rescue_app.engine.stores.retry.RetryPolicy" in imported
        if stores and imported & NETWORK_CLIENTS and not retries:
            strays.append(f"{rel}: {stores} without RetryPolicy")
        strays += [
            f"{rel}:{line}: sleeps" for line, _, attr in _method_calls(tree) if attr == "sleep"
        ]
    assert strays == []


# The profile's one loader; the credentials file (its own format, docs) is
# parsed by engine/credentials.py, which the profile's loader calls too.
YAML_READERS = {"profile.py", "engine/credentials.py"}


def test_the_profile_is_read_by_its_one_loader() -> None:
    """One schema, one loader, one set of defaults: no other module of the
    rescue system or the builder parses YAML (a profile read with defaults of
    its own)."""
    strays = []
    for root in (APP, APP.parent / "builder"):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if root == APP and rel in YAML_READERS:
                continue
            strays += [
                f"{root.name}/{rel}:{line}: yaml.{attr}"
                for line, owner, attr in _method_calls(ast.parse(path.read_text()))
                if owner == "yaml" and "load" in attr
            ]
    assert strays == []


def test_no_rule_is_decided_on_display_text() -> None:
    """Policy is keyed on typed reasons (diskmodel.Role), not on the text shown
    to people: the REASON_* texts are only ever added to ``in_use``, never
    compared (``REASON_ROOT in disk.in_use`` was such a rule)."""
    strays = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                name = side.id if isinstance(side, ast.Name) else getattr(side, "attr", "")
                if name.startswith("REASON_"):
                    strays.append(f"{rel}:{node.lineno}: compares {name}")
    assert strays == []
