"""Section 5, mechanism: where each direction carries a realm's emblem (activation patching grids), whether one
direction's states work in the other (transplants), whether a linear probe trained on one direction reads the
other (transfer), and whether erasing the probed subspace breaks each direction (LEACE vs a random subspace).
Each is one library call (``interventions.patching.patch_run``, ``probes.probe_run``) at the config's sizes; the paragraphs
are templated from the numbers with fixed thresholds, so they claim nothing the numbers do not show.

Records: per model, ``mechanism/<model>/{grid,transplant}/`` (the library's ``summary.json`` and ``arrays.npz``),
``probe/probe.json``, and ``mechanism/mechanism.jsonl`` (the numbers the paragraphs use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiments.paper_study.records import Section, num, slug, unit, write_json, write_jsonl
from experiments.paper_study.study import Context
from interventions.patching.patch_cli import add_arguments as patch_arguments
from probes.probe_cli import add_arguments as probe_arguments

CARRIED = 0.3  # a normalised patching effect at or above this counts as carrying the answer


def _rows_at_or_above(values: Sequence[float | None], labels: Sequence[str]) -> str:
    hits = [
        f"{label} ({v:.2f})"
        for v, label in zip(values, labels, strict=True)
        if v is not None and v >= CARRIED
    ]
    return ", ".join(hits)


def _at_most(values: Sequence[float | None]) -> str:
    finite = [abs(v) for v in values if v is not None]
    return num(max(finite)) if finite else "–"


def carried(values: Sequence[float | None], labels: Sequence[str], what: str) -> str:
    """'<what> carries it entering layer 1 (0.57), …' or '<what> carries it nowhere (|mean| ≤ 0.04)'."""
    hits = _rows_at_or_above(values, labels)
    return f"{what} carries it {hits}" if hits else f"{what} carries it nowhere (|mean| ≤ {_at_most(values)})"


def readable(row: str) -> str:
    """``in 1`` → ``entering layer 1``, ``out 3`` → ``leaving layer 3`` (the library's residual row labels)."""
    where, _, layer = row.partition(" ")
    return {"in": "entering layer", "out": "leaving layer"}.get(where, where) + f" {layer}"


def grid_numbers(model: Any, pairs: Sequence[Any], out: Any) -> dict[str, Any]:
    from interventions.patching.grid import grid_rows
    from interventions.patching.patch_report import row_labels
    from interventions.patching.patch_run import grid_study

    summary, _ = grid_study(model, pairs, out)
    directions = summary["directions"]
    return {
        "rows": [readable(r) for r in row_labels("resid", grid_rows(model, "resid"))],
        "pairs": {d: len(v["pairs"]) for d, v in directions.items()},
        "profile": {d: v.get("resid_profile") for d, v in directions.items()},
    }


def transplant_numbers(model: Any, pairs: Sequence[Any], out: Any, seed: int) -> dict[str, Any]:
    from interventions.patching.patch_run import transplant_study

    summary, _ = transplant_study(model, pairs, out, seed=seed)
    routes = {}
    for route, r in summary["routes"].items():
        routes[route] = {
            "pairs": r["pairs"],
            **{where: [float(v) for v in r[where]["mean"]] for where in ("span", "end") if where in r},
            "judged_new": {w: r["judged"][w]["new"] for w in ("span", "end")} if "judged" in r else None,
        }
    return {"rows": [readable(r) for r in summary["layers"]], "routes": routes}


def probe_numbers(model: Any, out: Any, sizes: dict[str, Any], seed: int) -> dict[str, Any]:
    from probes.probe_report import plot
    from probes.probe_run import probe_study

    result = probe_study(model, sizes["attribute"], sizes["position"], out, seed=seed,
                         limit=sizes["probe_realms"], progress=False)  # fmt: skip
    write_json(out / "probe.json", result)
    plot(result, out / "probe.png")
    keys = ("acc_und", "acc_gen", "und_to_gen", "gen_to_und")
    return {
        "chance": result["chance"],
        "majority": result["majority"],
        "layers": [layer["layer"] for layer in result["layers"]],
        **{k: [layer[k]["mean"] for layer in result["layers"]] for k in keys},
        "erase": [layer.get("erase") for layer in result["layers"]],
        "baseline": result.get("erasure", {}).get("baseline"),
    }


def peak(values: Sequence[float | None], layers: Sequence[str]) -> str:
    """'up to 0.96 (layer 3)': the largest value over layers and where it is."""
    finite = [(v, layer) for v, layer in zip(values, layers, strict=True) if v is not None]
    if not finite:
        return "–"
    value, layer = max(finite, key=lambda pair: pair[0])
    return f"up to {value:.2f} (layer {layer})"


def paragraphs(spec: str, grid: dict, transplant: dict, probe: dict, sizes: dict) -> list[str]:
    rows = grid["rows"]
    out = []
    parts = []
    for d in ("und", "gen"):
        profile = grid["profile"].get(d)
        if not profile:
            parts.append(f"{d}: no pair kept")
            continue
        parts.append(
            f"{carried(profile['end'], rows, f'{d} at the last prompt token')}; "
            f"{carried(profile['span'], rows, 'at the entity span it')}"
        )
    out.append(
        f"**Patching, `{spec}`** (pairs kept: {', '.join(f'{d} {n}' for d, n in grid['pairs'].items())}; residual stream, normalised effect, "
        f"carrying = ≥ {CARRIED}; entering layer 0 = the embeddings): " + ". ".join(parts) + "."
    )
    parts = []
    for route, r in transplant["routes"].items():
        judged = r.get("judged_new") or {}
        best = {w: max(v, default=0.0) for w, v in judged.items()}
        metric = (
            f"{carried(r['span'], transplant['rows'], 'the span')}, "
            f"{carried(r['end'], transplant['rows'], 'the last prompt token')}"
            if r["pairs"]
            else "no pair kept for the normalised metric"
        )
        parts.append(
            f"{route}: {metric}"
            + (f"; judged decodes: at best (over rows) {num(best.get('span'))} (span) / {num(best.get('end'))} "
               "(end) of the pairs answer with the transplanted entity" if judged else "")
        )  # fmt: skip
    out.append(
        f"**Transplant, `{spec}`** (one direction's residual stream written into the other's run; normalised "
        "toward the transplanted entity; entering layer 0 = the token's embedding itself; values near 0.5 can "
        "also mean a broken run, docs/patching.md): " + "; ".join(parts) + "."
    )
    layers = probe["layers"]
    out.append(
        f"**Probes, `{spec}`** ({sizes['attribute']} at the {sizes['position']} token, {sizes['probe_realms']} "
        f"realms, folds grouped by realm; chance {num(probe['chance'])}, majority {num(probe['majority'])}): "
        f"within und {peak(probe['acc_und'], layers)}, within gen {peak(probe['acc_gen'], layers)}; trained on "
        f"und and tested on gen {peak(probe['und_to_gen'], layers)}, gen→und {peak(probe['gen_to_und'], layers)}."
    )
    erased = [(layer, e) for layer, e in zip(layers, probe["erase"], strict=True) if e]
    if erased:
        names = [layer for layer, _ in erased]
        random = _at_most([e[k] for _, e in erased for k in ("random_drop_und", "random_drop_gen")])
        out.append(
            f"**Erasure, `{spec}`** (LEACE of the probed subspace at every position, one layer at a time; judged "
            f"world knowledge without it und {num(probe['baseline']['und'])}, gen {num(probe['baseline']['gen'])}): "
            f"accuracy drops und {peak([e['drop_und'] for _, e in erased], names)}, gen "
            f"{peak([e['drop_gen'] for _, e in erased], names)}; a random subspace of the same rank drops at most "
            f"{random}."
        )
    return out


def finding(spec: str, grid: dict, probe: dict) -> str:
    """One line for the report's findings: where each direction carries the answer, and probe transfer."""
    where = [
        carried(grid["profile"][d]["end"], grid["rows"], f"{d} at the last prompt token")
        for d in ("und", "gen")
        if grid["profile"].get(d)
    ]
    return (
        f"Mechanism, `{spec}`: "
        + ("; ".join(where) or "no patching pair kept (|LD_clean − LD_corrupt| < the minimum gap)")
        + ". A linear probe reads the probed attribute within und "
        f"{peak(probe['acc_und'], probe['layers'])}, within gen {peak(probe['acc_gen'], probe['layers'])}, and "
        f"und→gen {peak(probe['und_to_gen'], probe['layers'])} (chance {num(probe['chance'])}, majority class {num(probe['majority'])})."
    )


def mechanism_section(ctx: Context) -> Section:
    from gapeval.models.base import Intervenable
    from interventions.patching.pairs import synth_pairs

    sizes, seed = ctx.config.sizes["mechanism"], ctx.config.seed
    folder = ctx.folder("mechanism")
    section = Section("mechanism", "Mechanism: patching, transplant, probes, erasure")
    records = []
    for spec in ctx.config.models:
        model = ctx.model(spec)
        if not isinstance(model, Intervenable):
            section.skipped.append(f"`{spec}`: the adapter does not expose the intervention contract")
            continue
        base = folder / slug(spec)
        pairs = synth_pairs(model, sizes["pairs"], seed=seed)
        grid = unit(base / "grid.json", grid_numbers, model, pairs, base / "grid")
        transplant = unit(
            base / "transplant.json", transplant_numbers, model, pairs, base / "transplant", seed
        )
        probe = unit(base / "probe.json", probe_numbers, model, base / "probe", sizes, seed)
        records.append({"model": spec, "grid": grid, "transplant": transplant, "probe": probe})
        section.paragraphs += paragraphs(spec, grid, transplant, probe, sizes)
        section.findings.append(finding(spec, grid, probe))
        for d in ("und", "gen"):
            if (base / "grid" / f"grid_{d}_resid.png").exists():
                section.figure(
                    f"`{spec}`: patching the residual stream, {d}",
                    base / "grid" / f"grid_{d}_resid.png",
                    ctx.out,
                )
        for route in ("und_to_gen", "gen_to_und"):
            if (base / "transplant" / f"transplant_{route}.png").exists():
                section.figure(
                    f"`{spec}`: transplant {route.replace('_to_', '→')}",
                    base / "transplant" / f"transplant_{route}.png",
                    ctx.out,
                )
        section.figure(f"`{spec}`: probes and erasure", base / "probe" / "probe.png", ctx.out)
        section.commands += [
            ctx.command(
                "patch",
                patch_arguments,
                model=spec,
                pairs=sizes["pairs"],
                mode=mode,
                seed=seed,
                out=base / mode,
            )
            for mode in ("grid", "transplant")
        ] + [
            ctx.command(
                "probe",
                probe_arguments,
                model=spec,
                attribute=sizes["attribute"],
                position=sizes["position"],
                limit=sizes["probe_realms"],
                seed=seed,
                out=base / "probe",
            )
        ]
    write_jsonl(folder / "mechanism.jsonl", records)
    section.records.append("mechanism/mechanism.jsonl")
    return section
