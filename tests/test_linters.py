"""ruff on everything, mypy (strict on the app and the builder, bodies checked in the
tests and the bench: pyproject.toml [tool.mypy]), shellcheck on every shell script —
the linters run as tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff():
    proc = _run("ruff", "check", "rescue_app", "builder", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = _run("ruff", "format", "--check", "rescue_app", "builder", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy():
    # One run: the tests import rescue_app and builder, so checking them together
    # gives every module one name and one verdict.
    proc = _run("mypy", "rescue_app", "builder", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _shell_scripts() -> list[str]:
    """Every shell script we ship or run: by name, by shebang, and the overlay's
    templates (their jinja fields are plain words inside strings)."""
    found = []
    for folder in ("builder", "overlay", ".ci", "tests", "bench"):
        for dirpath, _dirs, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as f:
                        head = f.readline()
                except OSError:
                    continue
                if name.endswith(".sh") or re.match(rb"#!\s*/(usr/)?bin/(env )?(ba)?sh\b", head):
                    found.append(path)
    return sorted(found)


def test_shellcheck():
    scripts = _shell_scripts()
    assert any(s.endswith(".ci/run") for s in scripts), scripts
    proc = subprocess.run(
        ["shellcheck", "--shell=bash", *scripts], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
