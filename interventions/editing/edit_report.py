"""The editing experiment's table and figure (the layout of the paper's knowledge-manipulation figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {"baseline": "Baseline", "und": "Train-on-Und", "gen": "Train-on-Gen", "both": "Train-on-Both"}
COLUMNS = (
    ("target", "{d} acc"),
    ("target_old", "{d} old"),
    ("generality", "{d} gen'lity"),
    ("locality", "{d} locality"),
    ("locality_acc_change", "{d} loc Δacc"),
    ("logprob_shift", "{d} Δlogp"),
)


def _cell(est: dict[str, Any], signed: bool = False) -> str:
    if est["mean"] is None:
        return "–"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    ci = est["ci"]
    return fmt.format(est["mean"]) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per condition, und and gen accuracy on the targets first (the paper's panels), then
    old-value rate, generality, locality agreement and accuracy change, log-prob shift; 95 % bootstrap CIs."""
    header = ["condition"] + [label.format(d=d) for key, label in COLUMNS for d in ("und", "gen")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for condition, by_dir in summary.items():
        cells = [
            _cell(by_dir[d][key], signed=key in ("locality_acc_change", "logprob_shift"))
            for key, _ in COLUMNS
            for d in ("und", "gen")
        ]
        lines.append("| " + " | ".join([LABELS.get(condition, condition), *cells]) + " |")
    return "\n".join(lines)


def group_tables(records: list[dict[str, Any]], groups: dict[str, Any]) -> str:
    """A table per spec group (``interventions.editing.metrics.summarize_groups`` of ``records``; e.g. inject into known
    vs unseen entities), or "" when specs have no group."""
    sections = []
    for group, summary in groups.items():
        n = len({r["edit"] for r in records if r.get("group") == group})
        sections.append(f"\n\n{group} ({n} specs):\n\n{format_table(summary)}")
    return "".join(sections)


def plot(summary: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Two panels (evaluated in generation / understanding), one bar per condition, with 95 % CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    colours = {"baseline": "#9e9e9e", "und": "#1f77b4", "gen": "#ff7f0e", "both": "#2ca02c"}
    for ax, direction, name in zip(axes, ("gen", "und"), ("generation", "understanding"), strict=True):
        for k, condition in enumerate(conditions):
            est = summary[condition][direction]["target"]
            mean = est["mean"] or 0.0
            err = [[mean - est["ci"][0]], [est["ci"][1] - mean]] if est["ci"] else None
            ax.bar(k, mean, color=colours.get(condition, "#555"), yerr=err, capsize=3)
            top = est["ci"][1] if est["ci"] else mean
            ax.text(k, top + 0.02, f"{mean:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(conditions)), [LABELS.get(c, c) for c in conditions], rotation=20, fontsize=8)
        ax.set_title(f"evaluated in {name}", fontsize=9)
        ax.set_ylim(0, 1.15)
    axes[0].set_ylabel("accuracy on the target knowledge")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
