"""Section 3, reason-then-draw: does generation fail because the knowledge is missing from it, or because the
question never reaches it? World-knowledge items asked plainly and through
:class:`gapeval.models.bridge.ReasonThenDraw` (ask in text, then draw the own answer), split by whether training
ever pictured the realm; then the same on models edited through text only (Train-on-Und): does bridging carry
the text edit into pictures?

Records: ``bridge/records.jsonl``, one line per (model, part, condition, item): und, gen and bridged-gen verdicts,
the text answer and the drawing prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiments.paper_study.records import Section, markdown_table, num, slug, unit, with_ci, write_jsonl
from experiments.paper_study.study import Context

SPLITS = {True: "pictured in training", False: "text only"}


def ask(
    model: Any, items: Sequence[Any], template: str, seed: int, drawn: bool = False
) -> list[dict[str, Any]]:
    """Per item: und and gen verdicts asked plainly, and the verdict of the bridged drawing; with ``drawn``,
    also the (shape, colour) kinds the plain drawing shows, as the pixel reader parses them."""
    from gapeval.models.bridge import ReasonThenDraw
    from gapeval.synth.world import parse_scene
    from interventions.judged import judged

    plain = judged(model, items, seed=seed, keep_images=drawn)
    bridge = ReasonThenDraw.for_items(model, items, template)
    bridged = judged(bridge, items, directions=("gen",), seed=seed)
    return [
        {
            "item": item.id,
            "realm": item.meta.get("realm"),
            "pictured": item.meta.get("pictured_in_training"),
            "edit": item.meta.get("edit"),
            "und": p["und"]["correct"],
            "gen": p["gen"]["correct"],
            "bridged": b["gen"]["correct"],
            "answer": p["und"]["output"],
            "prompt": bridge.transcript.get(item.id, {}).get("prompt"),
            **({"drawn": _kinds(p["gen"]["output"], parse_scene)} if drawn else {}),
        }
        for item, p, b in zip(items, plain, bridged, strict=True)
    ]


def _kinds(image: Any, parse: Any) -> list[list[str]] | None:
    return None if image is None else [list(k) for k in parse(image).scene.kinds()]


def ask_edited(
    model: Any, editor: Any, specs: Sequence[Any], template: str, seed: int
) -> list[dict[str, Any]]:
    """:func:`ask` on the specs' target items while the model is edited through text only (Train-on-Und)."""
    targets = [item for spec in specs for item in spec.items("target")]
    with editor.apply(model, specs, via="und"):
        return ask(model, targets, template, seed)


def rates(rows: Sequence[dict[str, Any]], seed: int) -> dict[str, dict[str, Any]]:
    """Und, gen and bridged accuracy, and the share of gen failures bridging recovers, with 95 % bootstrap CIs
    over edits when the rows carry one (an edit's items are not independent), else over items."""
    from interventions.editing.metrics import estimate

    def over(keep: Any, value: Any) -> dict[str, Any]:
        groups: dict[str, list[float]] = {}
        for r in rows:
            if keep(r) and value(r) is not None:
                groups.setdefault(r["edit"] or r["item"], []).append(float(value(r)))
        return estimate(groups, seed=seed)

    out = {k: over(lambda r: True, lambda r, k=k: r[k]) for k in ("und", "gen", "bridged")}
    out["recovered"] = over(lambda r: r["gen"] is False, lambda r: r["bridged"])
    out["failures"] = sum(r["gen"] is False for r in rows)
    return out


def _cells(r: dict[str, Any]) -> list[str]:
    return [with_ci(r[k]["mean"], r[k]["ci"]) for k in ("und", "gen", "bridged")] + [
        f"{with_ci(r['recovered']['mean'], r['recovered']['ci'])} of {r['failures']}"
    ]


