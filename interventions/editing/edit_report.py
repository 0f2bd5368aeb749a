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
    ("locality_verdict", "{d} loc verdict"),
    ("locality_acc_change", "{d} loc Δacc"),
    ("logprob_shift", "{d} Δlogp"),
    ("logprob_shift_net", "{d} net Δlogp"),
)
SIGNED = ("locality_acc_change", "logprob_shift", "logprob_shift_net")


def _cell(est: dict[str, Any] | None, signed: bool = False) -> str:
    if est is None or est["mean"] is None:
        return "–"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    ci = est["ci"]
    return fmt.format(est["mean"]) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per condition, und and gen accuracy on the targets first (the paper's panels), then
    old-value rate, generality, locality (output agreement; verdict agreement and accuracy change beside it),
    log-prob shift and the shift net of a control realm's; 95 % bootstrap CIs."""
    header = ["condition"] + [label.format(d=d) for key, label in COLUMNS for d in ("und", "gen")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for condition, by_dir in summary.items():
        cells = [
            _cell(by_dir[d].get(key), signed=key in SIGNED) for key, _ in COLUMNS for d in ("und", "gen")
        ]
        lines.append("| " + " | ".join([LABELS.get(condition, condition), *cells]) + " |")
    return "\n".join(lines)


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def propagation_table(cases: list[dict[str, Any]]) -> str:
    """Markdown: one row per trained direction — rate in the other direction vs its baseline, the paired
    sign test (Holm where several), the verdict and the smallest rate the rule could detect."""
    header = ["trained via", "judged in", "rate", "baseline", "up / down / edits", "p", "Holm p", "detected"]
    header += ["min detectable", "Δlogp", "net Δlogp"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cases:
        verdict = c.get("detected_holm", c["detected"])
        cells = [
            LABELS.get(c["via"], c["via"]),
            c["to"],
            _cell({"mean": c["rate"], "ci": c["ci"]}),
            _num(c["baseline"]),
            f"{c['up']} / {c['down']} / {c['edits']}",
            _num(c["p"], "{:.3g}"),
            _num(c.get("p_holm"), "{:.3g}"),
            "yes" if verdict else "no",
            _num(c.get("min_detectable_rate_holm", c["min_detectable_rate"])),
            _cell(c["logprob_shift"], signed=True),
            _cell(c["logprob_shift_net"], signed=True),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effects_table(effects: dict[str, Any]) -> str:
    """Markdown: per condition, the targets' joint outcomes over the new value and the suite's Gap Score."""
    header = ["condition", "p11", "p10", "p01", "p00", "suite und", "suite gen", "suite Gap Score"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for condition, e in effects.items():
        gap = e["gap"] or {}
        score = gap.get("gap_reference")
        ci = gap.get("gap_reference_ci")
        joint = [_num(e["joint"].get(k)) for k in ("p11", "p10", "p01", "p00")]
        suite = [_num(gap.get("und_acc")), _num(gap.get("gen_acc")), _cell({"mean": score, "ci": ci})]
        lines.append("| " + " | ".join([LABELS.get(condition, condition), *joint, *suite]) + " |")
    return "\n".join(lines)


def report_text(summary: dict[str, Any], records: list[dict[str, Any]], conditions: list[str]) -> str:
    """Everything ``gapeval edit`` writes to table.md: the metrics, the propagation decisions, the joint
    outcomes and gap, and a table per spec group."""
    from interventions.editing.metrics import summarize_groups

    parts = [format_table(summary["conditions"])]
    if summary["propagation"]:
        parts.append(
            "Propagation (paired, per edit against its own baseline):\n\n"
            + propagation_table(summary["propagation"])
        )
    parts.append(
        "Joint outcomes on the targets (new value) and the suite's Gap Score:\n\n"
        + effects_table(summary["effects"])
    )
    return "\n\n".join(parts) + group_tables(records, summarize_groups(records, conditions))


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
