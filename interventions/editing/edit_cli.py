"""``gapeval edit``: the editing experiment from the command line (a thin shell over :func:`run_edit`).

Only argparse at import time: ``gapeval --help`` must not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Literal copies of the editors' defaults (building the parser must not import torch).
LOCATE_DEFAULTS = {"layers": "all", "key_site": "answer", "cov_weight": 1e3}
LORA_DEFAULTS = {"max_steps": 150}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="an intervenable model: toy, toy:VARIANT, janus:PATH, ...")
    p.add_argument("--kind", choices=("inject", "edit"), default="edit", help="synth specs to generate")
    p.add_argument("--edits", type=int, default=20, help="number of synth specs (default: 20)")
    p.add_argument("--edits-file", type=Path, help="user-written specs (JSONL; see docs/editing.md) instead")
    p.add_argument("--method", choices=("lora", "locate"), default="lora", help="editor (default: lora)")
    p.add_argument(
        "--mode", choices=("batch", "single"), default="batch", help="one edit for all specs, or one per spec"
    )
    p.add_argument(
        "--conditions",
        default="baseline,und,gen,both",
        help="comma-separated subset of baseline,und,gen,both (default: all four)",
    )
    p.add_argument("--seed", type=int, default=0, help="spec, editor and request seed (default: 0)")
    p.add_argument("--world-seed", type=int, default=0, help="synth world of the specs (default: 0)")
    p.add_argument(
        "--suite", default="synth", help="locality items and the locate editor's key corpus (default: synth)"
    )
    p.add_argument(
        "--locality-world", type=int, default=48, help="world-knowledge locality items (default: 48)"
    )
    p.add_argument(
        "--locality-other", type=int, default=8, help="locality items per other category (default: 8)"
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=LORA_DEFAULTS["max_steps"],
        help="lora: optimiser steps per edit at most (default: 150; fewer stop when every target leads)",
    )
    p.add_argument(
        "--layers",
        default=LOCATE_DEFAULTS["layers"],
        help="locate: edited layers, comma-separated, or all (default: all)",
    )
    p.add_argument(
        "--key-site",
        choices=("answer", "last", "subject"),
        default=LOCATE_DEFAULTS["key_site"],
        help="locate: where keys are read (default: answer)",
    )
    p.add_argument(
        "--cov-weight",
        type=float,
        default=LOCATE_DEFAULTS["cov_weight"],
        help="locate: λ of the key covariance",
    )
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="adapter keyword argument"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default: 1; the toy's tensors are too small for more)",
    )
    p.add_argument("--out", required=True, type=Path, help="experiment directory (created, or resumed)")


def handler(args: argparse.Namespace) -> int:
    import torch

    from gapeval.cli import parse_model_args
    from gapeval.models.base import Intervenable
    from gapeval.models.registry import load_model
    from gapeval.suites import get_suite
    from gapeval.synth.world import World
    from interventions.editing.edit_report import format_table, group_tables, plot
    from interventions.editing.edit_run import build_editor, read_records, run_edit
    from interventions.editing.metrics import summarize_groups
    from interventions.editing.specs import load_specs, locality_items, synth_specs

    torch.set_num_threads(args.threads)
    world = World(args.world_seed)
    specs = (
        load_specs(args.edits_file)
        if args.edits_file
        else synth_specs(world, args.kind, args.edits, args.seed)
    )
    pool = get_suite(args.suite).items
    model = load_model(args.model, pool, **parse_model_args(args.model_arg))
    if not isinstance(model, Intervenable):
        raise ValueError(f"model {args.model!r} does not expose the intervention contract")
    locality = locality_items(specs, pool, args.locality_world, args.locality_other)
    if args.method == "locate":
        layers = None if args.layers == "all" else tuple(int(x) for x in args.layers.split(","))
        options = {"layers": layers, "key_site": args.key_site, "cov_weight": args.cov_weight}
    else:
        options = {"max_steps": args.max_steps}
    editor = build_editor(
        args.method, specs, locality, pool, seed=args.seed, world_seed=args.world_seed, **options
    )
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    summary = run_edit(
        model, specs, editor, locality, args.out, mode=args.mode, conditions=conditions, seed=args.seed
    )
    records = read_records(args.out)
    table = format_table(summary) + group_tables(records, summarize_groups(records, conditions))
    title = f"{model.name}: {args.method} {args.mode}, {len(specs)} {specs[0].kind} specs"
    (args.out / "table.md").write_text(f"# {title}\n\n{table}\n", encoding="utf-8")
    plot(summary, args.out / "edit.png", title)
    print(table)
    print(f"wrote {args.out / 'records.jsonl'}, {args.out / 'table.md'}, {args.out / 'edit.png'}")
    return 0
