"""Command-line pieces every command shares: the model flags, loading the model they name, and writing a
command line that the real parser accepts.

Command modules (``gapeval/cli.py`` and the ``*_cli.py`` modules beside their libraries) import from here,
never from ``gapeval.cli``, so the CLI's entry point imports them and nothing imports it back. Building a
parser imports no torch.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gapeval.models.registry import model_forms
from gapeval.options import parse_key_values


def add_model_arguments(
    p: argparse.ArgumentParser, *, intervenable: bool = False, threads: bool = True
) -> None:
    """``--model``, ``--model-arg`` (repeatable) and, unless ``threads`` is False, ``--threads``."""
    which = "an intervenable model" if intervenable else "the model"
    p.add_argument("--model", required=True, help=f"{which}: {model_forms()}")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="adapter keyword argument, repeatable (e.g. und_error=0.1, device_map=auto)",
    )
    if threads:
        p.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch CPU threads (default: 1; the built-in model's small matmuls lose from more)",
        )


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    """What every command that writes a run directory shares: the summary's resamples, the progress bar."""
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="resamples for the summary's confidence intervals (default: 1000)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, threads=False)
    p.add_argument(
        "--suite", default="synth", help="synth, synth:N, public:PATH, hf:PATH, jsonl:PATH (default: synth)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="run directory (created, or resumed if it holds this run)"
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="items per batch, asked in both directions (default: 16)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="run seed: per-item request seeds derive from it (default: 0)"
    )
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate only the first N items in suite order (synth:N is a smaller suite with every category)",
    )
    p.add_argument("--edit", help="name of the knowledge edit or adapter applied to the model (recorded)")
    add_summary_arguments(p)


def load_model_from_args(args: argparse.Namespace, items: Sequence[Any] = (), *, intervenable: bool = False):
    """The model ``--model``/``--model-arg`` name (after setting ``--threads``, where the command has it);
    with ``intervenable``, one that exposes the intervention contract, else a one-line error."""
    from gapeval.models.registry import load_model

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(args.model, items, **parse_key_values(args.model_arg))
    if intervenable:
        from gapeval.models.base import Intervenable

        if not isinstance(model, Intervenable):
            raise ValueError(
                f"--model {args.model}: the adapter does not expose the intervention contract "
                "(gapeval.models.base.Intervenable; see docs/adapters.md)"
            )
    return model


def command_line(
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    positional: Sequence[str] = (),
    **values: Any,
) -> str:
    """``gapeval NAME ...`` with ``values`` (by argparse ``dest``) as flags, checked against the command's
    real parser: an unknown option is an error here, and the line is parsed back to the same values.
    Values equal to the parser's default are left out; a list value repeats an ``append`` option."""
    parser = argparse.ArgumentParser(prog=f"gapeval {name}", add_help=False)
    add_arguments(parser)
    options = {a.dest: a for a in parser._actions if a.option_strings}
    argv = [str(p) for p in positional]
    for dest, value in values.items():
        if dest not in options:
            raise ValueError(f"gapeval {name} has no option for {dest!r}")
        action = options[dest]
        flag = (
            action.option_strings[-1]
            if action.option_strings[-1].startswith("--")
            else action.option_strings[0]
        )
        if value is None or value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            for v in value:
                argv += [flag, str(v)]
        elif action.nargs in ("+", "*"):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    parsed = vars(parser.parse_args(argv))
    for dest, value in values.items():
        want = [str(v) for v in value] if isinstance(value, list | tuple) else value
        got = parsed[dest]
        got = [str(v) for v in got] if isinstance(got, list | tuple) else got
        if value is not None and str(got) != str(want):
            raise ValueError(f"gapeval {name}: {dest}={value!r} reads back as {parsed[dest]!r}")
    return shlex.join(["gapeval", name, *argv])
