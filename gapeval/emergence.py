"""Emergence along training (``train-toy --eval-every N``): the synth suite in both directions, per step.

:func:`train` and :func:`resume` are the toy trainer's with this evaluator plugged in (what ``gapeval train-toy``
runs); the trainer itself sits in the model layer and takes the evaluator as an argument.

Each evaluation saves the current weights as a checkpoint (fp16, as shipped) in a temporary folder, decodes
with :class:`ToyAdapter` and judges with the runner's judges, so a row at a checkpoint's step equals what
``gapeval run`` reports for that checkpoint. Rows are appended to ``OUT/emergence.jsonl``: step, und and gen
accuracy overall and per category, the joint outcome counts, Cohen's κ and the Gap Score (reference and
identified, no bootstrap). Evaluation leaves every random stream as it found it, so training with or
without it writes the same checkpoints.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gapeval.items import CATEGORIES, Item
from gapeval.models.toy import train as toy_train
from gapeval.models.toy.checkpoint import save_checkpoint
from gapeval.models.toy.train import EMERGENCE, TrainConfig
from gapeval.synth.suite import build_suite, category_counts

FIELDS = ("n", "n11", "n10", "n01", "n00", "und_acc", "gen_acc", "kappa", "gap_reference", "gap_identified")
BATCH = 16  # items per batch, as `gapeval run` asks them


def eval_items(n: int) -> list[Item]:
    """The default synth suite, or a fixed stratified subset of it: the first items of each category in the
    paper's shares (:func:`category_counts`), so subsets of any size keep the suite's category mix."""
    suite = build_suite()
    if n >= len(suite):
        return suite
    wanted = category_counts(n)
    return [it for c in CATEGORIES for it in [x for x in suite if x.category == c][: wanted[c]]]


def _row(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items() if k in FIELDS}


class EmergenceLog:
    """Evaluates a model in training on ``items`` and appends one row per call to ``path``."""

    def __init__(self, items: list[Item], path: Path):
        from gapeval.runner import JudgePlan

        self.items, self.path = items, Path(path)
        self.judges = JudgePlan(items, None)

    def evaluate(self, step: int, model, tokenizer, codec) -> dict[str, Any]:
        from gapeval.models.toy.adapter import ToyAdapter
        from gapeval.runner import evaluate_batch
        from gapeval.summary import summarize

        start, python_rng = time.time(), random.getstate()
        with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
            save_checkpoint(Path(tmp) / "model", model, tokenizer, codec, {"step": step})
            adapter = ToyAdapter(Path(tmp) / "model")
            images = Path(tmp) / "images"
            images.mkdir()
            records = []
            for i in range(0, len(self.items), BATCH):
                batch = self.items[i : i + BATCH]
                records += evaluate_batch(adapter, batch, seed=0, judges=self.judges, images_dir=images)
            summary = summarize(records, bootstrap=0)
        random.setstate(python_rng)
        row = {"step": step, "eval_s": round(time.time() - start, 2), **_row(summary["overall"])}
        row["categories"] = {c: _row(s) for c, s in summary["categories"].items()}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row


def emergence_log(cfg: TrainConfig, out: Path) -> EmergenceLog:
    """The evaluator of a training run: ``cfg.eval_items`` items, appended to ``OUT/emergence.jsonl``."""
    return EmergenceLog(eval_items(cfg.eval_items), Path(out) / EMERGENCE)


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """:func:`gapeval.models.toy.train.train`, logging emergence when ``cfg.eval_every`` asks for it."""
    return toy_train.train(cfg, out_dir, progress, evaluator=emergence_log)


def resume(out_dir: str | Path, progress: bool = True) -> Path:
    """:func:`gapeval.models.toy.train.resume`, logging emergence as the run was started."""
    return toy_train.resume(out_dir, progress, evaluator=emergence_log)
