"""``"module:attribute"`` strings, the way every registry names what it builds (models, editors, erasers,
study sections): the module is imported only when the entry is used, so listing a registry — e.g. for a
command line's choices — imports nothing heavy."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def resolve(target: str | Callable[..., Any] | type) -> Any:
    """``"module:attr.attr"`` → the object; a callable or class passes through unchanged."""
    if not isinstance(target, str):
        return target
    module, sep, path = target.partition(":")
    if not sep:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    value: Any = importlib.import_module(module)
    for name in path.split("."):
        value = getattr(value, name)
    return value
