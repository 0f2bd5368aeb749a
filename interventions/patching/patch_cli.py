"""``gapeval patch``: activation patching of a model on clean/corrupted pairs (see docs/patching.md).

Only argparse at import time: ``gapeval --help`` must not import torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gapeval.cli_args import add_model_arguments, load_model_from_args

MODES = ("grid", "transplant", "attribution", "edit")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, intervenable=True)
    p.add_argument("--mode", choices=MODES, default="grid", help="what to measure (default: grid)")
    p.add_argument("--pairs", type=int, default=10, help="number of synth realm pairs (default: 10)")
    p.add_argument("--out", required=True, type=Path, help="output folder (arrays.npz, summary.json, PNGs)")
    p.add_argument("--seed", type=int, default=0, help="pair selection and sampling seed (default: 0)")
    p.add_argument(
        "--realms",
        choices=("pictured", "unpictured", "all"),
        default="pictured",
        help="synth realms whose emblem training showed as a picture, never did, or all (default: pictured)",
    )
    p.add_argument(
        "--hop", choices=("one_hop", "two_hop"), default="one_hop", help="span: realm or founder name"
    )
    p.add_argument("--phrasing", type=int, default=0, help="world-knowledge phrasing index (default: 0)")
    p.add_argument("--pairs-file", type=Path, help="JSONL pairs naming items of --items (instead of synth)")
    p.add_argument("--items", type=Path, help="suite folder or items.jsonl that --pairs-file refers to")
    p.add_argument(
        "--min-gap", type=float, default=0.5, help="drop pairs with |LD_clean - LD_corrupt| below (nats; 0.5)"
    )
    p.add_argument("--max-rows", type=int, default=256, help="batch rows per patched forward (default: 256)")
    p.add_argument("--backend", choices=("torch", "nnsight"), default="torch", help="grid patching backend")
    p.add_argument("--top", type=int, default=10, help="cells in the printed table / verified (default: 10)")
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="HOOK:WHERE",
        help="edit mode: patch to decode with, a hook point and where, e.g. blocks.0.hook_resid_pre:span (WHERE: "
        "span, end, prompt); repeatable; default: none plus the residual stream at the span and the end, every layer",
    )


def handler(args: argparse.Namespace) -> int:
    from interventions.patching import patch_run
    from interventions.patching.pairs import load_pairs, synth_pairs
    from interventions.patching.patched_decoding import default_conditions, parse_condition

    model = load_model_from_args(args, intervenable=True)
    # checked before any pair is built
    conditions = [parse_condition(model, c) for c in args.condition] or default_conditions(model)
    if args.pairs_file:
        if not args.items:
            raise ValueError("--pairs-file needs --items (the suite its ids refer to)")
        from gapeval.io import load_items

        pairs = load_pairs(args.pairs_file, load_items(args.items), model)
    else:
        pictured = {"pictured": True, "unpictured": False, "all": None}[args.realms]
        if args.pairs < 1:
            raise ValueError(f"--pairs must be at least 1, got {args.pairs}")
        pairs = synth_pairs(
            model, args.pairs, seed=args.seed, hop=args.hop, phrasing=args.phrasing, pictured=pictured
        )
    if not pairs:
        raise ValueError(f"{args.pairs_file}: no pairs")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "handler"}
    common = {"min_gap": args.min_gap, "max_rows": args.max_rows, "settings": settings}
    if args.mode == "grid":
        summary, text = patch_run.grid_study(
            model, pairs, args.out, backend=args.backend, top=args.top, **common
        )
    elif args.mode == "transplant":
        summary, text = patch_run.transplant_study(model, pairs, args.out, seed=args.seed, **common)
    elif args.mode == "attribution":
        summary, text = patch_run.attribution_study(model, pairs, args.out, top=args.top, **common)
    else:
        summary, text = patch_run.edit_study(
            model, pairs, args.out, conditions, seed=args.seed, settings=settings
        )
    print(text)
    lines, any_kept = patch_run.kept(summary, len(pairs), args.min_gap)
    print("\n".join(lines), file=sys.stdout if any_kept else sys.stderr)
    print(f"wrote {args.out}")
    if not any_kept:
        print("no pair was kept: nothing was measured (lower --min-gap, or use other pairs)", file=sys.stderr)
        return 2
    return 0
