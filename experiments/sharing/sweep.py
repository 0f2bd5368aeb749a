"""The sharing sweep in one call (``gapeval sweep``, and the study's ``sharing`` section): train every model of
the sweep file (resuming killed runs, reusing finished or shipped ones), measure each (stored per unit, so a
rerun reads it back), and report per condition with the training seeds pooled.

Layout of ``OUT``: ``<model>/`` training runs, ``units/<model>/<measure>.json`` measurements (``edits/`` the
edit runs behind them), ``training.jsonl`` (CPU seconds per trained model), ``sharing.jsonl`` (one line per
model), ``conditions.jsonl`` (one line per condition), ``propagation.jsonl`` (one line per decision),
``sharing.png`` and ``sweep.json`` (the resolved sweep file).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from experiments.paper_study.records import (
    Section,
    markdown_table,
    num,
    unit,
    with_ci,
    write_json,
    write_jsonl,
)
from experiments.sharing import analysis, measure
from experiments.sharing.config import VERSUS, SweepConfig, SweepModel
from experiments.sharing.training import SHIPPED, finished_checkpoint, run_folder, train_config, train_model
from gapeval.synth.world import all_kinds
from interventions.editing.metrics import estimate

SWEEP = "sweep.json"
UNITS = ("knowledge", "edits", "probe", "patching", "gap")  # one stored measurement each, per model
SETTINGS = "measure.json"  # beside shipped units: the measurement settings and seed they were taken with
TEMPLATE = "Draw: {answer}."  # the built-in UMM's draw-a-described-scene skill (reason-then-draw)


def _measured_as(sweep: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
    """What a sweep's stored models were trained and measured with: everything but the file's path, the
    analysis-only keys (``baseline``, each condition's ``versus``) and the lists of conditions and references
    (models can be added or dropped); and each condition's own settings."""
    common = {k: v for k, v in sweep.items() if k not in ("path", "baseline", "conditions", "references")}
    conditions = {
        name: {k: v for k, v in c.items() if k != VERSUS} for name, c in sweep["conditions"].items()
    }
    return common, conditions


def check_same_sweep(out: Path, config: SweepConfig) -> None:
    """A folder that holds another sweep (another profile, seeds, shared settings or sizes, or a condition of
    the same name defined otherwise) is refused: its units would be reported as this one's. Adding or dropping
    conditions and references, or changing what a condition is compared with, keeps the folder."""
    path = out / SWEEP
    if path.exists():
        theirs, their_conditions = _measured_as(json.loads(path.read_text(encoding="utf-8")))
        mine, my_conditions = _measured_as(config.to_json())
        changed = [
            n
            for n in their_conditions.keys() & my_conditions.keys()
            if their_conditions[n] != my_conditions[n]
        ]
        if theirs != mine or changed:
            what = f" (condition {', '.join(sorted(changed))})" if changed and theirs == mine else ""
            raise ValueError(
                f"{out} holds a sweep of another configuration{what} (see {path}); use another --out"
            )
    write_json(path, config.to_json())


def estimate_cpu_hours(config: SweepConfig, seconds_per_step: dict[tuple[int, int], float]) -> float:
    """The sweep's training cost before it starts: steps × seconds per step of each model's width and depth
    (:func:`measured_step_seconds`), summed over models. The pair costs what one model does: each example of
    a batch trains one of its two members."""
    total = 0.0
    for model in config.models():
        if model.train is not None:
            cfg = train_config(model)
            total += cfg.steps * seconds_per_step[(cfg.d_model, cfg.n_layers)]
    return total / 3600


def spec_of(model: SweepModel, out: Path, shipped: Path) -> str | None:
    if model.spec is not None:
        return model.spec
    checkpoint = finished_checkpoint(model, out, shipped)
    return None if checkpoint is None else f"toy:{checkpoint}"


def emergence_rows(model: SweepModel, out: Path, shipped: Path) -> list[dict[str, Any]]:
    """The model's emergence log (logged during training): step, und and gen accuracy, world knowledge."""
    if model.spec is not None:
        from experiments.paper_study.toy_runs import training_runs

        run, _ = training_runs(model.spec, [])
        path = run.log if run is not None else None
    else:
        path = run_folder(model, out, shipped) / "emergence.jsonl"
    if path is None or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    wk = "world_knowledge"
    return [
        {"step": r["step"], "und": r["und_acc"], "gen": r["gen_acc"], "gap": r["gap_reference"],
         "wk_und": r["categories"].get(wk, {}).get("und_acc"), "wk_gen": r["categories"].get(wk, {}).get("gen_acc")}
        for r in rows
    ]  # fmt: skip


def _settings(model: SweepModel, seed: int) -> dict[str, Any]:
    """What a model's measurements depend on: its training settings (or reference spec), the sizes, the seed."""
    return {"train": model.train, "spec": model.spec, "measure": model.measure, "seed": seed}


def adopt_shipped_units(model: SweepModel, base: Path, seed: int, shipped: Path) -> None:
    """Copy the model's shipped measurements into ``base`` when they were taken with these settings."""
    source = shipped / model.name / "units"
    if not (source / SETTINGS).exists() or json.loads((source / SETTINGS).read_text()) != _settings(
        model, seed
    ):
        return
    base.mkdir(parents=True, exist_ok=True)
    for name in UNITS:
        if (source / f"{name}.json").exists() and not (base / f"{name}.json").exists():
            shutil.copyfile(source / f"{name}.json", base / f"{name}.json")


def ship_model(model: SweepModel, out: Path, seed: int, shipped: Path = SHIPPED) -> Path:
    """Copy a finished, measured model into ``shipped/<name>/``: its final checkpoint, its train and emergence
    logs and its measurement units (with the settings they were taken with) — what a rerun needs to rebuild
    the tables without training or measuring. A reference ships its units only."""
    target = shipped / model.name
    if _stored(out, model) is None:
        raise ValueError(f"{model.name}: not measured in {out}; nothing to ship")
    if model.train is not None:
        checkpoint = finished_checkpoint(model, out, out / ".none")
        if checkpoint is None:
            raise ValueError(f"{model.name}: no finished checkpoint in {out}")
        shutil.copytree(checkpoint, target / checkpoint.name, dirs_exist_ok=True)
        for log in ("train_log.jsonl", "emergence.jsonl"):
            if (out / model.name / log).exists():
                shutil.copyfile(out / model.name / log, target / log)
    (target / "units").mkdir(parents=True, exist_ok=True)
    for name in UNITS:
        shutil.copyfile(out / "units" / model.name / f"{name}.json", target / "units" / f"{name}.json")
    write_json(target / "units" / SETTINGS, _settings(model, seed))
    return target


def measure_model(
    model: SweepModel,
    spec: str,
    out: Path,
    items: list,
    seed: int,
    shipped: Path = SHIPPED,
) -> None:
    """Every measurement of one model, each stored as a unit under ``out/units/<name>/`` (shipped ones taken
    with the same settings are adopted, not redone)."""
    from gapeval.models.registry import load_model

    sizes, base = model.measure, out / "units" / model.name
    adopt_shipped_units(model, base, seed, shipped)
    if all((base / f"{name}.json").exists() for name in UNITS):
        return
    world = measure.world_of(model.train)
    loaded = load_model(spec, items)
    for name, compute, *args in (
        ("knowledge", measure.knowledge, loaded, world, TEMPLATE, seed),
        ("edits", measure.edits, spec, loaded, world, items, sizes, seed, base / "edits"),
        ("probe", measure.probe, loaded, len(world.realms), sizes, seed, base / "probe"),
        ("patching", measure.patching, loaded, world, sizes, seed, base / "patching"),
        ("gap", measure.gap, loaded, sizes["gap_items"], sizes["bootstrap"], seed),
    ):
        unit(base / f"{name}.json", compute, *args)


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    seed: int = 0,
    train_only: bool = False,
    only: Sequence[str] | None = None,
    progress: bool = True,
    shipped: Path = SHIPPED,
) -> Section:
    """Train (or resume) and measure the sweep's models into ``out``; return its report section.

    ``only`` limits the call to these model names (e.g. ``default-seed0``; two processes can then train two
    models side by side); ``train_only`` stops after training. The section covers every model measured in
    ``out`` so far."""
    from gapeval.suites import get_suite

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not train_only:  # training runs check their own settings; measurements need the whole sweep's
        check_same_sweep(out, config)
    by_name = {m.name: m for m in config.models()}
    models = (
        list(by_name.values()) if only is None else [by_name[n] for n in only if n in by_name]
    )  # in that order
    if unknown := set(only or ()) - set(by_name):
        raise ValueError(
            f"unknown sweep models {sorted(unknown)}; expected some of {[m.name for m in config.models()]}"
        )
    for model in models:
        if model.train is not None:
            row = train_model(model, out, progress=progress, shipped=shipped)
            if row["trained_s"]:
                with (out / "training.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
    if train_only:
        return Section("sharing", "What makes knowledge shared: the training sweep")
    items = get_suite("synth").items
    start = time.perf_counter()
    for model in models:
        spec = spec_of(model, out, shipped)
        if spec is not None:
            measure_model(model, spec, out, items, seed, shipped)
    return report(config, out, seed, shipped, time.perf_counter() - start)


def _stored(out: Path, model: SweepModel) -> dict[str, Any] | None:
    base = out / "units" / model.name
    if not all((base / f"{n}.json").exists() for n in UNITS):
        return None
    return {n: json.loads((base / f"{n}.json").read_text(encoding="utf-8")) for n in UNITS}


def report(
    config: SweepConfig, out: Path, seed: int, shipped: Path = SHIPPED, seconds: float = 0.0
) -> Section:
    """The section from the units stored in ``out`` (models not measured yet are listed as such)."""
    section = Section("sharing", "What makes knowledge shared: the training sweep")
    measured: dict[str, list[tuple[SweepModel, dict]]] = {}
    missing = []
    for model in config.models():
        stored = _stored(out, model)
        if stored is None:
            missing.append(f"`{model.name}`")
            continue
        key = model.condition if model.spec is None else model.spec.split("@")[0]
        measured.setdefault(key, []).append((model, stored))
    if missing:
        section.skipped.append(f"not trained or not measured yet in `{out}`: {', '.join(missing)}")
    per_model = [
        {"model": m.name, "condition": c, "seed": m.seed, "spec": m.spec,
         "train": asdict(train_config(m)) if m.train is not None else None,
         "text_und": estimate(analysis.realm_scores([(m.seed, s["knowledge"])], "und", False))["mean"],
         "probe": analysis.probe_peak(s["probe"]), "patching": analysis.patch_peak(s["patching"]), "gap": s["gap"],
         "emergence": emergence_rows(m, out, shipped)}
        for c, models in measured.items() for m, s in models
    ]  # fmt: skip
    knowledge = {c: [(m.seed, s["knowledge"]) for m, s in models] for c, models in measured.items()}
    edits = {c: [(m.seed, s["edits"]) for m, s in models] for c, models in measured.items()}
    transfer = analysis.transfer_table(knowledge, config.baseline, seed) if knowledge else []
    for row in transfer:  # what drawing the commonest emblem kind, or another realm's emblem, would score
        world = measure.world_of(measured[row["condition"]][0][0].train)
        row["majority"] = analysis.majority_rate([r for r in world.realms if not r.pictured])
        emblems = {r.name: (r.emblem.shape, r.emblem.colour) for r in world.realms}
        row["specificity"] = analysis.specificity(knowledge[row["condition"]], emblems, seed)
    decisions = analysis.propagation_table(edits) if edits else []
    factors = analysis.factor_table(knowledge, config.versus(), seed)
    write_jsonl(out / "sharing.jsonl", per_model)
    write_jsonl(out / "conditions.jsonl", transfer)
    write_jsonl(out / "factors.jsonl", factors)
    write_jsonl(out / "propagation.jsonl", decisions)
    section.records += ["sharing.jsonl", "conditions.jsonl", "factors.jsonl", "propagation.jsonl"]
    if transfer:
        _tables(section, config, transfer, factors, decisions, per_model)
        plot(transfer, decisions, out / "sharing.png")
        section.figure("Direct transfer and propagation by training condition", out / "sharing.png", out)
        section.findings += findings(config, transfer, factors, decisions)
    if any(r["emergence"] for r in per_model):
        plot_emergence(per_model, out / "emergence.png")
        section.figure("Emergence: suite accuracy along training, per model", out / "emergence.png", out)
    section.seconds = round(seconds, 1)
    return section


def _per_seed(factor: dict) -> str:
    """Each seed's direct transfer, the condition's then the other's: ``0.26, 0.54 / 0.04, 0.27``."""
    return " / ".join(
        ", ".join(num(v) for v in factor["per_seed"][c]) for c in (factor["condition"], factor["versus"])
    )


def _tables(
    section: Section, config: SweepConfig, transfer: list, factors: list, decisions: list, per_model: list
) -> None:
    section.table(
        f"Direct transfer: realms whose emblem training never drew, asked as a drawing (gen), in text (und) and "
        f"bridged (ask in text, draw the own answer); gen on pictured realms for scale. 95 % CI over seed × realm; "
        f"chance {num(1 / len(all_kinds()), 3)} (24 emblem kinds), majority = always the commonest kind of the "
        f"text-only realms; own / other = drawings showing the realm's own emblem kind / another text-only "
        f"realm's (a shuffled pairing; sign-flip p that own exceeds other); against `{config.baseline}` (the "
        f"disjoint baseline): difference in gen, one-sided permutation p, Holm",
        markdown_table(
            ["condition", "seeds", "und (text-only)", "gen (text-only)", "majority", "own / other (p)", "bridged", "gen (pictured)", "Δ gen vs baseline", "p (Holm)"],
            [[r["condition"], ",".join(map(str, r["seeds"])), *(with_ci(r[k]["mean"], r[k]["ci"]) for k in
              ("text_und", "text_gen")), num(r["majority"]), _own_other(r.get("specificity")),
              *(with_ci(r[k]["mean"], r[k]["ci"]) for k in ("text_bridged", "pictured_gen")),
              num(r["vs_baseline"]["difference"]) if "vs_baseline" in r else "–",
              f"{r['vs_baseline']['p']:.3g} ({r['vs_baseline']['p_holm']:.3g})" if "vs_baseline" in r else "–"]
             for r in transfer],
        ),
    )  # fmt: skip
    if factors:
        section.table(
            "One factor at a time: gen on text-only realms against the condition each differs from by one factor "
            "(difference of means; two-sided permutation p over seed × realm, Holm over these comparisons). The "
            "test's units are (seed, realm); per seed: each training seed's own direct transfer; seeds apart: every "
            "seed of one lies beyond every seed of the other, on the side of the difference",
            markdown_table(
                ["condition", "versus", "Δ gen (text-only)", "p (Holm)", "detected", "per seed (condition / versus)", "seeds apart"],
                [[f"`{r['condition']}`", f"`{r['versus']}`", num(r["difference"]), f"{r['p']:.3g} ({r['p_holm']:.3g})",
                  "yes" if r["detected"] else "no", _per_seed(r), "yes" if r["seeds_apart"] else "no"] for r in factors],
            ),
        )  # fmt: skip
    if decisions:
        section.table(
            "Propagation of LoRA edits into the untrained direction (training seeds pooled; each edit against its "
            "own unedited outcome, one-sided exact sign test, Holm over every case; `control` is the model behind "
            "reason-then-draw, Train-on-Und, which must come out detected)",
            markdown_table(
                ["condition", "kind", "trained", "judged", "efficacy", "rate", "baseline", "up / down / edits", "p (Holm)", "detected", "min detectable"],
                [[r["condition"], r["kind"], r["via"], r["to"], num(r["efficacy"]), with_ci(r["rate"], r["ci"]),
                  num(r["baseline"]), f"{r['up']} / {r['down']} / {r['edits']}", f"{r['p']:.3g} ({r.get('p_holm', r['p']):.3g})",
                  "yes" if r.get("detected_holm", r["detected"]) else "no",
                  num(r.get("min_detectable_rate_holm", r["min_detectable_rate"]))] for r in decisions],
            ),
        )  # fmt: skip
    section.table(
        "Per model: und on text-only realms (did it learn its facts), probe transfer und→gen at und's best "
        "layer (chance / majority beside it), where the last prompt token carries the answer most (patching: the "
        "share of the clean-vs-corrupt answer gap restored from the clean run), Gap Score [95 % CI]",
        markdown_table(
            ["model", "und facts", "probe und / gen", "und→gen", "chance / majority", "last token carries (und)", "last token carries (gen)", "Gap"],
            [[r["model"], num(r["text_und"]), f"{num(r['probe']['und']['mean'])} / {num(r['probe']['gen']['mean'])}",
              with_ci(r["probe"]["und_to_gen"]["mean"], r["probe"]["und_to_gen"]["ci"]),
              f"{num(r['probe']['chance'])} / {num(r['probe']['majority'])}",
              *(_where(r["patching"], d) for d in ("und", "gen")),
              with_ci(r["gap"]["gap_reference"], r["gap"]["gap_reference_ci"])] for r in per_model],
        ),
    )  # fmt: skip


def _own_other(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "–"
    return f"{num(spec['own']['mean'])} / {num(spec['other']['mean'], 3)} ({spec['p']:.3g})"


def _where(peak: dict[str, Any], direction: str) -> str:
    entry = peak.get(direction, {}).get("end")
    return "–" if not entry else f"{entry['row']} ({num(entry['restored'])})"


def findings(config: SweepConfig, transfer: list, factors: list, decisions: list) -> list[str]:
    moved = [r for r in transfer if r.get("vs_baseline", {}).get("detected")]
    lines = [
        "Direct transfer above the disjoint baseline "
        f"(`{config.baseline}`, Holm over {sum('vs_baseline' in r for r in transfer)} conditions): "
        + (
            ", ".join(
                f"`{r['condition']}` {with_ci(r['text_gen']['mean'], r['text_gen']['ci'])}" for r in moved
            )
            or "none"
        )
        + "."
    ]
    if factors:
        lines.append(
            f"One factor at a time (two-sided, Holm over {len(factors)}): "
            + "; ".join(
                f"`{r['condition']}` vs `{r['versus']}` {r['difference']:+.2f} "
                f"(p {r['p_holm']:.3g}{', detected' if r['detected'] else ''}; seeds {_per_seed(r)}"
                f"{', apart' if r['seeds_apart'] else ', overlapping'})"
                for r in factors
            )
            + "."
        )
    plain = [r for r in decisions if r["kind"] != "control"]
    found = [r for r in plain if r.get("detected_holm", r["detected"])]
    control = [r for r in decisions if r["kind"] == "control"]
    lines.append(
        f"Propagation of one-direction edits detected in {len(found)} of {len(plain)} cases"
        + (
            ": " + ", ".join(f"`{r['condition']}` {r['kind']} {r['via']}→{r['to']}" for r in found)
            if found
            else ""
        )
        + f"; positive control detected in {sum(r.get('detected_holm', r['detected']) for r in control)} of "
        f"{len(control)}."
    )
    return lines


def plot(transfer: Sequence[dict], decisions: Sequence[dict], path: Path) -> None:
    """Top: gen, bridged and und on text-only realms per condition (95 % CIs). Bottom: propagation rate of
    edits into the untrained direction per condition, und→gen and gen→und."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.paper_study.bars import ci_bars

    conditions = [r["condition"] for r in transfer]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7, 0.9 * len(conditions) + 2), 7))
    series = (
        ("text_gen", "gen", "#f08c00"),
        ("text_bridged", "bridged gen", "#2b8a3e"),
        ("text_und", "und", "#1c7ed6"),
    )
    ci_bars(top, transfer, series)
    top.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right", fontsize=7)
    top.set(ylim=(0, 1.15), ylabel="accuracy, text-only realms", title="direct transfer vs bridged")
    top.legend(fontsize=7, ncol=3, loc="upper center")
    rates = [
        {
            r["via"]: {"mean": r["rate"], "ci": r["ci"]}
            for r in decisions
            if r["kind"] == "edit" and r["condition"] == c
        }
        for c in conditions
    ]
    ci_bars(
        bottom,
        rates,
        (("und", "trained und → judged gen", "#1c7ed6"), ("gen", "trained gen → judged und", "#f08c00")),
        0.4,
    )
    bottom.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right", fontsize=7)
    bottom.set(ylim=(0, 1.15), ylabel="new value in the other direction", title="edit propagation (LoRA)")
    bottom.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_emergence(per_model: Sequence[dict], path: Path) -> None:
    """Suite accuracy (und, gen) and world-knowledge accuracy along training, one line per trained model: a
    colour per condition, a line style per seed. Says whether and when each run learned what it is tested on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in per_model if r["emergence"]]
    colours = {
        c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(dict.fromkeys(r["condition"] for r in runs))
    }
    styles = ("-", "--", ":", "-.")
    panels = (
        ("und", "suite und"),
        ("gen", "suite gen"),
        ("wk_und", "world knowledge und"),
        ("wk_gen", "world knowledge gen"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.6), sharey=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for r in runs:
            points = [(e["step"], e[key]) for e in r["emergence"] if e.get(key) is not None]
            label = f"{r['condition']} s{r['seed']}"
            ax.plot(
                *zip(*points, strict=True),
                styles[r["seed"] % len(styles)],
                color=colours[r["condition"]],
                label=label,
                lw=1.2,
            )
        ax.set(title=title, xlabel="training step", ylim=(0, 1.02))
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measured_step_seconds(config: SweepConfig, steps: int = 20) -> dict[tuple[int, int], float]:
    """CPU seconds per training step of every width and depth the sweep trains, timed here and now."""
    from gapeval.models.toy.train import seconds_per_step

    shapes = {}
    for model in config.models():
        if model.train is not None:
            cfg = replace(train_config(model), variant="shared")
            shapes.setdefault((cfg.d_model, cfg.n_layers), cfg)
    return {shape: seconds_per_step(cfg, steps) for shape, cfg in shapes.items()}


def ship_measured(config: SweepConfig, out: Path, seed: int, shipped: Path = SHIPPED) -> list[Path]:
    """:func:`ship_model` for every model measured in ``out``."""
    return [ship_model(m, out, seed, shipped) for m in config.models() if _stored(out, m) is not None]
