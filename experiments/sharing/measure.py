"""What the sharing sweep measures on every model, each a pure-ish unit of work whose JSON result is stored
(``experiments.paper_study.records.unit``) so a rerun reads it back.

- ``knowledge``: every taught realm's emblem asked in the model's own world (both hops, the suite's phrasing),
  in text, as a drawing, and bridged (ask in text, draw the own answer) — direct transfer is gen on realms
  whose emblem training never drew, against bridged recovery on the same realms; und on all realms says
  whether the model learned its facts at all.
- ``edits``: LoRA edit and inject trained through und and through gen, judged in both directions, each
  edit paired with its own unedited outcome (the edit study's decision rule), and the model behind
  reason-then-draw trained through und as the positive control. Only the target rows are kept, so seeds can
  be pooled per condition.
- ``probe``: per-layer colour probes per direction and their und→gen transfer (grouped folds over realms,
  permutation test).
- ``patching``: residual-stream patching per direction — where each direction reads the fact.
- ``gap``: the Gap Score of the default synth suite, with its bootstrap CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gapeval.synth.world import World

KEEP = ("condition", "role", "direction", "edit", "item", "correct", "logp_new", "logp_old")
KEEP += ("control_logp_new", "control_logp_old")


def world_of(train: dict[str, Any] | None) -> World:
    """The world a sweep model was trained on (a reference: the default world)."""
    from gapeval.models.toy.train import TrainConfig

    cfg = TrainConfig().updated(train or {})
    return World.extended(cfg.world_seed, cfg.n_realms, cfg.pictured_share)


def knowledge_items(world: World) -> list[Any]:
    """One world-knowledge item per taught realm and hop, in the suite's phrasing for it."""
    import random

    from gapeval.items import Item
    from gapeval.synth.suite import WK_SUBJECT, make_world_knowledge, suite_phrasing

    return [
        Item(
            id=f"wk-{realm.name}-{hop}",
            **make_world_knowledge(
                world, random.Random(f"wk-{realm.name}"), realm, hop, suite_phrasing(world, realm, hop)
            ),
        )
        for realm in world.realms
        for hop in WK_SUBJECT
    ]


def knowledge(model: Any, world: World, template: str, seed: int) -> list[dict[str, Any]]:
    """Per item: realm, pictured in training, und / gen / bridged verdicts, and the kinds the drawing shows."""
    from experiments.paper_study.sections.reason_then_draw import ask

    keys = ("item", "realm", "pictured", "und", "gen", "bridged", "drawn")
    return [{k: r[k] for k in keys} for r in ask(model, knowledge_items(world), template, seed, drawn=True)]


def _edit_run(
    model: Any,
    kind: str,
    n: int,
    world: World,
    items: list,
    sizes: dict,
    seed: int,
    out: Path,
    conditions: list,
) -> dict[str, Any]:
    from interventions.editing.edit_run import build_editor, read_records, run_edit
    from interventions.editing.specs import hold_out, synth_specs

    specs = synth_specs(world, kind, n, seed)
    held = hold_out(world, specs, items, seed=seed)
    editor = build_editor("lora", held, seed=seed, max_steps=sizes["lora_max_steps"])
    summary = run_edit(
        model, specs, editor, held.locality, out, conditions=conditions, seed=seed, controls=held.controls
    )
    efficacy = {
        via: {k: summary["conditions"][via][via][k]["mean"] for k in ("target", "locality")}
        for via in conditions
        if via != "baseline"
    }
    records = [{k: r.get(k) for k in KEEP} for r in read_records(out) if r["role"] == "target"]
    return {"kind": kind, "edits": len(specs), "efficacy": efficacy, "records": records}


def edits(
    spec: str, model: Any, world: World, items: list, sizes: dict, seed: int, out: Path
) -> dict[str, Any]:
    """LoRA edit and inject through each direction, and the bridged model's Train-on-Und edit (the positive
    control). Edit specs come from the model's own realms (more realms, more edits: at most half of them, so
    a retain and a locality side remain); inject specs from the reserve realms every world shares."""
    from gapeval.models.registry import load_model

    runs = {}
    n_edit = min(sizes["edits"], len(world.realms) // 2)
    plan = [("edit", n_edit), ("inject", sizes["inject"])]
    for kind, n in plan:
        if n:
            runs[kind] = _edit_run(
                model, kind, n, world, items, sizes, seed, out / kind, ["baseline", "und", "gen"]
            )
    bridged = load_model(f"bridge:{spec}", items)
    runs["control"] = _edit_run(
        bridged, "edit", n_edit, world, items, sizes, seed, out / "control", ["baseline", "und"]
    )
    return runs


def probe(model: Any, n_realms: int, sizes: dict, seed: int, out: Path) -> dict[str, Any]:
    """Colour probes at the last prompt token, per layer and direction, and their transfer between
    directions, on the default world's realms the model was taught (the first ``probe_realms``)."""
    from probes.probe_run import probe_study

    result = probe_study(
        model, "colour", "last", out, seed=seed, erase=False, shuffles=sizes["shuffles"], baseline=False,
        limit=min(sizes["probe_realms"], n_realms), progress=False,
    )  # fmt: skip
    keys = ("acc_und", "acc_gen", "und_to_gen", "gen_to_und")
    return {
        "chance": result["chance"],
        "majority": result["majority"],
        "realms": result["realms"],
        "layers": [layer["layer"] for layer in result["layers"]],
        **{
            k: [{f: layer[k].get(f) for f in ("mean", "ci", "p_holm")} for layer in result["layers"]]
            for k in keys
        },
    }


def patching(model: Any, world: World, sizes: dict, seed: int, out: Path) -> dict[str, Any]:
    """Residual-stream patching per direction on pairs of pictured realms (both directions know them)."""
    from experiments.paper_study.sections.mechanism import grid_numbers
    from interventions.patching.pairs import synth_pairs

    try:
        pairs = synth_pairs(model, sizes["patch_pairs"], seed=seed, world=world)
    except ValueError as err:
        return {"skipped": str(err)}
    return grid_numbers(model, pairs, out)


def gap(model: Any, n_items: int, bootstrap: int, seed: int) -> dict[str, Any]:
    """The default suite (or a stratified ``n_items`` of it) in both directions: accuracies and the Gap Score
    with its 95 % bootstrap CI (``bootstrap`` resamples)."""
    from gapeval.emergence import eval_items
    from gapeval.summary import summarize
    from interventions.judged import judged

    overall = summarize(judged(model, eval_items(n_items), seed=seed), bootstrap=bootstrap, seed=seed)[
        "overall"
    ]
    keys = ("n", "und_acc", "gen_acc", "kappa", "gap_reference", "gap_reference_ci")
    return {k: overall[k] for k in keys}
