"""The four ``gapeval patch`` modes over a list of pairs, as library functions: each writes its files into ``out``
and returns ``(summary, table)`` (the JSON summary and the text table the command prints). ``settings`` (what
produced the run, e.g. the command's arguments) is written into the summary as given.

Pairs whose clean and corrupted runs are closer than ``min_gap`` nats (|LD_clean − LD_corrupt|) cannot be
normalised reliably: they are dropped per direction and listed in the summary with their gap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gapeval.models.base import DIRECTIONS, Intervenable
from interventions.hooks import residual_stream
from interventions.patching import patch_report as report
from interventions.patching.attribution import TOP_K, agreement, attribution_grid, informative, verify_top
from interventions.patching.grid import GRIDS, Run, grid, grid_points, run
from interventions.patching.pairs import Pair
from interventions.patching.patched_decoding import Condition, edit_records, edit_table
from interventions.patching.transplant import (
    ROUTES,
    WHERE,
    judged_arrays,
    shares,
    transplant_decodes,
    transplant_pair,
)

Result = tuple[dict[str, Any], str]


def _runs(model: Intervenable, pair: Pair, direction: str) -> tuple[Run, Run]:
    return tuple(
        run(model, pair.request(r, direction), direction, pair.answers(direction))
        for r in ("clean", "corrupt")
    )  # type: ignore[return-value]


class _Collector:
    """Per-direction grids of the kept pairs, with what labels and drops need."""

    def __init__(self) -> None:
        self.grids: dict[str, dict[str, list[np.ndarray]]] = {d: {} for d in DIRECTIONS}
        self.kept: dict[str, list[str]] = {d: [] for d in DIRECTIONS}
        self.lengths: dict[str, list[int]] = {d: [] for d in DIRECTIONS}
        self.spans: dict[str, list[list[int]]] = {d: [] for d in DIRECTIONS}
        self.gaps: dict[str, list[float]] = {d: [] for d in DIRECTIONS}
        self.dropped: dict[str, list[dict[str, Any]]] = {d: [] for d in DIRECTIONS}

    def admit(self, model: Intervenable, pair: Pair, clean: Run, corrupt: Run, min_gap: float) -> bool:
        d, gap = corrupt.direction, clean.ld - corrupt.ld
        if abs(gap) < min_gap:
            self.dropped[d].append({"pair": pair.id, "gap": gap})
            return False
        self.kept[d].append(pair.id)
        self.gaps[d].append(gap)
        self.lengths[d].append(corrupt.prompt_length)
        self.spans[d].append(model.span_positions(corrupt.request, pair.spans[1], d))
        return True

    def add(self, direction: str, name: str, values: dict[str, np.ndarray]) -> None:
        for component, array in values.items():
            self.grids[direction].setdefault(f"{name}/{direction}/{component}", []).append(array)

    def columns(self, direction: str) -> list[str]:
        return report.position_labels(self.lengths[direction], self.spans[direction])

    def stacks(self, direction: str) -> dict[str, np.ndarray]:
        return {key: report.right_align(grids) for key, grids in self.grids[direction].items()}

    def direction_summary(self, direction: str) -> dict[str, Any]:
        return {
            "pairs": self.kept[direction],
            "gaps": self.gaps[direction],
            "dropped": self.dropped[direction],
            "columns": self.columns(direction) if self.kept[direction] else [],
        }


def _profile(stack: np.ndarray, columns: list[str]) -> dict[str, list[float]]:
    """Per residual row: mean over pairs of the best span cell, and of the last prompt token."""
    span = [j for j, c in enumerate(columns) if c == "span"]
    return {
        "span": np.nanmean(np.nanmax(stack[:, :, span], axis=2), 0).tolist() if span else [],
        "end": np.nanmean(stack[:, :, -1], 0).tolist(),
    }


def hook_names(model: Intervenable) -> dict[str, list[str]]:
    """Each grid's rows as hook-point names (row labels in plots, tables and the JSON)."""
    return {g: [p.name for p in grid_points(model, g)] for g in GRIDS}


