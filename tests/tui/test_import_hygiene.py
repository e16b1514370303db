"""Who may import what (issue 11; docs/DESIGN.md "Layers").

- The engine stays usable without Textual (CLI, unattended mode).
- Only rescue_app/run.py starts processes: no other module of rescue_app/ or
  builder/ imports subprocess (or calls os.system and friends).
- Only the engine and the builder call rescue_app.run.
- The UI, the CLI and unattended mode import from the engine only the package
  ``rescue_app.engine`` (its ``__all__``: ``Engine``, result and model types,
  edge helpers), never a module below it.

The last three read every module's source with ast (no import, no root).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import rescue_app.engine

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rescue_app", "builder")

# The programs' one home.
PROCESS_HOME = "rescue_app/run.py"
# May call rescue_app.run: the engine (OS actions) and the builder (it runs on
# the build host, not in the rescue system, and has no engine to go through).
RUN_CALLERS = ("rescue_app/engine/", "builder/")
# May reach the engine only through the package rescue_app.engine.
FACADE_USERS = ("rescue_app/tui/", "rescue_app/cli.py", "rescue_app/unattended.py")
# os functions that start programs, as subprocess does.
OS_SPAWNERS = {"system", "popen", "posix_spawn", "posix_spawnp", "fork", "forkpty"}
OS_SPAWNER_PREFIXES = ("exec", "spawn")


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(), filename=rel)


def _imports(tree: ast.Module) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, name) for each import; ``import a.b`` gives (a.b, None),
    ``from a import b`` gives (a, b). Imports inside functions and under
    TYPE_CHECKING count too: the rule is about what a module reaches for."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def _is(module: str, name: str | None, wanted: str) -> bool:
    """Whether the import brings in ``wanted`` (a module) or something inside it."""
    parent, _, leaf = wanted.rpartition(".")
    return (
        module == wanted
        or module.startswith(wanted + ".")
        or (bool(parent) and module == parent and name == leaf)
    )


def test_engine_never_imports_textual() -> None:
    modules = ["rescue_app.engine", "rescue_app.errors", "rescue_app.progress", "rescue_app.run"]
    modules += [
        m.name
        for m in pkgutil.walk_packages(rescue_app.engine.__path__, prefix="rescue_app.engine.")
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
    assert "rescue_app.engine.stores.sftp" in modules  # the walk goes into subpackages


def test_only_run_py_starts_processes() -> None:
    strays = []
    for rel, tree in _modules():
        if rel == PROCESS_HOME:
            continue
        for line, module, name in _imports(tree):
            if _is(module, name, "subprocess") or _is(module, name, "pty"):
                strays.append(f"{rel}:{line} imports {module}")
            if (
                module == "os"
                and name is not None
                and (name in OS_SPAWNERS or name.startswith(OS_SPAWNER_PREFIXES))
            ):
                strays.append(f"{rel}:{line} imports os.{name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and (node.attr in OS_SPAWNERS or node.attr.startswith(OS_SPAWNER_PREFIXES))
            ):
                strays.append(f"{rel}:{node.lineno} uses os.{node.attr}")
    assert strays == [], "start programs through rescue_app.run (the engine's):\n" + "\n".join(
        strays
    )


def test_only_the_engine_and_the_builder_call_run() -> None:
    strays = [
        f"{rel}:{line} imports rescue_app.run"
        for rel, tree in _modules()
        if rel != PROCESS_HOME and not rel.startswith(RUN_CALLERS)
        for line, module, name in _imports(tree)
        if _is(module, name, "rescue_app.run")
    ]
    assert strays == [], "go through an Engine method:\n" + "\n".join(strays)


def test_ui_cli_and_unattended_import_only_the_engine_package() -> None:
    surface = set(rescue_app.engine.__all__)
    strays = []
    for rel, tree in _modules():
        if not rel.startswith(FACADE_USERS):
            continue
        for line, module, name in _imports(tree):
            if module.startswith("rescue_app.engine."):
                strays.append(f"{rel}:{line} imports {module}")
            elif module == "rescue_app.engine" and name is not None and name not in surface:
                # e.g. `from rescue_app.engine import mounts`: a module, not the facade
                strays.append(f"{rel}:{line} imports rescue_app.engine.{name}")
            elif _is(module, name, "subprocess"):
                strays.append(f"{rel}:{line} imports subprocess")
    assert strays == [], (
        "import from rescue_app.engine only what its __all__ offers (Engine, result and "
        "model types, edge helpers); add an Engine method for an action:\n" + "\n".join(strays)
    )


def test_the_engine_package_offers_no_module() -> None:
    """Its surface is the facade and values: no engine module leaks through it."""
    modules = [
        name
        for name in rescue_app.engine.__all__
        if type(getattr(rescue_app.engine, name)).__name__ == "module"
    ]
    assert modules == []


# Imported only when their action is first used: the rescue app's home screen
# comes up without them (boot time under emulation, issue 17).
NOT_AT_START = (
    "rescue_app.engine.browse",
    "rescue_app.engine.capture",
    "rescue_app.engine.clonezilla",
    "rescue_app.engine.filelevel",
    "rescue_app.engine.imagefs",
    "rescue_app.engine.partrestore",
    "rescue_app.engine.restore",
    "rescue_app.engine.verify",
    "http.server",
)


def test_the_app_starts_without_the_engine_it_does_not_use_yet() -> None:
    probe = (
        "import sys, rescue_app.tui.app, rescue_app.cli\n"
        f"print(' '.join(m for m in {NOT_AT_START!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out == [], f"imported before they are needed (make the import lazy): {out}"
    # Every name of the surface has a home the package can import it from.
    assert sorted(rescue_app.engine._HOMES) == sorted(rescue_app.engine.__all__)
