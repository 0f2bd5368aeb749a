"""``gapeval probe``: per-layer probes with a permutation test and an untrained-model baseline, transfer, and
held-out causal erasure of one attribute (probes.probe_run).

Module-level imports stay light so ``gapeval --help`` does not load torch or scikit-learn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gapeval.cli_args import add_model_arguments, load_model_from_args
from probes.names import ATTRIBUTES, ERASERS, POSITIONS, SHUFFLES


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, intervenable=True)
    p.add_argument("--attribute", required=True, choices=ATTRIBUTES, help="realm fact to probe for")
    p.add_argument(
        "--position",
        default="last",
        choices=POSITIONS,
        help="last prompt token, entity span (mean or last token), or teacher-forced answer (default: last); "
        "positions whose input holds the label are refused (answer; entity spans for --attribute entity)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for probe.json, probe.png and the states")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="label shuffles, bootstrap, untrained weights and random-eraser seed",
    )
    p.add_argument(
        "--shuffles",
        type=int,
        default=SHUFFLES,
        help=f"label shuffles of the permutation test per layer and direction (default: {SHUFFLES}; 0 skips it)",
    )
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained-model baseline")
    p.add_argument("--method", default="leace", choices=tuple(ERASERS), help="eraser (default: leace)")
    p.add_argument(
        "--erase-at",
        default="all",
        choices=("all", "probed"),
        help="erase at every position, generated tokens included, or at the probed one (default: all)",
    )
    p.add_argument("--no-erase", action="store_true", help="probes only, no judged erasure")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="use only the first N realms of the world, for probes and erasure alike (a quick look; default: all)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass (default: 64)")


def handler(args: argparse.Namespace) -> int:
    from probes.probe_report import plot, table
    from probes.probe_run import probe_study

    if args.shuffles < 0:
        raise ValueError(f"--shuffles must be 0 or more, got {args.shuffles}")
    model = load_model_from_args(args, intervenable=True)
    result = probe_study(
        model,
        args.attribute,
        args.position,
        args.out,
        seed=args.seed,
        method=args.method,
        erase_at=args.erase_at,
        erase=not args.no_erase,
        shuffles=args.shuffles,
        baseline=not args.no_untrained,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "probe.png")
    print(table(result))
    print(f"wrote {args.out / 'probe.json'} and {args.out / 'probe.png'}")
    return 0
