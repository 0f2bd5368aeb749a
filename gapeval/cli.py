"""The ``gapeval`` command: a thin shell over library functions that notebooks can call directly.

Subcommands are :class:`Command` entries in :data:`COMMANDS`; another module adds one with :func:`register`
(e.g. ``train-toy``), without touching the parser code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gapeval.cli_args import add_run_arguments, add_summary_arguments
from gapeval.options import parse_key_values


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int | None]


COMMANDS: list[Command] = []


def register(command: Command) -> Command:
    """Add a subcommand (names are unique; a later registration replaces an earlier one)."""
    COMMANDS[:] = [c for c in COMMANDS if c.name != command.name]
    COMMANDS.append(command)
    return command


# --- run -------------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from gapeval import distributed
    from gapeval.models.registry import load_model
    from gapeval.runner import run
    from gapeval.suites import get_suite

    processes = distributed.current()  # before loading: under a launcher this pins the process to its GPU
    suite = get_suite(args.suite)
    items, suite_id = suite.items, suite.id
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be positive, got {args.limit}")
        items, suite_id = items[: args.limit], f"{suite.id}[:{args.limit}]"
    model_args = parse_key_values(args.model_arg)
    if processes.world > 1 and model_args.get("device_map"):
        raise ValueError(
            "device_map spreads one model over every visible GPU, but under a launcher each process already has "
            "its own GPU: use device_map in a single process, or accelerate launch without it"
        )
    model = load_model(args.model, items, **model_args)
    out = run(
        model,
        items,
        args.out,
        suite_id=suite_id,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        edit=args.edit,
        processes=processes,
        bootstrap=args.bootstrap,
    )
    if processes.is_main:
        from gapeval.report import headline

        print(headline(out))
    return 0


# --- import ----------------------------------------------------------------------------------------------


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data_dir", type=Path, help="the release's data folder (data_<id>/ with one folder per model)"
    )
    p.add_argument(
        "--layout", choices=("gapeval",), default="gapeval", help="output layout (default: gapeval)"
    )
    p.add_argument(
        "--model-dir",
        required=True,
        action="append",
        help="the model's folder inside each data_<id>/ (text.json + image); repeat it for several models: "
        "each gets OUT/MODEL_DIR/, and OUT/rows.json holds their rows for `gapeval score`",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="run directory, or the folder of several (created or resumed)"
    )
    p.add_argument(
        "--verdicts",
        choices=("judge", "release"),
        default="judge",
        help="judge: judge the answers with the toolkit's judges (default); release: read the verdicts the "
        "release's judge wrote to new_res.json beside them (no judge settings, no network)",
    )
    p.add_argument(
        "--image-verdict",
        choices=("first", "any", "all"),
        default="first",
        help="with --verdicts release, which image's verdict counts when a folder holds several: the first by "
        "name (default, the image the run shows), or right when any / all of them are",
    )
    add_summary_arguments(p)


def _import(args: argparse.Namespace) -> int:
    from gapeval.importer import describe_import, import_models

    runs = import_models(
        args.data_dir,
        args.model_dir,
        args.out,
        layout=args.layout,
        verdicts=args.verdicts,
        image_verdict=args.image_verdict,
        progress=not args.no_progress,
        bootstrap=args.bootstrap,
    )
    print(describe_import(runs, args.out))
    return 0


# --- score, report, compare, suite export ----------------------------------------------------------------


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="JSON {model: [[p11, p10, p01, p00], ...]} (one row per category)")


def _score(args: argparse.Namespace) -> int:
    from gapeval.score_file import score_file

    print(score_file(args.file))
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory written by `gapeval run`")


def _report(args: argparse.Namespace) -> int:
    from gapeval.report import write_report

    print(write_report(args.run_dir))
    return 0


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", type=Path, help="two or more run directories")
    p.add_argument("--out", type=Path, help="also write compare.md and compare.png into this directory")


def _compare(args: argparse.Namespace) -> int:
    from gapeval.report import compare

    if len(args.run_dirs) < 2:
        raise ValueError("compare needs at least two run directories")
    png = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        png = args.out / "compare.png"
    table = compare(args.run_dirs, png_path=png)
    if args.out is not None:
        (args.out / "compare.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _suite_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="suite_command", required=True, metavar="{export}")
    export = sub.add_parser("export", help="save a suite in the toolkit's format (items.jsonl + images/)")
    export.add_argument("--suite", default="synth", help="suite spec, as for `gapeval run` (default: synth)")
    export.add_argument("--out", required=True, type=Path, help="folder to write")


def _suite(args: argparse.Namespace) -> int:
    from gapeval.io import save_items
    from gapeval.suites import get_suite

    print(save_items(get_suite(args.suite).items, args.out))
    return 0


register(Command("run", "evaluate a model on a suite in both directions", add_run_arguments, _run))
register(
    Command(
        "import",
        "judge and score outputs made with the GapEval release's scripts, into a run directory",
        _import_arguments,
        _import,
    )
)
register(
    Command(
        "score",
        "Gap Score of joint-outcome rows (drop-in for the reference script)",
        _score_arguments,
        _score,
    )
)
register(Command("report", "write report.md and the chart of a run directory", _report_arguments, _report))
register(Command("compare", "side-by-side table of several runs", _compare_arguments, _compare))
register(Command("suite", "suite utilities (export)", _suite_arguments, _suite))


# Literal copies of TrainConfig's defaults: building the parser must not import torch (tests check they agree).
TRAIN_DEFAULTS = {"steps": 24000, "seed": 0, "threads": 1}
# Training-condition flags: (flag, TrainConfig field, type, help). Each overrides --config only when given.
TRAIN_KNOBS = (
    ("--engine", "engine", str, "reference (the shipped recipe's bytes) or packed (fast; a recipe change)"),
    ("--n-realms", "n_realms", int, "taught realms (default 48; more add realms, the default world stays)"),
    ("--pictured-share", "pictured_share", float, "share of realms whose emblem is drawn in training (0.5)"),
    ("--consistency", "consistency", float, "mixture weight of the state-then-draw task (default 0: off)"),
    ("--d-model", "d_model", int, "model width (default 128)"),
    ("--n-layers", "n_layers", int, "model depth (default 4)"),
    ("--n-heads", "n_heads", int, "attention heads (default 4)"),
)


class _Given(argparse.Action):
    """Store the value and note that it was given, so it overrides the --config file."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = [*namespace.given, self.dest]


