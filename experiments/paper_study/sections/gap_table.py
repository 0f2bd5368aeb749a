"""Section 1, the gap table: each model on the suite in both directions (``gapeval run``), oracle rows whose gap
is known from their error rates, and the paper's published per-category Gap Scores beside them.

Records: ``gap/gap.jsonl``, one line per run (or published model) and category, computed from each run
directory's ``summary.json`` (itself :func:`gapeval.summary.summarize` of its ``results.jsonl``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from experiments.paper_study.records import Section, markdown_table, num, slug, with_ci, write_jsonl
from experiments.paper_study.study import Context
from experiments.paper_study.toy_runs import training_runs
from gapeval.cli_args import add_run_arguments
from gapeval.items import CATEGORIES

ORDER = (*CATEGORIES, "overall")
SHORT = {
    "instruction_following": "IF",
    "numerical_perception": "NP",
    "world_knowledge": "WK",
    "reasoning": "RS",
    "overall": "overall",
}
PUBLISHED = "published, not run here"
FIELDS = (
    "n",
    "und_acc",
    "gen_acc",
    "p11",
    "p10",
    "p01",
    "p00",
    "gap_reference",
    "gap_reference_ci",
    "gap_identified",
    "gap_identified_ci",
    "kappa",
)


def oracle_rows(und_error: float, gen_error: float, correlation: float) -> list[float]:
    """The population joint proportions [p11, p10, p01, p00] an oracle with these error rates draws from."""
    from gapeval.models.oracle import joint_error_probability

    both = joint_error_probability(und_error, gen_error, correlation)
    return [1 - und_error - gen_error + both, gen_error - both, und_error - both, both]


def expected_gap(row: Sequence[float], sizes: Sequence[int], seed: int, draws: int = 200) -> dict[str, Any]:
    """The reference Gap Score of a model whose every category has these population proportions, and the range
    of the score over ``draws`` simulated suites with ``sizes`` items per category (multinomial draws).

    Why both: the Gap Score of a finite suite is a biased estimate where the true gap is near 0 (a score
    cannot fall below it), so a measured value is checked against what suites of its size give."""
    import numpy as np

    from gapeval.score import gap_scores_reference_batched

    rng = np.random.default_rng(seed)
    suites = {f"draw{k}": [(rng.multinomial(n, row) / n).tolist() for n in sizes] for k in range(draws)}
    # One batched fit for the population and the draws (bit-identical to fitting each alone).
    fits = gap_scores_reference_batched({"population": [list(row)] * len(sizes), **suites})
    simulated = np.array([fits[name].gap_mean for name in suites])
    return {
        "population": fits["population"].gap_mean,
        "simulated_mean": float(simulated.mean()),
        "simulated_range": np.percentile(simulated, [2.5, 97.5]).tolist(),
    }


def oracle_spec(params: dict[str, float], seed: int) -> tuple[str, list[str]]:
    """A label and the ``--model-arg`` values of one oracle."""
    args = [f"{k}={params[k]}" for k in ("und_error", "gen_error", "correlation")] + [f"seed={seed}"]
    return "oracle(" + ", ".join(args[:3]) + ")", args


def summary_rows(label: str, source: str, summary: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    """One JSONL record per category (and overall) of a run's summary."""
    parts = {**summary["categories"], "overall": summary["overall"]}
    return [
        {"model": label, "source": source, "category": c, **{k: parts[c].get(k) for k in FIELDS}, **extra}
        for c in ORDER
        if c in parts
    ]


def gap_table(rows: Sequence[dict[str, Any]]) -> str:
    """Gap Score [95 % CI] per category and overall, one row per model (the report's first table)."""
    models = list(dict.fromkeys((r["model"], r["source"]) for r in rows))
    cells = {(r["model"], r["category"]): r for r in rows}
    body = []
    for model, source in models:
        body.append(
            [model, source]
            + [
                with_ci(cells[(model, c)]["gap_reference"], cells[(model, c)].get("gap_reference_ci"))
                if (model, c) in cells
                else "–"
                for c in ORDER
            ]
        )
    return markdown_table(["model", "source", *(SHORT[c] for c in ORDER)], body)


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    """Und / gen accuracy and κ per category, models run here."""
    models = list(dict.fromkeys(r["model"] for r in rows if r["source"] != PUBLISHED))
    cells = {(r["model"], r["category"]): r for r in rows}

    def cell(model: str, c: str) -> str:
        r = cells.get((model, c))
        return "–" if r is None else f"{num(r['und_acc'])} / {num(r['gen_acc'])} (κ {num(r['kappa'])})"

    return markdown_table(
        ["model", *(f"{SHORT[c]} und / gen" for c in ORDER)],
        [[m, *(cell(m, c) for c in ORDER)] for m in models],
    )


