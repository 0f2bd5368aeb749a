"""Helpers shared by several test modules."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

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


TINY_SWEEP = {
    "train": {"d_model": 16, "n_layers": 1, "n_heads": 2, "steps": 12, "batch_size": 4, "warmup": 2,
              "codec_images": 100, "save_at": [1.0], "log_every": 4, "eval_every": 0, "eval_items": 12,
              "resume_every": 4},
    "seeds": [0],
    "conditions": {"default": {"eval_every": 12}, "pair": {"variant": "pair", "versus": "default"}},  # one emergence log (~2 s each)
    "references": [],
    "baseline": "pair",
    "measure": {"edits": 2, "inject": 0, "lora_max_steps": 2, "probe_realms": 6, "shuffles": 0,
                "patch_pairs": 1, "gap_items": 12, "bootstrap": 20},
}  # fmt: skip


def tiny_sweep(folder: Path, **changes: Any) -> Path:
    """A sweep file whose profiles are a two-model sweep (default and the pair) that trains in seconds."""
    path = folder / "sweep.yaml"
    path.write_text(
        yaml.safe_dump({"quick": {**TINY_SWEEP, **changes}, "full": {**TINY_SWEEP, **changes}}),
        encoding="utf-8",
    )
    return path


TINY_STUDY = {
    "gap": {"bootstrap": 20, "other_seeds": False, "oracles": 1},
    "edit": {
        "specs": 2,
        "kinds": ["edit"],
        "editors": ["lora"],
        "conditions": ["baseline", "und"],
        "lora_max_steps": 2,
    },
    "bridge": {"specs": 2, "editors": ["lora"]},
    "emergence": {"training_seeds": [0], "spot_checks": 1, "threshold": 0.5},
    "mechanism": {"pairs": 2, "probe_realms": 8, "attribute": "colour", "position": "last"},
}  # the sizes of every section but sharing in the tiny study (conftest's ``tiny_study``)
