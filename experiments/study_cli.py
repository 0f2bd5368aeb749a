"""``gapeval study``: the paper's study in one command (a thin shell over
:func:`experiments.paper_study.study.run_study`).

Only argparse at import time: ``gapeval --help`` must not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.paper_study.sections import section_names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the small sizes of the config (≤ 5 minutes here)")
    p.add_argument(
        "--models",
        nargs="+",
        metavar="M",
        help="model specs (default: the config's, toy and toy:decoupled)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="output folder (default: runs/study)")
    p.add_argument("--seed", type=int, help="study seed (default: the config's, 0)")
    p.add_argument(
        "--sections",
        nargs="+",
        choices=section_names(),
        default=list(section_names()),
        help="run only these sections (default: all)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="another study config (YAML; default: experiments/paper_study/config.yaml)",
    )


def handler(args: argparse.Namespace) -> int:
    from experiments.paper_study.config import load_config
    from experiments.paper_study.study import run_study

    config = load_config(args.config, quick=args.quick, models=args.models, seed=args.seed)
    print(f"report: {run_study(config, args.out, sections=args.sections)}")
    return 0
