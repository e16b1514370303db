"""Which images a retention policy keeps (``liferaft forget``), decided purely.

restic's ``forget`` rules: per image name, images newest first; ``last N``
keeps the N newest; ``hourly/daily/weekly/monthly/yearly N`` keep the newest
image of each of the N most recent calendar periods that have an image. The
rules are OR-ed: an image is kept if any rule keeps it, and every rule that
does is recorded. Periods are UTC calendar periods (an image's id is its UTC
time); weeks are ISO weeks. Reads and writes nothing: the plan is a value to
print, test and then apply (``Repository.remove_image``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from rescue_app.engine.manifest import ImageKey
from rescue_app.errors import UsageError


class KeepRule(enum.Enum):
    LAST = "last"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


# Which period an image time falls in, per rule (LAST: every image its own).
_PERIOD: dict[KeepRule, Callable[[datetime], tuple[int, ...]]] = {
    KeepRule.HOURLY: lambda t: (t.year, t.month, t.day, t.hour),
    KeepRule.DAILY: lambda t: (t.year, t.month, t.day),
    KeepRule.WEEKLY: lambda t: tuple(t.isocalendar()[:2]),
    KeepRule.MONTHLY: lambda t: (t.year, t.month),
    KeepRule.YEARLY: lambda t: (t.year,),
}


@dataclass(frozen=True)
class KeepPolicy:
    """How many of each kind to keep; 0 = the rule is not used."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for rule in KeepRule:
            if self.count(rule) < 0:
                raise UsageError(
                    f"--keep-{rule.value} {self.count(rule)} is negative",
                    hint="give a count of 1 or more",
                )
        if not any(self.count(rule) for rule in KeepRule):
            # Never "no rule, so keep nothing": that would forget every image.
            raise UsageError(
                "forget needs at least one --keep-... rule",
                hint="e.g. --keep-daily 7 --keep-weekly 4; nothing was removed",
            )

    def count(self, rule: KeepRule) -> int:
        return int(getattr(self, rule.value))

    def describe(self) -> str:
        return ", ".join(
            f"{rule.value} {self.count(rule)}" for rule in KeepRule if self.count(rule)
        )


@dataclass(frozen=True)
class ImageTime(ImageKey):
    """One image as the policy sees it."""

    created: datetime  # UTC


@dataclass(frozen=True)
class Decision:
    image: ImageTime
    kept_by: tuple[KeepRule, ...]  # empty: the image is removed

    @property
    def keep(self) -> bool:
        return bool(self.kept_by)

    def render(self) -> str:
        if not self.keep:
            return f"remove {self.image.ref}"
        return f"keep   {self.image.ref}  ({', '.join(r.value for r in self.kept_by)})"


@dataclass(frozen=True)
class ForgetPlan:
    policy: KeepPolicy
    decisions: tuple[Decision, ...]  # by name, newest first within a name

    @property
    def kept(self) -> tuple[ImageTime, ...]:
        return tuple(d.image for d in self.decisions if d.keep)

    @property
    def removed(self) -> tuple[ImageTime, ...]:
        return tuple(d.image for d in self.decisions if not d.keep)

    def render(self) -> str:
        lines = [f"policy: {self.policy.describe()}"]
        lines += [d.render() for d in self.decisions]
        lines.append(f"{len(self.kept)} image(s) kept, {len(self.removed)} to remove")
        return "\n".join(lines)


def select(images: Iterable[ImageTime], policy: KeepPolicy) -> ForgetPlan:
    """Apply ``policy`` to each image name separately."""
    by_name: dict[str, list[ImageTime]] = {}
    for image in images:
        by_name.setdefault(image.name, []).append(image)
    decisions: list[Decision] = []
    for name in sorted(by_name):
        newest_first = sorted(by_name[name], key=lambda i: (i.created, i.id), reverse=True)
        kept: dict[str, list[KeepRule]] = {i.id: [] for i in newest_first}
        for rule in KeepRule:
            left = policy.count(rule)
            last_period: tuple[int, ...] | None = None
            for image in newest_first:
                if left <= 0:
                    break
                if rule is KeepRule.LAST:
                    kept[image.id].append(rule)
                    left -= 1
                    continue
                period = _PERIOD[rule](image.created)
                if period != last_period:  # the newest image of a period not yet kept
                    kept[image.id].append(rule)
                    last_period = period
                    left -= 1
        decisions += [Decision(i, tuple(kept[i.id])) for i in newest_first]
    return ForgetPlan(policy, tuple(decisions))
