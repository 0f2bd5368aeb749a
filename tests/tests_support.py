"""Helpers shared by several test modules."""

from __future__ import annotations

import shlex

from gapeval.cli import build_parser


def check_commands(commands: list[str]) -> None:
    """Every printed command parses with the real parser, and no path in it is absolute."""
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command.split("  #")[0])
        assert argv[0] == "gapeval"
        parser.parse_args(argv[1:])
        assert not [a for a in argv if a.startswith("/") or ":/" in a], command
