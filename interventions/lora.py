"""LoRA editing with peft: fine-tune low-rank adapters on the training examples of one direction.

Batch mode trains one adapter for all specs (the paper's setting); single mode (EasyEdit's) is the same call
with one spec at a time (:func:`interventions.edit.run_edit` does that). On exit the adapter is unloaded
without merging, so the frozen base weights were never written. Adapters save and load in peft's format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import peft
import torch

from gapeval.items import Item
from gapeval.models.base import Intervenable
from interventions.base import Edit, Editor, TrainingBatch, answer_loss, rehearsal_batches, training_batches
from interventions.specs import EditSpec


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
    """Full-batch AdamW on the answer tokens until greedy decoding reproduces every training answer
    (every answer token above probability 1/2) or ``max_steps``."""

    rank: int = 8
    alpha: int = 16
    lr: float = 3e-3
    max_steps: int = 150
    targets: str = "all"  # "all" of the adapter's lora_targets, or "mlp" (paths under its mlp component)
    retain_weight: float = 10.0
    seed: int = 0
    retain: Sequence[Item] = field(default=(), repr=False)  # rehearsed with the model's own answers
    name: str = "lora"

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
            self._rehearsal[id(model.module)] = rehearsal_batches(model, self.retain) if self.retain else []
        return self._rehearsal[id(model.module)]

    def _targets(self, model: Intervenable) -> list[str]:
        if self.targets == "all":
            return list(model.lora_targets)
        if self.targets == "mlp":
            mlp = "." + model.components["mlp"] + "."
            return [t for t in model.lora_targets if mlp in t]
        raise ValueError(f"targets must be 'all' or 'mlp', got {self.targets!r}")

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
                loss, worst = answer_loss(model, batches)
                while worst <= 0.5 and steps < self.max_steps:
                    if rehearsal:
                        loss = (
                            loss
                            + self.retain_weight * answer_loss(model, rehearsal[steps % len(rehearsal)])[0]
                        )
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    steps += 1
                    loss, worst = answer_loss(model, batches)
            wrapped.eval()
            stats = {
                "steps": steps,
                "loss": float(loss.detach()),
                "worst_token_p": worst,
                "seconds": time.perf_counter() - start,
            }
            yield LoraEdit(wrapped, stats)

    @contextmanager
    def load(self, model: Intervenable, path: str | Path) -> Iterator[peft.PeftModel]:
        """Apply a saved adapter inside the block; unload it on exit."""
        with _wrapped(peft.PeftModel.from_pretrained(model.module, str(path))) as wrapped:
            wrapped.eval()
            yield wrapped