def _plot_grids(
    out: Path, stacks: dict[str, np.ndarray], rows: dict[str, list[str]], columns: list[str], title: str
) -> None:
    for key, stack in stacks.items():
        report.heatmap(
            out / f"{key.replace('/', '_')}.png", stack, rows[key.split("/")[-1]], columns, f"{title} {key}"
        )


def kept(summary: dict[str, Any], pairs: int, min_gap: float) -> tuple[list[str], bool]:
    """One line per direction (grid, attribution) or route (transplant): how many of the ``pairs`` were kept and
    why the others were not; and whether any was kept anywhere (a run that kept none measured nothing)."""
    groups = summary.get("directions") or summary.get("routes") or {}
    lines, any_kept = [], not groups
    skipped = summary.get("skipped", [])
    for name, entry in groups.items():
        n = entry["pairs"] if isinstance(entry["pairs"], int) else len(entry["pairs"])
        any_kept |= n > 0
        why = []
        if entry["dropped"]:
            gaps = ", ".join(f"{d['pair']} {d['gap']:.3g}" for d in entry["dropped"])
            why.append(
                f"{len(entry['dropped'])} with |LD_clean - LD_corrupt| < --min-gap {min_gap:g} nats ({gaps})"
            )
        if skipped:
            why.append(f"{len(skipped)} whose spans tokenise differently in the two directions")
        lines.append(f"{name}: kept {n} of {pairs} pairs" + (f"; dropped {'; '.join(why)}" if why else ""))
    return lines, any_kept


def grid_study(
    model: Intervenable,
    pairs: Sequence[Pair],
    out: Path,
    *,
    min_gap: float = 0.5,
    max_rows: int = 256,
    backend: str = "torch",
    top: int = 10,
    settings: dict[str, Any] | None = None,
) -> Result:
    """Layers × positions × component grids in both directions, averaged over pairs."""
    seen, seconds = _Collector(), []
    for pair in tqdm(pairs, desc="grid", unit="pair"):
        start = time.perf_counter()
        for d in DIRECTIONS:
            clean, corrupt = _runs(model, pair, d)
            if seen.admit(model, pair, clean, corrupt, min_gap):
                seen.add(d, "grid", grid(model, clean, corrupt, max_rows=max_rows, backend=backend))
        seconds.append(time.perf_counter() - start)
    summary: dict[str, Any] = {
        "settings": settings,
        "mode": "grid",
        "seconds_per_pair": float(np.mean(seconds)),
        "directions": {},
    }
    arrays, cells, rows = {}, [], hook_names(model)
    summary["hooks"] = rows
    for d in DIRECTIONS:
        summary["directions"][d] = seen.direction_summary(d)
        if not seen.kept[d]:
            continue
        stacks, columns = seen.stacks(d), seen.columns(d)
        arrays |= stacks
        _plot_grids(out, stacks, rows, columns, "patching")
        summary["directions"][d]["resid_profile"] = _profile(stacks[f"grid/{d}/resid"], columns)
        summary["directions"][d]["mean"] = {key: np.nanmean(s, 0) for key, s in stacks.items()}
        cells += report.top_cells(stacks, rows, columns, top)
    cells = sorted(cells, key=lambda c: -abs(c["mean"]))[:top]
    summary["top"] = cells
    report.write(out, arrays, summary)
    return summary, report.table(cells, ("grid", "hook", "position", "mean", "std"))


