"""Transplants across directions: one direction's residual stream written into the other direction's run.

Run direction A on entity X's prompt and direction B on entity Y's; write A's states at X's span (or at its last
prompt token) into B's run at Y's span (its last prompt token), one layer at a time. Does B's answer follow what
was transplanted? The metric is B's log-prob difference of X's answer vs Y's, normalised so that 0 is B's run on Y
and 1 is B's run on X. Where A = B this is the grid's residual row at those positions; where both prompts name
the same entity, nothing should change at the embeddings (the tests' check).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gapeval.models.base import Intervenable
from interventions.pairs import Pair
from interventions.patching import Patch, Run, grid_rows, normalised, patched_ld, run, site_of

WHERE = ("span", "end")
ROUTES = (("und", "gen"), ("gen", "und"))


def transplant_patches(
    model: Intervenable, source: Run, source_span: str, target: Run, target_span: str, where: str
) -> list[Patch]:
    """One patch per residual row (entering each layer, leaving the last) at ``where``: "span" (the spans'
    tokens, which must be as many in both prompts) or "end" (the last prompt token)."""
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
    rows = range(grid_rows(model, "resid"))
    return [Patch(*site_of(model, "resid", row), tuple(dst), tuple(src)) for row in rows]


def transplant_pair(
    model: Intervenable,
    pair: Pair,
    *,
    routes: Sequence[tuple[str, str]] = ROUTES,
    max_rows: int = 256,
) -> dict[str, dict[str, np.ndarray]]:
    """``{"A->B": {where: (rows,)}}``: A's run on the clean entity into B's run on the corrupt one, per layer.

    The normaliser's runs (B on clean, B on corrupt) are returned too, as ``{"A->B": {"gap": array([ld_clean,
    ld_corrupt])}}``, so callers can drop pairs whose gap is too small to normalise by.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    runs = {
        (role, d): run(model, pair.request(role, d), d, pair.answers(d))
        for role in ("clean", "corrupt")
        for d in {d for route in routes for d in route}
    }
    for a, b in routes:
        source, target, reference = runs[("clean", a)], runs[("corrupt", b)], runs[("clean", b)]
        result = {"gap": np.array([reference.ld, target.ld])}
        for where in WHERE:
            patches = transplant_patches(model, source, pair.spans[0], target, pair.spans[1], where)
            ld = patched_ld(model, target, source, patches, max_rows=max_rows)
            result[where] = normalised(ld.numpy(), reference.ld, target.ld)
        out[f"{a}->{b}"] = result
    return out
