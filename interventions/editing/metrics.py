"""Edit metrics, per direction, as pure functions of an experiment's records (EasyEdit's conventions).

A record is one (condition, edit, item, direction): ``role`` target / generality / locality, ``correct`` (the
judged answer matches the new value; for locality items, the item's own reference), ``old`` (it still matches
the old value), ``output`` (the text, or a hash of the picture), and for targets the teacher-forced
``logp_new`` / ``logp_old``. ``baseline`` is the unedited model's condition.

- efficacy: targets, trained direction; propagation: targets, the other direction;
- generality: held-out phrasings and the two-hop route;
- locality: share of locality answers whose output equals the unedited model's (verdict agreement and the
  accuracy change beside it), on items about realms no editor rehearsed (held out, see ``specs.hold_out``);
- log-prob shift: change of log P(new) − log P(old) (or of log P(new) for an inject) from the baseline, so
  propagation too small to flip a verdict is still visible; net of the same shift asked about an unedited
  control realm;
- propagation: each edit's outcome in the untrained direction against its own baseline outcome, a one-sided
  exact sign test over edits (Holm over the cases of a report), and the smallest rate it could detect.

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
    records: Sequence[dict],
    condition: str,
    direction: str,
    compare: Callable[[Any, Any], float],
    field: str = "correct",
) -> Estimate:
    """``compare(value, unedited value)`` of ``field`` per locality item present in both runs."""
    before = _baseline_index(records, "locality", direction)
    groups: dict[str, list[float]] = defaultdict(list)
    for r in _select(records, condition, "locality", direction):
        base = before.get(r["item"])
        if base is not None and r.get(field) is not None and base.get(field) is not None:
            groups[r["item"]].append(compare(r[field], base[field]))
    return estimate(groups)


def locality(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    """The headline: share of locality items whose output is the unedited model's (same text; same picture,
    i.e. the same decoded image tokens), as EasyEdit counts it — a wrong answer turned into another wrong
    answer is a change."""
    return _against_baseline(records, condition, direction, lambda now, base: float(now == base), "output")


def locality_verdict(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    """Agreement of locality verdicts (right / wrong) with the unedited model's, per locality item."""
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
                "locality_verdict": locality_verdict(records, condition, d),
                "locality_acc_change": locality_accuracy_change(records, condition, d),
                "logprob_shift": logprob_shift(records, condition, d),
                "logprob_shift_net": net_logprob_shift(records, condition, d),
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


# --- paired decisions ------------------------------------------------------------------------------------

ALPHA = 0.05
OTHER = {"und": "gen", "gen": "und"}


def sign_test(positive: int, negative: int) -> float:
    """One-sided exact sign test: P(X ≥ positive) for X ~ Binomial(positive + negative, 1/2) (1 when no pair
    differs). On binary pairs it is McNemar's exact test of "more flips up than down"."""
    from scipy.stats import binomtest

    n = positive + negative
    return 1.0 if n == 0 else float(binomtest(positive, n, 0.5, alternative="greater").pvalue)


def mcnemar_greater(table: Sequence[Sequence[int]]) -> float:
    """Exact one-sided McNemar p of a 2×2 table ``[[n11, n10], [n01, n00]]`` (rows: edited right / wrong,
    columns: baseline right / wrong): are edited-right-baseline-wrong pairs (n01) more than the reverse (n10)?"""
    return sign_test(int(table[1][0]), int(table[0][1]))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over ``pvalues``), in the input order."""
    order = sorted(range(len(pvalues)), key=lambda k: pvalues[k])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[k]))
        adjusted[k] = running
    return adjusted


def min_detectable_rate(n: int, alpha: float = ALPHA, family: int = 1) -> float | None:
    """The smallest propagation rate the decision rule can flag with ``n`` edits: the least share k/n of edits
    moved to the new value (none moved away, the baseline at 0) whose sign-test p ≤ α / ``family`` (the
    strictest Holm step, so it holds for every case of the family). None when even n of n cannot."""
    for k in range(1, n + 1):
        if sign_test(k, 0) <= alpha / family:
            return k / n
    return None


def paired_outcomes(
    records: Sequence[dict], condition: str, direction: str
) -> dict[str, tuple[float, float]]:
    """Per edit: (share of its target items judged new in ``direction`` after ``condition``, the same share
    for the unedited model) — each edit against its own baseline."""
    after = _by_edit(_select(records, condition, "target", direction), lambda r: r.get("correct"))
    before = _by_edit(_select(records, BASELINE, "target", direction), lambda r: r.get("correct"))
    return {e: (float(np.mean(after[e])), float(np.mean(before[e]))) for e in after if before.get(e)}


def _control_margin(r: dict) -> float | None:
    if r.get("control_logp_new") is None:
        return None
    return r["control_logp_new"] - (r["control_logp_old"] if r.get("control_logp_old") is not None else 0.0)


def net_logprob_shift(records: Sequence[dict], condition: str, direction: str) -> Estimate:
    """:func:`logprob_shift` minus the same shift asked about an unedited control realm (the subject's name
    replaced): the part of the shift that is about the edited subject, per edit."""
    before = {
        r["item"]: (_margin(r), _control_margin(r)) for r in _select(records, BASELINE, "target", direction)
    }

    def net(r: dict) -> float | None:
        base = before.get(r["item"])
        values = (_margin(r), _control_margin(r), *(base or (None, None)))
        if any(v is None for v in values):
            return None
        now, ctl, was, ctl_was = values
        return (now - was) - (ctl - ctl_was)

    return estimate(_by_edit(_select(records, condition, "target", direction), net))


def propagation(records: Sequence[dict], via: str, alpha: float = ALPHA) -> dict[str, Any]:
    """Train-on-``via``'s reach into the other direction: each edit's target outcome there against its own
    baseline outcome, a one-sided exact sign test over edits, and the rule's power at this many edits."""
    to = OTHER[via]
    pairs = paired_outcomes(records, via, to)
    up = sum(a > b for a, b in pairs.values())
    down = sum(a < b for a, b in pairs.values())
    p = sign_test(up, down)
    rate = efficacy(records, via, to)
    return {
        "via": via,
        "to": to,
        "rate": rate["mean"],
        "ci": rate["ci"],
        "baseline": efficacy(records, BASELINE, to)["mean"],
        "p": p,
        "detected": p <= alpha,
        "min_detectable_rate": min_detectable_rate(len(pairs), alpha),
        "edits": len(pairs),
        "up": up,
        "down": down,
        "efficacy": efficacy(records, via, via)["mean"],
        "logprob_shift": logprob_shift(records, via, to),
        "logprob_shift_net": net_logprob_shift(records, via, to),
    }


