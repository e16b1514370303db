"""The liferaft engine: disks, repositories, capture, restore, verify.

This package may never import textual (tests/test_import_hygiene.py checks).
The CLI and the Textual UI talk to the engine only through ``Engine``; a test
can hand the UI an Engine pointed at loop devices.
"""

from __future__ import annotations

from rescue_app.engine.facade import Engine

__all__ = ["Engine"]