def _train_toy_arguments(p: argparse.ArgumentParser) -> None:
    d = TRAIN_DEFAULTS
    p.set_defaults(given=[])
    p.add_argument(
        "--variant",
        choices=("shared", "decoupled", "pair"),
        default="shared",
        action=_Given,
        help="architecture: shared, decoupled, or pair (two models of one size, und-only and gen-only)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: runs/toy-VARIANT)")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="training settings (any TrainConfig field); flags given on the command line override it",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=d["steps"],
        action=_Given,
        help=f"optimiser steps (default: {d['steps']})",
    )
    p.add_argument(
        "--seed", type=int, default=d["seed"], action=_Given, help=f"training seed (default: {d['seed']})"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=d["threads"],
        action=_Given,
        help=f"torch threads (default: {d['threads']}, which reproduces the shipped checkpoints; the weights depend on it)",
    )
    for flag, dest, kind, text in TRAIN_KNOBS:
        p.add_argument(flag, dest=dest, type=kind, action=_Given, help=text)
    p.add_argument("--quick", action="store_true", help="a tiny model in seconds (for tests, not accuracy)")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="N",
        action=_Given,
        help="evaluate on the synth suite at step 0 and every N steps, appending to OUT/emergence.jsonl "
        "(default: never; the checkpoints are the same either way)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the killed run in DIR from its last saved state, with that run's settings "
        "(the other training options are ignored)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _train_toy(args: argparse.Namespace) -> int:
    from gapeval.emergence import resume, train
    from gapeval.models.toy.train import TrainConfig

    if args.resume:
        print(resume(args.resume, progress=not args.no_progress))
        return 0
    base = TrainConfig.quick() if args.quick else TrainConfig()
    cfg = base.updated(TrainConfig.read(args.config) if args.config else {})
    cfg = cfg.updated({dest: getattr(args, dest) for dest in args.given})
    if cfg.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {cfg.steps}")
    if cfg.eval_every < 0:
        raise ValueError(f"--eval-every must be 0 (never) or positive, got {cfg.eval_every}")
    print(train(cfg, args.out or Path("runs") / f"toy-{cfg.variant}", progress=not args.no_progress))
    return 0


register(Command("train-toy", "train the built-in UMM on the synth world", _train_toy_arguments, _train_toy))


# Commands whose arguments and handler live beside their library; those modules import only argparse-level
# things at the top, so building the parser stays free of torch.
PLUGGED = (
    ("edit", "interventions.editing.edit_cli", "train knowledge in through one direction, judge both"),
    ("probe", "probes.probe_cli", "per-layer probes, transfer and causal erasure of a realm attribute"),
    ("patch", "interventions.patching.patch_cli", "activation patching within and across directions"),
    ("study", "experiments.study_cli", "the paper's study in one command: tables, figures, report"),
    ("sweep", "experiments.sweep_cli", "which training conditions make knowledge shared: train and measure"),
)
for _name, _module, _help in PLUGGED:
    _plugged = importlib.import_module(_module)
    register(Command(_name, _help, _plugged.add_arguments, _plugged.handler))


# --- entry point -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapeval",
        description="Measure the gap between a unified multimodal model's understanding and generation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors (bad input, refused run directory) print one line and exit with 2."""
    args = build_parser().parse_args(argv)
    handler = next(c.handler for c in COMMANDS if c.name == args.command)
    try:
        return handler(args) or 0
    except (ValueError, OSError, KeyError) as exc:
        print(f"gapeval {args.command}: error: {exc}", file=sys.stderr)
        return 2
