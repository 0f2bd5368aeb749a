"""Human-readable views of runs: ``report.md`` + ``report.png`` for one run, and a side-by-side comparison.

Both read ``summary.json`` (written by the runner from :func:`gapeval.summary.summarize`); for a run that has not
finished, the summary is computed from the committed results so far and the report says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gapeval.items import CATEGORIES
from gapeval.manifest import read_manifest
from gapeval.rundir import MANIFEST, load_records, read_summary
from gapeval.summary import JOINT_KEYS, summarize

JOINT_LABELS = {"p11": "both right", "p10": "und only", "p01": "gen only", "p00": "both wrong"}
JOINT_COLOURS = {"p11": "#2b8a3e", "p10": "#1c7ed6", "p01": "#f08c00", "p00": "#c92a2a"}


def load_summary(run_dir: Path, bootstrap: int = 1000) -> tuple[dict[str, Any], bool]:
    """(summary, complete): the run's summary.json, or one computed from the results so far (with
    ``bootstrap`` resamples for its intervals)."""
    summary = read_summary(run_dir)
    if summary is not None:
        return summary, True
    return summarize(load_records(run_dir), bootstrap=bootstrap), False


def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    return read_manifest(path) if path.exists() else {}


def rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, metrics) per category present, in the canonical order, then overall."""
    categories = summary["categories"]
    ordered = [c for c in CATEGORIES if c in categories] + sorted(set(categories) - set(CATEGORIES))
    return [(c, categories[c]) for c in ordered] + [("overall", summary["overall"])]


