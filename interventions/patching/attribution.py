"""Attribution patching: the whole grid from one clean and one corrupted forward plus one backward.

Patching a cell moves the metric by about ``(a_clean − a_corrupt) · ∂metric/∂a`` at the corrupted run, the
first-order term of a Taylor expansion. The base weights are frozen, so the gradients are taken with respect to
the activations themselves: the embeddings entering layer 0 are made a leaf that requires grad, and every other
site's tensor keeps its gradient (``retain_grad``). :func:`compare` verifies the cheap map against exact patching
(rank correlation over the grid, top cells) so users know when it can be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gapeval.models.base import Intervenable
from interventions.hooks import Rewrite, rewrites
from interventions.patching.grid import (
    COMPONENTS,
    Patch,
    Run,
    all_sites,
    capture_hidden,
    grid_rows,
    normalised,
    patched_ld,
    site_of,
)


def _keep_grad(store: dict[tuple[int, str], torch.Tensor], key: tuple[int, str], leaf: bool) -> Rewrite:
    def fn(t: torch.Tensor) -> torch.Tensor | None:
        if leaf:
            t = t.detach().requires_grad_(True)
        else:
            t.retain_grad()
        store[key] = t
        return t if leaf else None

    return fn


def gradients(model: Intervenable, corrupt: Run) -> dict[tuple[int, str], torch.Tensor]:
    """∂ld/∂activation (2, T, d) at every site of the corrupted run (``ld`` = log P(a) − log P(b))."""
    store: dict[tuple[int, str], torch.Tensor] = {}
    plan = {key: _keep_grad(store, key, key == (0, "resid_pre")) for key in all_sites(model)}
    inputs = corrupt.inputs
    with torch.enable_grad(), rewrites(model, plan), capture_hidden(model) as hidden:
        model.module(*inputs.args, **inputs.kwargs)
        lp = model.answer_logprobs(inputs, hidden[-1]).sum(-1)
        (lp[0] - lp[1]).backward()
    return {key: t.grad.detach() for key, t in store.items()}


def attribution_grid(
    model: Intervenable,
    clean: Run,
    corrupt: Run,
    *,
    components: Sequence[str] = COMPONENTS,
    positions: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Estimated normalised metric of every cell of :func:`interventions.patching.grid.grid` (same layout).

    A cell's patch writes both rows (answer a and b) at one position, so its estimate sums both rows' terms.
    """
    positions = list(range(corrupt.prompt_length)) if positions is None else list(positions)
    grads = gradients(model, corrupt)
    scale = clean.ld - corrupt.ld
    out = {}
    for c in components:
        values = np.zeros((grid_rows(model, c), len(positions)))
        for row in range(grid_rows(model, c)):
            key = site_of(model, c, row)
            for j in range(2):
                cols = corrupt.inputs.columns(j, positions)
                delta = clean.values(key, j, positions) - corrupt.acts[key][j, cols]
                values[row] += (delta * grads[key][j, cols]).sum(-1).double().cpu().numpy()
        out[c] = values / scale
    return out


def compare(attribution: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> float:
    """Spearman rank correlation of attribution vs exact patching over every cell both define."""
    from scipy.stats import spearmanr

    a = np.concatenate([attribution[c].ravel() for c in attribution])
    e = np.concatenate([exact[c].ravel() for c in attribution])
    keep = np.isfinite(a) & np.isfinite(e)
    if keep.sum() < 2 or a[keep].std() == 0 or e[keep].std() == 0:
        return float("nan")
    return float(spearmanr(a[keep], e[keep]).statistic)


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
        ((c, row, col) for c in attribution for row, col in np.ndindex(attribution[c].shape)),
        key=lambda cell: -abs(attribution[cell[0]][cell[1], cell[2]]),
    )[:k]
    patches = [Patch(*site_of(model, c, row), (positions[col],)) for c, row, col in cells]
    exact = normalised(patched_ld(model, corrupt, clean, patches).numpy(), clean.ld, corrupt.ld)
    return [
        {
            "component": c,
            "row": row,
            "column": col,
            "position": positions[col],
            "attribution": float(attribution[c][row, col]),
            "exact": float(v),
        }
        for (c, row, col), v in zip(cells, exact, strict=True)
    ]
