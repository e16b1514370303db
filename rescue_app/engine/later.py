"""Imports put off until first use, so that a program pays only for the parts
of the engine it uses (the rescue app's first screen; boot time, issue 17)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Later:
    """Module ``name``, imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


def deferred(get: Callable[[], Callable[_P, _R]]) -> Callable[_P, _R]:
    """A function that calls what ``get`` returns, looked up at each call:
    ``deferred(lambda: _restore.apply_plan)`` names a function of a module
    not imported yet, with its signature for the type checker."""

    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return get()(*args, **kwargs)

    return call
