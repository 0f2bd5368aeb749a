"""Model adapters by name, for ``gapeval run --model SPEC``.

Specs: ``oracle`` (answers from the suite's ground truth), ``toy`` / ``toy:VARIANT`` (the built-in UMM,
variant ``shared`` by default, e.g. ``toy:decoupled``), ``janus:PATH`` (Janus / Janus-Pro, local or hub path),
``emu3:SPEC`` (Emu3 chat + generation checkpoints), and ``py:MODULE:FACTORY`` — any importable callable that
returns an adapter, the way to plug in research-repo models (Show-o, BAGEL, ...) without touching the toolkit.
Keyword arguments (``--model-arg k=v``; e.g. ``device_map=auto`` for models larger than one GPU) go to the
adapter's constructor unchanged. Adapters are imported only when named, so unused backends cost nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from gapeval.items import Item
from gapeval.models.base import UMM

KNOWN = "oracle, toy, toy:VARIANT, janus:PATH, emu3:SPEC, py:MODULE:FACTORY"


def load_model(spec: str, items: Sequence[Item], **kwargs: Any) -> UMM:
    """Build the adapter named by ``spec``; ``items`` is the suite (only the oracle needs it)."""
    kind, _, rest = spec.partition(":")
    if kind == "oracle" and not rest:
        from gapeval.models.oracle import OracleAdapter

        return OracleAdapter(items, **kwargs)
    if kind == "toy":
        from gapeval.models.toy import load_toy

        return load_toy(variant=rest or "shared", **kwargs)
    if kind == "janus" and rest:
        from gapeval.models.janus import JanusAdapter

        return JanusAdapter.from_spec(rest, **kwargs)
    if kind == "emu3" and rest:
        from gapeval.models.emu3 import Emu3Adapter

        return Emu3Adapter.from_spec(rest, **kwargs)
    if kind == "py" and rest.count(":") == 1:
        module, factory = rest.split(":")
        return getattr(importlib.import_module(module), factory)(**kwargs)
    raise ValueError(f"unknown model {spec!r}; expected one of {KNOWN}")
