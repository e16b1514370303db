"""What the UI takes from a build profile: its title and default repository.

Deliberately tolerant and isolated: the rescue system must start its UI even
with no profile, a missing builder package or a broken file, so every problem
here is logged and the defaults are used. Nothing else in the UI reads YAML.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("liferaft.tui")

DEFAULT_TITLE = "liferaft"
# Where the rescue ISO's overlay puts the profile it was built from.
DEFAULT_PROFILE_PATHS = ("/etc/liferaft/profile.yaml",)


@dataclass(frozen=True)
class ProfileInfo:
    title: str = DEFAULT_TITLE
    repository: str | None = None
    source: str | None = None  # the file read, if any


def _read_yaml(path: str, depth: int = 0) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ValueError("not a mapping")
    parent = doc.get("extends")
    if isinstance(parent, str) and depth < 8:
        parent_path = os.path.join(os.path.dirname(path), f"{parent}.yaml")
        if os.path.isfile(parent_path):
            merged = _read_yaml(parent_path, depth + 1)
            merged.update(doc)
            doc = merged
    return doc


def load_profile_info(path: str | None) -> ProfileInfo:
    """Title and default repository from a profile YAML; defaults on any problem."""
    candidates = [path] if path else [p for p in DEFAULT_PROFILE_PATHS if os.path.isfile(p)]
    for candidate in candidates:
        try:
            doc = _read_yaml(candidate)
        except Exception as exc:  # a broken profile must not stop a rescue
            log.warning("profile %s ignored: %s", candidate, exc)
            continue
        title = doc.get("title")
        repo = doc.get("repository")
        return ProfileInfo(
            title=title if isinstance(title, str) and title.strip() else DEFAULT_TITLE,
            repository=repo if isinstance(repo, str) and repo.strip() else None,
            source=candidate,
        )
    return ProfileInfo()
