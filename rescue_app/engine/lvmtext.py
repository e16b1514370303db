"""LVM's text metadata (what ``vgcfgbackup`` writes), read without lvm2.

A Clonezilla image keeps each volume group as ``lvm_<vg>.conf``, the
vgcfgbackup text; liferaft reads from it what the plan and the restore need
(the VG's UUID and extent size, each PV's UUID, pe_start and size, each LV's
UUID, size and segment type) on any machine, lvm2 or not. Pure functions:

    parse_config(text) -> dict            # the nested sections and values
    layout(text) -> VgLayout              # the one volume group the text holds

The format (lvm2's lib/config): ``key = value`` with strings in double
quotes (backslash escapes), integers, and lists in brackets; ``name { ... }``
sections; ``#`` comments to the end of the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rescue_app.errors import RepositoryError

SECTOR = 512  # extent_size, pe_start and dev_size are in 512-byte sectors

_TOKEN = re.compile(
    r'\s+|#[^\n]*|"(?P<str>(?:[^"\\]|\\.)*)"|(?P<num>-?\d+(?:\.\d+)?)'
    r"|(?P<word>[A-Za-z0-9_.+-]+)|(?P<punct>[{}\[\]=,])"
)


class MetadataError(RepositoryError):
    """The text is not LVM metadata liferaft can read."""


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise MetadataError(f"LVM metadata: unexpected {text[pos]!r} on line {line}")
        pos = m.end()
        if m.group("str") is not None:
            out.append(("value", re.sub(r"\\(.)", r"\1", m.group("str"))))
        elif m.group("num") is not None:
            num = m.group("num")
            out.append(("value", float(num) if "." in num else int(num)))
        elif m.group("word") is not None:
            out.append(("word", m.group("word")))
        elif m.group("punct") is not None:
            out.append((m.group("punct"), None))
    return out


def parse_config(text: str) -> dict[str, Any]:
    """The nested sections (dicts) and values (str, int, float, list) of an
    lvm2 config text; MetadataError names the first thing it cannot read."""
    tokens = _tokens(text)
    pos = 0

    def take(kind: str) -> Any:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos][0] != kind:
            got = tokens[pos][0] if pos < len(tokens) else "the end"
            raise MetadataError(f"LVM metadata: expected {kind}, found {got}")
        pos += 1
        return tokens[pos - 1][1]

    def value() -> Any:
        nonlocal pos
        if pos < len(tokens) and tokens[pos][0] == "[":
            pos += 1
            items: list[Any] = []
            while tokens[pos][0] != "]":
                items.append(take("value"))
                if tokens[pos][0] == ",":
                    pos += 1
            pos += 1
            return items
        return take("value")

    def section(top: bool) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens) and (top or tokens[pos][0] != "}"):
            key = take("word")
            if pos < len(tokens) and tokens[pos][0] == "{":
                pos += 1
                out[key] = section(False)
                take("}")
            else:
                take("=")
                out[key] = value()
        return out

    try:
        return section(True)
    except IndexError:
        raise MetadataError("LVM metadata: the text ends inside a section or list") from None


@dataclass(frozen=True)
class PvLayout:
    key: str  # pv0, pv1, ... (how the LVs' stripes name it)
    uuid: str
    device: str  # the device when saved ("Hint only")
    pe_start: int  # bytes
    dev_size: int  # bytes
    pe_count: int


@dataclass(frozen=True)
class LvLayout:
    name: str
    uuid: str
    size: int  # bytes
    segtype: str  # of the first segment, as lvs names it (linear, striped, thin, ...)
    tags: tuple[str, ...]
    visible: bool
    pvs: tuple[str, ...]  # the PV keys its segments lie on


@dataclass(frozen=True)
class VgLayout:
    name: str
    uuid: str
    extent_size: int  # bytes
    tags: tuple[str, ...]
    pvs: tuple[PvLayout, ...]
    lvs: tuple[LvLayout, ...]


def _segtype(seg: dict[str, Any]) -> str:
    kind = str(seg.get("type", ""))
    if kind == "striped" and seg.get("stripe_count", 1) == 1:
        return "linear"  # (lvs' name for a one-stripe segment)
    return kind


def _lv(name: str, d: dict[str, Any], extent: int) -> LvLayout:
    segments = [v for k, v in d.items() if k.startswith("segment") and isinstance(v, dict)]
    extents = sum(int(s.get("extent_count", 0)) for s in segments)
    on: list[str] = []
    for s in segments:
        stripes = s.get("stripes", [])
        on += [str(x) for x in stripes[0::2] if str(x) not in on]
    return LvLayout(
        name=name,
        uuid=str(d.get("id", "")),
        size=extents * extent,
        segtype=_segtype(segments[0]) if segments else "",
        tags=tuple(str(t) for t in d.get("tags", [])),
        visible="VISIBLE" in d.get("status", []),
        pvs=tuple(on),
    )


def layout(text: str) -> VgLayout:
    """The volume group of a vgcfgbackup text (exactly one)."""
    doc = parse_config(text)
    groups = [(k, v) for k, v in doc.items() if isinstance(v, dict)]
    if len(groups) != 1:
        raise MetadataError(f"LVM metadata: {len(groups)} volume groups, expected one")
    name, vg = groups[0]
    try:
        extent = int(vg["extent_size"]) * SECTOR
        pvs = tuple(
            PvLayout(
                key=key,
                uuid=str(pv["id"]),
                device=str(pv.get("device", "")),
                pe_start=int(pv["pe_start"]) * SECTOR,
                dev_size=int(pv.get("dev_size", 0)) * SECTOR,
                pe_count=int(pv.get("pe_count", 0)),
            )
            for key, pv in vg.get("physical_volumes", {}).items()
        )
        lvs = tuple(_lv(k, v, extent) for k, v in vg.get("logical_volumes", {}).items())
        return VgLayout(
            name=name,
            uuid=str(vg["id"]),
            extent_size=extent,
            tags=tuple(str(t) for t in vg.get("tags", [])),
            pvs=pvs,
            lvs=lvs,
        )
    except KeyError as exc:
        raise MetadataError(f"LVM metadata of {name}: no {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"LVM metadata of {name}: a malformed value ({exc})") from None
