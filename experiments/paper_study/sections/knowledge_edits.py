"""Section 2, knowledge inject and edit (the paper's knowledge-manipulation figure): train a new fact in through
one direction (:func:`interventions.editing.edit_run.run_edit`, both editors), judge both directions, against the paper's
published values.

Records: each run's ``records.jsonl`` (edit × condition × item × direction, written by the library) under
``edit/<model>/<kind>-<editor>/``, and ``edit/edit.jsonl``, one line per (run, condition, direction, metric).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from experiments.paper_study.records import Section, markdown_table, num, slug, with_ci, write_jsonl
from experiments.paper_study.study import Context
from interventions.editing.edit_cli import add_arguments as edit_arguments

LABELS = {"baseline": "Baseline", "und": "Train-on-Und", "gen": "Train-on-Gen", "both": "Train-on-Both"}
PUBLISHED_ORDER = ("und", "gen", "baseline")  # the order of the config's published triples


def make_editor(method: str, specs: Sequence[Any], pool: Sequence[Any], seed: int, **options: Any) -> Any:
    """The editor ``gapeval edit --method METHOD`` builds with its defaults (and ``options``, which the printed
    command line states), so that command reproduces a run."""
    from interventions.editing.edit_run import build_editor
    from interventions.editing.specs import locality_items

    return build_editor(method, specs, locality_items(specs, pool), pool, seed=seed, **options)


def unrepresentable(model: Any, specs: Sequence[Any]) -> list[str]:
    """Subjects of ``specs`` the model cannot write in its prompts (e.g. names outside its vocabulary)."""
    from gapeval.models.base import Request

    missing = []
    for spec in specs:
        try:
            model.span_positions(Request(spec.id, spec.targets[0]["und"]), spec.subject, "und")
        except ValueError:
            missing.append(spec.subject)
    return missing


def propagation(summary: dict[str, Any], via: str) -> dict[str, Any]:
    """Train-on-``via``: efficacy in ``via``, and the other direction against its baseline."""
    other = "gen" if via == "und" else "und"
    after, before = summary[via][other], summary["baseline"][other]
    ci = after["target"]["ci"]
    return {
        "efficacy": summary[via][via]["target"],
        "other": other,
        "after": after["target"],
        "baseline": before["target"]["mean"],
        "above_baseline": ci is not None and ci[0] > before["target"]["mean"],
        "logprob_shift": after["logprob_shift"],
    }


def propagation_summary(results: Sequence[tuple[str, str, str, dict[str, Any]]]) -> str:
    """One line over every (model, kind, editor, trained direction): how many reach the other direction."""
    cases = [
        propagation(s, via)
        for _, _, _, s in results
        for via in ("und", "gen")
        if via in s and "baseline" in s
    ]
    above = sum(p["above_baseline"] for p in cases)
    shifted = sum(p["logprob_shift"]["ci"] is not None and p["logprob_shift"]["ci"][0] > 0 for p in cases)
    return (
        f"Propagation across directions: in {above} of {len(cases)} cases (model × kind × editor × trained "
        f"direction) the untrained direction's target accuracy rose above its baseline (95 % CI lower bound); its "
        f"log P(new) − log P(old) rose (CI above 0) in {shifted} of {len(cases)}."
    )


def _finding(model: str, kind: str, method: str, summary: dict[str, Any]) -> str:
    parts = []
    for via in ("und", "gen"):
        if via not in summary or "baseline" not in summary:
            continue
        p = propagation(summary, via)
        shift = p["logprob_shift"]
        parts.append(
            f"{LABELS[via]} reaches {via} {with_ci(p['efficacy']['mean'], p['efficacy']['ci'])} and {p['other']} "
            f"{with_ci(p['after']['mean'], p['after']['ci'])} (baseline {num(p['baseline'])}; "
            f"{'above' if p['above_baseline'] else 'not above'} it; Δlogp {with_ci(shift['mean'], shift['ci'])})"
        )
    return f"`{model}`, {kind}, {method}: " + "; ".join(parts) + "."


def figure_table(results: Sequence[tuple[str, str, str, dict[str, Any]]], conditions: Sequence[str]) -> str:
    """The paper figure's layout: target accuracy per condition, evaluated in und and in gen."""
    header = ["model", "kind", "editor"] + [f"{d} · {LABELS[c]}" for d in ("und", "gen") for c in conditions]
    body = [
        [model, kind, method]
        + [with_ci(s[c][d]["target"]["mean"], s[c][d]["target"]["ci"]) if c in s else "–" for d in ("und", "gen") for c in conditions]
        for model, kind, method, s in results
    ]  # fmt: skip
    return markdown_table(header, body)


