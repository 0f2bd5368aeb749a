"""``KEY=VALUE`` options from a command line, checked against what they configure.

``--model-arg`` (an adapter's keyword arguments) and ``--editor-arg`` (an editor's fields) share one reading
and one check, so a typo or a wrong type is one line naming the accepted keys, never a traceback from inside
the adapter or the editor.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any


def parse_key_values(pairs: Sequence[str], flag: str = "--model-arg") -> dict[str, Any]:
    """``k=v`` pairs → kwargs; values are read as JSON when they parse (numbers, true/false, null, lists),
    else strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return kwargs


def check_options(
    target: Callable[..., Any],
    kwargs: dict[str, Any],
    where: str,
    flag: str = "--model-arg",
    reserved: Collection[str] = (),
) -> dict[str, Any]:
    """Refuse keys that ``target`` does not take, and non-numbers where it takes a number; return the kwargs
    with JSON lists turned into tuples where ``target`` takes a tuple.

    The accepted keys are ``target``'s keyword parameters with defaults, less ``reserved`` (the ones the
    caller sets itself); a target taking ``**kwargs`` accepts any key. ``where`` names the owner in errors
    (e.g. ``--model toy``).
    """
    function = target.__init__ if inspect.isclass(target) else target
    params = inspect.signature(target).parameters.values()
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [p.name for p in params if p.kind in keywords and p.default is not p.empty]
    accepted = [name for name in accepted if name not in reserved]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"{where}: unknown {flag} {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: leave the types to the target
        hints = {}
    checked = dict(kwargs)
    for key, value in kwargs.items():
        wanted = _numeric(hints.get(key))
        if wanted and not _is_number(value, wanted):
            kind = "an integer" if float not in wanted else "a number"
            optional = " or null" if type(None) in wanted else ""
            raise ValueError(f"{where}: {flag} {key} must be {kind}{optional}, got {value!r}")
        if isinstance(value, list) and _takes_tuple(hints.get(key)):
            checked[key] = tuple(value)
    return checked


def _members(hint: Any) -> set[Any]:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return set(typing.get_args(hint)) if union else {hint}


def _numeric(hint: Any) -> set[type] | None:
    """The types a numeric parameter accepts (int/float, maybe None), or None when it is not numeric."""
    members = _members(hint)
    if not members & {int, float} or not members <= {int, float, type(None)}:
        return None
    return members


def _takes_tuple(hint: Any) -> bool:
    return any(m is tuple or typing.get_origin(m) is tuple for m in _members(hint))


def _is_number(value: Any, wanted: set[type]) -> bool:
    if value is None:
        return type(None) in wanted
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return float in wanted or float(value).is_integer()
