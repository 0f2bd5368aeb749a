"""LoRA editing with peft: fine-tune low-rank adapters on the training examples of one direction.

Batch mode trains one adapter for all specs (the paper's setting); single mode (EasyEdit's) is the same call
with one spec at a time (:func:`interventions.editing.edit_run.run_edit` does that). On exit the adapter is unloaded
without merging, so the frozen base weights were never written. Adapters save and load in peft's format.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import peft
import torch

from gapeval.items import Item
from gapeval.models.base import Intervenable
from interventions.editing.editor import (
    Edit,
    Editor,
    TrainingBatch,
    answer_loss,
    rehearsal_batches,
    retention_loss,
    training_batches,
)
from interventions.editing.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range
from interventions.editing.specs import EditSpec


class LoraEdit(Edit):
    def __init__(self, wrapped: peft.PeftModel, stats: dict[str, Any]):
        self.wrapped, self.stats = wrapped, stats

    def save(self, path: str | Path) -> None:
        """adapter_config.json + adapter_model.safetensors (peft's format)."""
        self.wrapped.save_pretrained(str(path))


@contextmanager
def _wrapped(wrapped: peft.PeftModel) -> Iterator[peft.PeftModel]:
    try:
        yield wrapped
    finally:
        wrapped.unload()  # removes the LoRA layers; the base Linear modules go back untouched


@dataclass
class LoraEditor(Editor):
    """Full-batch AdamW on the answer tokens until greedy decoding reproduces every training answer (every
    answer token leads the runner-up by ``stop_margin``) or ``max_steps``; alongside, a KL term keeps the
    unedited model's distributions at the answers of the ``retain`` items (one round of ``retain_rows`` per
    direction per step)."""

    rank: int = 8
    alpha: int = 16
    lr: float = 6e-3
    max_steps: int = 150
    targets: str = "all"  # "all" of the adapter's lora_targets, "mlp" or "attn" (paths under that component)
    layers: tuple[int, ...] | None = None  # only targets inside these decoder layers (default: every layer)
    retain_weight: float = 10.0
    retain_loss: str = "kl"  # "ce" (the unedited model's greedy answers), "kl" (its distributions), "both"
    retain_rows: int = 16  # rehearsal rows per direction per step
    schedule: str = "constant"  # learning rate over max_steps: "constant", "linear" or "cosine" decay
    loss_cap: float = 1.0  # answer tokens above this probability leave the edit loss (1: every token counts)
    stop_margin: float = 0.0  # stop once every training-answer token leads the runner-up by this (nats)
    seed: int = 0
    retain: Sequence[Item] = field(default=(), repr=False)  # rehearsed with the model's own answers
    name: str = "lora"
    RANGES: ClassVar[dict[str, Range]] = {
        "rank": AT_LEAST_ONE,
        "alpha": POSITIVE,
        "lr": POSITIVE,
        "max_steps": AT_LEAST_ONE,
        "layers": NON_NEGATIVE,
        "retain_weight": NON_NEGATIVE,
        "retain_rows": AT_LEAST_ONE,
        "loss_cap": Range(0, 1, open_lo=True),
        "stop_margin": NON_NEGATIVE,
        "seed": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        self._rehearsal: dict[int, list[list[TrainingBatch]]] = {}

    def config(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "retain"},
            "retain": [i.id for i in self.retain],
        }

    def prepare(self, model: Intervenable) -> None:
        self._rehearsal_batches(model)

    def _rehearsal_batches(self, model: Intervenable) -> list[list[TrainingBatch]]:
        """The unedited model's own answers to ``retain`` (asked once per model)."""
        if id(model.module) not in self._rehearsal:
            self._rehearsal[id(model.module)] = (
                rehearsal_batches(model, self.retain, rows=self.retain_rows) if self.retain else []
            )
        return self._rehearsal[id(model.module)]

    def _targets(self, model: Intervenable) -> list[str]:
        if self.targets not in ("all", "mlp", "attn"):
            raise ValueError(f"targets must be 'all', 'mlp' or 'attn', got {self.targets!r}")
        paths = list(model.lora_targets)
        if self.targets != "all":
            inside = "." + model.components[self.targets] + "."
            paths = [t for t in paths if inside in t]
        if self.layers is not None:
            prefixes = tuple(f"{model.layers_path}.{layer}." for layer in self.layers)
            paths = [t for t in paths if t.startswith(prefixes)]
        if not paths:
            raise ValueError(f"no LoRA target left for targets={self.targets!r}, layers={self.layers}")
        return paths

    def _retention(self, model: Intervenable, batches: Sequence[TrainingBatch]) -> torch.Tensor:
        if self.retain_loss == "ce":
            return answer_loss(model, batches)[0]
        if self.retain_loss == "kl":
            return retention_loss(model, batches)
        if self.retain_loss == "both":
            return answer_loss(model, batches)[0] + retention_loss(model, batches)
        raise ValueError(f"retain_loss must be 'ce', 'kl' or 'both', got {self.retain_loss!r}")

    def _decay(self, step: int) -> float:
        t = min(step / max(self.max_steps, 1), 1.0)
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "linear":
            return 1.0 - t
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        raise ValueError(f"schedule must be 'constant', 'linear' or 'cosine', got {self.schedule!r}")

    @contextmanager
    def apply(self, model: Intervenable, specs: Sequence[EditSpec], via: str) -> Iterator[LoraEdit]:
        batches = training_batches(model, specs, via)
        rehearsal = self._rehearsal_batches(model)
        torch.manual_seed(self.seed)
        config = peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self._targets(model))
        with _wrapped(peft.get_peft_model(model.module, config)) as wrapped:
            trainable = [p for p in wrapped.parameters() if p.requires_grad]
            optimiser = torch.optim.AdamW(trainable, lr=self.lr, weight_decay=0.0)
            start, steps = time.perf_counter(), 0
            with torch.enable_grad():
                loss, worst = answer_loss(model, batches, self.loss_cap)
                while worst <= self.stop_margin and steps < self.max_steps:
                    if rehearsal:
                        loss = loss + self.retain_weight * self._retention(
                            model, rehearsal[steps % len(rehearsal)]
                        )
                    optimiser.zero_grad()
                    loss.backward()
                    for group in optimiser.param_groups:
                        group["lr"] = self.lr * self._decay(steps)
                    optimiser.step()
                    steps += 1
                    loss, worst = answer_loss(model, batches, self.loss_cap)
            wrapped.eval()
            stats = {
                "steps": steps,
                "loss": float(loss.detach()),
                "worst_margin": worst,
                "seconds": time.perf_counter() - start,
            }
            yield LoraEdit(wrapped, stats)

    @contextmanager
    def load(self, model: Intervenable, path: str | Path) -> Iterator[peft.PeftModel]:
        """Apply a saved adapter inside the block; unload it on exit."""
        with _wrapped(peft.PeftModel.from_pretrained(model.module, str(path))) as wrapped:
            wrapped.eval()
            yield wrapped
