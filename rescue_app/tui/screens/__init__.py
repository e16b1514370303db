"""Screens of the liferaft UI, one per module."""