def _models(ctx: Context) -> list[tuple[str, str]]:
    """(spec, source) of every model run here: the study's models, then the other training seeds of their
    families when the profile asks for them."""
    specs = [(spec, "run here") for spec in ctx.config.models]
    if ctx.config.sizes["gap"].get("other_seeds"):
        seeds = ctx.config.sizes["emergence"]["training_seeds"]
        found = [training_runs(spec, seeds) for spec in ctx.config.models]
        own = {run.folder for run, _ in found if run is not None}
        for _, family in found:
            for run in family:
                if run.folder not in own:
                    own.add(run.folder)
                    specs.append((run.spec, "run here (another training seed)"))
    return specs


def gap_section(ctx: Context) -> Section:
    from gapeval.models.oracle import OracleAdapter
    from gapeval.report import table as run_table
    from gapeval.rundir import read_summary
    from gapeval.runner import run

    sizes, seed = ctx.config.sizes["gap"], ctx.config.seed
    folder = ctx.folder("gap")
    section = Section("gap", "Gap table")
    rows: list[dict[str, Any]] = []
    runs = []
    for spec, source in _models(ctx):
        out = folder / slug(spec)
        run(ctx.model(spec), ctx.items, out, suite_id=ctx.suite_id, seed=seed, bootstrap=sizes["bootstrap"])
        runs.append((spec, source, out, {"model": spec}))
    per_category = list(Counter(i.category for i in ctx.items).values())
    calibration: dict[str, dict[str, Any]] = {}
    for params in ctx.config.oracles[: sizes.get("oracles")]:
        label, flags = oracle_spec(params, seed)
        out = folder / slug(label)
        model = OracleAdapter(ctx.items, **params, seed=seed)
        run(model, ctx.items, out, suite_id=ctx.suite_id, seed=seed, bootstrap=sizes["bootstrap"])
        calibration[label] = expected_gap(oracle_rows(**params), per_category, seed)
        runs.append((label, "oracle (known gap)", out, {"model": "oracle", "model_arg": flags}))
    for label, source, out, model in runs:
        summary = read_summary(out)
        rel = out.relative_to(ctx.out)
        rows += summary_rows(
            label, source, summary, run_dir=str(rel), seed=seed, expected_gap=calibration.get(label)
        )
        section.commands.append(
            ctx.command(
                "run",
                add_run_arguments,
                **model,
                suite=ctx.config.suite,
                seed=seed,
                out=out,
                bootstrap=sizes["bootstrap"],
            )
        )
        section.table(f"{label}: per category (`{rel}/results.jsonl`)", run_table(summary))
    for model, gaps in ctx.config.published["gap"].items():
        rows += [
            {"model": model, "source": PUBLISHED, "category": c, "gap_reference": v / 100}
            for c, v in gaps.items()
        ]
    write_jsonl(folder / "gap.jsonl", rows)
    section.records.append("gap/gap.jsonl")
    section.tables[:0] = [
        {"caption": "Gap Score (reference procedure) per category, 95 % bootstrap CI over items", "markdown": gap_table(rows)},
        {"caption": "und / gen accuracy per category (κ: agreement between the directions)", "markdown": accuracy_table(rows)},
    ]  # fmt: skip
    overall = {r["model"]: r for r in rows if r["category"] == "overall"}
    for spec, source, _, _ in runs:
        r = overall[spec]
        if source.startswith("run here"):
            section.findings.append(
                f"Gap Score of `{spec}`: {with_ci(r['gap_reference'], r['gap_reference_ci'])} "
                f"(identified {with_ci(r['gap_identified'], r['gap_identified_ci'])}; und {num(r['und_acc'])}, "
                f"gen {num(r['gen_acc'])}, κ {num(r['kappa'])})."
            )
    covered = 0
    for label, expected in calibration.items():
        measured, (lo, hi) = overall[label]["gap_reference"], expected["simulated_range"]
        inside = lo <= measured <= hi
        covered += inside
        section.paragraphs.append(
            f"{label}: population Gap Score {num(expected['population'])}; suites of this size drawn from the "
            f"population score {num(expected['simulated_mean'])} on average (95 % of 200 draws in "
            f"[{num(lo)}, {num(hi)}]); measured {with_ci(measured, overall[label]['gap_reference_ci'])}, "
            f"{'inside' if inside else 'outside'} that range."
        )
    if calibration:
        section.findings.append(
            f"Calibration: the oracles' measured Gap Score lies within the range simulated suites of the same "
            f"size give in {covered} of {len(calibration)} cases (error rates set, so the gap is known)."
        )
    return section
