"""Section 2, knowledge inject and edit (the paper's knowledge-manipulation figure): train a new fact in through
one direction (:func:`interventions.editing.edit_run.run_edit`, every editor of the profile), judge both
directions, against the paper's published values — over several spec seeds, pooled per case for a paired
propagation decision (Holm over the section's cases), with each model behind reason-then-draw
(``bridge:MODEL``) as the positive control that decision must detect.

Records: each run's ``records.jsonl`` (edit × condition × item × direction, written by the library) under
``edit/<model>/<kind>-<editor>/seed<S>/``, ``edit/edit.jsonl``, one line per (run, condition, direction,
metric), and ``edit/propagation.jsonl``, one line per pooled case.
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
    command line states), trained on the retain side of the seeded realm split, so that command reproduces a run."""
    from gapeval.synth.world import World
    from interventions.editing.edit_run import build_editor
    from interventions.editing.specs import hold_out

    return build_editor(method, hold_out(World(0), specs, pool, seed=seed), seed=seed, **options)


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


def pooled(runs: Sequence[tuple[int, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The records of several spec seeds as one experiment: edits and items named by seed, so every edit is
    still paired with its own baseline."""
    return [
        {**r, "edit": f"{s}/{r['edit']}", "item": f"{s}/{r['item']}"} for s, records in runs for r in records
    ]


def propagation_cases(cases: Sequence[tuple[str, str, str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One decision per (model, kind, editor, trained direction) over its pooled records, Holm-corrected over
    every case of the section (the positive controls included)."""
    from interventions.editing.metrics import propagation, with_holm

    rows = []
    for model, kind, method, records in cases:
        present = {r["condition"] for r in records}
        rows += [
            {"model": model, "kind": kind, "editor": method, **propagation(records, via)}
            for via in ("und", "gen")
            if via in present and "baseline" in present
        ]
    return with_holm(rows)


def propagation_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ["model", "kind", "editor", "trained", "judged", "rate", "baseline", "up / down / edits", "p"]
    header += ["Holm p", "detected", "min detectable (Holm)", "Δlogp", "net Δlogp"]
    body = [
        [r["model"], r["kind"], r["editor"], LABELS[r["via"]], r["to"], with_ci(r["rate"], r["ci"]), num(r["baseline"]),
         f"{r['up']} / {r['down']} / {r['edits']}", f"{r['p']:.3g}", f"{r.get('p_holm', r['p']):.3g}",
         "yes" if r.get("detected_holm", r["detected"]) else "no",
         num(r.get("min_detectable_rate_holm", r["min_detectable_rate"])),
         with_ci(r["logprob_shift"]["mean"], r["logprob_shift"]["ci"]),
         with_ci(r["logprob_shift_net"]["mean"], r["logprob_shift_net"]["ci"])]
        for r in rows
    ]  # fmt: skip
    return markdown_table(header, body)


def propagation_summary(rows: Sequence[dict[str, Any]]) -> str:
    """One line over the plain models' cases (the bridge's are the positive control) and the controls."""
    plain = [r for r in rows if not r["model"].startswith("bridge:")]
    control = [r for r in rows if r["model"].startswith("bridge:") and r["via"] == "und"]
    found = sum(r.get("detected_holm", r["detected"]) for r in plain)
    mdr = [r.get("min_detectable_rate_holm", r["min_detectable_rate"]) for r in plain]
    worst = "–" if not mdr or None in mdr else num(max(mdr))
    seen = sum(r.get("detected_holm", r["detected"]) for r in control)
    return (
        f"Propagation across directions (paired sign test per edit against its own baseline, Holm over all "
        f"{len(rows)} cases): detected in {found} of {len(plain)} cases (model × kind × editor × trained "
        f"direction); the largest rate a case could miss is {worst}. Positive control (reason-then-draw, "
        f"Train-on-Und → gen): detected in {seen} of {len(control)}; the unedited baseline is the negative control."
    )


def _finding(model: str, kind: str, method: str, summary: dict[str, Any]) -> str:
    by_condition, parts = summary["conditions"], []
    for case in summary["propagation"]:
        via, other = case["via"], case["to"]
        eff, local = by_condition[via][via]["target"], by_condition[via][via]["locality"]
        parts.append(
            f"{LABELS[via]} reaches {via} {with_ci(eff['mean'], eff['ci'])} (held-out locality "
            f"{with_ci(local['mean'], local['ci'])}) and {other} {with_ci(case['rate'], case['ci'])} (baseline "
            f"{num(case['baseline'])}; p={case['p']:.3g}; net Δlogp "
            f"{with_ci(case['logprob_shift_net']['mean'], case['logprob_shift_net']['ci'])})"
        )
    return f"`{model}`, {kind}, {method}: " + "; ".join(parts) + "."


def figure_table(results: Sequence[tuple[str, str, str, dict[str, Any]]], conditions: Sequence[str]) -> str:
    """The paper figure's layout: target accuracy per condition, evaluated in und and in gen."""
    header = ["model", "kind", "editor"] + [f"{d} · {LABELS[c]}" for d in ("und", "gen") for c in conditions]
    body = [
        [model, kind, method]
        + [with_ci(s[c][d]["target"]["mean"], s[c][d]["target"]["ci"]) if c in s else "–" for d in ("und", "gen") for c in conditions]
        for model, kind, method, s in ((m, k, e, x["conditions"]) for m, k, e, x in results)
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


def _runs(ctx: Context, sizes: dict[str, Any]) -> list[tuple[str, str, str, list[str]]]:
    """(model, kind, editor, conditions) of every run: the study's models, then the positive controls (each
    model behind reason-then-draw, ``bridge:MODEL``, LoRA edits trained through und)."""
    conditions = list(sizes["conditions"])
    runs = [
        (m, k, e, conditions) for m in ctx.config.models for k in sizes["kinds"] for e in sizes["editors"]
    ]
    if sizes.get("controls", False):
        runs += [(f"bridge:{m}", "edit", "lora", ["baseline", "und"]) for m in ctx.config.models]
    return runs


def edit_section(ctx: Context) -> Section:
    from gapeval.models.base import Intervenable
    from gapeval.synth.world import World
    from interventions.editing.edit_report import plot, report_text
    from interventions.editing.edit_run import build_editor, read_records, run_edit
    from interventions.editing.specs import hold_out, synth_specs

    sizes, seed = ctx.config.sizes["edit"], ctx.config.seed
    seeds = list(sizes.get("spec_seeds", [seed]))
    folder = ctx.folder("edit")
    section = Section("edit", "Knowledge inject and edit")
    results, rows, cases, per_seed = [], [], [], []
    for spec, kind, method, conditions in _runs(ctx, sizes):
        model = ctx.model(spec)
        if not isinstance(model, Intervenable):
            section.skipped.append(f"`{spec}`: the adapter does not expose the intervention contract")
            continue
        if missing := unrepresentable(model, synth_specs(World(0), kind, sizes["specs"], seeds[0])):
            section.skipped.append(
                f"`{spec}`, {kind}: the model cannot represent the subjects {', '.join(missing[:4])}"
                f"{' …' if len(missing) > 4 else ''} (its vocabulary predates the reserve realms)"
            )
            continue
        # A size profile may cap LoRA's steps (the quick one does: its inject runs would hit the cap).
        options = (
            {"max_steps": sizes["lora_max_steps"]} if method == "lora" and "lora_max_steps" in sizes else {}
        )
        by_seed = []
        for s in seeds:
            specs = synth_specs(World(0), kind, sizes["specs"], s)
            held = hold_out(World(0), specs, ctx.items, seed=s)
            gap = bool(sizes.get("gap", False)) and s == seeds[0]
            out = folder / slug(spec) / f"{kind}-{method}" / f"seed{s}"
            summary = run_edit(
                model,
                specs,
                build_editor(method, held, seed=s, **options),
                held.locality,
                out,
                conditions=conditions,
                seed=s,
                controls=held.controls,
                suite=ctx.items if gap else (),
            )
            records = read_records(out)
            by_seed.append((s, records))
            title = f"{spec}: {method}, {len(specs)} {kind} specs, spec seed {s}"
            plot(summary["conditions"], out / "edit.png", title)
            results.append((spec, f"{kind}, seed {s}", method, summary))
            per_seed += [
                {"model": spec, "kind": f"{kind}, seed {s}", "editor": method, **c}
                for c in summary["propagation"]
            ]
            rel = out.relative_to(ctx.out)
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
                    seed=s,
                    gap=gap,
                    out=out,
                    editor_arg=[f"{k}={json.dumps(v)}" for k, v in options.items()],
                )
            )
            if s == seeds[0]:
                section.table(
                    f"{title} (95 % bootstrap CI over edits; `{rel}/records.jsonl`)",
                    report_text(summary, records, conditions),
                )
                section.figure(title, out / "edit.png", ctx.out)
            section.findings.append(_finding(spec, f"{kind} (spec seed {s})", method, summary))
            rows += [
                {"model": spec, "kind": kind, "editor": method, "spec_seed": s, "condition": c, "direction": d, "metric": m, **est}
                for c, by_d in summary["conditions"].items()
                for d, metrics in by_d.items()
                for m, est in metrics.items()
            ]  # fmt: skip
        cases.append((spec, kind, method, pooled(by_seed)))
    decisions = propagation_cases(cases)
    if decisions:
        section.findings.insert(0, propagation_summary(decisions))
        section.tables.insert(
            0,
            {
                "caption": f"Propagation into the untrained direction, spec seeds {seeds} pooled ({sizes['specs']} "
                "edits each): each edit's outcome against its own unedited outcome (one-sided exact sign test), "
                "Holm over every case here; min detectable = the smallest rate the corrected rule can flag",
                "markdown": propagation_table(decisions),
            },
        )
    if per_seed:
        section.table(
            "Propagation per spec seed (each run alone; Holm over its own two directions)",
            propagation_table(per_seed),
        )
    write_jsonl(folder / "edit.jsonl", rows)
    write_jsonl(folder / "propagation.jsonl", decisions)
    section.records[:0] = ["edit/edit.jsonl", "edit/propagation.jsonl"]
    if results:
        section.tables.insert(
            0,
            {
                "caption": "Accuracy on the target knowledge, per condition and evaluated direction (the paper's "
                "figure; 95 % bootstrap CI over edits; one row per spec seed)",
                "markdown": figure_table(results, list(sizes["conditions"])),
            },
        )
    section.table(
        "Published (GapEval paper figure; published, not run here)",
        published_table(ctx.config.published["edit"]),
    )
    return section
