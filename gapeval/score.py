"""The GapEval Gap Score (reference-exact and identified) and per-category metrics on run records.

The reference procedure (GapEval release) fits a small hierarchical logistic model per model by MAP with AdamW
and turns each category's fitted logit difference into a gap in (0, 1). ``gap_score_reference`` is that
procedure op for op; ``gap_scores_reference_batched`` runs the same optimisation for many models at once (the
way ``gapeval score`` and the bootstrap use it); ``gap_score_identified`` measures the difference the reference
means to measure, on the part of the model the data determine, fitted to convergence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gapeval.items import CATEGORIES
from gapeval.stats import cohen_kappa, mcnemar_exact, percentile_ci

N_TOTAL = 1000.0  # the reference turns proportions into counts out of this many
LAMBDA_FAIL = 2.7  # weight of p00 (both fail) in the final adjustment
LAMBDA_SUCC = 1.05  # weight of p11 (both succeed)
EPS = 1e-8
LR, WEIGHT_DECAY, BETAS, ADAM_EPS = 0.05, 1e-4, (0.9, 0.999), 1e-8
L_RAW_INIT = ((0.1, 0.0), (0.05, 0.1))
ROW_SUM_TOL = 5e-3
JOINT_KEYS = ("p11", "p10", "p01", "p00")

Rows = np.ndarray | Sequence[Sequence[float]]


@dataclass
class GapResult:
    """Per-row gaps (one row per category), their mean, and the fitted logit differences behind them."""

    gaps: list[float]
    gap_mean: float
    deltas: list[float]


# ---------------------------------------------------------------------------------------------- input rows


def validate_rows(model: str, rows: Any) -> np.ndarray:
    """Check a model's joint rows and return them as an (R, 4) float64 array normalised to sum 1.

    Each row is ``[p11, p10, p01, p00]``: non-negative, finite, summing to 1 within 5e-3 (the reference's rule;
    it then divides by the sum, and so do we). Raises ValueError naming the model and the row index.
    """
    if isinstance(rows, np.ndarray):
        rows = rows.tolist()
    if not isinstance(rows, list | tuple) or not rows:
        raise ValueError(f"model {model!r}: rows must be a non-empty list of [p11, p10, p01, p00], got {rows!r}")
    out = []
    for idx, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != 4:
            raise ValueError(f"model {model!r} row {idx}: must be a list of four numbers [p11, p10, p01, p00]")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row):
            raise ValueError(f"model {model!r} row {idx}: values must be numbers, got {row!r}")
        values = [float(x) for x in row]
        if not all(math.isfinite(x) for x in values) or any(x < 0.0 for x in values):
            raise ValueError(f"model {model!r} row {idx}: values must be finite and non-negative, got {values}")
        total = sum(values)
        if abs(total - 1.0) > ROW_SUM_TOL:
            raise ValueError(f"model {model!r} row {idx}: must sum to 1 ± {ROW_SUM_TOL}, got {total:.6f} ({values})")
        out.append([x / total for x in values])
    return np.asarray(out, dtype=np.float64)


@dataclass
class _Prepared:
    """A model's rows in the exact float32 form the reference computes with."""

    counts: torch.Tensor  # (R, 4): text successes, text failures, image successes, image failures
    p11: torch.Tensor  # (R,)
    p00: torch.Tensor  # (R,)


def _prepare(model: str, rows: Rows) -> _Prepared:
    p = validate_rows(model, rows)
    p11, p10, p01, p00 = p.T
    # Marginals in float64, then float32, then times N in float32: the reference's order of operations.
    marg = torch.tensor(np.stack([p11 + p10, p01 + p00, p11 + p01, p10 + p00], axis=1), dtype=torch.float32)
    f32 = dict(dtype=torch.float32)
    return _Prepared(marg * N_TOTAL, torch.tensor(p11, **f32), torch.tensor(p00, **f32))


def _initial_theta(counts: torch.Tensor) -> torch.Tensor:
    """(…, R, 2) logits of the observed text and image success rates, clamped like the reference."""
    ts, tf, is_, if_ = counts.unbind(-1)
    p_text = torch.clamp(ts / (tf + ts + EPS), 1e-5, 1.0 - 1e-5)
    p_image = torch.clamp(is_ / (if_ + is_ + EPS), 1e-5, 1.0 - 1e-5)
    return torch.stack([torch.logit(p_text), torch.logit(p_image)], dim=-1)


def _gaps_from_delta(delta: torch.Tensor, p11: torch.Tensor, p00: torch.Tensor) -> torch.Tensor:
    """The reference's final map: |Δ|/(1+|Δ|), clamped, shifted in logit space by the joint outcomes."""
    g = torch.clamp(delta.abs() / (1.0 + delta.abs()), 1e-6, 1.0 - 1e-6)
    return torch.sigmoid(torch.logit(g) + LAMBDA_FAIL * p00 - LAMBDA_SUCC * p11)