def transplant_study(
    model: Intervenable,
    pairs: Sequence[Pair],
    out: Path,
    *,
    min_gap: float = 0.5,
    max_rows: int = 256,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
) -> Result:
    """Per layer, und states into the gen run and back, at the entity span and the last prompt token: the
    normalised metric (pairs whose gap is at least ``min_gap``) and judged decodes (every transplanted pair)."""
    kept: dict[str, list[dict[str, np.ndarray]]] = {}
    dropped: dict[str, list[dict[str, Any]]] = {}
    skipped: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    for pair in tqdm(pairs, desc="transplant", unit="pair"):
        try:
            result = transplant_pair(model, pair, max_rows=max_rows)
        except ValueError as err:  # the span tokenises differently in the two directions
            skipped.append({"pair": pair.id, "reason": str(err)})
            continue
        records += transplant_decodes(model, pair, seed=seed)
        for route, values in result.items():
            gap = float(values["gap"][0] - values["gap"][1])
            if abs(gap) < min_gap:
                dropped.setdefault(route, []).append({"pair": pair.id, "gap": gap})
            else:
                kept.setdefault(route, []).append(values)
    labels = [p.name for p in residual_stream(model)]
    routes = [f"{a}->{b}" for a, b in ROUTES]
    summary: dict[str, Any] = {
        "settings": settings,
        "mode": "transplant",
        "hooks": labels,
        "skipped": skipped,
        "routes": {r: {"pairs": len(kept.get(r, [])), "dropped": dropped.get(r, [])} for r in routes},
        "records": records,
    }
    arrays, rows = {}, [{"hook": label} for label in labels]
    for route, results in kept.items():
        stacks = {where: np.stack([r[where] for r in results]) for where in WHERE}
        report.layer_plot(
            out / f"transplant_{route.replace('->', '_to_')}.png", stacks, labels, f"transplant {route}"
        )
        for where, stack in stacks.items():
            arrays[f"transplant/{route}/{where}"] = stack
            mean, std = np.nanmean(stack, 0), np.nanstd(stack, 0)
            summary["routes"][route][where] = {"mean": mean, "std": std}
            for i, row in enumerate(rows):
                row[f"{route} {where}"] = float(mean[i])
    verdicts = judged_arrays(records)
    arrays |= {f"judged/{key}": v for key, v in verdicts.items()}
    judged_rows = [{"hook": "unpatched"}] + [{"hook": label} for label in labels]
    for route in routes if records else []:
        judged = {
            w: {m: shares(verdicts[f"{route}/{w}/{m}"]) for m in ("new", "old")} for w in ("none", *WHERE)
        }
        summary["routes"][route]["judged"] = {"pairs": len(verdicts[f"{route}/none/new"])} | judged
        for where in WHERE:
            marks = [(judged["none"]["new"][0], judged["none"]["old"][0])]
            marks += zip(judged[where]["new"], judged[where]["old"], strict=True)
            for row, (new, old) in zip(judged_rows, marks, strict=True):
                row[f"{route} {where}"] = "/".join("-" if np.isnan(v) else f"{v:.2f}" for v in (new, old))
    report.write(out, arrays, summary)
    columns = ["hook"] + [f"{route} {where}" for route in kept for where in WHERE]
    judged_columns = ["hook"] + [f"{route} {where}" for route in routes for where in WHERE]
    return summary, "\n".join(
        [
            "normalised metric (0: the receiving run on its own entity, 1: on the transplanted one)",
            report.table(rows, columns),
            "judged decodes, share of pairs new/old (new: answers for the transplanted entity; old: its own)",
            report.table(judged_rows, judged_columns),
        ]
    )


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _agreement_row(direction: str, agreements: list[dict[str, Any]], errors: list[float], top: int) -> dict:
    """One printed row: means over pairs of :func:`interventions.patching.attribution.agreement`'s numbers."""
    row: dict[str, Any] = {
        "direction": direction,
        "pairs": len(agreements),
        "rho all": _mean([a["spearman"] for a in agreements]),
        "rho informative": _mean([a["spearman_informative"] for a in agreements]),
        "rho inf. min": min((a["spearman_informative"] for a in agreements), default=None),
        "sign agree (chance)": f"{_mean([a['sign_agreement'] for a in agreements]):.2f} "
        f"({_mean([a['sign_chance'] for a in agreements]):.2f})",
        f"top-{top} |attr-exact|": _mean(errors),
    }
    for k in TOP_K:
        overlap = _mean([a["topk_overlap"][str(k)] for a in agreements])
        chance = _mean([a["topk_chance"][str(k)] for a in agreements])
        row[f"top-{k} overlap (chance)"] = "-" if overlap is None else f"{overlap:.2f} ({chance:.2f})"
    return row


