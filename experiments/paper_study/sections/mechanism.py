"""Section 5, mechanism: where each direction carries a realm's emblem (activation patching grids), whether one
direction's states work in the other (transplants), how far attribution patching agrees with exact patching on
the cells that can differ, whether a linear probe trained on one direction reads the other (transfer, with a
permutation test and an untrained-model baseline), and whether erasing the probed subspace breaks each
direction on held-out realms (LEACE vs a random subspace of the same rank and size of edit).
Each is one library call (``interventions.patching.patch_run``, ``probes.probe_run``) at the config's sizes; the paragraphs
are templated from the numbers with fixed thresholds, so they claim nothing the numbers do not show.

Records: per model, ``mechanism/<model>/{grid,transplant,attribution}/`` (the library's ``summary.json`` and ``arrays.npz``),
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


READABLE = {"resid_pre": "entering layer", "resid_post": "leaving layer"}


def readable(hook: str) -> str:
    """``blocks.1.hook_resid_pre`` → ``entering layer 1``, ``blocks.3.hook_resid_post`` → ``leaving layer 3``
    (other hook points: ``attn_out of layer 2``)."""
    _, layer, kind = hook.split(".", 2)
    kind = kind.removeprefix("hook_")
    return f"{READABLE[kind]} {layer}" if kind in READABLE else f"{kind} of layer {layer}"


def grid_numbers(model: Any, pairs: Sequence[Any], out: Any) -> dict[str, Any]:
    from interventions.hooks import residual_stream
    from interventions.patching.patch_run import grid_study

    summary, _ = grid_study(model, pairs, out)
    directions = summary["directions"]
    return {
        "rows": [readable(p.name) for p in residual_stream(model)],
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
    return {"rows": [readable(r) for r in summary["hooks"]], "routes": routes}


def attribution_numbers(model: Any, pairs: Sequence[Any], out: Any) -> dict[str, Any]:
    """Per direction, means over pairs of attribution's agreement with exact patching on the informative cells."""
    from interventions.patching.attribution import TOP_K
    from interventions.patching.patch_run import attribution_study

    summary, _ = attribution_study(model, pairs, out)
    numbers: dict[str, Any] = {}
    for d, entry in summary["directions"].items():
        rows = entry["agreement"]
        if not rows:
            numbers[d] = None
            continue

        def mean(key: str, rows: list = rows) -> float:
            return sum(r[key] for r in rows) / len(rows)

        numbers[d] = {
            "pairs": len(rows),
            "spearman_all": mean("spearman"),
            "spearman_informative": mean("spearman_informative"),
            "spearman_informative_min": min(r["spearman_informative"] for r in rows),
            "sign_agreement": mean("sign_agreement"),
            "sign_chance": mean("sign_chance"),
            **{
                f"top{k}": {
                    "overlap": sum(r["topk_overlap"][str(k)] for r in rows) / len(rows),
                    "chance": sum(r["topk_chance"][str(k)] for r in rows) / len(rows),
                }
                for k in TOP_K
            },
        }
    return numbers


PROBE_KEYS = ("acc_und", "acc_gen", "und_to_gen", "gen_to_und")
SCORE_FIELDS = ("mean", "ci", "finding", "p_holm", "untrained_accuracy", "selectivity")


def probe_numbers(model: Any, out: Any, sizes: dict[str, Any], seed: int) -> dict[str, Any]:
    from probes.probe_report import plot
    from probes.probe_run import probe_study

    result = probe_study(model, sizes["attribute"], sizes["position"], out, seed=seed,
                         limit=sizes["probe_realms"], progress=False)  # fmt: skip
    write_json(out / "probe.json", result)
    plot(result, out / "probe.png")
    layers = result["layers"]
    return {
        "chance": result["chance"],
        "majority": result["majority"],
        "smoke": result["smoke"],
        "realms": result["realms"],
        "layers": [readable(layer["layer"]) for layer in layers],
        **{k: [{f: layer[k].get(f) for f in SCORE_FIELDS} for layer in layers] for k in PROBE_KEYS},
        "erase": {
            d: [
                {
                    "drop": layer["erase"][d]["drop"],
                    "random_drop": layer["erase"][d]["random_drop"],
                    "finding": layer["erase"][d]["finding"],
                }
                for layer in layers
            ]
            for d in ("und", "gen")
        }
        if "erasure" in result
        else None,
        "baseline": result.get("erasure", {}).get("baseline"),
    }


def _ci(ci: Sequence[float] | None) -> str:
    return f" [{num(ci[0])}, {num(ci[1])}]" if ci else ""


def peak(entries: Sequence[dict[str, Any]], layers: Sequence[str], probe: dict[str, Any]) -> str:
    """'up to 0.91 [0.84, 0.97] (entering layer 3; a finding)': the largest value over layers, its CI, and
    whether it is a finding — never for a smoke run, nor when its CI includes the majority class."""
    value, layer = max(
        ((e, name) for e, name in zip(entries, layers, strict=True)), key=lambda p: p[0]["mean"]
    )
    if probe["smoke"]:
        verdict = "smoke run, no finding claimed"
    elif value["finding"]:
        verdict = "a finding"
    elif value["ci"] and value["ci"][0] <= probe["majority"]:
        verdict = f"not a finding: its CI includes the majority class {num(probe['majority'])}"
    else:
        verdict = f"not a finding: Holm-adjusted permutation p {num(value.get('p_holm'))}"
    extra = ""
    if value.get("untrained_accuracy") is not None:
        extra = f", untrained model {num(value['untrained_accuracy'])}"
    return f"up to {value['mean']:.2f}{_ci(value['ci'])} ({layer}{extra}; {verdict})"