def _num(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pvalue(value: Any) -> str:
    return "—" if value is None else f"{value:.3g}"


def _gap(row: dict[str, Any], kind: str = "reference") -> str:
    ci = row.get(f"gap_{kind}_ci")
    return _num(row.get(f"gap_{kind}")) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _joint(row: dict[str, Any], key: str) -> str:
    count = row.get(f"n{key[1:]}")
    return _num(row.get(key)) + (f" ({count})" if count is not None else "")


def table(summary: dict[str, Any]) -> str:
    """The per-category markdown table."""
    head = (
        "| category | n | und acc | gen acc | p11 | p10 | p01 | p00 | Gap Score [95% CI] | identified gap [95% CI] "
        "| κ | McNemar p | errors |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, row in rows(summary):
        cells = [
            label,
            str(row.get("n", "—")),
            _num(row.get("und_acc")),
            _num(row.get("gen_acc")),
            *(_joint(row, key) for key in JOINT_KEYS),
            _gap(row),
            _gap(row, "identified"),
            _num(row.get("kappa")),
            _pvalue(row.get("mcnemar_p")),
            str(row.get("n_error", 0)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(run_dir: str | Path) -> str:
    """Two lines for the end of a run: per-direction accuracy, Gap Score with its CI and κ; the report's path."""
    run_dir = Path(run_dir)
    summary, _ = load_summary(run_dir)
    o = summary["overall"]
    errors = f", {o['n_error']} with errors" if o.get("n_error") else ""
    return (
        f"und acc {_num(o.get('und_acc'))} · gen acc {_num(o.get('gen_acc'))} · Gap Score {_gap(o)} · "
        f"κ {_num(o.get('kappa'), 2)} ({o.get('n', 0)} items scored{errors})\n"
        f"report: {run_dir / 'report.md'}"
    )


def write_report(run_dir: str | Path, bootstrap: int = 1000) -> Path:
    """Write ``report.md`` and ``report.png`` into the run directory; return the markdown path.

    ``bootstrap`` only matters for an unfinished run, whose summary is computed here and not saved.
    """
    run_dir = Path(run_dir)
    summary, complete = load_summary(run_dir, bootstrap)
    manifest = _manifest(run_dir)
    plot_run(summary, run_dir / "report.png", title=_label(run_dir, manifest))
    model = manifest.get("model", {})
    suite = manifest.get("suite", {})
    lines = [
        f"# GapEval report: {model.get('name', '?')} on {suite.get('id', '?')}",
        "",
        f"- model config: `{json.dumps(model.get('config', {}), sort_keys=True)}`",
        f"- suite: {suite.get('n_items', '?')} items, hash `{str(suite.get('hash', '?'))[:12]}`; seed {manifest.get('seed', '?')}",
    ]
    if manifest.get("edit"):
        lines.append(f"- edit: {manifest['edit']}")
    if not complete:
        lines.append("- **partial**: the run has not finished; numbers cover the items committed so far")
    if summary.get("model_notes"):
        lines.append(f"- model notes: `{json.dumps(summary['model_notes'], sort_keys=True)}`")
    lines += [
        "",
        table(summary),
        "",
        "Gap Score: the GapEval reference procedure (higher = larger gap between understanding and generation);",
        "identified gap: the variant fitted on the identified logit difference (see gapeval/score.py).",
        "κ: Cohen's kappa between the two directions' verdicts; McNemar p: exact test of und vs gen accuracy.",
        "p11 = both right, p10 = understanding only, p01 = generation only, p00 = neither (counts in brackets);",
        "errors: items whose answer could not be produced or judged, left out of every other column.",
        "",
        "![und vs gen accuracy and joint outcomes](report.png)",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _label(run_dir: Path, manifest: dict[str, Any], full: bool = False) -> str:
    where = str(run_dir) if full else run_dir.name
    name = manifest.get("model", {}).get("name")
    return f"{where} ({name})" if name else where


def _figure(ncols: int, width: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, ncols, figsize=(width, 4.2), squeeze=False)


def plot_run(summary: dict[str, Any], path: Path, title: str = "") -> None:
    """Left: und vs gen accuracy per category with the Gap Score above; right: stacked joint outcomes."""
    import numpy as np

    plt, fig, axes = _figure(2, 12)
    acc, joint = axes[0]
    labels = [label.replace("_", "\n") for label, _ in rows(summary)]
    data = [row for _, row in rows(summary)]
    x = np.arange(len(data))
    und = [row.get("und_acc") or 0.0 for row in data]
    gen = [row.get("gen_acc") or 0.0 for row in data]
    acc.bar(x - 0.2, und, 0.4, label="understanding", color="#1c7ed6")
    acc.bar(x + 0.2, gen, 0.4, label="generation", color="#f08c00")
    for xi, row, top in zip(x, data, np.maximum(und, gen), strict=True):
        if row.get("gap_reference") is not None:
            acc.annotate(f"gap {row['gap_reference']:.2f}", (xi, top + 0.02), ha="center", fontsize=8)
    acc.set(xticks=x, ylim=(0, 1.3), ylabel="accuracy", title="accuracy per direction")
    acc.set_xticklabels(labels, fontsize=8)
    acc.legend(loc="upper center", ncol=2, fontsize=8)
    bottom = np.zeros(len(data))
    for key in JOINT_KEYS:
        values = np.array([row.get(key) or 0.0 for row in data])
        joint.bar(x, values, 0.6, bottom=bottom, label=JOINT_LABELS[key], color=JOINT_COLOURS[key])
        bottom += values
    joint.set(xticks=x, ylim=(0, 1), ylabel="share of items", title="joint outcomes")
    joint.set_xticklabels(labels, fontsize=8)
    joint.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(run_dirs: Sequence[str | Path], png_path: str | Path | None = None, bootstrap: int = 1000) -> str:
    """Markdown table of und acc, gen acc and Gap Score per category, one column group per run (+ chart)."""
    paths = [Path(p) for p in run_dirs]
    by_name = len({p.name for p in paths}) == len(paths)  # else label runs by their full path
    runs = []
    for run_dir in paths:
        manifest = _manifest(run_dir)
        summary, complete = load_summary(run_dir, bootstrap)
        label = _label(run_dir, manifest, full=not by_name)
        runs.append((label + ("" if complete else " [partial]"), dict(rows(summary))))
    names = [c for c in CATEGORIES if any(c in r for _, r in runs)] + ["overall"]
    head = ["category"] + [f"{label}: {m}" for label, _ in runs for m in ("und", "gen", "Gap")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name]
        for _, by_category in runs:
            row = by_category.get(name, {})
            cells += [_num(row.get("und_acc")), _num(row.get("gen_acc")), _gap(row) if row else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    if png_path is not None:
        plot_compare(runs, names, Path(png_path))
    return "\n".join(lines) + "\n"


def plot_compare(runs: list[tuple[str, dict[str, dict[str, Any]]]], names: list[str], path: Path) -> None:
    """Gap Score per category, one bar per run, with its 95% CI when the summary has one."""
    import numpy as np

    plt, fig, axes = _figure(1, max(6, 1.6 * len(names) * len(runs) ** 0.5))
    ax = axes[0][0]
    x = np.arange(len(names))
    width = 0.8 / len(runs)
    for k, (label, by_category) in enumerate(runs):
        rows_ = [by_category.get(name, {}) for name in names]
        values = np.array([row.get("gap_reference") or 0.0 for row in rows_])
        err = np.array(
            [row.get("gap_reference_ci") or [v, v] for v, row in zip(values, rows_, strict=True)], dtype=float
        )
        err = np.clip(np.stack([values - err[:, 0], err[:, 1] - values]), 0, None)
        ax.bar(x + (k - (len(runs) - 1) / 2) * width, values, width, yerr=err, capsize=2, label=label)
    ax.set(xticks=x, ylim=(0, 1.05), ylabel="Gap Score", title="Gap Score per category")
    ax.set_xticklabels([n.replace("_", "\n") for n in names], fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
