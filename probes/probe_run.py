"""One probing study of a model: capture, per-layer probes with baselines that can fail, transfer, held-out erasure.

What ``gapeval probe`` runs. Probes read the world-knowledge prompts of every realm (``probes.dataset``), on
realm-grouped folds. Per layer and direction the JSON carries the held-out accuracy with its 95 % CI,
``p_permutation`` (labels shuffled across realms, same folds; Holm-adjusted over the run's tests in ``p_holm``)
and ``untrained_accuracy`` (the same probe on the untrained twin of the model, ``probes.untrained``), and

    selectivity = accuracy − untrained_accuracy

— what training put there beyond what the architecture and the input tokens make decodable. A value is a
*finding* only when its CI lies above the majority-class share and (for within-direction probes) its Holm-adjusted
permutation p is below 0.05.

Erasure is held out: per fold, the eraser is fitted on the training realms' captured states (both directions, at
the probed position) and judged on the synth suite's world-knowledge items of the fold's held-out realms, in both
directions, against a random eraser of the same rank and the same mean squared perturbation on the same rows
(``probes.erasers.matched_random``). Drops come with cluster-bootstrap CIs over realms (paired: the same items
with and without the eraser), and so does LEACE's drop minus the control's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, Intervenable
from gapeval.suites import get_suite
from gapeval.synth.world import World
from gapeval.targets import resolve
from interventions.hooks import residual_stream
from probes.capture import capture, layer_names, load_states
from probes.dataset import (
    ProbeSet,
    item_row,
    item_span,
    split_key,
    world_knowledge_items,
    world_knowledge_set,
)
from probes.erase import EVERYWHERE, erased_records
from probes.erasers import matched_random
from probes.linear import (
    Folds,
    cluster_ci,
    grouped_folds,
    holm,
    majority_share,
    p_value,
    probe,
    shuffled_labels,
)
from probes.names import ERASERS, SHUFFLES, label_in_input
from probes.untrained import untrained

ALPHA_FINDING = 0.05
PROBES = {
    "und": ("acc_und", "und_to_gen"),
    "gen": ("acc_gen", "gen_to_und"),
}  # trained on: (within, transfer)


def _other(direction: str) -> str:
    return DIRECTIONS[1 - DIRECTIONS.index(direction)]


def probe_layers(
    states: dict[str, np.ndarray],
    labels: np.ndarray,
    folds: Folds,
    shuffles: np.ndarray | None,
    clusters: np.ndarray,
    seed: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per captured layer of (N, L + 1, d) states: within-direction and transfer scores with CIs, and with
    ``shuffles`` the permutation p-value and null mean of the within-direction ones."""
    rows = []
    for k in tqdm(range(states["und"].shape[1]), desc="probes", disable=not progress):
        row: dict[str, Any] = {}
        for d, (within, transfer) in PROBES.items():
            tests = {within: states[d][:, k], transfer: states[_other(d)][:, k]}
            scores, nulls = probe(states[d][:, k], tests, labels, folds, shuffles)
            for name, score in scores.items():
                score.ci = cluster_ci(score.correct, clusters, seed)
                row[name] = score.to_json()
            if shuffles is not None:
                row[within] |= {
                    "p_permutation": p_value(scores[within].mean, nulls[within]),
                    "null_mean": float(nulls[within].mean()),
                }
        rows.append(row)
    return rows


def untrained_accuracy(
    model: Intervenable,
    probe_set: ProbeSet,
    position: str,
    labels: np.ndarray,
    folds: Folds,
    out: Path,
    *,
    seed: int,
    batch_size: int,
) -> dict[str, list[float]]:
    """Per direction, per layer: the same probe's accuracy on the model's untrained twin."""
    with untrained(model, seed):
        folder = capture(model, probe_set, out, [position], batch_size=batch_size, progress=False)
    result = {}
    for d in DIRECTIONS:
        x = load_states(folder, d, position).numpy()
        result[d] = [probe(x[:, k], {"x": x[:, k]}, labels, folds)[0]["x"].mean for k in range(x.shape[1])]
    return result


def _judged(records: list[dict], direction: str) -> np.ndarray:
    """Per record, 1.0 / 0.0 for correct / wrong and NaN where no verdict was given."""
    marks = [r[direction]["correct"] for r in records]
    return np.array([np.nan if m is None else float(m) for m in marks])


