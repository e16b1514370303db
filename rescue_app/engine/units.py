"""Sizes and rates as people read them. Pure."""

from __future__ import annotations


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    """Rates in the same binary units as sizes: 12582912.0 -> '12.0 MiB/s'."""
    return f"{bytes_per_second / 2**20:.1f} MiB/s"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