def _result(delta: torch.Tensor, prep: _Prepared) -> GapResult:
    gaps = _gaps_from_delta(delta.to(torch.float32), prep.p11, prep.p00).tolist()
    return GapResult(gaps=gaps, gap_mean=float(np.mean(gaps)), deltas=delta.double().tolist())


def _reference_loss(
    counts: torch.Tensor, theta: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor, l_raw: torch.Tensor
) -> torch.Tensor:
    """The release's MAP objective for one model, written with the release's own tensor operations.

    The fit is chaotic (float32 rounding differences of one ulp change which step has the lowest loss), so
    the operations and their order here are the release's, and ``_reference_grads`` mirrors them exactly.
    """
    ts, tf, is_, if_ = counts.unbind(-1)
    chol = torch.tril(l_raw).clone()
    idx = torch.arange(2)
    chol[idx, idx] = F.softplus(chol[idx, idx]) + 1e-4
    sigma_inv = torch.linalg.inv(chol @ chol.T)
    p_text = torch.sigmoid(theta[:, 0] - beta[0])
    p_image = torch.sigmoid(theta[:, 1] - beta[1])
    nll = -(
        ts * torch.log(p_text + EPS)
        + tf * torch.log(1.0 - p_text + EPS)
        + is_ * torch.log(p_image + EPS)
        + if_ * torch.log(1.0 - p_image + EPS)
    ).sum()
    diff = theta - mu
    mahal = 0.5 * torch.einsum("ni,ij,nj->n", diff, sigma_inv, diff).sum()
    logdet = counts.shape[0] * torch.log(torch.diagonal(chol)).sum()
    anchor = 1e-3 * (beta.pow(2).sum() + mu.pow(2).sum())
    return nll + mahal + logdet + anchor


# ---------------------------------------------------------------------------------------------- reference


