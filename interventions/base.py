"""What every editor shares: one interface, the training batches a spec implies, and the loss they train on.

An editor edits a model inside ``with editor.apply(model, specs, via=...) as edit:`` and restores it on exit,
bit for bit, so one loaded model serves every condition of an experiment. Editors talk to the model only
through :class:`gapeval.models.base.Intervenable` (never its type), as peft's tuners share one base.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, ForwardPass, Intervenable, Request, final_hidden
from interventions.specs import EditSpec

VIA = ("und", "gen", "both")


def via_directions(via: str) -> tuple[str, ...]:
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}, got {via!r}")
    return DIRECTIONS if via == "both" else (via,)


class Edit(ABC):
    """A live edit (what ``apply`` yields): its training statistics, and a way to save it."""

    stats: dict[str, Any]
    suffix: str = ""  # of the saved form's name ("" for a folder)

    @abstractmethod
    def save(self, path: str | Path) -> None: ...


class Editor(ABC):
    name: str

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The hyperparameters (part of an experiment's identity: another config is another experiment)."""

    def prepare(self, model: Intervenable) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Compute what this editor needs once per model (key statistics, the model's own answers), so that
        ``apply`` times only the edit."""

    @abstractmethod
    def apply(self, model: Intervenable, specs: Sequence[EditSpec], via: str) -> AbstractContextManager[Edit]:
        """Edit ``model`` with ``specs`` trained through ``via`` inside the block; restore it on exit."""


@dataclass
class TrainingBatch:
    """The training examples of one direction and their prepared teacher-forced pass (built once: gen answers
    are tokenised here, then the pass re-runs at every optimisation step)."""

    direction: str
    requests: list[Request]
    subjects: list[str]
    fp: ForwardPass


def training_batches(model: Intervenable, specs: Sequence[EditSpec], via: str) -> list[TrainingBatch]:
    """One batch per trained direction: every spec's training prompts with its new value."""
    batches = []
    for direction in via_directions(via):
        requests, answers, subjects = [], [], []
        for spec in specs:
            prompts, values = spec.examples(direction)
            requests += [Request(f"{spec.id}/train-{k}", text) for k, text in enumerate(prompts)]
            answers += values
            subjects += [spec.subject] * len(prompts)
        if requests:
            batches.append(
                TrainingBatch(
                    direction, requests, subjects, model.forward_inputs(requests, direction, answers)
                )
            )
    if not batches:
        raise ValueError(f"the specs have no training prompts for via={via!r}")
    return batches


def answer_logprobs(model: Intervenable, fp: ForwardPass) -> torch.Tensor:
    """(B, A) answer-token log-probabilities of one prepared pass (gradients flow where weights train)."""
    return model.answer_logprobs(fp, final_hidden(model, fp))


def answer_loss(model: Intervenable, batches: Sequence[TrainingBatch]) -> tuple[torch.Tensor, float]:
    """Mean negative log-probability of a whole answer over all rows, and the worst answer token's probability.

    Per answer, not per token: an emblem changes one of a picture's 16 codes and two of a sentence's words,
    and a per-token mean would dilute that code 16-fold. Every answer token above probability 1/2 means
    greedy decoding reproduces every training answer, which is when editors stop early.
    """
    total, rows, worst = 0.0, 0, 1.0
    for batch in batches:
        fp = batch.fp
        values = answer_logprobs(model, fp)
        total = total - values.sum()
        rows += len(fp)
        worst = min(worst, float(values[fp.answer_mask].detach().exp().min()))
    return total / max(rows, 1), worst


def rehearsal_batches(
    model: Intervenable, items: Sequence[Item], rows: int = 16
) -> list[list[TrainingBatch]]:
    """The model's own greedy answers to ``items`` in both directions, teacher-forced, in small rounds (one
    batch of ``rows`` per direction each) that an editor cycles through, one round per step.

    Asked before editing: training on them alongside the edit keeps the model's behaviour elsewhere (a
    rehearsal of the unedited model, as fine-tuning editors use to protect locality).
    """
    per_direction = []
    for direction in DIRECTIONS:
        requests = [Request(i.id, i.prompt(direction), i.image) for i in items]
        with torch.no_grad():
            answers = model.understand(requests) if direction == "und" else model.generate(requests)
        kept = [(r, a) for r, a in zip(requests, answers, strict=True) if not isinstance(a, str) or a.strip()]
        per_direction.append(
            [
                TrainingBatch(
                    direction,
                    [r for r, _ in chunk],
                    [""] * len(chunk),
                    model.forward_inputs([r for r, _ in chunk], direction, [a for _, a in chunk]),
                )
                for chunk in (kept[start : start + rows] for start in range(0, len(kept), rows))
            ]
        )
    n = max((len(b) for b in per_direction), default=0)
    return [[b[k % len(b)] for b in per_direction if b] for k in range(n)]
