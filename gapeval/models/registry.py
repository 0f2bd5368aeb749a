"""Model adapters by name, for ``--model SPEC`` in every command: one registry the CLI, the docs and the tests
read.

A spec is ``NAME`` or ``NAME:REST``; :data:`MODELS` maps ``NAME`` to a :class:`ModelEntry` whose factory
(``"module:attribute"``, imported only when named, so unused backends cost nothing) builds the adapter from
``REST``. ``py:MODULE:FACTORY`` plugs in any importable callable that returns an adapter — the way to bring
research-repo models (BAGEL, OmniGen2, Show-o, ...) without touching the toolkit (docs/adapters.md).
Keyword arguments (``--model-arg k=v``; e.g. ``device_map=auto``) go to the factory after a check against
the signature of the entry's ``checked`` target, so a typo is one line naming the accepted keys.
Adding a model is one module with a factory and one :data:`MODELS` line (or :func:`register_model`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gapeval.items import Item
from gapeval.models.base import UMM
from gapeval.options import check_options
from gapeval.targets import resolve


@dataclass(frozen=True)
class ModelEntry:
    """One model family. ``rest``: whether the spec's ``:REST`` is ``required``, ``optional`` or ``none``."""

    form: str  # how a spec of this family is written, for help texts and docs
    factory: str | Callable[..., UMM]  # "module:attr[.attr]" or a callable: factory(REST, **kwargs)
    help: str
    rest: str = "required"
    takes_items: bool = False  # the factory gets the suite's items first (the oracle answers from them)
    checked: str | None = None  # "module:attr" whose signature --model-arg keys are checked against


MODELS: dict[str, ModelEntry] = {
    "oracle": ModelEntry(
        "oracle",
        "gapeval.models.oracle:OracleAdapter",
        "answers from the suite's ground truth with set error rates",
        rest="none",
        takes_items=True,
        checked="gapeval.models.oracle:OracleAdapter",
    ),
    "toy": ModelEntry(
        "toy[:VARIANT]",
        "gapeval.models.toy:load_toy",
        "the built-in UMM (shared, decoupled, VARIANT@STEP, VARIANT@seedN or a checkpoint folder)",
        rest="optional",
        checked="gapeval.models.toy.adapter:ToyAdapter",
    ),
    "janus": ModelEntry("janus:PATH", "gapeval.models.janus:JanusAdapter.from_spec", "Janus / Janus-Pro"),
    "emu3": ModelEntry("emu3:SPEC", "gapeval.models.emu3:Emu3Adapter.from_spec", "Emu3 chat + generation"),
    "bridge": ModelEntry(
        "bridge:SPEC",
        "gapeval.models.bridge:load_bridge",
        "SPEC drawing its own und answer",
        takes_items=True,
    ),
    "py": ModelEntry("py:MODULE:FACTORY", "gapeval.models.registry:plugin", "any importable adapter factory"),
}


def register_model(name: str, entry: ModelEntry) -> None:
    """Add (or replace) a model family."""
    MODELS[name] = entry


def model_forms() -> str:
    """Every spec form, for ``--model`` help texts and error messages."""
    return ", ".join(entry.form for entry in MODELS.values())


def check_spec(spec: str) -> tuple[ModelEntry, str]:
    """The family entry and ``REST`` of ``spec``, or the error naming every accepted form (nothing is built, so
    a configuration file can be checked before a long run)."""
    name, _, rest = spec.partition(":")
    entry = MODELS.get(name)
    if entry is None or (entry.rest == "none" and rest) or (entry.rest == "required" and not rest):
        raise ValueError(f"unknown model {spec!r}; expected one of {model_forms()}")
    return entry, rest


def load_model(spec: str, items: Sequence[Item] = (), **kwargs: Any) -> UMM:
    """Build the adapter named by ``spec``; ``items`` is the suite (only the oracle needs it)."""
    entry, rest = check_spec(spec)
    if entry.checked is not None:
        kwargs = check_options(resolve(entry.checked), kwargs, f"--model {spec}")
    factory = resolve(entry.factory)
    args = (list(items),) if entry.takes_items else ()
    return factory(*args, rest, **kwargs) if entry.rest != "none" else factory(*args, **kwargs)


def plugin(rest: str, **kwargs: Any) -> UMM:
    """``py:MODULE:FACTORY``: the adapter ``MODULE.FACTORY(**kwargs)`` returns; MODULE is looked up on the
    import path and in the current folder."""
    form = "py:MODULE:FACTORY, MODULE importable (on PYTHONPATH) and FACTORY a callable in it"
    module, sep, name = rest.partition(":")
    if not sep or ":" in name:
        raise ValueError(f"unknown model 'py:{rest}'; expected {form}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the `gapeval` script's path lacks the folder
    try:
        factory = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"py:{module}:{name}: cannot import {module!r} ({exc}); expected {form}") from None
    except AttributeError:
        raise ValueError(f"py:{module}:{name}: module {module!r} has no {name!r}; expected {form}") from None
    if not callable(factory):
        raise ValueError(f"py:{module}:{name}: {name!r} is not callable; expected {form}")
    return factory(**check_options(factory, kwargs, f"--model py:{rest}"))
