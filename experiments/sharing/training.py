"""Where a sweep model's training run lives, and training (or resuming) it.

A model's run is ``OUT/<name>/`` (``gapeval train-toy``'s layout: ``step-XXXXXX/`` checkpoints, the train and
emergence logs, the resume state). A finished model shipped with the package
(``gapeval/checkpoints/sweep/<name>/``: its final checkpoint and logs) is used as it is, so the sweep's tables
are rebuilt from the shipped checkpoints without training.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.sharing.config import SweepModel

SHIPPED = Path(__file__).resolve().parents[2] / "gapeval" / "checkpoints" / "sweep"


def train_config(model: SweepModel) -> Any:
    from gapeval.models.toy.train import TrainConfig

    return TrainConfig().updated(model.train or {})


def finished_checkpoint(model: SweepModel, out: Path, shipped: Path = SHIPPED) -> Path | None:
    """The model's final checkpoint, shipped or trained in ``out``; None while it is not trained."""
    final = f"step-{train_config(model).steps:06d}"
    for root in (shipped, out):
        if (root / model.name / final / "model.safetensors").exists():
            return root / model.name / final
    return None


def run_folder(model: SweepModel, out: Path, shipped: Path = SHIPPED) -> Path:
    """The folder holding the model's logs: the one its finished checkpoint is in (shipped or trained in
    ``out``; a shipped model of another sweep with the same name has another final step), else ``out``."""
    checkpoint = finished_checkpoint(model, out, shipped)
    return checkpoint.parent if checkpoint is not None else out / model.name


def train_model(model: SweepModel, out: Path, *, progress: bool = True, shipped: Path = SHIPPED) -> dict:
    """Train ``model`` into ``out/<name>`` (or resume its killed run); a finished one is left alone. A folder
    holding a run of other settings is refused, so a changed sweep file never continues an old run."""
    from gapeval import emergence
    from gapeval.models.toy.resume import RESUME, TrainState

    if (found := finished_checkpoint(model, out, shipped)) is not None:
        return {"model": model.name, "checkpoint": str(found), "trained_s": 0.0}
    folder, cfg = out / model.name, train_config(model)
    start = time.process_time()
    if (folder / RESUME).exists():
        saved = TrainState.load(folder).info["config"]
        if saved != asdict(cfg):
            changed = sorted(k for k in saved if saved[k] != asdict(cfg).get(k))
            raise ValueError(
                f"{folder} holds a run with other settings ({', '.join(changed)}) than condition "
                f"{model.condition!r} at seed {model.seed}; move it away or use another --out"
            )
        checkpoint = emergence.resume(folder, progress)
    else:
        checkpoint = emergence.train(cfg, folder, progress)
    return {
        "model": model.name,
        "checkpoint": str(checkpoint),
        "trained_s": round(time.process_time() - start, 1),
    }
