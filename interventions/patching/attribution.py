"""Attribution patching: the whole grid from one clean and one corrupted forward plus one backward.

Patching a cell moves the metric by about ``(a_clean − a_corrupt) · ∂metric/∂a`` at the corrupted run, the
first-order term of a Taylor expansion. The base weights are frozen, so the gradients are taken with respect to
the activations themselves: the embeddings entering layer 0 are made a leaf that requires grad, and every other
hook point's tensor keeps its gradient (``retain_grad``).

:func:`agreement` checks the cheap map against exact patching on the cells that can disagree. Cells whose clean
and corrupted activations are equal (positions before the span; the embeddings after it) are exactly 0 in both
maps by construction, and they are most of a grid: a rank correlation over every cell rewards two maps for
sharing those zeros, so two independent maps already correlate (the tests show it). Agreement is therefore read
on the *informative* cells only: Spearman's ρ there, the overlap of the top-k cells by magnitude (k = 5, 10;
chance = k / informative cells), and the share of cells whose signs agree (with its chance level).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gapeval.models.base import Intervenable
from interventions.hooks import HookPoint, Rewrite, rewrites
from interventions.patching.grid import (
    GRIDS,
    Patch,
    Run,
    all_points,
    capture_hidden,
    grid_points,
    normalised,
    patched_ld,
)

TOP_K = (5, 10)


def _keep_grad(store: dict[HookPoint, torch.Tensor], key: HookPoint, leaf: bool) -> Rewrite:
    def fn(t: torch.Tensor) -> torch.Tensor | None:
        if leaf:
            t = t.detach().requires_grad_(True)
        else:
            t.retain_grad()
        store[key] = t
        return t if leaf else None

    return fn


def gradients(model: Intervenable, corrupt: Run) -> dict[HookPoint, torch.Tensor]:
    """∂ld/∂activation (2, T, d) at every hook point of the corrupted run (``ld`` = log P(a) − log P(b))."""
    store: dict[HookPoint, torch.Tensor] = {}
    embeddings = HookPoint(0, "resid_pre")
    plan = {key: _keep_grad(store, key, key == embeddings) for key in all_points(model)}
    inputs = corrupt.inputs
    with torch.enable_grad(), rewrites(model, plan), capture_hidden(model) as hidden:
        model.module(*inputs.args, **inputs.kwargs)
        lp = model.answer_logprobs(inputs, hidden[-1]).sum(-1)
        (lp[0] - lp[1]).backward()
    return {key: t.grad.detach() for key, t in store.items()}


def _deltas(clean: Run, corrupt: Run, point: HookPoint, positions: Sequence[int], row: int) -> torch.Tensor:
    """(len(positions), d) clean − corrupt activation of answer ``row`` at ``point``."""
    cols = corrupt.inputs.columns(row, positions)
    return clean.values(point, row, positions) - corrupt.acts[point][row, cols]


def attribution_grid(
    model: Intervenable,
    clean: Run,
    corrupt: Run,
    *,
    grids: Sequence[str] = tuple(GRIDS),
    positions: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Estimated normalised metric of every cell of :func:`interventions.patching.grid.grid` (same layout).

    A cell's patch writes both rows (answer a and b) at one position, so its estimate sums both rows' terms.
    """
    positions = list(range(corrupt.prompt_length)) if positions is None else list(positions)
    grads = gradients(model, corrupt)
    scale = clean.ld - corrupt.ld
    out = {}
    for g in grids:
        points = grid_points(model, g)
        values = np.zeros((len(points), len(positions)))
        for row, point in enumerate(points):
            for j in range(2):
                cols = corrupt.inputs.columns(j, positions)
                delta = _deltas(clean, corrupt, point, positions, j)
                values[row] += (delta * grads[point][j, cols]).sum(-1).double().cpu().numpy()
        out[g] = values / scale
    return out