def published_table(published: dict[str, Any]) -> str:
    body = [
        [kind, direction, model, *(num(v) for v in values)]
        for kind, by_direction in published.items()
        for direction, by_model in by_direction.items()
        for model, values in by_model.items()
    ]
    return markdown_table(["kind", "evaluated in", "model", *(LABELS[c] for c in PUBLISHED_ORDER)], body)


def edit_section(ctx: Context) -> Section:
    from gapeval.models.base import Intervenable
    from gapeval.synth.world import World
    from interventions.editing.edit_report import format_table, group_tables, plot
    from interventions.editing.edit_run import read_records, run_edit
    from interventions.editing.metrics import summarize_groups
    from interventions.editing.specs import locality_items, synth_specs

    sizes, seed = ctx.config.sizes["edit"], ctx.config.seed
    conditions = list(sizes["conditions"])
    folder = ctx.folder("edit")
    section = Section("edit", "Knowledge inject and edit")
    results, rows = [], []
    for spec in ctx.config.models:
        model = ctx.model(spec)
        if not isinstance(model, Intervenable):
            section.skipped.append(f"`{spec}`: the adapter does not expose the intervention contract")
            continue
        for kind in sizes["kinds"]:
            specs = synth_specs(World(0), kind, sizes["specs"], seed)
            if missing := unrepresentable(model, specs):
                section.skipped.append(
                    f"`{spec}`, {kind}: the model cannot represent the subjects {', '.join(missing[:4])}"
                    f"{' …' if len(missing) > 4 else ''} (its vocabulary predates the reserve realms)"
                )
                continue
            locality = locality_items(specs, ctx.items)
            for method in sizes["editors"]:
                out = folder / slug(spec) / f"{kind}-{method}"
                # A size profile may cap LoRA's steps (the quick one does: its inject runs would hit the cap).
                options = (
                    {"max_steps": sizes["lora_max_steps"]}
                    if method == "lora" and "lora_max_steps" in sizes
                    else {}
                )
                editor = make_editor(method, specs, ctx.items, seed, **options)
                summary = run_edit(model, specs, editor, locality, out, conditions=conditions, seed=seed)
                title = f"{spec}: {method}, {len(specs)} {kind} specs"
                plot(summary, out / "edit.png", title)
                results.append((spec, kind, method, summary))
                rel = out.relative_to(ctx.out)
                records = read_records(out)
                groups = summarize_groups(records, conditions)
                section.table(
                    f"{title} (95 % bootstrap CI over edits; `{rel}/records.jsonl`)",
                    format_table(summary) + group_tables(records, groups),
                )
                section.figure(title, out / "edit.png", ctx.out)
                section.records.append(f"{rel}/records.jsonl")
                section.commands.append(
                    ctx.command(
                        "edit",
                        edit_arguments,
                        model=spec,
                        kind=kind,
                        edits=len(specs),
                        method=method,
                        conditions=",".join(conditions),
                        seed=seed,
                        out=out,
                        editor_arg=[f"{k}={json.dumps(v)}" for k, v in options.items()],
                    )
                )
                section.findings.append(_finding(spec, kind, method, summary))
                section.findings += [
                    _finding(spec, f"{kind} ({group})", method, by_group)
                    for group, by_group in groups.items()
                ]
                rows += [
                    {"model": spec, "kind": kind, "editor": method, "condition": c, "direction": d, "metric": m, **est}
                    for c, by_d in summary.items()
                    for d, metrics in by_d.items()
                    for m, est in metrics.items()
                ]  # fmt: skip
    if results:
        section.findings.insert(0, propagation_summary(results))
    write_jsonl(folder / "edit.jsonl", rows)
    section.records.insert(0, "edit/edit.jsonl")
    if results:
        section.tables.insert(
            0,
            {
                "caption": "Accuracy on the target knowledge, per condition and evaluated direction (the paper's "
                "figure; 95 % bootstrap CI over edits)",
                "markdown": figure_table(results, conditions),
            },
        )
    section.table(
        "Published (GapEval paper figure; published, not run here)",
        published_table(ctx.config.published["edit"]),
    )
    return section