def with_holm(cases: Sequence[dict[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """``cases`` (propagation entries of one report) with Holm's adjusted p, its verdict and the power after
    the correction added, when there are several."""
    if len(cases) < 2:
        return [dict(c) for c in cases]
    adjusted = holm([c["p"] for c in cases])
    return [
        {
            **c,
            "p_holm": q,
            "detected_holm": q <= alpha,
            "min_detectable_rate_holm": min_detectable_rate(c["edits"], alpha, len(cases)),
        }
        for c, q in zip(cases, adjusted, strict=True)
    ]


def propagation_cases(records: Sequence[dict], conditions: Sequence[str]) -> list[dict[str, Any]]:
    """One :func:`propagation` entry per trained single direction present beside a baseline, Holm-corrected
    over the run's entries."""
    present = {r["condition"] for r in records}
    if BASELINE not in present:
        return []
    return with_holm(
        [propagation(records, via) for via in ("und", "gen") if via in conditions and via in present]
    )


def propagation_line(case: dict[str, Any]) -> str:
    """One printed line per entry: the rate with its CI, the baseline, p (and Holm's), the verdict and power."""
    ci = f" [{case['ci'][0]:.2f}, {case['ci'][1]:.2f}]" if case.get("ci") else ""
    rate = "–" if case["rate"] is None else f"{case['rate']:.2f}{ci}"
    base = "–" if case["baseline"] is None else f"{case['baseline']:.2f}"
    mdr = case["min_detectable_rate"]
    holm_part = f", Holm p={case['p_holm']:.3g}" if "p_holm" in case else ""
    verdict = "detected" if case.get("detected_holm", case["detected"]) else "not above baseline"
    net = case["logprob_shift_net"]["mean"]
    return (
        f"propagation: Train-on-{case['via'].capitalize()} → {case['to']}: rate {rate} vs baseline {base} "
        f"({case['up']} edits up, {case['down']} down of {case['edits']}; sign test p={case['p']:.3g}{holm_part}): "
        f"{verdict}; min detectable rate {'–' if mdr is None else f'{mdr:.2f}'}"
        f"{'' if net is None else f'; net Δlogp {net:+.2f}'}"
    )


# --- joint outcomes and the suite's gap --------------------------------------------------------------------


def _joint_records(records: Sequence[dict], condition: str, role: str) -> list[dict[str, Any]]:
    """Records of ``role`` in ``condition`` as the runner's per-item form (``{"id", "category", "und": {...},
    "gen": {...}}``), one per item judged in both directions."""
    by_item: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["condition"] == condition and r["role"] == role:
            entry = by_item.setdefault(r["item"], {"id": r["item"], "category": r.get("category") or role})
            entry[r["direction"]] = {"correct": r["correct"]}
    return [e for e in by_item.values() if "und" in e and "gen" in e]


def joint_outcomes(records: Sequence[dict], condition: str, role: str = "target") -> dict[str, Any]:
    """p11 / p10 / p01 / p00 (und right / gen right, over the new value for targets) of ``role`` items."""
    from gapeval.summary import joint_counts

    pairs = _joint_records(records, condition, role)
    overall = joint_counts(pairs)["overall"] if pairs else {"n": 0}
    return {k: overall.get(k) for k in ("p11", "p10", "p01", "p00", "n")}


def suite_gap(
    records: Sequence[dict], condition: str, bootstrap: int = 200, seed: int = 0
) -> dict[str, Any] | None:
    """Gap Score of the whole suite asked under ``condition`` (records of role ``suite``), with und and gen
    accuracy: how the edit moved the gap. None when the run did not ask the suite."""
    from gapeval.summary import summarize

    pairs = _joint_records(records, condition, "suite")
    if not pairs:
        return None
    overall = summarize(pairs, bootstrap=bootstrap, seed=seed)["overall"]
    keys = ("gap_reference", "gap_reference_ci", "und_acc", "gen_acc", "n")
    return {k: overall.get(k) for k in keys}


def edit_effects(records: Sequence[dict], conditions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per condition present: the targets' joint outcomes and the suite's Gap Score (when asked)."""
    present = {r["condition"] for r in records}
    return {
        c: {"joint": joint_outcomes(records, c), "gap": suite_gap(records, c)}
        for c in conditions
        if c in present
    }
