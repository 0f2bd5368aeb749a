"""``gapeval sweep``: the sharing sweep (a thin shell over :func:`experiments.sharing.sweep.run_sweep`).

Only argparse at import time: ``gapeval --help`` must not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        type=Path,
        help="the sweep file (YAML; default: experiments/sharing/sweep.yaml)",
    )
    p.add_argument("--quick", action="store_true", help="the file's quick profile (a smoke-sized sweep)")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="output folder (default: runs/sweep)")
    p.add_argument("--seed", type=int, default=0, help="measurement seed: specs, resampling (default: 0)")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="MODEL",
        help="only these models, in this order (e.g. default-seed0 pair-seed1): two processes can train two side by side",
    )
    p.add_argument("--train-only", action="store_true", help="train (or resume) and stop before measuring")
    p.add_argument("--estimate", action="store_true", help="print the training CPU-hour estimate and stop")
    p.add_argument(
        "--ship",
        action="store_true",
        help="copy every measured model (final checkpoint, logs, measurements) into gapeval/checkpoints/sweep/",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def handler(args: argparse.Namespace) -> int:
    from experiments.paper_study.study_report import findings_list, section_markdown
    from experiments.sharing.config import load_sweep
    from experiments.sharing.sweep import estimate_cpu_hours, measured_step_seconds, run_sweep, ship_measured

    config = load_sweep(args.config, quick=args.quick)
    if args.estimate:
        hours = estimate_cpu_hours(config, measured_step_seconds(config))
        print(f"{len([m for m in config.models() if m.train])} models to train: about {hours:.1f} CPU hours")
        return 0
    section = run_sweep(
        config,
        args.out,
        seed=args.seed,
        train_only=args.train_only,
        only=args.only,
        progress=not args.no_progress,
    )
    if not args.train_only:
        path = args.out / "report.md"
        findings = findings_list(section.findings)
        lines = ["# The sharing sweep", "", "## Findings", "", *findings, "", *section_markdown(1, section)]
        path.write_text("\n".join(lines), encoding="utf-8")
        print(f"report: {path}")
    if args.ship:
        for target in ship_measured(config, args.out, args.seed):
            print(f"shipped {target}")
    return 0
