"""``gapeval edit``: the editing experiment from the command line (a thin shell over :func:`run_edit`).

Only argparse at import time: ``gapeval --help`` must not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gapeval.cli_args import add_model_arguments, load_model_from_args
from interventions.editing import editor_names


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, intervenable=True)
    p.add_argument("--kind", choices=("inject", "edit"), default="edit", help="synth specs to generate")
    p.add_argument("--edits", type=int, default=20, help="number of synth specs (default: 20)")
    p.add_argument("--edits-file", type=Path, help="user-written specs (JSONL; see docs/editing.md) instead")
    p.add_argument("--method", choices=editor_names(), default="lora", help="editor (default: lora)")
    p.add_argument(
        "--editor-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="editor setting, repeatable, checked against the editor's fields (e.g. max_steps=60 for lora; "
        "layers=[0,1], key_site=subject for locate; docs/editing.md lists them)",
    )
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
    p.add_argument("--out", required=True, type=Path, help="experiment directory (created, or resumed)")


def handler(args: argparse.Namespace) -> int:
    from gapeval.options import parse_key_values
    from gapeval.suites import get_suite
    from gapeval.synth.world import World
    from interventions.editing.edit_report import format_table, group_tables, plot
    from interventions.editing.edit_run import build_editor, read_records, run_edit
    from interventions.editing.metrics import summarize_groups
    from interventions.editing.specs import load_specs, locality_items, synth_specs

    world = World(args.world_seed)
    specs = (
        load_specs(args.edits_file)
        if args.edits_file
        else synth_specs(world, args.kind, args.edits, args.seed)
    )
    pool = get_suite(args.suite).items
    model = load_model_from_args(args, pool, intervenable=True)
    locality = locality_items(specs, pool, args.locality_world, args.locality_other)
    options = parse_key_values(args.editor_arg, "--editor-arg")
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
