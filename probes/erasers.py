"""Affine concept erasers fitted on captured states: LEACE, mean projection, and a random control.

Every eraser has the form ``x − ((x − bias) @ right.T) @ left.T`` (what concept-erasure's ``LeaceEraser``
applies), so one application path serves all three and the rank of ``left @ right`` is the number of
directions removed. The random control removes as many random directions as the eraser it controls for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Eraser:
    left: torch.Tensor  # (d, r)
    right: torch.Tensor  # (r, d)
    bias: torch.Tensor  # (d,)

    @property
    def rank(self) -> int:
        return int(torch.linalg.matrix_rank(self.left @ self.right))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        left, right, bias = (t.to(device=x.device, dtype=x.dtype) for t in (self.left, self.right, self.bias))
        return x - ((x - bias) @ right.T) @ left.T


def _one_hot(labels: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels).long()).double()


def fit_leace(states: torch.Tensor, labels: np.ndarray) -> Eraser:
    """LEACE (Belrose et al. 2023): the least-change affine erasure after which no linear classifier beats a
    constant predictor at the labels on these states."""
    from concept_erasure import LeaceEraser

    fitted = LeaceEraser.fit(states.double(), _one_hot(labels))
    return Eraser(fitted.proj_left.float(), fitted.proj_right.float(), fitted.bias.float())


def _projection(directions: torch.Tensor, mean: torch.Tensor) -> Eraser:
    """Orthogonal projection removing the span of ``directions`` (d, k) around ``mean``."""
    q, _ = torch.linalg.qr(directions.double())
    return Eraser(q.float(), q.T.float(), mean.float())


def fit_mean_projection(states: torch.Tensor, labels: np.ndarray) -> Eraser:
    """Remove the directions in which class means differ (rank = classes − 1): the classic baseline."""
    x = states.double()
    mean = x.mean(0)
    means = torch.stack([x[torch.as_tensor(labels == c)].mean(0) for c in np.unique(labels)]) - mean
    u, s, _ = torch.linalg.svd(means.T, full_matrices=False)
    return _projection(u[:, s > s.max() * 1e-6], mean)


def random_eraser(mean: torch.Tensor, rank: int, seed: int = 0) -> Eraser:
    """Remove ``rank`` random orthonormal directions around ``mean``: the same-rank control."""
    gen = torch.Generator().manual_seed(seed)
    return _projection(torch.randn(mean.shape[0], rank, generator=gen, dtype=torch.float64), mean)


ERASERS = {"leace": fit_leace, "mean": fit_mean_projection}
