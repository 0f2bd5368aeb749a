"""Training runs behind a built-in model spec: where their checkpoints and emergence logs live.

The emergence section and the other-seed rows of the gap table need the *training run* a model came from, not
just its weights. Only models trained by ``gapeval train-toy`` have one; every other spec has none, and the
sections say so instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EMERGENCE = "emergence.jsonl"  # gapeval.models.toy.train.EMERGENCE, without importing torch here


@dataclass(frozen=True)
class TrainingRun:
    label: str  # e.g. "shared seed 1"
    spec: str  # the final checkpoint as a model spec
    folder: Path  # step-XXXXXX/ checkpoints and, when logged, emergence.jsonl
    seed: int | None = None  # the training seed of a shipped run (None: a user's checkpoint folder)

    @property
    def log(self) -> Path:
        return self.folder / EMERGENCE

    def checkpoints(self) -> dict[int, Path]:
        """Checkpoint folders by step."""
        return {
            int(p.name.removeprefix("step-")): p for p in sorted(self.folder.glob("step-*")) if p.is_dir()
        }


def _shipped(variant: str, seed: int) -> TrainingRun | None:
    from gapeval.models.toy.adapter import shipped_checkpoint
    from gapeval.models.toy.checkpoint import CheckpointError

    try:
        folder = shipped_checkpoint(variant, seed=seed).parent
    except CheckpointError:
        return None
    spec = f"toy:{variant}" + (f"@seed{seed}" if seed else "")
    return TrainingRun(f"{variant} seed {seed}", spec, folder, seed)


def training_runs(spec: str, seeds: Sequence[int]) -> tuple[TrainingRun | None, list[TrainingRun]]:
    """(the run ``spec`` itself comes from, the runs of its family at each of ``seeds`` that exist).

    ``toy[:VARIANT][@seedN]``: the shipped runs of the variant (``VARIANT@seedN`` folders). ``toy:FOLDER``: the
    run of that checkpoint (its parent folder, or the folder itself if it holds ``emergence.jsonl``), alone.
    Other specs (and ``VARIANT@STEP``, one point of a run): none."""
    kind, _, rest = spec.partition(":")
    if kind != "toy":
        return None, []
    if rest and Path(rest).is_dir():
        folder = Path(rest) if (Path(rest) / EMERGENCE).exists() else Path(rest).parent
        run = TrainingRun(str(folder), spec, folder)
        return run, [run]
    variant, _, at = (rest or "shared").partition("@")
    if at and not at.startswith("seed"):
        return None, []
    family = [run for seed in seeds if (run := _shipped(variant, seed)) is not None]
    return _shipped(variant, int(at.removeprefix("seed") or 0)), family
