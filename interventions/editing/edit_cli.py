"""``gapeval edit``: the editing experiment from the command line (a thin shell over :func:`run_edit`).

Only argparse at import time: ``gapeval --help`` must not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gapeval.cli_args import add_model_arguments, load_model_from_args
from interventions.editing import editor_names
from interventions.editing.ranges import AT_LEAST_ONE, NON_NEGATIVE, Range, check_ranges

# Every numeric option of the command and the values it accepts (``--edits`` also at most the world's realms).
OPTION_RANGES: dict[str, Range] = {
    "edits": AT_LEAST_ONE,
    "seed": NON_NEGATIVE,
    "world-seed": NON_NEGATIVE,
    "locality-world": NON_NEGATIVE,
    "locality-other": NON_NEGATIVE,
    "threads": AT_LEAST_ONE,
}


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
        "--suite",
        default="synth",
        help="locality items (locality side of the realm split) and the locate editor's key corpus (retain "
        "side) (default: synth)",
    )
    p.add_argument(
        "--locality-world", type=int, default=48, help="world-knowledge locality items (default: 48)"
    )
    p.add_argument(
        "--locality-other", type=int, default=8, help="locality items per other category (default: 8)"
    )
    p.add_argument(
        "--gap",
        action="store_true",
        help="also ask the whole suite under every condition: its Gap Score before and after the edit",
    )
    p.add_argument("--out", required=True, type=Path, help="experiment directory (created, or resumed)")


def handler(args: argparse.Namespace) -> int:
    from gapeval.options import parse_key_values
    from gapeval.suites import get_suite
    from gapeval.synth.world import World
    from interventions.editing.edit_report import plot, report_text
    from interventions.editing.edit_run import build_editor, editor_options, read_records, run_edit
    from interventions.editing.metrics import propagation_line
    from interventions.editing.specs import hold_out, load_specs, synth_specs

    check_ranges({k.replace("_", "-"): v for k, v in vars(args).items()}, OPTION_RANGES, "--{}")
    options = editor_options(args.method, parse_key_values(args.editor_arg, "--editor-arg"))
    world = World(args.world_seed)
    specs = (
        load_specs(args.edits_file)
        if args.edits_file
        else synth_specs(world, args.kind, args.edits, args.seed)
    )
    pool = get_suite(args.suite).items
    model = load_model_from_args(args, pool, intervenable=True)
    held = hold_out(
        world, specs, pool, seed=args.seed, n_world=args.locality_world, n_other=args.locality_other
    )
    editor = build_editor(args.method, held, seed=args.seed, **options)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    summary = run_edit(
        model,
        specs,
        editor,
        held.locality,
        args.out,
        mode=args.mode,
        conditions=conditions,
        seed=args.seed,
        controls=held.controls,
        suite=pool if args.gap else (),
    )
    table = report_text(summary, read_records(args.out), conditions)
    title = f"{model.name}: {args.method} {args.mode}, {len(specs)} {specs[0].kind} specs"
    (args.out / "table.md").write_text(f"# {title}\n\n{table}\n", encoding="utf-8")
    plot(summary["conditions"], args.out / "edit.png", title)
    print(table)
    for case in summary["propagation"]:
        print(propagation_line(case))
    print(f"wrote {args.out / 'records.jsonl'}, {args.out / 'table.md'}, {args.out / 'edit.png'}")
    return 0