def attribution_study(
    model: Intervenable,
    pairs: Sequence[Pair],
    out: Path,
    *,
    min_gap: float = 0.5,
    max_rows: int = 256,
    top: int = 10,
    settings: dict[str, Any] | None = None,
) -> Result:
    """Attribution grids, the exact grids they estimate, their agreement on the informative cells
    (:func:`interventions.patching.attribution.agreement`, per pair and direction), and the top cells verified."""
    seen = _Collector()
    agreements: dict[str, list[dict[str, Any]]] = {d: [] for d in DIRECTIONS}
    verified: dict[str, list[dict[str, Any]]] = {d: [] for d in DIRECTIONS}
    seconds = {"attribution": [], "exact": []}
    for pair in tqdm(pairs, desc="attribution", unit="pair"):
        for d in DIRECTIONS:
            clean, corrupt = _runs(model, pair, d)
            if not seen.admit(model, pair, clean, corrupt, min_gap):
                continue
            start = time.perf_counter()
            estimate = attribution_grid(model, clean, corrupt)
            middle = time.perf_counter()
            exact = grid(model, clean, corrupt, max_rows=max_rows)
            seconds["attribution"].append(middle - start)
            seconds["exact"].append(time.perf_counter() - middle)
            seen.add(d, "attribution", estimate)
            seen.add(d, "exact", exact)
            cells = informative(model, clean, corrupt)
            agreements[d].append({"pair": pair.id} | agreement(estimate, exact, cells))
            verified[d].append({"pair": pair.id, "cells": verify_top(model, clean, corrupt, estimate, top)})
    summary: dict[str, Any] = {
        "settings": settings,
        "mode": "attribution",
        "seconds_per_grid": {k: float(np.mean(v)) if v else None for k, v in seconds.items()},
        "hooks": hook_names(model),
        "directions": {},
    }
    arrays, rows = {}, []
    for d in DIRECTIONS:
        summary["directions"][d] = seen.direction_summary(d) | {
            "agreement": agreements[d],
            "top_verified": verified[d],
        }
        if not seen.kept[d]:
            continue
        stacks = seen.stacks(d)
        arrays |= stacks
        estimates = {k: s for k, s in stacks.items() if k.startswith("attribution/")}
        _plot_grids(out, estimates, summary["hooks"], seen.columns(d), "")
        errors = [abs(c["attribution"] - c["exact"]) for v in verified[d] for c in v["cells"]]
        rows.append(_agreement_row(d, agreements[d], errors, top))
    report.write(out, arrays, summary)
    columns = list(rows[0]) if rows else ["direction", "pairs"]
    return summary, "\n".join(
        [
            "attribution vs exact patching; rho informative, top-k overlap and sign agreement are read on the "
            "cells whose clean and corrupted activations differ (rho all also counts the shared zeros)",
            report.table(rows, columns),
        ]
    )


def edit_study(
    model: Intervenable,
    pairs: Sequence[Pair],
    out: Path,
    conditions: Sequence[Condition],
    *,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
) -> Result:
    """Patching during decoding, judged: per condition, the share of pairs answering with the clean entity's
    emblem (new) or still the corrupted one's (old), in each direction."""
    with tqdm(total=len(pairs) * len(DIRECTIONS) * len(conditions), desc="edit", unit="decode") as bar:
        records = edit_records(model, pairs, conditions, seed=seed, progress=bar)
    rows = edit_table(records)
    summary = {
        "settings": settings,
        "mode": "edit",
        "conditions": [c.name for c in conditions],
        "table": rows,
        "records": records,
    }
    report.write(out, {}, summary)
    return summary, report.table(rows, ("condition", "und_new", "und_old", "gen_new", "gen_old"))
