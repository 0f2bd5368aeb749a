"""Per-layer linear probes done properly: grouped splits, a control task, selectivity, transfer.

- Features are standardised inside the pipeline (raw residual streams leave lbfgs unconverged).
- Grouped splits (``GroupKFold``) keep every group — an entity — wholly in train or in test, so a probe
  cannot score by recognising an entity it saw with its label.
- The control task (Hewitt & Liang 2019) gives each *type* (entity) one fixed random label, drawn from the
  real labels' per-type distribution, shared by all its prompts; selectivity = accuracy − control accuracy.
- Transfer trains on one direction's states and tests on the other's, on the held-out groups of each fold.
Every score is a mean over folds with its standard deviation (the spread).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Score:
    """Accuracy over folds: the per-fold values, their mean and standard deviation."""

    folds: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def std(self) -> float:
        return float(np.std(self.folds))

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "folds": self.folds}


def grouped_folds(groups: np.ndarray, n_splits: int = 4) -> Folds:
    """(train, test) row indices with no group on both sides (fewer splits when there are fewer groups)."""
    n = min(n_splits, len(np.unique(groups)))
    if n < 2:
        raise ValueError("grouped splits need at least two groups")
    return list(GroupKFold(n_splits=n).split(np.zeros(len(groups)), groups=groups))


def control_labels(labels: np.ndarray, types: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each type's rows get one label, a random draw from the labels of the types (same class shares)."""
    rng = np.random.default_rng(seed)
    kinds = np.unique(types)
    per_type = np.array([labels[types == t][0] for t in kinds])
    drawn = dict(zip(kinds.tolist(), rng.permutation(per_type).tolist(), strict=True))
    return np.array([drawn[t] for t in types.tolist()])


def make_probe(seed: int = 0) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def fold_scores(
    train_x: np.ndarray,
    test_xs: dict[str, np.ndarray],
    labels: np.ndarray,
    folds: Folds,
    seed: int = 0,
) -> dict[str, Score]:
    """Train on ``train_x[train]`` per fold and score on each ``test_xs[name][test]``."""
    scores = {name: Score() for name in test_xs}
    with threadpool_limits(
        1
    ):  # small fits: extra BLAS threads only add contention (5x slower on 2 busy cores)
        for train, test in folds:
            probe = make_probe(seed).fit(train_x[train], labels[train])
            for name, x in test_xs.items():
                scores[name].folds.append(float(probe.score(x[test], labels[test])))
    return scores


def layer_probes(
    und: np.ndarray, gen: np.ndarray, labels: np.ndarray, control: np.ndarray, folds: Folds, seed: int = 0
) -> dict[str, Score]:
    """One layer's scores: ``acc_*`` and ``control_*`` per direction, ``und_to_gen`` and ``gen_to_und``.

    ``und`` and ``gen`` are (N, d) states of the same rows in the two directions."""
    from_und = fold_scores(und, {"acc_und": und, "und_to_gen": gen}, labels, folds, seed)
    from_gen = fold_scores(gen, {"acc_gen": gen, "gen_to_und": und}, labels, folds, seed)
    control = {
        f"control_{name}": fold_scores(x, {name: x}, control, folds, seed)[name]
        for name, x in (("und", und), ("gen", gen))
    }
    return {**from_und, **from_gen, **control}


def majority_share(labels: np.ndarray) -> float:
    """Accuracy of always guessing the most common label: chance for a probe."""
    return float(np.bincount(labels).max() / len(labels))
