"""Suites by name: the built-in ``synth`` suite and suites read from disk.

Specs: ``synth`` (420 items, seed 0), ``synth:N``, ``synth:n=N,seed=S``; ``public:PATH`` (the public GapEval
layout or a datasets dataset), ``hf:PATH`` (a datasets dataset saved or downloaded locally), ``jsonl:PATH``
(the toolkit's own format); a bare existing PATH is read in the toolkit's format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gapeval.items import Item

PATH_KINDS = ("public", "hf", "jsonl")
SYNTH_DEFAULTS = {"n": 420, "seed": 0}


@dataclass
class Suite:
    """Items plus a canonical id (the label recorded in run manifests; the content hash identifies them)."""

    id: str
    items: list[Item]


def parse_synth(args: str) -> dict[str, int]:
    """``""``, ``"N"`` or ``"n=N,seed=S"`` → keyword arguments of ``build_suite``."""
    params = dict(SYNTH_DEFAULTS)
    parts = [f"n={args}"] if args.isdigit() else [p for p in args.split(",") if p]
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in params or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"bad synth suite argument {part!r}: expected synth:N or synth:n=N,seed=S")
        params[key.strip()] = int(value)
    if params["n"] < 1:
        raise ValueError(f"synth suite size must be positive, got {params['n']}")
    return params


def get_suite(spec: str) -> Suite:
    """Load the suite named by ``spec`` (see the module docstring)."""
    kind, sep, rest = spec.partition(":")
    if kind == "synth":
        from gapeval.synth.suite import build_suite

        params = parse_synth(rest)
        return Suite(f"synth:n={params['n']},seed={params['seed']}", build_suite(**params))
    if sep and kind in PATH_KINDS:
        from gapeval.public import resolve_path_suite

        if not rest:
            raise ValueError(f"suite {spec!r}: missing path after '{kind}:'")
        return Suite(f"{kind}:{rest}", resolve_path_suite(kind, rest))
    if Path(spec).exists():
        from gapeval.io import load_items

        return Suite(f"jsonl:{spec}", load_items(spec))
    raise ValueError(
        f"unknown suite {spec!r}: expected synth, synth:N, synth:n=N,seed=S, public:PATH, hf:PATH, jsonl:PATH "
        "or an existing suite folder"
    )
