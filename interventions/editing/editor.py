"""What every editor shares: one interface, the training batches a spec implies, and the loss they train on.

An editor edits a model inside ``with editor.apply(model, specs, via=...) as edit:`` and restores it on exit,
bit for bit, so one loaded model serves every condition of an experiment. Editors talk to the model only
through :class:`gapeval.models.base.Intervenable` (never its type), as peft's tuners share one base.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, ForwardPass, Intervenable, Request, final_hidden
from interventions.editing.specs import EditSpec

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

    @abstractmethod
    def load(self, model: Intervenable, path: str | Path) -> AbstractContextManager[Any]:
        """Apply an edit saved by :meth:`Edit.save` inside the block; restore the model on exit."""


@dataclass
class TrainingBatch:
    """The training examples of one direction and their prepared teacher-forced pass (built once: gen answers
    are tokenised here, then the pass re-runs at every optimisation step)."""

    direction: str
    requests: list[Request]
    subjects: list[str]
    fp: ForwardPass
    reference: torch.Tensor | None = None  # (B, A, V) the unedited model's log-probabilities (rehearsal)


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


def answer_loss(
    model: Intervenable, batches: Sequence[TrainingBatch], cap: float = 1.0
) -> tuple[torch.Tensor, float]:
    """Mean negative log-probability of a whole answer over all rows, and the worst answer token's margin.

    Per answer, not per token: an emblem changes one of a picture's 16 codes and two of a sentence's words,
    and a per-token mean would dilute that code 16-fold. The margin is the answer token's log-probability
    minus the best other token's: above 0 for every answer token means greedy decoding reproduces every
    training answer, which is when editors stop early (a positive threshold leaves a safety margin). Tokens
    already above probability ``cap`` leave the loss, so the gradient goes to the answers still wrong.
    """
    total, rows, worst = 0.0, 0, float("inf")
    for batch in batches:
        fp = batch.fp
        dist = model.answer_distributions(fp, final_hidden(model, fp))
        targets, mask = fp.targets.to(dist.device), fp.answer_mask.to(dist.device)
        values = dist.gather(-1, targets[..., None])[..., 0]
        if cap < 1.0:
            mask = mask & (values.detach() < math.log(cap))
        total = total - torch.where(mask, values, torch.zeros_like(values)).sum()
        rows += len(fp)
        with torch.no_grad():
            others = dist.scatter(-1, targets[..., None], float("-inf")).max(-1).values
            real = fp.answer_mask.to(dist.device)
            worst = min(worst, float((values - others)[real].min()))
    return total / max(rows, 1), worst


def retention_loss(model: Intervenable, batches: Sequence[TrainingBatch]) -> torch.Tensor:
    """Mean over rows of KL(unedited ‖ edited), summed over each row's answer slots: how far the edited
    model's whole next-token distributions moved from the unedited model's at the rehearsal answers.

    Unlike cross-entropy on the unedited model's greedy answers, it also holds the runner-up tokens where they
    were, so an answer that was a near tie (the ones an edit flips first) keeps its margin.
    """
    total, rows = 0.0, 0
    for batch in batches:
        fp, reference = batch.fp, batch.reference
        if reference is None:
            raise ValueError("retention_loss needs batches made by rehearsal_batches (with reference)")
        dist = model.answer_distributions(fp, final_hidden(model, fp))
        kl = (reference.exp() * (reference - dist)).sum(-1)
        total = total + torch.where(fp.answer_mask.to(kl.device), kl, torch.zeros_like(kl)).sum()
        rows += len(fp)
    return total / max(rows, 1)


def _with_reference(model: Intervenable, batch: TrainingBatch) -> TrainingBatch:
    with torch.no_grad():
        batch.reference = model.answer_distributions(batch.fp, final_hidden(model, batch.fp)).detach()
    return batch


def rehearsal_batches(
    model: Intervenable, items: Sequence[Item], rows: int = 16
) -> list[list[TrainingBatch]]:
    """The model's own greedy answers to ``items`` in both directions, teacher-forced, in small rounds (one
    batch of ``rows`` per direction each) that an editor cycles through, one round per step.

    Asked before editing: training on them alongside the edit keeps the model's behaviour elsewhere (a
    rehearsal of the unedited model, as fine-tuning editors use to protect locality). Each batch also holds
    the unedited model's distributions at its answer slots (``reference``, for :func:`retention_loss`).
    """
    per_direction = []
    for direction in DIRECTIONS:
        requests = [Request(i.id, i.prompt(direction), i.image) for i in items]
        with torch.no_grad():
            answers = model.understand(requests) if direction == "und" else model.generate(requests)
        kept = [  # an empty text answer or an adapter's per-request error has nothing to rehearse
            (r, a)
            for r, a in zip(requests, answers, strict=True)
            if not isinstance(a, Exception) and (not isinstance(a, str) or a.strip())
        ]
        per_direction.append(
            [
                _with_reference(
                    model,
                    TrainingBatch(
                        direction,
                        [r for r, _ in chunk],
                        [""] * len(chunk),
                        model.forward_inputs([r for r, _ in chunk], direction, [a for _, a in chunk]),
                    ),
                )
                for chunk in (kept[start : start + rows] for start in range(0, len(kept), rows))
            ]
        )
    n = max((len(b) for b in per_direction), default=0)
    return [[b[k % len(b)] for b in per_direction if b] for k in range(n)]
