"""What ``gapeval patch`` writes: arrays (npz), heatmaps and line plots (PNG), a JSON summary, a text table.

Grids of different pairs are right-aligned on the prompt's end (prompts of different lengths then share their last
positions); a column is labelled ``end``, ``span`` where every pair has its entity there, else by its offset from
the end. Plots show the mean over pairs next to the per-pair spread (standard deviation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def right_align(grids: Sequence[np.ndarray]) -> np.ndarray:
    """(N, rows, widest) stack of (rows, P_i) grids, NaN where a shorter prompt has no position."""
    width = max(g.shape[1] for g in grids)
    out = np.full((len(grids), grids[0].shape[0], width), np.nan)
    for i, g in enumerate(grids):
        out[i, :, width - g.shape[1] :] = g
    return out


def position_labels(lengths: Sequence[int], spans: Sequence[Sequence[int]]) -> list[str]:
    """Labels of right-aligned columns for prompts of ``lengths`` with entity ``spans`` (unpadded positions)."""
    width = max(lengths)
    shared = set.intersection(*({width - n + p for p in s} for n, s in zip(lengths, spans, strict=True)))
    return ["end" if j == width - 1 else "span" if j in shared else str(j - width + 1) for j in range(width)]


def heatmap(path: Path, stack: np.ndarray, rows: list[str], columns: list[str], title: str) -> None:
    """Mean over pairs (left) and the per-pair standard deviation (right) of an (N, rows, columns) stack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, std = np.nanmean(stack, 0), np.nanstd(stack, 0)
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.9 * len(columns), 1.2 + 0.45 * len(rows)), squeeze=False)
    limit = max(1.0, float(np.nanmax(np.abs(mean))))
    panels = (
        (mean, f"{title}: mean of {len(stack)}", "RdBu_r", -limit, limit),
        (std, "std over pairs", "Greys", 0, None),
    )
    for ax, (values, name, cmap, low, high) in zip(axes[0], panels, strict=True):
        image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(name, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_plot(path: Path, series: dict[str, np.ndarray], rows: list[str], title: str) -> None:
    """One line per series of an (N, rows) stack: mean over pairs with a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    x = np.arange(len(rows))
    for name, stack in series.items():
        mean, std = np.nanmean(stack, 0), np.nanstd(stack, 0)
        ax.plot(x, mean, marker="o", label=f"{name} (n={len(stack)})")
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xticks(x, rows, fontsize=7)
    ax.set_ylabel("normalised log-prob difference")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls="--")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def top_cells(
    stacks: dict[str, np.ndarray],
    rows: dict[str, list[str]],
    columns: list[str],
    k: int = 10,
    by: str = "mean",
) -> list[dict[str, Any]]:
    """The ``k`` cells with the largest |mean over pairs| across ``{name: (N, rows, columns)}`` stacks; ``rows``
    maps each stack's grid (its name's last part) to its rows' hook-point names."""
    cells = []
    for name, stack in stacks.items():
        mean, std = np.nanmean(stack, 0), np.nanstd(stack, 0)
        labels = rows[name.split("/")[-1]]
        for row, col in np.ndindex(mean.shape):
            if np.isfinite(mean[row, col]):
                cells.append(
                    {
                        "grid": name,
                        "hook": labels[row],
                        "position": columns[col],
                        "mean": float(mean[row, col]),
                        "std": float(std[row, col]),
                    }
                )
    return sorted(cells, key=lambda c: -abs(c[by]))[:k]


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table (numbers to 3 decimals; None as "-")."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def write(out: Path, arrays: dict[str, np.ndarray], summary: dict[str, Any]) -> None:
    """``arrays.npz`` (keys like ``grid/und/resid``, loadable without pickle) and ``summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "arrays.npz", **arrays)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n", encoding="utf-8")


def _json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.where(np.isfinite(value), value, None).tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