def gap_score_reference(rows: Rows, seed: int = 42, steps: int = 2000, model: str = "model") -> GapResult:
    """Gap Score of one model exactly as the GapEval release computes it (float32, AdamW, ``steps`` steps).

    Like the release, it keeps θ as it stands *after* the update of the step whose loss (computed before that
    update) is the lowest; keeping the pre-update θ instead does not reproduce the published numbers.
    ``seed`` is set as the release sets it; nothing in the procedure is random.
    """
    prep = _prepare(model, rows)
    torch.manual_seed(seed)
    theta0 = _initial_theta(prep.counts)
    theta = torch.nn.Parameter(theta0.clone())
    beta = torch.nn.Parameter(torch.zeros(2))
    mu = torch.nn.Parameter(theta0.mean(dim=0))
    l_raw = torch.nn.Parameter(torch.tensor(L_RAW_INIT))
    optimizer = torch.optim.AdamW([theta, beta, mu, l_raw], lr=LR, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    best_loss, best_theta = math.inf, theta0
    for _ in range(steps):
        optimizer.zero_grad()
        loss = _reference_loss(prep.counts, theta, beta, mu, l_raw)
        loss.backward()
        optimizer.step()
        if float(loss.detach()) < best_loss:
            best_loss, best_theta = float(loss.detach()), theta.detach().clone()
    return _result(best_theta[:, 0] - best_theta[:, 1], prep)


def _rowwise(x: torch.Tensor) -> torch.Tensor:
    """``x`` (M, W) copied into rows that elementwise kernels cannot merge into one long vector.

    Some CPU kernels (sigmoid, softplus and their backward) round differently in their SIMD body and in their
    scalar tail. The release applies them to one model's short tensors; giving each model its own row makes
    every element take the same path it takes there.
    """
    rows = x.new_empty(x.shape[0], x.shape[1] + 1)[:, :-1]
    return rows.copy_(x)


def _reference_loss_and_grads(counts: torch.Tensor, x: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (M,) and its gradient (M, P) for M packed models, bit-identical to ``_reference_loss`` + autograd.

    Forward and backward are written out by hand so that each model sees exactly the float32 operations,
    in the same order, that autograd performs for the release's graph (traced op by op).
    """
    m = x.shape[0]
    theta, beta, mu = x[:, : 2 * r].view(m, r, 2), x[:, 2 * r : 2 * r + 2], x[:, 2 * r + 2 : 2 * r + 4]
    ts, tf, is_, if_ = counts.unbind(-1)
    # forward
    tril = torch.tril(x[:, 2 * r + 4 :].view(m, 2, 2))
    raw_diag = _rowwise(torch.diagonal(tril, dim1=1, dim2=2))
    diag = F.softplus(raw_diag) + 1e-4
    chol = tril.clone()
    chol.diagonal(dim1=1, dim2=2).copy_(diag)
    sigma_inv = torch.linalg.inv(torch.bmm(chol, chol.transpose(1, 2)))
    p_text = torch.sigmoid(_rowwise(theta[..., 0] - beta[:, 0:1]))
    p_image = torch.sigmoid(_rowwise(theta[..., 1] - beta[:, 1:2]))
    x1, x2 = p_text + EPS, 1.0 - p_text + EPS
    x3, x4 = p_image + EPS, 1.0 - p_image + EPS
    terms = ts * torch.log(x1) + tf * torch.log(x2) + is_ * torch.log(x3) + if_ * torch.log(x4)
    diff = theta - mu[:, None, :]
    proj = torch.bmm(diff, sigma_inv)
    quad = proj[..., 0] * diff[..., 0] + proj[..., 1] * diff[..., 1]
    anchor_scale = torch.ones(()) * 1e-3  # d loss / d (|beta|^2 + |mu|^2), as autograd forms it
    loss = -terms.sum(-1) + 0.5 * quad.sum(-1) + r * torch.log(diag).sum(-1)
    loss = loss + 1e-3 * (beta.pow(2).sum(-1) + mu.pow(2).sum(-1))
    # backward: the likelihood
    g_image = -(-if_ / x4) + -is_ / x3
    g_text = -(-tf / x2) + -ts / x1
    g_text = torch.ops.aten.sigmoid_backward(_rowwise(g_text), p_text)
    g_image = torch.ops.aten.sigmoid_backward(_rowwise(g_image), p_image)
    # the prior: einsum("ni,ij,nj->n") is two batched matmuls; the logdet term
    g_proj = 0.5 * diff
    g_diff = torch.bmm(g_proj, sigma_inv.transpose(1, 2)) + proj * 0.5
    g_sigma_inv = torch.bmm(diff.transpose(1, 2), g_proj)
    sit = sigma_inv.transpose(1, 2)
    g_sigma = -torch.bmm(sit, torch.bmm(g_sigma_inv, sit))
    g_chol = torch.diag_embed(r * torch.ones(()) / diag) + torch.bmm(g_sigma, chol)
    g_chol = g_chol + torch.bmm(g_sigma.transpose(1, 2), chol)
    g_raw_diag = torch.ops.aten.softplus_backward(_rowwise(torch.diagonal(g_chol, dim1=1, dim2=2)), raw_diag, 1, 20)
    g_l_raw = torch.tril(g_chol)
    g_l_raw.diagonal(dim1=1, dim2=2).copy_(g_raw_diag)
    grad = torch.cat(
        [
            torch.stack([g_diff[..., 0] + g_text, g_diff[..., 1] + g_image], dim=-1).view(m, 2 * r),
            anchor_scale * (beta * 2.0) + torch.stack([(-g_text).sum(-1), (-g_image).sum(-1)], dim=-1),
            (-g_diff).sum(1) + anchor_scale * (mu * 2.0),
            g_l_raw.view(m, 4),
        ],
        dim=1,
    )
    return loss, grad


def _fit_reference_batch(counts: torch.Tensor, steps: int) -> torch.Tensor:
    """Run the reference optimisation for M models with R rows each at once; returns the kept θ (M, R, 2).

    AdamW is elementwise, so packing every model's parameters into one (M, P) tensor and applying the update
    by hand (the float32 operations of torch's single-tensor AdamW) gives each model its own trajectory.
    """
    m, r = counts.shape[:2]
    theta0 = _initial_theta(counts)
    l_raw0 = torch.tensor(L_RAW_INIT).reshape(1, 4).expand(m, 4)
    x = torch.cat([theta0.reshape(m, 2 * r), torch.zeros(m, 2), theta0.mean(dim=1), l_raw0], dim=1)
    exp_avg, exp_avg_sq = torch.zeros_like(x), torch.zeros_like(x)
    best_loss = torch.full((m,), math.inf)
    best_theta = theta0.clone()
    beta1, beta2 = BETAS
    for step in range(1, steps + 1):
        loss, grad = _reference_loss_and_grads(counts, x, r)
        x.mul_(1 - LR * WEIGHT_DECAY)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(ADAM_EPS)
        x.addcdiv_(exp_avg, denom, value=-(LR / (1 - beta1**step)))
        improved = loss < best_loss
        best_loss = torch.where(improved, loss, best_loss)
        best_theta = torch.where(improved[:, None, None], x[:, : 2 * r].view(m, r, 2), best_theta)
    return best_theta


def gap_scores_reference_batched(models: Mapping[str, Rows], steps: int = 2000) -> dict[str, GapResult]:
    """The reference Gap Score for many models in one vectorised optimisation per row count R.

    Models are grouped by their number of rows, so no padding enters any model's sums.
    """
    preps = {name: _prepare(name, rows) for name, rows in models.items()}
    by_rows: dict[int, list[str]] = {}
    for name, prep in preps.items():
        by_rows.setdefault(prep.counts.shape[0], []).append(name)
    out: dict[str, GapResult] = {}
    for names in by_rows.values():
        theta = _fit_reference_batch(torch.stack([preps[n].counts for n in names]), steps)
        for name, th in zip(names, theta, strict=True):
            out[name] = _result(th[:, 0] - th[:, 1], preps[name])
    return {name: out[name] for name in models}
