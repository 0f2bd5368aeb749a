"""Subject-embedding editing: train only the input-embedding rows of the edited subjects' name tokens.

Why: patching found the input embedding to be the one place both directions of the built-in UMM read a realm's
name, so an edit written there is the natural candidate to reach the untrained direction. It is a method on any
adapter of the contract: the rows are found through :attr:`Intervenable.embed_path` (the ids the embedding is
called with) and :meth:`Intervenable.span_positions` (where the subject sits), never through the model's type.

The edit is a shift of those rows, added by a forward hook on the embedding (so the frozen weight is never
written, and a tied output head is left as it was); on exit the hook goes. It saves as safetensors
(``{"rows": ids, "delta": shifts}``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from gapeval.models.base import Intervenable
from interventions.editing.editor import Edit, Editor, TrainingBatch, answer_loss, training_batches
from interventions.editing.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range
from interventions.editing.specs import EditSpec


def _embedding(model: Intervenable) -> torch.nn.Module:
    return model.module.get_submodule(model.embed_path)


def subject_token_ids(model: Intervenable, batches: Sequence[TrainingBatch]) -> list[int]:
    """The token ids the embedding reads at every subject position of the training prompts, in first-seen
    order (a pass with a hook on the embedding records the ids it is called with)."""
    ids: list[int] = []
    for batch in batches:
        seen: list[torch.Tensor] = []
        handle = _embedding(model).register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]))
        try:
            with torch.no_grad():
                model.module(*batch.fp.args, **batch.fp.kwargs)
        finally:
            handle.remove()
        if not seen:
            raise ValueError(
                f"the adapter's {batch.direction} pass does not call its input embedding ({model.embed_path}) "
                "inside the module (it passes precomputed embeddings): the embedding editor cannot train through it"
            )
        tokens = seen[0]
        for row, (request, subject) in enumerate(zip(batch.requests, batch.subjects, strict=True)):
            cols = batch.fp.columns(row, model.span_positions(request, subject, batch.direction))
            ids += [int(t) for t in tokens[row, cols] if int(t) not in ids]
    return ids


@contextmanager
def shifted_rows(model: Intervenable, rows: Sequence[int], delta: torch.Tensor) -> Iterator[None]:
    """Inside the block the embedding returns ``weight[id] + delta[k]`` for ``id == rows[k]``."""
    module = _embedding(model)
    index = torch.full((module.weight.shape[0],), -1, dtype=torch.long)
    index[torch.tensor(list(rows), dtype=torch.long)] = torch.arange(len(rows))

    def hook(_m: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        k = index.to(args[0].device)[args[0]]
        shift = delta.to(out.dtype)[k.clamp(min=0)]
        return out + torch.where((k >= 0)[..., None], shift, torch.zeros_like(shift))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class EmbeddingEdit(Edit):
    suffix = ".safetensors"

    def __init__(self, rows: list[int], delta: torch.Tensor, stats: dict[str, Any]):
        self.rows, self.delta, self.stats = rows, delta, stats

    def save(self, path: str | Path) -> None:
        save_file({"rows": torch.tensor(self.rows), "delta": self.delta.contiguous()}, str(path))


@dataclass
class EmbeddingEditor(Editor):
    """Adam on the subject rows' shift until every training answer token leads the runner-up by
    ``stop_margin`` or ``max_steps``; ``decay`` keeps the shift small relative to the rows' own size."""

    lr: float = 0.05
    max_steps: int = 300
    stop_margin: float = 0.0
    decay: float = 0.0
    seed: int = 0
    name: str = "embedding"
    RANGES: ClassVar[dict[str, Range]] = {
        "lr": POSITIVE,
        "max_steps": AT_LEAST_ONE,
        "stop_margin": NON_NEGATIVE,
        "decay": NON_NEGATIVE,
        "seed": NON_NEGATIVE,
    }

    def config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "lr", "max_steps", "stop_margin", "decay", "seed")}

    @contextmanager
    def apply(self, model: Intervenable, specs: Sequence[EditSpec], via: str) -> Iterator[EmbeddingEdit]:
        start = time.perf_counter()
        batches = training_batches(model, specs, via)
        rows = subject_token_ids(model, batches)
        weight = _embedding(model).weight
        torch.manual_seed(self.seed)
        delta = torch.zeros(len(rows), weight.shape[1], requires_grad=True)
        optimiser = torch.optim.Adam([delta], lr=self.lr)
        steps = 0
        with shifted_rows(model, rows, delta):
            with torch.enable_grad():
                loss, worst = answer_loss(model, batches)
                while worst <= self.stop_margin and steps < self.max_steps:
                    if self.decay:
                        loss = loss + self.decay * delta.pow(2).mean()
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    steps += 1
                    loss, worst = answer_loss(model, batches)
            stats = {
                "steps": steps,
                "rows": len(rows),
                "loss": float(loss.detach()),
                "worst_margin": worst,
                "shift_norm": float(delta.detach().norm(dim=-1).mean()) if rows else 0.0,
                "seconds": time.perf_counter() - start,
            }
            yield EmbeddingEdit(rows, delta.detach().clone(), stats)

    @contextmanager
    def load(self, model: Intervenable, path: str | Path) -> Iterator[None]:
        """Add a saved shift inside the block; remove it on exit."""
        saved = load_file(str(path))
        with shifted_rows(model, saved["rows"].tolist(), saved["delta"]):
            yield
