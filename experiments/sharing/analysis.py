"""Pure functions from the sweep's stored measurements to its numbers: per condition (training seeds pooled),
direct transfer and bridged recovery with CIs, each condition against the disjoint baseline (a one-sided
permutation test over realms, Holm over conditions) and against the condition it differs from by one factor
(two-sided), the edit study's propagation decision on the pooled
edits, probe transfer and where patching finds the fact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from interventions.editing.metrics import estimate, holm, propagation, with_holm

ALPHA = 0.05


def realm_scores(
    rows_by_seed: Sequence[tuple[int, list[dict]]], key: str, pictured: bool
) -> dict[str, list[float]]:
    """Per (seed, realm): the verdicts of ``key`` (und / gen / bridged) on the realm's items of one split."""
    groups: dict[str, list[float]] = {}
    for seed, rows in rows_by_seed:
        for r in rows:
            if r["pictured"] is pictured and r[key] is not None:
                groups.setdefault(f"{seed}/{r['realm']}", []).append(float(r[key]))
    return groups


def seed_means(groups: dict[str, list[float]]) -> list[float]:
    """Each training seed on its own, from :func:`realm_scores`' (seed, realm) groups: its mean of realm means."""
    by_seed: dict[str, list[float]] = {}
    for key, verdicts in groups.items():
        by_seed.setdefault(key.split("/", 1)[0], []).append(float(np.mean(verdicts)))
    return [float(np.mean(v)) for v in by_seed.values()]


def majority_rate(world_realms: Sequence[Any]) -> float | None:
    """What always drawing the commonest emblem kind would score on these realms (the emblem check is the
    object's shape and colour)."""
    kinds = Counter(r.emblem.kind for r in world_realms)
    return max(kinds.values()) / len(world_realms) if world_realms else None


def permutation_greater(
    a: dict[str, list[float]],
    b: dict[str, list[float]],
    seed: int,
    draws: int = 10000,
    two_sided: bool = False,
) -> float:
    """p that ``a``'s mean of group means exceeds ``b``'s (``two_sided``: differs from it in either direction),
    by permuting groups between the two."""
    x = np.array([np.mean(v) for v in a.values()])
    y = np.array([np.mean(v) for v in b.values()])
    if not len(x) or not len(y):
        return 1.0
    pooled, observed = np.concatenate([x, y]), x.mean() - y.mean()
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(pooled) for _ in range(draws)])
    diffs = perms[:, : len(x)].mean(1) - perms[:, len(x) :].mean(1)
    if two_sided:
        diffs, observed = np.abs(diffs), abs(observed)
    return _tail_p(diffs, observed)


def _tail_p(null: np.ndarray, observed: float) -> float:
    """Share of the null draws at least as large as ``observed`` (counting the observation itself)."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def transfer_table(
    knowledge: dict[str, list[tuple[int, list[dict]]]], baseline: str, seed: int
) -> list[dict[str, Any]]:
    """Per condition: und, gen and bridged accuracy on text-only realms and gen on pictured ones (95 % CIs
    over seed × realm), and direct transfer against ``baseline``'s: difference, permutation p, Holm."""
    rows = []
    base_gen = realm_scores(knowledge[baseline], "gen", False) if baseline in knowledge else {}
    for condition, by_seed in knowledge.items():
        row: dict[str, Any] = {"condition": condition, "seeds": [s for s, _ in by_seed]}
        for key in ("und", "gen", "bridged"):
            row[f"text_{key}"] = estimate(realm_scores(by_seed, key, False), seed=seed)
        row["pictured_gen"] = estimate(realm_scores(by_seed, "gen", True), seed=seed)
        row["pictured_und"] = estimate(realm_scores(by_seed, "und", True), seed=seed)
        gen = realm_scores(by_seed, "gen", False)
        if condition != baseline and base_gen:
            row["vs_baseline"] = {
                "difference": row["text_gen"]["mean"] - estimate(base_gen)["mean"],
                "p": permutation_greater(gen, base_gen, seed),
            }
        rows.append(row)
    compared = [r for r in rows if "vs_baseline" in r]
    for r, q in zip(compared, holm([r["vs_baseline"]["p"] for r in compared]), strict=True):
        r["vs_baseline"] |= {"p_holm": q, "detected": q <= ALPHA}
    return rows


