"""Model adapters by name, for ``gapeval run --model SPEC``.

Specs: ``oracle`` (answers from the suite's ground truth), ``toy`` / ``toy:VARIANT`` (the built-in UMM,
variant ``shared`` by default, e.g. ``toy:decoupled``), ``janus:PATH`` (Janus / Janus-Pro, local or hub path),
``emu3:SPEC`` (Emu3 chat + generation checkpoints), and ``py:MODULE:FACTORY`` — any importable callable that
returns an adapter, the way to plug in research-repo models (Show-o, BAGEL, ...) without touching the toolkit.
Keyword arguments (``--model-arg k=v``; e.g. ``device_map=auto`` for models larger than one GPU) go to the
adapter's constructor unchanged, after a check against its signature (names, and numbers where it takes
numbers), so a typo is one line naming the accepted keys, not a traceback. Adapters are imported only when
named, so unused backends cost nothing.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from gapeval.items import Item
from gapeval.models.base import UMM

KNOWN = "oracle, toy, toy:VARIANT, janus:PATH, emu3:SPEC, py:MODULE:FACTORY"


def load_model(spec: str, items: Sequence[Item], **kwargs: Any) -> UMM:
    """Build the adapter named by ``spec``; ``items`` is the suite (only the oracle needs it)."""
    kind, _, rest = spec.partition(":")
    if kind == "oracle" and not rest:
        from gapeval.models.oracle import OracleAdapter

        check_kwargs(OracleAdapter, kwargs, spec)
        return OracleAdapter(items, **kwargs)
    if kind == "toy":
        from gapeval.models.toy import load_toy
        from gapeval.models.toy.adapter import ToyAdapter

        check_kwargs(ToyAdapter, kwargs, spec)
        return load_toy(variant=rest or "shared", **kwargs)
    if kind == "janus" and rest:
        from gapeval.models.janus import JanusAdapter

        return JanusAdapter.from_spec(rest, **kwargs)
    if kind == "emu3" and rest:
        from gapeval.models.emu3 import Emu3Adapter

        return Emu3Adapter.from_spec(rest, **kwargs)
    if kind == "py" and rest.count(":") == 1:
        factory = _plugin_factory(*rest.split(":"))
        check_kwargs(factory, kwargs, spec)
        return factory(**kwargs)
    raise ValueError(f"unknown model {spec!r}; expected one of {KNOWN}")


def _plugin_factory(module: str, name: str) -> Callable[..., UMM]:
    form = "py:MODULE:FACTORY, MODULE importable (on PYTHONPATH) and FACTORY a callable in it"
    try:
        factory = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"py:{module}:{name}: cannot import {module!r} ({exc}); expected {form}") from None
    except AttributeError:
        raise ValueError(f"py:{module}:{name}: module {module!r} has no {name!r}; expected {form}") from None
    if not callable(factory):
        raise ValueError(f"py:{module}:{name}: {name!r} is not callable; expected {form}")
    return factory


def check_kwargs(target: Callable[..., Any], kwargs: dict[str, Any], spec: str) -> None:
    """Refuse ``--model-arg`` keys that ``target`` does not take, and non-numbers where it takes a number.

    The accepted keys are ``target``'s keyword parameters with defaults (the rest, such as the suite or the
    checkpoint, come from the spec); a target taking ``**kwargs`` accepts any key.
    """
    function = target.__init__ if inspect.isclass(target) else target
    params = inspect.signature(target).parameters.values()
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [p.name for p in params if p.kind in keywords and p.default is not p.empty]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"--model {spec}: unknown --model-arg {', '.join(unknown)}; accepted: {', '.join(accepted)}"
            )
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: leave the types to the adapter
        hints = {}
    for key, value in kwargs.items():
        wanted = _numeric(hints.get(key))
        if wanted and not _is_number(value, wanted):
            kind = "an integer" if float not in wanted else "a number"
            optional = " or null" if type(None) in wanted else ""
            raise ValueError(f"--model {spec}: --model-arg {key} must be {kind}{optional}, got {value!r}")


def _numeric(hint: Any) -> set[type] | None:
    """The types a numeric parameter accepts (int/float, maybe None), or None when it is not numeric."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = set(typing.get_args(hint)) if union else {hint}
    if not members & {int, float} or not members <= {int, float, type(None)}:
        return None
    return members


def _is_number(value: Any, wanted: set[type]) -> bool:
    if value is None:
        return type(None) in wanted
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return float in wanted or float(value).is_integer()
