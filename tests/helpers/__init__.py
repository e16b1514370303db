"""Helpers shared by liferaft's tests (real loop disks: see diskkit)."""
