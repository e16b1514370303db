"""make deb's rules, without building (tests/test_deb.py builds and installs):
every library the app requires is placed (Debian's package, vendored or not
needed), an unplaced or binary vendored wheel stops the build in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.cache import python_requirements
from builder.deb import PYTHON_DEPS, DebBuildError, PythonDeps, normalize
from tests.enginekit import REPO_ROOT

DEPS = PythonDeps.load(Path(REPO_ROOT) / PYTHON_DEPS)


def test_every_requirement_of_pyproject_is_placed() -> None:
    """A dependency added to pyproject.toml without a line in deps/deb-python.txt
    would stop `make deb`; this says so without the network."""
    names = {
        normalize(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0])
        for r in python_requirements(Path(REPO_ROOT))
    }
    assert names - set(DEPS.entries) == set()


def test_depends_are_debian_packages_and_vendored_wheels_pure() -> None:
    assert all(d.startswith("python3-") for d in DEPS.depends())
    wheels = [
        Path("textual-8.2.8-py3-none-any.whl"),
        Path("PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl"),
    ]
    assert DEPS.vendored(wheels, PYTHON_DEPS) == [wheels[0]]


def test_an_unplaced_or_binary_wheel_stops_the_build() -> None:
    with pytest.raises(DebBuildError, match="does not say how Debian 12 gets left-pad"):
        DEPS.vendored([Path("left_pad-1.0-py3-none-any.whl")], PYTHON_DEPS)
    binary = PythonDeps({"fast-thing": "vendor"})
    with pytest.raises(DebBuildError, match="Architecture: all"):
        binary.vendored([Path("fast_thing-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")], "x")


def test_a_library_listed_twice_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "deb-python.txt"
    table.write_text("pyyaml python3-yaml\nPyYAML vendor\n")
    with pytest.raises(DebBuildError, match="deb-python.txt:2: PyYAML is listed twice"):
        PythonDeps.load(table)
