"""The Textual terminal UI (`liferaft tui`).

Owns screens, widgets and styles; drives the engine only through
``rescue_app.engine.Engine``. The engine never imports anything from here
(tests/tui/test_import_hygiene.py checks it never imports textual at all).
"""
