"""A probing study's numbers as a per-layer text table and a PNG (probes left, erasure right)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROBE_COLUMNS = (
    ("acc_und", "acc und"),
    ("acc_gen", "acc gen"),
    ("control_und", "ctrl und"),
    ("control_gen", "ctrl gen"),
    ("und_to_gen", "und→gen"),
    ("gen_to_und", "gen→und"),
)
ERASE_COLUMNS = (
    ("drop_und", "drop und"),
    ("drop_gen", "drop gen"),
    ("random_drop_und", "rand und"),
    ("random_drop_gen", "rand gen"),
)


def _cell(value: float | None) -> str:
    return "   -" if value is None else f"{value:+.2f}" if value < 0 else f"{value:.2f}"


def _selectivity(layer: dict[str, Any], direction: str) -> float:
    return layer[f"acc_{direction}"]["mean"] - layer[f"control_{direction}"]["mean"]


def table(result: dict[str, Any]) -> str:
    """Fixed-width table: probe means (± std over folds in the JSON), selectivity, transfer, erasure drops."""
    erased = "erasure" in result
    head = ["layer"] + [name for _, name in PROBE_COLUMNS] + ["sel und", "sel gen"]
    head += [name for _, name in ERASE_COLUMNS] + ["rank"] if erased else []
    lines = [
        f"{result['model']}: {result['attribute']} at {result['position']} — {result['rows_per_direction']} prompts "
        f"per direction, {result['folds']} folds grouped by {result['split_groups']}, chance {result['chance']:.2f} "
        f"(majority class {result['majority']:.2f})",
        "  ".join(f"{h:>8}" for h in head),
    ]
    for layer in result["layers"]:
        cells = [layer["layer"]] + [_cell(layer[key]["mean"]) for key, _ in PROBE_COLUMNS]
        cells += [_cell(_selectivity(layer, d)) for d in ("und", "gen")]
        if erased:
            cells += [_cell(layer["erase"][key]) for key, _ in ERASE_COLUMNS] + [str(layer["erase"]["rank"])]
        lines.append("  ".join(f"{c:>8}" for c in cells))
    if erased:
        e = result["erasure"]
        base = ", ".join(f"{d} {_cell(v)}" for d, v in e["baseline"].items())
        lines.append(
            f"erasure: {e['method']} at {e['at']} positions; judged world knowledge without it: {base}"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [layer["layer"] for layer in result["layers"]]
    x = range(len(names))
    panels = 2 if "erasure" in result else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for key, label in PROBE_COLUMNS:
        means = [layer[key]["mean"] for layer in result["layers"]]
        stds = [layer[key]["std"] for layer in result["layers"]]
        ax.errorbar(x, means, yerr=stds, label=label, capsize=3, linestyle="--" if "control" in key else "-")
    ax.axhline(result["chance"], color="grey", linewidth=0.8, label="chance")
    ax.axhline(result["majority"], color="grey", linewidth=0.8, linestyle=":", label="majority class")
    ax.set(xticks=list(x), xticklabels=names, xlabel="layer", ylabel="accuracy", ylim=(0, 1.05))
    ax.set_title(f"{result['attribute']} at {result['position']}: probes")
    ax.legend(fontsize=7)
    if panels == 2:
        ax = axes[0][1]
        for key, label in ERASE_COLUMNS:
            values = [layer["erase"][key] for layer in result["layers"]]
            ax.plot(
                x,
                [float("nan") if v is None else v for v in values],
                marker="o",
                label=label,
                linestyle="--" if key.startswith("random") else "-",
            )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(xticks=list(x), xticklabels=names, xlabel="layer", ylabel="judged accuracy drop")
        ax.set_title(f"erasure ({result['erasure']['method']}, {result['erasure']['at']} positions)")
        ax.legend(fontsize=7)
    fig.suptitle(result["model"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