def informative(
    model: Intervenable,
    clean: Run,
    corrupt: Run,
    *,
    grids: Sequence[str] = tuple(GRIDS),
    positions: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """``{grid: (rows, positions) bool}``: cells whose clean and corrupted activations differ (in either answer's
    row). The others change nothing when patched, so both maps are exactly 0 there."""
    positions = list(range(corrupt.prompt_length)) if positions is None else list(positions)
    out = {}
    for g in grids:
        points = grid_points(model, g)
        out[g] = np.array(
            [
                (_deltas(clean, corrupt, p, positions, 0).ne(0).any(-1))
                .logical_or(_deltas(clean, corrupt, p, positions, 1).ne(0).any(-1))
                .cpu()
                .numpy()
                for p in points
            ]
        ).reshape(len(points), len(positions))
    return out


def _flat(maps: dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    return np.concatenate([maps[k].ravel() for k in keys])


def _spearman(a: np.ndarray, e: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or a.std() == 0 or e.std() == 0:
        return float("nan")
    return float(spearmanr(a, e).statistic)


def _sign_chance(a: np.ndarray, e: np.ndarray) -> float:
    """Sign agreement two independent maps with these maps' shares of positive, negative and zero cells reach."""
    return float(sum(np.mean(np.sign(a) == v) * np.mean(np.sign(e) == v) for v in (-1, 0, 1)))


def agreement(
    attribution: dict[str, np.ndarray],
    exact: dict[str, np.ndarray],
    cells: dict[str, np.ndarray],
    ks: Sequence[int] = TOP_K,
) -> dict[str, Any]:
    """How well ``attribution`` ranks the cells that ``exact`` patching measures, on the informative ``cells``
    (:func:`informative`); ``spearman`` over every cell is kept for comparison only (shared zeros inflate it).

    ``topk_overlap[k]``: share of the k largest |exact| cells that are among the k largest |attribution| ones
    (``topk_chance[k]`` = k / informative cells: two unrelated maps); ``sign_agreement``: share of informative
    cells where both maps have the same sign (``sign_chance``: what independent maps with the same sign shares
    reach — near 1 when nearly every effect is positive)."""
    keys = list(attribution)
    a, e, keep = _flat(attribution, keys), _flat(exact, keys), _flat(cells, keys).astype(bool)
    finite = np.isfinite(a) & np.isfinite(e)
    keep &= finite
    ai, ei = a[keep], e[keep]
    n = int(keep.sum())
    top = {}
    for k in ks:
        if n < k:
            top[str(k)] = None
            continue
        by_a = set(np.argsort(-np.abs(ai), kind="stable")[:k].tolist())
        by_e = set(np.argsort(-np.abs(ei), kind="stable")[:k].tolist())
        top[str(k)] = len(by_a & by_e) / k
    return {
        "spearman": _spearman(a[finite], e[finite]),
        "spearman_informative": _spearman(ai, ei),
        "topk_overlap": top,
        "topk_chance": {str(k): (k / n if n >= k else None) for k in ks},
        "sign_agreement": float(np.mean(np.sign(ai) == np.sign(ei))) if n else float("nan"),
        "sign_chance": _sign_chance(ai, ei) if n else float("nan"),
        "informative_cells": n,
        "cells": int(finite.sum()),
    }


def verify_top(
    model: Intervenable,
    clean: Run,
    corrupt: Run,
    attribution: dict[str, np.ndarray],
    k: int = 10,
    positions: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Exact patching of the ``k`` cells with the largest |attribution| (columns = ``positions``, as given to
    :func:`attribution_grid`)."""
    positions = list(range(corrupt.prompt_length)) if positions is None else list(positions)
    cells = sorted(
        ((g, row, col) for g in attribution for row, col in np.ndindex(attribution[g].shape)),
        key=lambda cell: -abs(attribution[cell[0]][cell[1], cell[2]]),
    )[:k]
    points = {g: grid_points(model, g) for g in attribution}
    patches = [Patch(points[g][row], (positions[col],)) for g, row, col in cells]
    exact = normalised(patched_ld(model, corrupt, clean, patches).numpy(), clean.ld, corrupt.ld)
    return [
        {
            "grid": g,
            "row": row,
            "hook": points[g][row].name,
            "column": col,
            "position": positions[col],
            "attribution": float(attribution[g][row, col]),
            "exact": float(v),
        }
        for (g, row, col), v in zip(cells, exact, strict=True)
    ]
