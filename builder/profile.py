"""Build profiles in this repository's ``profiles/`` folder.

The schema and its loader are rescue_app/profile.py, shared with the rescue
system (which is installed without the builder): one set of defaults for the
build, the UI and unattended mode. This module only knows where the build's
profiles are.
"""

from __future__ import annotations

from pathlib import Path

from rescue_app import profile as _schema
from rescue_app.profile import Profile

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


def list_profiles(directory: Path = PROFILE_DIR) -> list[str]:
    return _schema.list_profiles(directory)


def load_profile(name: str, directory: Path = PROFILE_DIR) -> Profile:
    """Load ``directory/name.yaml`` with its ``extends`` chain into a Profile."""
    return _schema.load_profile(name, directory)