def factor_table(
    knowledge: dict[str, list[tuple[int, list[dict]]]], versus: dict[str, str], seed: int
) -> list[dict[str, Any]]:
    """One factor at a time: each condition's direct transfer (gen on text-only realms) against the condition
    it differs from by one factor (``versus``), where both are measured: difference, two-sided permutation p
    over seed × realm groups, Holm over the comparisons.

    The test treats (seed, realm) as the units, so it says these trained models differ; whether the recipe
    does also depends on how much seeds vary. Each row therefore carries every seed's own mean
    (``per_seed``) and ``seeds_apart``: every seed of one condition lies beyond every seed of the other, on
    the side of the difference."""
    rows = []
    for condition, other in versus.items():
        if condition in knowledge and other in knowledge:
            a, b = (realm_scores(knowledge[c], "gen", False) for c in (condition, other))
            mine, theirs = seed_means(a), seed_means(b)
            difference = estimate(a)["mean"] - estimate(b)["mean"]
            low, high = (mine, theirs) if difference < 0 else (theirs, mine)
            rows.append({
                "condition": condition, "versus": other, "difference": difference,
                "p": permutation_greater(a, b, seed, two_sided=True),
                "per_seed": {condition: mine, other: theirs},
                "seeds_apart": difference != 0 and max(low) < min(high),
            })  # fmt: skip
    for r, q in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r |= {"p_holm": q, "detected": q <= ALPHA}
    return rows


def propagation_table(edits: dict[str, list[tuple[int, dict]]]) -> list[dict[str, Any]]:
    """Per condition and kind (edit, inject, and the bridged control): the decision of the edit study on the
    edits of every training seed pooled (each edit against its own baseline), Holm over every case here."""
    cases = []
    for condition, by_seed in edits.items():
        kinds = sorted({k for _, runs in by_seed for k in runs})
        for kind in kinds:
            pooled = [
                {**r, "edit": f"{s}/{r['edit']}", "item": f"{s}/{r['item']}"}
                for s, runs in by_seed
                if kind in runs
                for r in runs[kind]["records"]
            ]
            present = {r["condition"] for r in pooled}
            for via in ("und", "gen"):
                if via in present:
                    case = propagation(pooled, via)
                    case.pop("logprob_shift_net", None)
                    cases.append({"condition": condition, "kind": kind, **case})
    return with_holm(cases)


def probe_peak(probe: dict[str, Any]) -> dict[str, Any]:
    """The layer where und's probe is best, and und→gen transfer there and at its own best layer."""
    und = [e["mean"] if e["mean"] is not None else -1.0 for e in probe["acc_und"]]
    best = int(np.argmax(und))
    transfer = [e["mean"] if e["mean"] is not None else -1.0 for e in probe["und_to_gen"]]
    top = int(np.argmax(transfer))
    return {
        "layer": probe["layers"][best],
        "und": probe["acc_und"][best],
        "gen": probe["acc_gen"][best],
        "und_to_gen": probe["und_to_gen"][best],
        "best_transfer": {"layer": probe["layers"][top], **probe["und_to_gen"][top]},
        "chance": probe["chance"],
        "majority": probe["majority"],
    }


def patch_peak(patching: dict[str, Any]) -> dict[str, Any]:
    """Per direction, where restoring the clean run restores the answer: the residual row where the last
    prompt token carries the most (``end``), and the row above the embeddings where the subject's own tokens do
    (``span``; entering layer 0 is the embedding itself, which always carries the name)."""
    if "skipped" in patching:
        return {"skipped": patching["skipped"]}
    out = {}
    for d, profile in (patching.get("profile") or {}).items():
        found = {}
        for where, skip in (("end", 0), ("span", 1)):
            values = np.array((profile or {}).get(where) or [], dtype=float)[skip:]
            if len(values) and not np.all(np.isnan(values)):
                k = int(np.nanargmax(values))
                found[where] = {"row": patching["rows"][k + skip], "restored": float(values[k])}
        if found:
            out[d] = found
    return out


def specificity(
    rows_by_seed: Sequence[tuple[int, list[dict]]],
    emblems: dict[str, tuple[str, str]],
    seed: int,
    draws: int = 10000,
) -> dict[str, Any] | None:
    """Is a drawing of a text-only realm's emblem about *that* realm? Per (seed, realm): the share of its drawings
    showing its own emblem kind, against the mean share showing another text-only realm's (a shuffled pairing:
    what a drawing prior that ignores the realm would score). A one-sided sign-flip test on the per-realm
    differences. None when the rows hold no drawn kinds (measured before they were stored)."""
    own: dict[str, list[float]] = {}
    other: dict[str, list[float]] = {}
    for s, rows in rows_by_seed:
        text = [r for r in rows if r["pictured"] is False]
        if any("drawn" not in r for r in text):
            return None
        names = sorted({r["realm"] for r in text})
        for r in text:
            drawn = {tuple(k) for k in r["drawn"] or []}
            key = f"{s}/{r['realm']}"
            own.setdefault(key, []).append(float(emblems[r["realm"]] in drawn))
            others = [float(emblems[n] in drawn) for n in names if n != r["realm"]]
            other.setdefault(key, []).append(float(np.mean(others)) if others else 0.0)
    diffs = np.array([np.mean(own[k]) - np.mean(other[k]) for k in own])
    if not len(diffs):
        return None
    rng = np.random.default_rng(seed)
    flipped = (rng.choice([-1.0, 1.0], size=(draws, len(diffs))) * diffs).mean(1)
    p = _tail_p(flipped, diffs.mean())
    return {"own": estimate(own, seed=seed), "other": estimate(other, seed=seed), "p": p}
