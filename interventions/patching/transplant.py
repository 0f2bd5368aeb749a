"""Transplants across directions: one direction's residual stream written into the other direction's run.

Run direction A on entity X's prompt and direction B on entity Y's; write A's states at X's span (or at its last
prompt token) into B's run at Y's span (its last prompt token), one residual-stream hook point at a time. Does B's answer follow what
was transplanted? The metric is B's log-prob difference of X's answer vs Y's, normalised so that 0 is B's run on Y
and 1 is B's run on X. Where A = B this is the grid's ``resid`` row at those positions; where both prompts name
the same entity, nothing should change at the embeddings (the tests' check).

The judged counterpart (:func:`transplant_decodes`) lets B *decode* Y's prompt with the same states written in
its prompt pass (:func:`interventions.patching.patched_decoding.patched_decoding`) and judges the answer against X's item (does
it follow what was transplanted?) and Y's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gapeval.models.base import Intervenable
from interventions.hooks import HookPoint, residual_stream
from interventions.patching.grid import Patch, Run, normalised, patched_ld, run
from interventions.patching.pairs import Pair
from interventions.patching.patched_decoding import judged_pair, patched_decoding

WHERE = ("span", "end")
ROUTES = (("und", "gen"), ("gen", "und"))


def transplant_patches(
    model: Intervenable, source: Run, source_span: str, target: Run, target_span: str, where: str
) -> list[Patch]:
    """One patch per residual-stream hook point (entering each layer, leaving the last) at ``where``: "span"
    (the spans' tokens, which must be as many in both prompts) or "end" (the last prompt token)."""
    if where == "span":
        src = model.span_positions(source.request, source_span, source.direction)
        dst = model.span_positions(target.request, target_span, target.direction)
        if len(src) != len(dst):
            raise ValueError(
                f"span {source_span!r} has {len(src)} tokens in {source.direction}, "
                f"{target_span!r} {len(dst)} in {target.direction}"
            )
    elif where == "end":
        src, dst = [source.prompt_length - 1], [target.prompt_length - 1]
    else:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    return [Patch(point, tuple(dst), tuple(src)) for point in residual_stream(model)]


def _runs(model: Intervenable, pair: Pair, routes: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Run]:
    """(role, direction) -> the teacher-forced run of every direction the routes touch."""
    directions = sorted({d for route in routes for d in route})
    return {
        (role, d): run(model, pair.request(role, d), d, pair.answers(d))
        for role in ("clean", "corrupt")
        for d in directions
    }


def transplant_pair(
    model: Intervenable,
    pair: Pair,
    *,
    routes: Sequence[tuple[str, str]] = ROUTES,
    max_rows: int = 256,
) -> dict[str, dict[str, np.ndarray]]:
    """``{"A->B": {where: (hooks,)}}``: A's run on the clean entity into B's run on the corrupt one, one value per
    residual-stream hook point (:func:`interventions.hooks.residual_stream`).

    The normaliser's runs (B on clean, B on corrupt) are returned too, as ``{"A->B": {"gap": array([ld_clean,
    ld_corrupt])}}``, so callers can drop pairs whose gap is too small to normalise by.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    runs = _runs(model, pair, routes)
    for a, b in routes:
        source, target, reference = runs[("clean", a)], runs[("corrupt", b)], runs[("clean", b)]
        result = {"gap": np.array([reference.ld, target.ld])}
        for where in WHERE:
            patches = transplant_patches(model, source, pair.spans[0], target, pair.spans[1], where)
            ld = patched_ld(model, target, source, patches, max_rows=max_rows)
            result[where] = normalised(ld.numpy(), reference.ld, target.ld)
        out[f"{a}->{b}"] = result
    return out


def transplant_decodes(
    model: Intervenable,
    pair: Pair,
    *,
    routes: Sequence[tuple[str, str]] = ROUTES,
    wheres: Sequence[str] = WHERE,
    hooks: Sequence[HookPoint] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Judged transplants: per route A->B, B decodes the corrupt entity's prompt with A's clean-entity states
    written at ``where``, one residual-stream hook point at a time, judged as :func:`judged_pair` does (``new``:
    the answer follows the transplanted entity; ``old``: it keeps its own). Records ``{"pair", "route", "where",
    "hook", "new", "old", "output"}`` (``hook``: the hook point's name), plus one with ``where`` "none" (hook
    None): B's unpatched decode. ``hooks`` picks residual-stream points (default: all; one decode each, a cost
    that matters on a large model)."""
    runs = _runs(model, pair, routes)
    records = []
    for a, b in routes:
        source, target = runs[("clean", a)], runs[("corrupt", b)]
        head = {"pair": pair.id, "route": f"{a}->{b}"}
        records.append(head | {"where": "none", "hook": None} | judged_pair(model, pair, b, seed))
        for where in wheres:
            patches = transplant_patches(model, source, pair.spans[0], target, pair.spans[1], where)
            for patch in patches:
                if hooks is not None and patch.point not in hooks:
                    continue
                with patched_decoding(model, source, [patch], target.prompt_length, b):
                    verdict = judged_pair(model, pair, b, seed)
                records.append(head | {"where": where, "hook": patch.point.name} | verdict)
    return records


def judged_arrays(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """``{"A->B/where/new|old": (pairs, hooks)}`` of :func:`transplant_decodes` verdicts: 1, 0, or NaN where the
    judge gave none; ``where`` "none" (the unpatched decode) has one column."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for mark in ("new", "old"):
            per_pair = grouped.setdefault(f"{r['route']}/{r['where']}/{mark}", {})
            per_pair.setdefault(r["pair"], []).append(np.nan if r[mark] is None else float(r[mark]))
    return {key: np.array(list(per_pair.values())) for key, per_pair in grouped.items()}


def shares(verdicts: np.ndarray) -> np.ndarray:
    """Per column, the share of judged pairs (rows) marked 1; NaN where no pair was judged."""
    judged = np.isfinite(verdicts).sum(0)
    return np.where(judged > 0, np.nansum(verdicts, 0) / np.maximum(judged, 1), np.nan)
