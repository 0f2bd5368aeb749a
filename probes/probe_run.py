"""One probing study of a model: capture, per-layer probes with controls and transfer, causal erasure.

What ``gapeval probe`` runs. Probes read the world-knowledge prompts of every realm (``probes.dataset``);
erasure is judged on the synth suite's world-knowledge items, in both directions, against a same-rank random
erasure. An eraser for layer ``k`` is fitted on the captured states of both directions at the probed position.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gapeval.models.base import DIRECTIONS, Intervenable
from gapeval.suites import get_suite
from gapeval.synth.world import World
from probes.capture import capture, layer_names, load_states
from probes.dataset import item_span, world_knowledge_items, world_knowledge_set
from probes.erase import EVERYWHERE, erased_accuracy
from probes.erasers import ERASERS, random_eraser
from probes.linear import control_labels, grouped_folds, layer_probes, majority_share


def probe_layers(
    und: np.ndarray,
    gen: np.ndarray,
    labels: np.ndarray,
    control: np.ndarray,
    folds: list,
    seed: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Per captured layer, the probe scores of (N, L + 1, d) states as JSON."""
    rows = []
    for k in tqdm(range(und.shape[1]), desc="probes", disable=not progress):
        scores = layer_probes(und[:, k], gen[:, k], labels, control, folds, seed)
        rows.append({name: s.to_json() for name, s in scores.items()})
    return rows


def erasure_layers(
    model: Intervenable,
    world: World,
    states: dict[str, torch.Tensor],
    labels: np.ndarray,
    *,
    method: str,
    at: str,
    seed: int,
    batch_size: int,
    progress: bool,
    realms: set[str],
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Judged accuracy on the world-knowledge items of ``realms`` without erasure, and per layer with the fitted
    and the random eraser, per direction."""
    items = [it for it in world_knowledge_items(get_suite("synth").items) if it.meta["realm"] in realms]
    spans = [item_span(world, it) for it in items]

    def acc(direction: str, layer: int, eraser: Any) -> float | None:
        return erased_accuracy(model, items, spans, direction, layer, eraser, at, seed, batch_size)

    baseline = {d: acc(d, 0, None) for d in DIRECTIONS}
    both = np.concatenate([labels, labels])
    rows = []
    for k in tqdm(range(states["und"].shape[1]), desc=f"erase ({method}, {at})", disable=not progress):
        fitted = ERASERS[method](torch.cat([states["und"][:, k], states["gen"][:, k]]), both)
        control = random_eraser(fitted.bias, fitted.rank, seed + k)
        row: dict[str, Any] = {"rank": fitted.rank}
        for d in DIRECTIONS:
            if fitted.rank == 0:  # nothing to erase (e.g. the same token in every prompt): the identity
                row[d] = row[f"random_{d}"] = baseline[d]
            else:
                row[d], row[f"random_{d}"] = acc(d, k, fitted), acc(d, k, control)
            row[f"drop_{d}"] = _drop(baseline[d], row[d])
            row[f"random_drop_{d}"] = _drop(baseline[d], row[f"random_{d}"])
        rows.append(row)
    return baseline, rows


def _drop(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else before - after


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
    batch_size: int = 64,
    progress: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the study and return its raw numbers (states are captured under ``out/states``).

    ``limit`` keeps the first ``limit`` realms of the world (probing prompts and erasure items alike): a quick
    look, or a test; None keeps all."""
    if method not in ERASERS:
        raise ValueError(f"method must be one of {sorted(ERASERS)}, got {method!r}")
    if erase_at not in (EVERYWHERE, "probed"):
        raise ValueError(f"erase_at must be 'all' or 'probed', got {erase_at!r}")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must keep at least 2 realms (grouped folds), got {limit}")
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
    control = control_labels(labels, probe_set.entities(), seed)
    folds = grouped_folds(probe_set.groups(attribute), n_splits)
    und, gen = (states[d].numpy() for d in DIRECTIONS)
    layers = probe_layers(und, gen, labels, control, folds, seed, progress)
    times["probes_s"] = time.perf_counter() - start

    result: dict[str, Any] = {
        "model": getattr(model, "name", type(model).__name__),
        "model_config": model.config(),
        "attribute": attribute,
        "position": position,
        "seed": seed,
        "classes": classes,
        "chance": 1 / len(classes),
        "majority": majority_share(labels),
        "realms": len(realms),
        "rows_per_direction": len(probe_set),
        "folds": len(folds),
        "split_groups": "template" if attribute == "entity" else "entity",
        "layers": [
            {"layer": name} | row for name, row in zip(layer_names(und.shape[1] - 1), layers, strict=True)
        ],
    }
    if erase:
        start = time.perf_counter()
        where = EVERYWHERE if erase_at == EVERYWHERE else position
        baseline, rows = erasure_layers(
            model,
            world,
            states,
            labels,
            method=method,
            at=where,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            realms=realms,
        )
        for layer, row in zip(result["layers"], rows, strict=True):
            layer["erase"] = row
        result["erasure"] = {"method": method, "at": erase_at, "baseline": baseline}
        times["erasure_s"] = time.perf_counter() - start
    result["timings"] = times
    return result
