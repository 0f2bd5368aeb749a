"""Edit metrics, per direction, as pure functions of an experiment's records (EasyEdit's conventions).

A record is one (condition, edit, item, direction): ``role`` target / generality / locality, ``correct`` (the
judged answer matches the new value; for locality items, the item's own reference), ``old`` (it still matches
the old value), ``output`` (the text, or a hash of the picture), and for targets the teacher-forced
``logp_new`` / ``logp_old``. ``baseline`` is the unedited model's condition.

- efficacy: targets, trained direction; propagation: targets, the other direction;
- generality: held-out phrasings and the two-hop route;
- locality: share of locality answers whose verdict equals the unedited model's, and the accuracy change;
- log-prob shift: change of log P(new) − log P(old) (or of log P(new) for an inject) from the baseline, so
  propagation too small to flip a verdict is still visible.

Records of specs with a ``group`` carry it (locality records do not), so each group can be summarised alone.

Confidence intervals resample edits (targets, generality) or locality items, 95 % percentile bootstrap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from gapeval.stats import percentile_ci

BASELINE = "baseline"
Estimate = dict[str, Any]  # {"mean": float | None, "ci": [lo, hi] | None, "n": groups}


def estimate(groups: dict[str, list[float]], *, seed: int = 0, samples: int = 2000) -> Estimate:
    """Mean of group means, with a bootstrap CI over groups (each group weighs the same)."""
    means = np.array([np.mean(v) for v in groups.values() if v], dtype=float)
    if not len(means):
        return {"mean": None, "ci": None, "n": 0}
    rng = np.random.default_rng(seed)
    resampled = means[rng.integers(0, len(means), (samples, len(means)))].mean(1)
    return {"mean": float(means.mean()), "ci": percentile_ci(resampled), "n": int(len(means))}


def _select(records: Iterable[dict], condition: str, role: str, direction: str) -> list[dict]:
    return [
        r
        for r in records
        if r["condition"] == condition and r["role"] == role and r["direction"] == direction
    ]


def _by_edit(records: Iterable[dict], value: Callable[[dict], float | None]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        v = value(r)
        if v is not None:
            groups[r["edit"]].append(float(v))
    return groups


def accuracy(
    records: Sequence[dict], condition: str, role: str, direction: str, field: str = "correct"
) -> Estimate:
    """Share of judged answers of ``role`` items in ``direction`` that match the new value (``field="old"``:
    still the old one)."""
    return estimate(_by_edit(_select(records, condition, role, direction), lambda r: r.get(field)))


def efficacy(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    return accuracy(records, condition, "target", direction)


def generality(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    return accuracy(records, condition, "generality", direction)


def _baseline_index(records: Sequence[dict], role: str, direction: str) -> dict[str, dict]:
    return {r["item"]: r for r in _select(records, BASELINE, role, direction)}


def _against_baseline(
    records: Sequence[dict], condition: str, direction: str, compare: Callable[[bool, bool], float]
) -> Estimate:
    """``compare(verdict, unedited verdict)`` per locality item judged in both runs."""
    before = _baseline_index(records, "locality", direction)
    groups: dict[str, list[float]] = defaultdict(list)
    for r in _select(records, condition, "locality", direction):
        base = before.get(r["item"])
        if base is not None and r["correct"] is not None and base["correct"] is not None:
            groups[r["item"]].append(compare(r["correct"], base["correct"]))
    return estimate(groups)


def locality(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    """Agreement of locality verdicts with the unedited model's, per locality item."""
    return _against_baseline(records, condition, direction, lambda now, base: float(now == base))


def locality_accuracy_change(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    """Accuracy on locality items minus the unedited model's, per locality item."""
    return _against_baseline(records, condition, direction, lambda now, base: float(now) - float(base))


def _margin(r: dict) -> float | None:
    if r.get("logp_new") is None:
        return None
    return r["logp_new"] - (r["logp_old"] if r.get("logp_old") is not None else 0.0)


def logprob_shift(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    """Mean change, from the baseline, of log P(new) − log P(old) on the target items (per edit)."""
    before = {r["item"]: _margin(r) for r in _select(records, BASELINE, "target", direction)}
    return estimate(
        _by_edit(
            _select(records, condition, "target", direction),
            lambda r: (
                None
                if _margin(r) is None or before.get(r["item"]) is None
                else _margin(r) - before[r["item"]]
            ),
        )
    )


def summarize_edits(
    records: Sequence[dict], conditions: Sequence[str]
) -> dict[str, dict[str, dict[str, Estimate]]]:
    """``{condition: {direction: {metric: estimate}}}`` for every condition present."""
    present = {r["condition"] for r in records}
    out: dict[str, dict[str, dict[str, Estimate]]] = {}
    for condition in [c for c in conditions if c in present]:
        out[condition] = {
            d: {
                "target": efficacy(records, condition, d),
                "target_old": accuracy(records, condition, "target", d, "old"),
                "generality": generality(records, condition, d),
                "locality": locality(records, condition, d),
                "locality_acc_change": locality_accuracy_change(records, condition, d),
                "logprob_shift": logprob_shift(records, condition, d),
            }
            for d in ("und", "gen")
        }
    return out


def summarize_groups(
    records: Sequence[dict], conditions: Sequence[str]
) -> dict[str, dict[str, dict[str, dict[str, Estimate]]]]:
    """:func:`summarize_edits` per spec group (``{group: summary}``; specs without a group are left out): the
    targets and generality of that group's edits, the locality items shared by all."""
    groups = sorted({r.get("group") for r in records if r.get("group")})
    return {
        g: summarize_edits([r for r in records if r["role"] == "locality" or r.get("group") == g], conditions)
        for g in groups
    }
