"""Per-layer linear probes with baselines that can fail: grouped folds, a permutation test, transfer, CIs.

- **The probe** is a ridge classifier (least squares on ±1 one-hot targets, ``ALPHA``, features standardised
  on the training rows — what scikit-learn's ``RidgeClassifier`` computes; a test checks they agree). It is
  closed-form, so one solve per fold fits the real labels and every shuffled labelling at once: the permutation
  test below costs about as much as one probe. (A logistic-regression probe took 50 ms a fit: 200 shuffles ×
  4 folds × 5 layers × 2 directions would take 7 minutes on the toy.)
- **Grouped folds** (``GroupKFold``) keep every group — a realm — wholly in train or in test, so a probe cannot
  score by recognising a realm it saw with its label.
- **The permutation test** shuffles the labels across the units that carry one label (realms: each keeps one
  label, class shares unchanged; for ``entity`` rows within each prompt template) and refits on the same folds;
  ``p = (1 + #{null ≥ observed}) / (1 + shuffles)``. Under realm-grouped folds a label that is not readable
  from held-out realms' states scores like the shuffles, so the test can fail.
- **Transfer** trains on one direction's states and tests on the other's, on the held-out groups of each fold;
  each direction is standardised with its own scaler (fitted on its own training rows, no labels involved), so a
  mere shift or rescaling between the directions' states does not count against transfer.
- **Accuracy** is pooled over the held-out rows of every fold (each row is predicted once); ``std`` is over
  folds, and the 95 % CI is a cluster bootstrap over the split groups (a realm's prompts are not independent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

Folds = list[tuple[np.ndarray, np.ndarray]]
ALPHA = 10.0  # ridge penalty on standardised states
BOOTSTRAP = 1000


@dataclass
class Score:
    """Held-out predictions of one probe: per-row correctness and per-fold accuracies."""

    correct: np.ndarray  # (N,) bool, each row predicted by the fold that holds it out
    folds: list[float] = field(default_factory=list)
    ci: tuple[float, float] | None = None

    @property
    def mean(self) -> float:
        return float(self.correct.mean())

    @property
    def std(self) -> float:
        return float(np.std(self.folds))

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "folds": self.folds, "ci": self.ci}


def grouped_folds(groups: np.ndarray, n_splits: int = 4) -> Folds:
    """(train, test) row indices with no group on both sides (fewer splits when there are fewer groups)."""
    n = min(n_splits, len(np.unique(groups)))
    if n < 2:
        raise ValueError("grouped splits need at least two groups")
    return list(GroupKFold(n_splits=n).split(np.zeros(len(groups)), groups=groups))


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and ``others`` scaled by ``train``'s mean and standard deviation (constant features: 1)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]


def ridge_predict(
    train: np.ndarray, labels: np.ndarray, tests: Sequence[np.ndarray], classes: int, alpha: float = ALPHA
) -> list[np.ndarray]:
    """Fit one ridge classifier per row of ``labels`` (S, n) on standardised ``train`` (n, d) and return each
    test set's (S, m) predicted classes. Intercepts come from centring. The fit is linear in the targets, so
    each test set's scores are ``H @ targets`` with one (m, n) matrix ``H`` for every labelling (primal or dual
    form, whichever solve is smaller)."""
    n, d = train.shape
    targets = -np.ones((n, labels.shape[0], classes))
    np.put_along_axis(targets, labels.T[..., None], 1.0, axis=-1)
    targets = targets.reshape(n, -1)
    offset = targets.mean(0)
    x_mean = train.mean(0)
    x = train - x_mean
    if d <= n:
        solved = np.linalg.solve(x.T @ x + alpha * np.eye(d), x.T)  # (d, n): weights = solved @ targets
    else:
        solved = x.T @ np.linalg.inv(x @ x.T + alpha * np.eye(n))
    out = []
    for t in tests:
        scores = ((t - x_mean) @ solved) @ (targets - offset) + offset
        out.append(scores.reshape(len(t), labels.shape[0], classes).argmax(-1).T)
    return out


def shuffled_labels(
    labels: np.ndarray, units: np.ndarray, blocks: np.ndarray, shuffles: int, seed: int = 0
) -> np.ndarray:
    """(shuffles, N) labellings: within each block, the units' labels permuted among the units (every row of a
    unit keeps its unit's one label). Realm facts: units = realms, one block; ``entity``: units = rows,
    blocks = prompt templates."""
    rng = np.random.default_rng(seed)
    out = np.empty((shuffles, len(labels)), dtype=labels.dtype)
    kinds = np.unique(units)
    first = np.array([np.flatnonzero(units == u)[0] for u in kinds])
    unit_labels, unit_blocks = labels[first], blocks[first]
    rows_of = np.searchsorted(kinds, units)
    for s in range(shuffles):
        drawn = unit_labels.copy()
        for b in np.unique(unit_blocks):
            members = np.flatnonzero(unit_blocks == b)
            drawn[members] = unit_labels[rng.permutation(members)]
        out[s] = drawn[rows_of]
    return out


def probe(
    train_x: np.ndarray,
    test_xs: dict[str, np.ndarray],
    labels: np.ndarray,
    folds: Folds,
    shuffles: np.ndarray | None = None,
) -> tuple[dict[str, Score], dict[str, np.ndarray]]:
    """Train on ``train_x[train]`` per fold and score on each ``test_xs[name][test]`` (each set standardised with
    its own training rows). Returns the scores and, with ``shuffles`` (S, N), the (S,) accuracies of the same
    probe fitted on each shuffled labelling (its null distribution) per test set."""
    classes = int(labels.max()) + 1
    sets = labels[None] if shuffles is None else np.concatenate([labels[None], shuffles])
    hits = {name: np.zeros(sets.shape, dtype=bool) for name in test_xs}
    fold_acc: dict[str, list[float]] = {name: [] for name in test_xs}
    for train, test in folds:
        x_train, *_ = standardise(train_x[train])
        tests = [standardise(x[train], x[test])[1] for x in test_xs.values()]
        with threadpool_limits(
            1
        ):  # small solves: extra BLAS threads only add contention (100x on 2 busy cores)
            predictions = ridge_predict(x_train, sets[:, train], tests, classes)
        for name, predicted in zip(test_xs, predictions, strict=True):
            hits[name][:, test] = predicted == sets[:, test]
            fold_acc[name].append(float(hits[name][0, test].mean()))
    scores = {name: Score(hits[name][0], fold_acc[name]) for name in test_xs}
    nulls = {name: hits[name][1:].mean(1) for name in test_xs}
    return scores, nulls


def p_value(observed: float, null: np.ndarray) -> float:
    """Permutation p-value with the observed labelling counted among the shuffles (never 0)."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def holm(ps: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error over every test of one run)."""
    order = np.argsort(ps)
    adjusted, running = np.empty(len(ps)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted.tolist()


def cluster_ci(
    values: np.ndarray, clusters: np.ndarray, seed: int = 0, n: int = BOOTSTRAP, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of the mean of ``values`` (N,) or of each row's mean difference when ``values`` is (2, N)
    (first minus second), resampling whole ``clusters`` with replacement."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    kinds = np.unique(clusters)
    index = [np.flatnonzero(clusters == k) for k in kinds]
    rng = np.random.default_rng(seed)
    sums = np.array([[v[i].sum() for i in index] for v in values])  # (rows, clusters)
    counts = np.array([len(i) for i in index])
    draws = rng.integers(0, len(kinds), (n, len(kinds)))
    means = sums[:, draws].sum(-1) / counts[draws].sum(-1)
    stat = means[0] - means[1] if len(values) == 2 else means[0]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(stat, tail)), float(np.percentile(stat, 100 - tail))


def majority_share(labels: np.ndarray) -> float:
    """Accuracy of always guessing the most common label."""
    return float(np.bincount(labels).max() / len(labels))
