"""Section 4, emergence over training: und and gen accuracy and the Gap Score against the training step, from the
``emergence.jsonl`` logs that ``gapeval train-toy --eval-every N`` writes, for every training seed of every
variant that ships one; each log spot-checked against the checkpoints saved at its steps.

Why a spot check: a log row is the suite judged during training, a checkpoint's run is ``gapeval run`` on the
saved weights — both greedy on the same items with the same judges, so their counts must be equal. A mismatch
would mean the curve does not describe the shipped models.

Which direction leads is read two ways: the first logged step at which a direction's accuracy reaches the
threshold (to within the logging interval), and the mean accuracy over the logged steps (area under the
curve divided by its span). Records: ``emergence/emergence.jsonl`` (every log row, labelled by run) and
``emergence/spot.jsonl`` (each comparison).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.paper_study.records import Section, markdown_table, num, slug, unit, write_jsonl
from experiments.paper_study.study import Context
from experiments.paper_study.toy_runs import TrainingRun, training_runs
from gapeval.cli_args import add_run_arguments
from gapeval.files import read_jsonl

COMPARED = ("n", "n11", "n10", "n01", "n00", "und_acc", "gen_acc", "kappa", "gap_reference", "gap_identified")


def first_step(rows: Sequence[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((r["step"] for r in rows if r[key] is not None and r[key] >= threshold), None)


def mean_over_training(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    """Trapezoid area under the curve divided by the logged span of steps."""
    import numpy as np

    steps = np.array([r["step"] for r in rows], dtype=float)
    if len(rows) < 2 or steps[-1] == steps[0]:
        return None
    return float(np.trapezoid([r[key] for r in rows], steps) / (steps[-1] - steps[0]))


def _step(step: int | None) -> str:
    return "not within the logged steps" if step is None else str(step)


def lead(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    und, gen = first_step(rows, "und_acc", threshold), first_step(rows, "gen_acc", threshold)
    if und is None and gen is None:
        order = "neither reaches the threshold"
    elif gen is None or (und is not None and und < gen):
        order = "und first"
    elif und is None or gen < und:
        order = "gen first"
    else:
        order = "same logged step"
    return {
        "und_step": und,
        "gen_step": gen,
        "order": order,
        "und_mean": mean_over_training(rows, "und_acc"),
        "gen_mean": mean_over_training(rows, "gen_acc"),
        "interval": rows[1]["step"] - rows[0]["step"] if len(rows) > 1 else None,
    }


def spot_check(
    ctx: Context, run: TrainingRun, step: int, checkpoint: Path, row: dict[str, Any]
) -> dict[str, Any]:
    """``gapeval run`` on the checkpoint (seed 0 and the logged items, as the log was made) vs the log row."""
    from gapeval.emergence import eval_items
    from gapeval.models.registry import load_model
    from gapeval.rundir import read_summary
    from gapeval.runner import run as evaluate

    items = eval_items(row["n"])
    suite_id = "synth" if len(items) == len(ctx.items) else f"synth-stratified:{row['n']}"
    out = ctx.folder("emergence") / "spot" / f"{slug(run.label)}-step{step:06d}"
    evaluate(load_model(f"toy:{checkpoint}", items), items, out, suite_id=suite_id, seed=0, bootstrap=0)
    overall = read_summary(out)["overall"]
    measured = {k: round(overall[k], 6) if isinstance(overall[k], float) else overall[k] for k in COMPARED}
    logged = {k: row.get(k) for k in COMPARED}
    return {
        "run": run.label,
        "step": step,
        "checkpoint": checkpoint_spec(ctx, run, step, checkpoint),
        "run_dir": str(out.relative_to(ctx.out)),
        "logged": logged,
        "measured": measured,
        "match": measured == logged,
        "command": ctx.command(
            "run",
            add_run_arguments,
            model=checkpoint_spec(ctx, run, step, checkpoint),
            suite="synth",
            seed=0,
            out=out,
            bootstrap=0,
        )
        + ("" if suite_id == "synth" else f"  # the log's items: gapeval.emergence.eval_items({row['n']})"),
    }


def checkpoint_spec(ctx: Context, run: TrainingRun, step: int, checkpoint: Path) -> str:
    """A model spec for one checkpoint of ``run``: the shipped name where there is one (``toy:VARIANT@STEP``
    for seed 0's checkpoints, ``toy:VARIANT@seedN`` for another seed's final one), else ``toy:PATH`` relative
    to the study's folder."""
    if run.seed == 0:
        return f"{run.spec}@{step}"
    if run.seed is not None and max(run.checkpoints()) == step:
        return run.spec
    return f"toy:{os.path.relpath(checkpoint, ctx.out)}"