def _drop(entries: Sequence[dict[str, Any]], layers: Sequence[str], smoke: bool) -> str:
    """The largest held-out LEACE drop with its CI, the matched control's drop there, and the verdict."""
    e, layer = max(zip(entries, layers, strict=True), key=lambda p: p[0]["drop"]["value"] or 0.0)
    verdict = "beats the control" if e["finding"] else "not distinguishable from the control"
    verdict = "smoke run, no finding claimed" if smoke else verdict
    return (
        f"up to {num(e['drop']['value'])}{_ci(e['drop']['ci'])} ({layer}; matched random control "
        f"{num(e['random_drop']['value'])}{_ci(e['random_drop']['ci'])}: {verdict})"
    )


def attribution_paragraph(spec: str, attribution: dict) -> str:
    parts = []
    for d, a in attribution.items():
        if a is None:
            parts.append(f"{d}: no pair kept")
            continue
        parts.append(
            f"{d} ρ {num(a['spearman_informative'])} (min {num(a['spearman_informative_min'])}), top-5 overlap "
            f"{num(a['top5']['overlap'])} (chance {num(a['top5']['chance'])}), top-10 {num(a['top10']['overlap'])} "
            f"(chance {num(a['top10']['chance'])}), signs agree {num(a['sign_agreement'])} (chance {num(a['sign_chance'])}); ρ over every cell "
            f"{num(a['spearman_all'])}"
        )
    return (
        f"**Attribution vs exact patching, `{spec}`** (mean over pairs, on the cells whose clean and corrupted "
        "activations differ; over every cell the shared zeros inflate ρ): " + "; ".join(parts) + "."
    )


def paragraphs(
    spec: str, grid: dict, transplant: dict, probe: dict, sizes: dict, attribution: dict | None = None
) -> list[str]:
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
    if attribution is not None:
        out.append(attribution_paragraph(spec, attribution))
    layers = probe["layers"]
    smoke = f"; a smoke run of {probe['realms']} realms" if probe["smoke"] else ""
    out.append(
        f"**Probes, `{spec}`** ({sizes['attribute']} at the {sizes['position']} token, {probe['realms']} realms, "
        f"folds grouped by realm; chance {num(probe['chance'])}, majority {num(probe['majority'])}{smoke}; "
        "95% CI over realms; a finding = CI above the majority class and Holm-adjusted permutation p < 0.05): "
        f"within und {peak(probe['acc_und'], layers, probe)}, within gen {peak(probe['acc_gen'], layers, probe)}; "
        f"trained on und and tested on gen {peak(probe['und_to_gen'], layers, probe)}, gen→und "
        f"{peak(probe['gen_to_und'], layers, probe)}."
    )
    if probe["erase"]:
        base = probe["baseline"]
        out.append(
            f"**Erasure, `{spec}`** (LEACE of the probed subspace at every position, one layer at a time, fitted "
            f"on the training realms and judged on held-out realms' items; control: random directions of the same "
            f"rank and mean squared shift; judged world knowledge without it und {num(base['und'])}, gen "
            f"{num(base['gen'])}): accuracy drops und {_drop(probe['erase']['und'], layers, probe['smoke'])}, gen "
            f"{_drop(probe['erase']['gen'], layers, probe['smoke'])}."
        )
    return out


def finding(spec: str, grid: dict, probe: dict) -> str:
    """One line for the report's findings: where each direction carries the answer, and probe transfer."""
    where = [
        carried(grid["profile"][d]["end"], grid["rows"], f"{d} at the last prompt token")
        for d in ("und", "gen")
        if grid["profile"].get(d)
    ]
    layers = probe["layers"]
    return (
        f"Mechanism, `{spec}`: "
        + ("; ".join(where) or "no patching pair kept (|LD_clean − LD_corrupt| < the minimum gap)")
        + f". A linear probe reads the probed attribute within und {peak(probe['acc_und'], layers, probe)}, "
        f"within gen {peak(probe['acc_gen'], layers, probe)}, and und→gen {peak(probe['und_to_gen'], layers, probe)} "
        f"(chance {num(probe['chance'])}, majority class {num(probe['majority'])})."
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
        attribution = unit(base / "attribution.json", attribution_numbers, model, pairs, base / "attribution")
        probe = unit(base / "probe.json", probe_numbers, model, base / "probe", sizes, seed)
        records.append(
            {
                "model": spec,
                "grid": grid,
                "transplant": transplant,
                "attribution": attribution,
                "probe": probe,
            }
        )
        section.paragraphs += paragraphs(spec, grid, transplant, probe, sizes, attribution)
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
            for mode in ("grid", "transplant", "attribution")
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
