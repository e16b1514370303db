"""How old each machine's last good backup is (``liferaft images``, the TUI's
image list). Pure: the images and the time now in, values out.

"Good" is the newest image of a name whose capture completed: an image exists
only once its manifest is committed, after every chunk it names is stored
(docs/FORMAT.md), and a damaged manifest is not listed. Verify results are not
recorded in a repository, so they do not enter here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rescue_app.engine.manifest import ImageSummary


def image_time(created: str) -> datetime:
    """An image's ``created`` (ISO 8601 UTC, ``...Z``) as an aware datetime."""
    return datetime.fromisoformat(created.replace("Z", "+00:00"))


def human_age(age: timedelta) -> str:
    """timedelta(hours=3) -> '3 h ago'; minutes under 2 h, hours under 2 days."""
    seconds = age.total_seconds()
    if seconds < -60:
        return "in the future (check this machine's clock)"
    if seconds < 60:
        return "just now"
    if seconds < 2 * 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


@dataclass(frozen=True)
class LastGood:
    name: str
    ref: str
    created: datetime
    age: timedelta

    def describe(self) -> str:
        return f"last good: {human_age(self.age)}"


def last_good_backups(images: Iterable[ImageSummary], now: datetime) -> dict[str, LastGood]:
    """Per image name, its newest image, by name."""
    newest: dict[str, tuple[datetime, ImageSummary]] = {}
    for image in images:
        when = image_time(image.created)
        if image.name not in newest or when > newest[image.name][0]:
            newest[image.name] = (when, image)
    return {
        name: LastGood(name, image.ref, when, now - when)
        for name, (when, image) in sorted(newest.items())
    }
