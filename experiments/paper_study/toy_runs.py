"""Training runs behind a built-in model spec: where their checkpoints and emergence logs live.

The emergence section and the other-seed rows of the gap table need the *training run* a model came from, not
just its weights. Only models trained by ``gapeval train-toy`` have one; every other spec has none, and the
sections say so instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EMERGENCE = "emergence.jsonl"  # gapeval.models.toy.emergence.EMERGENCE, without importing torch here


@dataclass(frozen=True)
class TrainingRun:
    label: str  # e.g. "shared seed 1"
    spec: str  # the final checkpoint as a model spec
    folder: Path  # step-XXXXXX/ checkpoints and, when logged, emergence.jsonl

    @property
    def log(self) -> Path:
        return self.folder / EMERGENCE

    def checkpoints(self) -> dict[int, Path]:
        """Checkpoint folders by step."""
        return {
            int(p.name.removeprefix("step-")): p for p in sorted(self.folder.glob("step-*")) if p.is_dir()
        }


def training_runs(spec: str, seeds: Sequence[int]) -> list[TrainingRun]:
    """The shipped runs of a ``toy[:VARIANT]`` spec at each training seed that ships (``VARIANT@seedN``), or
    the run of a ``toy:FOLDER`` checkpoint (its parent folder, or the folder itself if it holds
    ``emergence.jsonl``). Other specs (and ``VARIANT@STEP``, one point of a run): none."""
    from gapeval.models.toy.adapter import shipped_checkpoint
    from gapeval.models.toy.checkpoint import CheckpointError

    kind, _, rest = spec.partition(":")
    if kind != "toy":
        return []
    if rest and Path(rest).is_dir():
        folder = Path(rest) if (Path(rest) / EMERGENCE).exists() else Path(rest).parent
        return [TrainingRun(str(folder), spec, folder)]
    variant, _, at = (rest or "shared").partition("@")
    if at and not at.startswith("seed"):
        return []
    runs = []
    for seed in seeds:
        try:
            folder = shipped_checkpoint(variant, seed=seed).parent
        except CheckpointError:
            continue
        runs.append(
            TrainingRun(f"{variant} seed {seed}", f"toy:{variant}" + (f"@seed{seed}" if seed else ""), folder)
        )
    return runs
