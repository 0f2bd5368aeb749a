"""A probing study's numbers as per-layer text tables and a PNG (probes left, erasure right).

A value is starred only when ``probe_run`` marked it a finding (CI above the majority class and, within a
direction, Holm-adjusted permutation p < 0.05; for erasure, LEACE's drop above the matched control's): the
tables never present a value that the majority class or shuffled labels could give as a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WITHIN = (("acc_und", "und"), ("acc_gen", "gen"))
TRANSFER = (("und_to_gen", "und→gen"), ("gen_to_und", "gen→und"))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}" if value < 0 else f"{value:.2f}"


def _with_ci(value: float | None, ci: Any, finding: bool = False) -> str:
    text = _num(value) if not ci else f"{_num(value)} [{_num(ci[0])},{_num(ci[1])}]"
    return text + ("*" if finding else " ")


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rows(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    return ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [head, *body]]


def probe_table(result: dict[str, Any]) -> list[str]:
    """Per layer: accuracy [CI], permutation p (Holm), untrained accuracy and selectivity per direction; transfer."""
    head = ["layer"]
    for _, d in WITHIN:
        head += [f"acc {d} [95% CI]", "p holm", "untrained", "select."]
    head += [f"{name} [95% CI]" for _, name in TRANSFER]
    body = []
    for layer in result["layers"]:
        cells = [layer["layer"]]
        for key, _ in WITHIN:
            s = layer[key]
            cells += [
                _with_ci(s["mean"], s.get("ci"), s.get("finding", False)),
                _p(s.get("p_holm")),
                _num(s.get("untrained_accuracy")),
                _num(s.get("selectivity")),
            ]
        cells += [
            _with_ci(layer[k]["mean"], layer[k].get("ci"), layer[k].get("finding", False))
            for k, _ in TRANSFER
        ]
        body.append(cells)
    return _rows(head, body)


def erase_table(result: dict[str, Any]) -> list[str]:
    """Per layer: LEACE's and the matched control's drop [CI] per direction, ranks and mean squared shifts."""
    head = ["layer", "rank"]
    for d in ("und", "gen"):
        head += [f"drop {d} [95% CI]", f"random {d} [95% CI]"]
    head += ["shift² leace/random"]
    body = []
    for layer in result["layers"]:
        e = layer["erase"]
        ranks = sorted(set(e["rank"]))
        cells = [layer["layer"], "/".join(map(str, ranks))]
        for d in ("und", "gen"):
            cells += [
                _with_ci(e[d]["drop"]["value"], e[d]["drop"]["ci"], e[d]["finding"]),
                _with_ci(e[d]["random_drop"]["value"], e[d]["random_drop"]["ci"]),
            ]
        shift = e["perturbation"]
        cells.append(f"{shift['leace']:.3g}/{shift['random']:.3g}")
        body.append(cells)
    return _rows(head, body)


def table(result: dict[str, Any]) -> str:
    """The title, the probe table, and (when erasure ran) the erasure table, each with what a star means."""
    smoke = " — SMOKE RUN (--limit): no finding is claimed" if result.get("smoke") else ""
    lines = [
        f"{result['model']}: {result['attribute']} at {result['position']} — {result['rows_per_direction']} prompts "
        f"per direction ({result['realms']} realms), {result['folds']} folds grouped by {result['split_groups']}, "
        f"chance {result['chance']:.2f}, majority class {result['majority']:.2f}{smoke}",
        *probe_table(result),
        f"* a finding: 95% CI above the majority class ({result['majority']:.2f}) and, within a direction, "
        f"Holm-adjusted p < 0.05 ({result['shuffles']} label shuffles across realms); selectivity = acc − untrained",
    ]
    if "erasure" in result:
        e = result["erasure"]
        base = ", ".join(f"{d} {_num(v)}" for d, v in e["baseline"].items())
        lines += [
            *erase_table(result),
            f"erasure: {e['method']} at {e['at']} positions, fitted on the training realms, judged on the held-out "
            f"realms' items (without it: {base}); control: random directions, same rank and mean squared shift; "
            "* LEACE's drop exceeds the control's (CI of the difference above 0)",
        ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    names = [layer["layer"].removeprefix("blocks.").replace(".hook_", " ") for layer in layers]
    x = list(range(len(names)))
    panels = 2 if "erasure" in result else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)

    def bars(ax: Any, values: list[float | None], cis: list[Any], label: str, style: str = "-") -> None:
        mid = [float("nan") if v is None else v for v in values]
        err = [[0, 0] if not c or v is None else [v - c[0], c[1] - v] for v, c in zip(mid, cis, strict=True)]
        ax.errorbar(x, mid, yerr=list(zip(*err, strict=True)), label=label, capsize=3, linestyle=style)

    ax = axes[0][0]
    for key, label in (*WITHIN, *TRANSFER):
        bars(ax, [layer[key]["mean"] for layer in layers], [layer[key].get("ci") for layer in layers], label)
    for key, d in WITHIN:
        if "untrained_accuracy" in layers[0][key]:
            ax.plot(
                x,
                [layer[key]["untrained_accuracy"] for layer in layers],
                ":",
                marker="x",
                label=f"untrained {d}",
            )
    ax.axhline(result["chance"], color="grey", linewidth=0.8, label="chance")
    ax.axhline(result["majority"], color="grey", linewidth=0.8, linestyle="--", label="majority class")
    ax.set(xticks=x, xlabel="hook point", ylabel="held-out accuracy", ylim=(0, 1.05))
    ax.set_xticklabels(names, rotation=30, fontsize=7)
    ax.set_title(f"{result['attribute']} at {result['position']}: probes (95% CI)")
    ax.legend(fontsize=6)
    if panels == 2:
        ax = axes[0][1]
        for d in ("und", "gen"):
            for kind, style in (("drop", "-"), ("random_drop", "--")):
                entries = [layer["erase"][d][kind] for layer in layers]
                label = f"{'LEACE' if kind == 'drop' else 'matched random'} {d}"
                bars(ax, [e["value"] for e in entries], [e["ci"] for e in entries], label, style)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(xticks=x, xlabel="hook point", ylabel="judged accuracy drop, held-out realms")
        ax.set_xticklabels(names, rotation=30, fontsize=7)
        ax.set_title(f"erasure ({result['erasure']['method']}, {result['erasure']['at']} positions)")
        ax.legend(fontsize=6)
    fig.suptitle(result["model"] + (" (smoke run)" if result.get("smoke") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