def _drop(before: np.ndarray, after: np.ndarray, clusters: np.ndarray, seed: int) -> dict[str, Any]:
    """Paired drop in accuracy (before − after) over the items judged both times, with its cluster CI."""
    keep = np.isfinite(before) & np.isfinite(after)
    if not keep.any():
        return {"value": None, "ci": None}
    value = float(before[keep].mean() - after[keep].mean())
    return {"value": value, "ci": cluster_ci(np.stack([before[keep], after[keep]]), clusters[keep], seed)}


def erasure_layers(
    model: Intervenable,
    world: World,
    states: dict[str, torch.Tensor],
    labels: np.ndarray,
    folds: Folds,
    attribute: str,
    probe_set: ProbeSet,
    *,
    method: str,
    at: str,
    seed: int,
    batch_size: int,
    progress: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Held-out judged erasure per layer and direction (see the module docstring): the baseline accuracy, and
    per layer LEACE's and the matched control's accuracy, drops with CIs and their difference."""
    realms = {row["realm"] for row in probe_set.rows}
    items: list[Item] = [
        it for it in world_knowledge_items(get_suite("synth").items) if it.meta["realm"] in realms
    ]
    spans = [item_span(world, it) for it in items]
    keys = np.array([split_key(attribute, item_row(it)) for it in items])
    names = np.array(probe_set.group_keys(attribute))
    groups = probe_set.groups(attribute)
    held_out = [np.flatnonzero(np.isin(keys, names[np.unique(groups[test])])) for _, test in folds]
    clusters = np.array([it.meta["realm"] for it in items])
    points = residual_stream(model)

    def judge(direction: str, k: int, eraser: Any, rows: np.ndarray) -> np.ndarray:
        picked = [items[i] for i in rows]
        records = erased_records(
            model, picked, [spans[i] for i in rows], direction, points[k], eraser, at, seed, batch_size
        )
        return _judged(records, direction)

    everything = np.arange(len(items))
    before = {d: judge(d, 0, None, everything) for d in DIRECTIONS}
    baseline = {d: float(np.nanmean(v)) if np.isfinite(v).any() else None for d, v in before.items()}
    out = []
    for k in tqdm(range(states["und"].shape[1]), desc=f"erase ({method}, {at})", disable=not progress):
        after = {(name, d): before[d].copy() for name in ("leace", "random") for d in DIRECTIONS}
        ranks, moved = [], {"leace": [], "random": []}
        for f, (train, _) in enumerate(folds):
            fit_on = torch.cat([states["und"][train, k], states["gen"][train, k]])
            fitted = resolve(ERASERS[method])(fit_on, np.concatenate([labels[train], labels[train]]))
            control = matched_random(fitted, fit_on, seed + 1000 * k + f)
            ranks.append(fitted.rank)
            moved["leace"].append(fitted.perturbation(fit_on))
            moved["random"].append(control.perturbation(fit_on))
            if fitted.rank == 0:  # nothing to erase (e.g. the same token in every prompt): the identity
                continue
            for d in DIRECTIONS:
                after[("leace", d)][held_out[f]] = judge(d, k, fitted, held_out[f])
                after[("random", d)][held_out[f]] = judge(d, k, control, held_out[f])
        row: dict[str, Any] = {
            "rank": ranks,
            "perturbation": {name: float(np.mean(v)) for name, v in moved.items()},
        }
        for d in DIRECTIONS:
            leace, random = after[("leace", d)], after[("random", d)]
            row[d] = {
                "items": int(np.isfinite(before[d]).sum()),
                "leace": float(np.nanmean(leace)),
                "random": float(np.nanmean(random)),
                "drop": _drop(before[d], leace, clusters, seed),
                "random_drop": _drop(before[d], random, clusters, seed),
                "drop_minus_random": _drop(random, leace, clusters, seed),
            }
            row[d]["finding"] = _above(row[d]["drop_minus_random"]["ci"], 0.0)
        out.append(row)
    return baseline, out


def _above(ci: tuple[float, float] | None, level: float) -> bool:
    return ci is not None and ci[0] > level


def _findings(layers: list[dict[str, Any]], majority: float) -> None:
    """Holm-adjust the run's permutation p-values and mark each probe value a finding or not (in place)."""
    within = [
        (layer, name) for layer in layers for name, _ in PROBES.values() if "p_permutation" in layer[name]
    ]
    for (layer, name), adjusted in zip(
        within, holm([layer[name]["p_permutation"] for layer, name in within]), strict=True
    ):
        layer[name]["p_holm"] = adjusted
    for layer in layers:
        for name in (n for pair in PROBES.values() for n in pair):
            score = layer[name]  # transfer (no permutation test) and runs without shuffles: the CI alone
            score["finding"] = _above(score["ci"], majority) and score.get("p_holm", 0.0) < ALPHA_FINDING


def probe_study(
    model: Intervenable,
    attribute: str,
    position: str,
    out: str | Path,
    *,
    seed: int = 0,
    method: str = "leace",
    erase_at: str = EVERYWHERE,
    erase: bool = True,
    n_splits: int = 4,
    shuffles: int = SHUFFLES,
    baseline: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the study and return its raw numbers (states are captured under ``out/states``).

    ``limit`` keeps the first ``limit`` realms of the world (probing prompts and erasure items alike): a quick
    look, or a test, marked ``smoke`` in the result; None keeps all. ``shuffles`` 0 skips the permutation test
    and ``baseline`` False the untrained model (tests, a quick look)."""
    if method not in ERASERS:
        raise ValueError(f"method must be one of {sorted(ERASERS)}, got {method!r}")
    if erase_at not in (EVERYWHERE, "probed"):
        raise ValueError(f"erase_at must be 'all' or 'probed', got {erase_at!r}")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must keep at least 2 realms (grouped folds), got {limit}")
    leak = label_in_input(position, attribute)
    if leak:
        raise ValueError(
            f"probing {attribute} at position {position!r} would read the label from the input: {leak}"
        )
    times: dict[str, float] = {}
    start = time.perf_counter()
    world = World(0)  # the world of the synth suite (seed 0) and of the shipped toy checkpoints
    realms = {realm.name for realm in world.realms[:limit]}
    probe_set = world_knowledge_set(world, seed)
    probe_set = probe_set.subset([i for i, row in enumerate(probe_set.rows) if row["realm"] in realms])
    folder = capture(
        model, probe_set, Path(out) / "states", [position], batch_size=batch_size, progress=progress
    )
    states = {d: load_states(folder, d, position) for d in DIRECTIONS}
    times["capture_s"] = time.perf_counter() - start

    start = time.perf_counter()
    labels, classes = probe_set.labels(attribute)
    groups = probe_set.groups(attribute)
    folds = grouped_folds(groups, n_splits)
    null = (
        shuffled_labels(labels, *probe_set.permutation_units(attribute), shuffles, seed) if shuffles else None
    )
    arrays = {d: states[d].numpy() for d in DIRECTIONS}
    layers = probe_layers(arrays, labels, folds, null, groups, seed, progress)
    times["probes_s"] = time.perf_counter() - start
    if baseline:
        start = time.perf_counter()
        twin = untrained_accuracy(
            model,
            probe_set,
            position,
            labels,
            folds,
            Path(out) / "untrained_states",
            seed=seed,
            batch_size=batch_size,
        )
        for k, layer in enumerate(layers):
            for d, (within, _) in PROBES.items():
                layer[within]["untrained_accuracy"] = twin[d][k]
                layer[within]["selectivity"] = layer[within]["mean"] - twin[d][k]
        times["untrained_s"] = time.perf_counter() - start
    majority = majority_share(labels)
    _findings(layers, majority)

    result: dict[str, Any] = {
        "model": getattr(model, "name", type(model).__name__),
        "model_config": model.config(),
        "attribute": attribute,
        "position": position,
        "seed": seed,
        "classes": classes,
        "chance": 1 / len(classes),
        "majority": majority,
        "realms": len(realms),
        "smoke": limit is not None and limit < len(world.realms),
        "rows_per_direction": len(probe_set),
        "folds": len(folds),
        "split_groups": "template" if attribute == "entity" else "entity",
        "shuffles": shuffles,
        "probe": "ridge classifier on standardised states (probes.linear)",
        "layers": [{"layer": name} | row for name, row in zip(layer_names(model), layers, strict=True)],
    }
    if erase:
        start = time.perf_counter()
        where = EVERYWHERE if erase_at == EVERYWHERE else position
        before, rows = erasure_layers(
            model,
            world,
            states,
            labels,
            folds,
            attribute,
            probe_set,
            method=method,
            at=where,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        for layer, row in zip(result["layers"], rows, strict=True):
            layer["erase"] = row
        result["erasure"] = {"method": method, "at": erase_at, "baseline": before, "held_out": True}
        times["erasure_s"] = time.perf_counter() - start
    result["timings"] = times
    return result