def plot(curves: dict[str, list[dict[str, Any]]], path: Path, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    families = list(dict.fromkeys(label.partition(" seed ")[0] for label in curves))
    for ax, key, title in zip(
        axes,
        ("und_acc", "gen_acc", "gap_reference"),
        ("understanding accuracy", "generation accuracy", "Gap Score"),
        strict=True,
    ):
        for label, rows in curves.items():
            # one colour per model family, one line style per training seed
            family, _, seed = label.partition(" seed ")
            ax.plot(
                [r["step"] for r in rows],
                [r[key] for r in rows],
                "-" if seed in ("", "0") else "--",
                color=f"C{families.index(family) % 10}",
                label=label,
                marker=".",
            )
        if key != "gap_reference":
            ax.axhline(threshold, color="grey", lw=0.6, ls=":")
        ax.set(title=title, xlabel="training step", ylim=(0, 1.02))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def emergence_section(ctx: Context) -> Section:
    sizes = ctx.config.sizes["emergence"]
    threshold = float(sizes["threshold"])
    folder = ctx.folder("emergence")
    section = Section("emergence", "Emergence over training")
    runs: dict[Path, TrainingRun] = {}
    for spec in ctx.config.models:
        _, found = training_runs(spec, sizes["training_seeds"])
        if not found:
            section.skipped.append(
                f"`{spec}`: no training run behind this spec (emergence logs come from `gapeval train-toy` runs)"
            )
        shipped = {run.seed for run in found if run.seed is not None}
        if shipped and (missing := [s for s in sizes["training_seeds"] if s not in shipped]):
            section.skipped.append(
                f"`{spec}`: training seed(s) {', '.join(map(str, missing))} not shipped (no checkpoint folder)"
            )
        for run in found:
            if not run.log.exists():
                section.skipped.append(
                    f"{run.label} (`{run.folder}`): no `{run.log.name}` — trained without `--eval-every`"
                )
            else:
                runs.setdefault(run.folder, run)
    curves = {run.label: sorted(read_jsonl(run.log), key=lambda r: r["step"]) for run in runs.values()}
    write_jsonl(
        folder / "emergence.jsonl", [{"run": label, **r} for label, rows in curves.items() for r in rows]
    )
    section.records.append("emergence/emergence.jsonl")
    if not curves:
        section.paragraphs.append(
            "No emergence log is available for the models of this study; nothing to plot."
        )
        section.findings.append(
            "Emergence order: not measured — no model of this study has an emergence log."
        )
        return section
    plot(curves, folder / "emergence.png", threshold)
    section.figure(
        "und, gen accuracy and Gap Score against training step, per run", folder / "emergence.png", ctx.out
    )
    checks = []
    for run in runs.values():
        logged = {r["step"]: r for r in curves[run.label]}
        logged_steps = sorted(s for s in run.checkpoints() if s in logged)
        # the last N of them (not ``[-N:]``: with N = 0 that is all of them)
        steps = logged_steps[max(0, len(logged_steps) - int(sizes["spot_checks"])) :]
        for step in steps:
            checkpoint = run.checkpoints()[step]
            checks.append(
                unit(
                    folder / "spot" / f"{slug(run.label)}-step{step:06d}.json",
                    spot_check,
                    ctx,
                    run,
                    step,
                    checkpoint,
                    logged[step],
                )
            )
    write_jsonl(folder / "spot.jsonl", checks)
    section.records.append("emergence/spot.jsonl")
    section.commands += [c["command"] for c in checks]
    leads = {label: lead(rows, threshold) for label, rows in curves.items()}
    section.table(
        f"Which direction leads (threshold {threshold}: first logged step at or above it; mean accuracy over the "
        "logged steps)",
        markdown_table(
            [
                "run",
                "logged steps",
                "und ≥ thr at",
                "gen ≥ thr at",
                "order",
                "mean und",
                "mean gen",
                "final Gap Score",
            ],
            [
                [
                    label,
                    f"{rows[0]['step']}–{rows[-1]['step']} every {leads[label]['interval']}",
                    _step(leads[label]["und_step"]),
                    _step(leads[label]["gen_step"]),
                    leads[label]["order"],
                    num(leads[label]["und_mean"]),
                    num(leads[label]["gen_mean"]),
                    num(rows[-1]["gap_reference"]),
                ]
                for label, rows in curves.items()
            ],
        ),  # fmt: skip
    )
    if checks:
        section.table(
            "Spot checks: `gapeval run` on a checkpoint vs the log row at its step (counts, accuracies, κ, Gap Scores)",
            markdown_table(
                ["run", "step", "logged und / gen / n11", "measured und / gen / n11", "equal"],
                [
                    [
                        c["run"],
                        c["step"],
                        f"{c['logged']['und_acc']} / {c['logged']['gen_acc']} / {c['logged']['n11']}",
                        f"{c['measured']['und_acc']} / {c['measured']['gen_acc']} / {c['measured']['n11']}",
                        "yes" if c["match"] else "**no**",
                    ]
                    for c in checks
                ],
            ),  # fmt: skip
        )
    orders = [v["order"] for v in leads.values()]
    by_mean = sum(
        v["und_mean"] is not None and v["gen_mean"] is not None and v["und_mean"] > v["gen_mean"]
        for v in leads.values()
    )
    section.findings.append(
        f"Emergence ({len(curves)} logged runs: {', '.join(curves)}): und reached {threshold} first in "
        f"{orders.count('und first')}, gen first in {orders.count('gen first')}, both at the same logged step in "
        f"{orders.count('same logged step')}, neither in {orders.count('neither reaches the threshold')}; mean "
        f"accuracy over training was higher for und in {by_mean} of {len(curves)}."
        + (f" Spot checks: {sum(c['match'] for c in checks)} of {len(checks)} checkpoints equal their log row." if checks else "")
    )  # fmt: skip
    for label, v in leads.items():
        section.paragraphs.append(
            f"{label}: und first reaches {threshold} at step {_step(v['und_step'])}, gen at step {_step(v['gen_step'])} "
            f"({v['order']}; logged every {v['interval']} steps); mean accuracy over training und "
            f"{num(v['und_mean'])}, gen {num(v['gen_mean'])}."
        )
    return section
