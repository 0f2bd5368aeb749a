"""Affine concept erasers fitted on captured states: LEACE, mean projection, and a random control.

Every eraser has the form ``x − ((x − bias) @ right.T) @ left.T`` (what concept-erasure's ``LeaceEraser``
applies), so one application path serves all three and the rank of ``left @ right`` is the number of
directions removed. The random control (:func:`matched_random`) moves the states along as many random
directions as the eraser it controls for, by the same mean squared amount on the same rows: a plain random
projection of the same rank moves them far less than LEACE (1.5–7.3× less on the toy's colour states), so a
smaller drop would say nothing about *which* directions matter.
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
        return x - self.shift(x)

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """What the eraser subtracts from ``x``."""
        left, right, bias = (t.to(device=x.device, dtype=x.dtype) for t in (self.left, self.right, self.bias))
        return ((x - bias) @ right.T) @ left.T

    def perturbation(self, x: torch.Tensor) -> float:
        """Mean squared change ``E ||x − eraser(x)||²`` over the rows of ``x``."""
        return float(self.shift(x.double()).pow(2).sum(-1).mean())


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


def matched_random(eraser: Eraser, states: torch.Tensor, seed: int = 0) -> Eraser:
    """The control for ``eraser``: ``eraser.rank`` random orthonormal directions around the same bias, the shift
    along them scaled so that its mean squared perturbation on ``states`` equals ``eraser``'s (same rank, same
    size of edit, random directions)."""
    control = random_eraser(eraser.bias, eraser.rank, seed)
    own, target = control.perturbation(states), eraser.perturbation(states)
    scale = (target / own) ** 0.5 if own > 0 else 0.0
    return Eraser(control.left * scale, control.right, control.bias)
