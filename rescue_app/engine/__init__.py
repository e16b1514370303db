"""The liferaft engine: disks, repositories, capture, restore, verify.

This package may never import textual (tests/test_import_hygiene.py checks).
The CLI and the Textual UI talk to the engine only through ``Engine``; a test
can hand the UI an Engine pointed at loop devices.

This package is the facade's whole surface: ``Engine`` (every action), the
result and model types its methods take and return, and the pure helpers that
render them at the edge (sizes, the disks table). The UI, the CLI and
unattended mode import from here only, never from a module below
(tests/tui/test_import_hygiene.py checks).

Each name is imported from its module when first asked for (PEP 562), so a
program pays only for the parts of the engine it uses: the rescue app's home
screen comes up without importing capture, browse or the Clonezilla reader
(boot time, issue 17; tests/tui/test_import_hygiene.py checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rescue_app.engine.browse import BrowsePartition, DirEntry, ExtractResult, ImageMount
    from rescue_app.engine.diskmodel import (
        BlockDisk,
        BlockPartition,
        Role,
        disks_to_json,
        format_disks_table,
    )
    from rescue_app.engine.facade import Engine
    from rescue_app.engine.freshness import LastGood, human_age, image_time, last_good_backups
    from rescue_app.engine.keychain import CredentialChain, CredentialsFile, TerminalPrompt
    from rescue_app.engine.luks import LUKS_TYPE
    from rescue_app.engine.manifest import DiskImage, ImageSummary, Manifest, Method
    from rescue_app.engine.network import Interface, NetworkStatus
    from rescue_app.engine.online import BackupRequest
    from rescue_app.engine.partrestore import PartitionRestorePlan, SavedPartition
    from rescue_app.engine.plan import RestoreChoices, RestorePlan, describe_contents
    from rescue_app.engine.prune import PruneResult
    from rescue_app.engine.repository import NAME_RE, REPO_FILE, Repository
    from rescue_app.engine.results import CaptureResult, RestoreResult, VerifyReport
    from rescue_app.engine.retention import ForgetPlan, KeepPolicy
    from rescue_app.engine.schedule import Schedule, ScheduledBackup
    from rescue_app.engine.shrink import shrinkable
    from rescue_app.engine.units import human_duration, human_rate, human_size

__all__ = [
    "BackupRequest",
    "LUKS_TYPE",
    "NAME_RE",
    "REPO_FILE",
    "BlockDisk",
    "BlockPartition",
    "BrowsePartition",
    "CaptureResult",
    "CredentialChain",
    "CredentialsFile",
    "DirEntry",
    "DiskImage",
    "Engine",
    "ExtractResult",
    "ForgetPlan",
    "ImageMount",
    "ImageSummary",
    "Interface",
    "KeepPolicy",
    "LastGood",
    "Manifest",
    "Method",
    "NetworkStatus",
    "PruneResult",
    "Repository",
    "PartitionRestorePlan",
    "RestoreChoices",
    "RestorePlan",
    "RestoreResult",
    "Role",
    "SavedPartition",
    "Schedule",
    "ScheduledBackup",
    "TerminalPrompt",
    "VerifyReport",
    "describe_contents",
    "disks_to_json",
    "format_disks_table",
    "human_age",
    "human_duration",
    "human_rate",
    "human_size",
    "image_time",
    "last_good_backups",
    "shrinkable",
]

_HOMES = {
    "BrowsePartition": "browse",
    "DirEntry": "browse",
    "ExtractResult": "browse",
    "ImageMount": "browse",
    "BlockDisk": "diskmodel",
    "BlockPartition": "diskmodel",
    "Role": "diskmodel",
    "disks_to_json": "diskmodel",
    "format_disks_table": "diskmodel",
    "Engine": "facade",
    "LastGood": "freshness",
    "human_age": "freshness",
    "image_time": "freshness",
    "last_good_backups": "freshness",
    "CredentialChain": "keychain",
    "CredentialsFile": "keychain",
    "TerminalPrompt": "keychain",
    "LUKS_TYPE": "luks",
    "DiskImage": "manifest",
    "ImageSummary": "manifest",
    "Manifest": "manifest",
    "Method": "manifest",
    "Interface": "network",
    "NetworkStatus": "network",
    "BackupRequest": "online",
    "PartitionRestorePlan": "partrestore",
    "SavedPartition": "partrestore",
    "RestoreChoices": "plan",
    "RestorePlan": "plan",
    "describe_contents": "plan",
    "PruneResult": "prune",
    "NAME_RE": "repository",
    "REPO_FILE": "repository",
    "Repository": "repository",
    "CaptureResult": "results",
    "RestoreResult": "results",
    "VerifyReport": "results",
    "ForgetPlan": "retention",
    "KeepPolicy": "retention",
    "Schedule": "schedule",
    "ScheduledBackup": "schedule",
    "shrinkable": "shrink",
    "human_duration": "units",
    "human_rate": "units",
    "human_size": "units",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
