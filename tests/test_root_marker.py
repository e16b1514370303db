"""One mechanism for tests that need root: the `root` marker, skipped for non-root
in tests/conftest.py. No test or fixture checks the user id itself, and a test
that uses a fixture needing root without the marker is refused at collection."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT_CHECK = re.compile(r"\bos\.get(e)?uid\(")


def test_only_the_top_conftest_asks_for_the_user_id() -> None:
    found = [
        f"{path.relative_to(TESTS.parent)}:{n}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != TESTS / "conftest.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ROOT_CHECK.search(line)
    ]
    assert not found, f"use @pytest.mark.root instead of a user id check: {found}"


def _collect(tmp_path: Path, test_source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(test_source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
        + ["--collect-only", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning"]
        + ["test_probe.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS.parent)},
        capture_output=True,
        text=True,
    )


def test_a_root_fixture_without_the_marker_is_refused(tmp_path: Path) -> None:
    proc = _collect(tmp_path, "def test_unmarked(loopdisk):\n    pass\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "lack @pytest.mark.root" in proc.stderr and "test_unmarked" in proc.stderr


def test_a_root_fixture_with_the_marker_is_collected(tmp_path: Path) -> None:
    proc = _collect(
        tmp_path, "import pytest\n\n@pytest.mark.root\ndef test_marked(loopdisk):\n    pass\n"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_marked" in proc.stdout
