"""What the UI takes from the build profile: its title and default repository.

The file is read with the one profile loader (rescue_app/profile.py), the
same schema and defaults as the builder and unattended mode. Deliberately
tolerant: the rescue system must start its UI even with no profile or a
broken file, so a problem (which names file, key and line) is logged and the
UI's defaults are used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from rescue_app.errors import LiferaftError
from rescue_app.profile import INSTALLED_PROFILE, load_profile_file

log = logging.getLogger("liferaft.tui")

DEFAULT_TITLE = "liferaft"
# Where the rescue ISO's overlay puts the profile it was built from.
DEFAULT_PROFILE_PATHS = (str(INSTALLED_PROFILE),)


@dataclass(frozen=True)
class ProfileInfo:
    title: str = DEFAULT_TITLE
    repository: str | None = None
    source: str | None = None  # the file read, if any


def load_profile_info(path: str | None) -> ProfileInfo:
    """Title and default repository from a profile YAML; defaults on any problem."""
    candidates = [path] if path else [p for p in DEFAULT_PROFILE_PATHS if os.path.isfile(p)]
    for candidate in candidates:
        try:
            profile = load_profile_file(candidate, check_secrets=False)
        except (LiferaftError, OSError, ValueError) as exc:  # must not stop a rescue
            log.warning("profile %s ignored: %s", candidate, exc)
            continue
        title, repo = profile.title, profile.repository
        return ProfileInfo(
            title=title if title.strip() else DEFAULT_TITLE,
            repository=repo if repo and repo.strip() else None,
            source=candidate,
        )
    return ProfileInfo()
