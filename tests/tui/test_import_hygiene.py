"""The engine must stay usable without Textual (CLI, unattended mode)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import rescue_app.engine


def test_engine_never_imports_textual() -> None:
    modules = ["rescue_app.engine", "rescue_app.errors", "rescue_app.progress", "rescue_app.run"]
    modules += [
        f"rescue_app.engine.{m.name}" for m in pkgutil.iter_modules(rescue_app.engine.__path__)
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
        "print('ok', len(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(modules) > 10
