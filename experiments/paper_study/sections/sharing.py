"""Section 6, the sharing sweep: which training conditions make a fact learned through one direction usable by
the other? The built-in UMM retrained one factor at a time (entity diversity, pictured share, a cross-modal
consistency task, decoupled weights, a non-unified pair), each model measured for direct transfer, edit
propagation, probe transfer, where patching finds the fact and its Gap Score
(:func:`experiments.sharing.sweep.run_sweep`, also ``gapeval sweep``).

Records: ``sharing/sharing.jsonl`` (one line per model), ``sharing/conditions.jsonl`` (per condition, seeds
pooled), ``sharing/propagation.jsonl`` (one decision per condition × kind × trained direction).
"""

from __future__ import annotations

from pathlib import Path

from experiments.paper_study.records import Section
from experiments.paper_study.study import Context
from experiments.sweep_cli import add_arguments as sweep_arguments


def sharing_section(ctx: Context) -> Section:
    """The sweep file's profile of this study (``sizes.sharing.profile`` may name the other one); with
    ``shipped_only``, only the models whose checkpoints and measurements ship are reported — the real sweep's
    numbers in seconds, without training anything."""
    from experiments.sharing.config import load_sweep
    from experiments.sharing.sweep import run_sweep
    from experiments.sharing.training import SHIPPED

    sizes = ctx.config.sizes["sharing"]
    config = load_sweep(sizes.get("config"), quick=sizes.get("profile", ctx.config.profile) == "quick")
    only = (
        [m.name for m in config.models() if (SHIPPED / m.name).is_dir()]
        if sizes.get("shipped_only")
        else None
    )
    folder = ctx.folder("sharing")
    section = run_sweep(config, folder, seed=ctx.config.seed, only=only, progress=False)
    section.records = [f"sharing/{r}" for r in section.records]
    section.figures = [{**f, "path": f"sharing/{f['path']}"} for f in section.figures]
    section.commands.append(
        ctx.command(
            "sweep", sweep_arguments, *([Path(sizes["config"])] if sizes.get("config") else []),
            quick=config.profile == "quick", seed=ctx.config.seed, only=only, out=folder,
        )
    )  # fmt: skip
    return section
