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


class SavedFigures:
    """Records every matplotlib figure a function saves, so a test can read the plotted values back."""

    def __init__(self, monkeypatch):
        from matplotlib.figure import Figure

        self.figures: dict[str, Figure] = {}
        save = Figure.savefig

        def record(figure, path, *args, **kwargs):
            self.figures[str(path)] = figure
            return save(figure, path, *args, **kwargs)

        monkeypatch.setattr(Figure, "savefig", record)

    def bars(self, path, axis: int = 0) -> list[float]:
        """Heights of the bars of one axis of the figure saved at ``path``, in drawing order."""
        return [round(p.get_height(), 9) for p in self.figures[str(path)].axes[axis].patches]
