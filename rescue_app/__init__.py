"""liferaft: bare-metal backup and restore from a rescue stick."""

__version__ = "0.1.0"