def plot(rows: Sequence[tuple[str, str, dict[str, Any]]], path: Any) -> None:
    """Und, gen and bridged-gen accuracy with 95 % CIs, one group of bars per (model, part)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.paper_study.bars import ci_bars

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 3.6))
    keys = (("und", "und", "#1c7ed6"), ("gen", "gen", "#f08c00"), ("bridged", "bridged gen", "#2b8a3e"))
    ci_bars(ax, [r for _, _, r in rows], keys)
    ax.set_xticks(range(len(rows)), [f"{m}\n{part}" for m, part, _ in rows], fontsize=7)
    ax.set(ylim=(0, 1.25), ylabel="accuracy", title="reason-then-draw: plain vs bridged generation")
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bridge_section(ctx: Context) -> Section:
    from experiments.paper_study.sections.knowledge_edits import make_editor
    from gapeval.models.base import Intervenable
    from gapeval.synth.world import World
    from interventions.editing.specs import synth_specs

    sizes, seed = ctx.config.sizes["bridge"], ctx.config.seed
    folder = ctx.folder("bridge")
    section = Section("bridge", "Reason-then-draw")
    items = [i for i in ctx.items if i.category == "world_knowledge"]
    records, suite_rows, edit_rows = [], [], []
    for spec in ctx.config.models:
        model, template = ctx.model(spec), ctx.config.template(spec)
        rows = unit(folder / "units" / f"{slug(spec)}-suite.json", ask, model, items, template, seed)
        records += [{"model": spec, "part": "suite", "condition": "unedited", **r} for r in rows]
        for pictured in (False, True):
            split = [r for r in rows if r["pictured"] is pictured]
            if split:
                suite_rows.append((spec, SPLITS[pictured], len(split), rates(split, seed), template))
        if not isinstance(model, Intervenable):
            section.skipped.append(f"`{spec}`: edited models need the intervention contract")
            continue
        specs = synth_specs(World(0), "edit", sizes["specs"], seed)
        for method in sizes["editors"]:
            editor = make_editor(method, specs, ctx.items, seed)
            path = folder / "units" / f"{slug(spec)}-{method}-und.json"
            rows = unit(path, ask_edited, model, editor, specs, template, seed)
            records += [{"model": spec, "part": f"edited ({method})", "condition": "und", **r} for r in rows]
            edit_rows.append((spec, method, len(specs), rates(rows, seed)))
    write_jsonl(folder / "records.jsonl", records)
    section.records.append("bridge/records.jsonl")
    bars = [(m, split, r) for m, split, _, r, _ in suite_rows] + [
        (m, f"edit via und ({e})", r) for m, e, _, r in edit_rows
    ]
    plot(bars, folder / "bridge.png")
    section.figure(
        "World knowledge asked plainly and bridged; edited models: targets of a text-only edit",
        folder / "bridge.png",
        ctx.out,
    )
    published = ctx.config.published["bridge"]
    section.table(
        "World-knowledge items (synth suite): accuracy asked plainly (und, gen) and bridged (ask in text, then draw "
        "the own answer); recovered = share of plain-gen failures the bridged drawing gets right; 95 % bootstrap CI",
        markdown_table(
            ["model", "realms", "n", "und", "gen", "bridged gen", "recovered", "template"],
            [[m, split, n, *_cells(r), f"`{t}`"] for m, split, n, r, t in suite_rows],
        ),
    )
    section.table(
        "Measured before this tool existed (by hand, on the seed-0, 24 000-step v1 checkpoints shipped "
        "then), text-only realms (not rerun here)",
        markdown_table(
            ["model", "und", "gen", "bridged gen"],
            [[m, num(v["und"]), num(v["gen"]), num(v["bridged"])] for m, v in published.items()],
        ),
    )
    if edit_rows:
        section.table(
            "Edited through text only (Train-on-Und): target items judged against the new emblem; CI over edits",
            markdown_table(
                ["model", "editor", "edits", "und new", "gen new", "bridged gen new", "recovered"],
                [[m, e, n, *_cells(r)] for m, e, n, r in edit_rows],
            ),
        )
    for spec, split, n, r, _ in suite_rows:
        if split == SPLITS[False]:
            section.findings.append(
                f"Bridging, `{spec}`, {n} text-only realms: gen {with_ci(r['gen']['mean'], r['gen']['ci'])} → "
                f"bridged {with_ci(r['bridged']['mean'], r['bridged']['ci'])} (und "
                f"{with_ci(r['und']['mean'], r['und']['ci'])}); it recovers "
                f"{with_ci(r['recovered']['mean'], r['recovered']['ci'])} of {r['failures']} generation failures."
            )
    for spec, method, n, r in edit_rows:
        section.findings.append(
            f"Bridging a text-only edit, `{spec}`, {method}, {n} edits: und new "
            f"{with_ci(r['und']['mean'], r['und']['ci'])}, gen new {with_ci(r['gen']['mean'], r['gen']['ci'])}, "
            f"bridged gen new {with_ci(r['bridged']['mean'], r['bridged']['ci'])}."
        )
    section.commands.append(ctx.section_command("bridge"))
    return section
