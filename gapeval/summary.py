"""Per-category summaries of a run's records: joint counts, accuracies, Gap Scores with bootstrap intervals,
agreement (κ) and McNemar's test. ``summarize`` writes what summary.json holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from gapeval.items import CATEGORIES
from gapeval.score import gap_scores_identified_batched, gap_scores_reference_batched
from gapeval.stats import cohen_kappa, mcnemar_exact, percentile_ci

JOINT_KEYS = ("p11", "p10", "p01", "p00")


def _outcome(record: Any, index: int) -> tuple[str, int | None]:
    """(category, joint outcome index into JOINT_KEYS or None on a judge error) of one results.jsonl record."""
    if not isinstance(record, Mapping):
        raise ValueError(f"record {index}: expected an object, got {type(record).__name__}")
    rid = record.get("id", f"#{index}")
    category = record.get("category")
    if not isinstance(category, str) or not category:
        raise ValueError(f"record {rid}: field 'category' must be a non-empty string")
    verdicts = []
    for direction in ("und", "gen"):
        verdict = record.get(direction)
        if not isinstance(verdict, Mapping) or "correct" not in verdict:
            raise ValueError(f"record {rid}: field '{direction}' must be an object with 'correct'")
        if verdict["correct"] is not None and not isinstance(verdict["correct"], bool):
            raise ValueError(f"record {rid}: field '{direction}.correct' must be true, false or null")
        verdicts.append(verdict["correct"])
    und, gen = verdicts
    if und is None or gen is None:
        return category, None
    return category, (0 if und else 2) + (0 if gen else 1)


def _category_order(categories: Iterable[str]) -> list[str]:
    known = [c for c in CATEGORIES if c in categories]
    return known + sorted(set(categories) - set(known))


def _counts_summary(n: np.ndarray, n_error: int) -> dict[str, Any]:
    """Counts [n11, n10, n01, n00] → counts, accuracies and joint proportions (None without items)."""
    total = int(n.sum())
    out: dict[str, Any] = {f"n{k[1:]}": int(v) for k, v in zip(JOINT_KEYS, n, strict=True)}
    out.update(n=total, n_error=n_error)
    out["und_acc"] = (n[0] + n[1]) / total if total else None
    out["gen_acc"] = (n[0] + n[2]) / total if total else None
    out.update({k: (v / total if total else None) for k, v in zip(JOINT_KEYS, n.tolist(), strict=True)})
    return out


def _outcomes_by_category(records: Iterable[Any]) -> tuple[dict[str, list[int]], dict[str, int]]:
    outcomes: dict[str, list[int]] = {}
    errors: dict[str, int] = {}
    for index, record in enumerate(records):
        category, outcome = _outcome(record, index)
        outcomes.setdefault(category, [])
        errors.setdefault(category, 0)
        if outcome is None:
            errors[category] += 1
        else:
            outcomes[category].append(outcome)
    return outcomes, errors


def joint_counts(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Per category and "overall": n11, n10, n01, n00, n, n_error, und_acc, gen_acc, p11..p00.

    A record whose und or gen verdict is None (the judge failed) is left out of every count and proportion
    and counted in ``n_error``: a judge error is neither a right nor a wrong answer.
    """
    outcomes, errors = _outcomes_by_category(records)
    return _joint_counts(outcomes, errors)


def _joint_counts(outcomes: Mapping[str, list[int]], errors: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    out = {}
    for category in _category_order(outcomes):
        out[category] = _counts_summary(np.bincount(outcomes[category], minlength=4), errors[category])
    every = [o for c in outcomes.values() for o in c]
    out["overall"] = _counts_summary(
        np.bincount(np.asarray(every, dtype=int), minlength=4), sum(errors.values())
    )
    return out


def summarize(records: Iterable[Any], bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Everything a report needs about one run, JSON-serialisable (it is summary.json).

    ``{"categories": {category: stats}, "overall": stats, "bootstrap": {...}}`` where stats holds the counts and
    proportions of ``joint_counts``, ``gap_reference`` and ``gap_identified`` with 95% percentile bootstrap
    intervals (``*_ci``), ``disagreement`` (p10 + p01), ``kappa`` (Cohen's, und vs gen) and ``mcnemar_p``
    (exact, n10 vs n01). The reference scores all of a model's categories together, one row each, so the
    categories of the run are one model's rows and "overall" gaps are the mean over category rows. Each
    bootstrap resample draws every category's items with replacement and is scored as one more "model" in a
    single batched fit. 420 items in 4 categories take ~3.5 s with 1000 resamples here (2 busy CPU cores).
    """
    outcomes, errors = _outcomes_by_category(records)
    table = _joint_counts(outcomes, errors)
    scored = [c for c in table if c != "overall" and table[c]["n"] > 0]
    for stats in table.values():
        stats.update(
            disagreement=None if stats["n"] == 0 else stats["p10"] + stats["p01"],
            kappa=cohen_kappa(stats["n11"], stats["n10"], stats["n01"], stats["n00"]),
            mcnemar_p=mcnemar_exact(stats["n10"], stats["n01"]),
        )
        stats.update(gap_reference=None, gap_reference_ci=None, gap_identified=None, gap_identified_ci=None)
    if scored:
        rng = np.random.default_rng(seed)
        rows = {"point": [[table[c][k] for k in JOINT_KEYS] for c in scored]}
        for b in range(bootstrap):
            rows[f"b{b}"] = [_resampled_row(outcomes[c], rng) for c in scored]
        for kind, fit in (
            ("reference", gap_scores_reference_batched),
            ("identified", gap_scores_identified_batched),
        ):
            results = fit(rows)
            samples = np.array([results[f"b{b}"].gaps for b in range(bootstrap)]).reshape(
                bootstrap, len(scored)
            )
            for i, category in enumerate(scored):
                table[category][f"gap_{kind}"] = results["point"].gaps[i]
                table[category][f"gap_{kind}_ci"] = percentile_ci(samples[:, i])
            table["overall"][f"gap_{kind}"] = results["point"].gap_mean
            table["overall"][f"gap_{kind}_ci"] = percentile_ci(samples.mean(axis=1))
            if kind == "identified":
                table["overall"]["identified_converged"] = results["point"].converged
    return {
        "categories": {c: table[c] for c in table if c != "overall"},
        "overall": table["overall"],
        "bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "unit": "items within category"},
    }


def _resampled_row(outcomes: list[int], rng: np.random.Generator) -> list[float]:
    """Joint proportions of one bootstrap resample of a category's items."""
    draw = rng.integers(0, len(outcomes), size=len(outcomes))
    return (np.bincount(np.asarray(outcomes)[draw], minlength=4) / len(outcomes)).tolist()
