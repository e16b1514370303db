"""ruff on everything, strict mypy on the app and the builder — the linters run as tests."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_ruff():
    proc = _run("ruff", "check", "rescue_app", "builder", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict():
    proc = _run("mypy", "rescue_app", "builder")
    assert proc.returncode == 0, proc.stdout + proc.stderr
