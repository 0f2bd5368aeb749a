"""The training loss of the toy UMM: answer-token cross-entropy, summed so engines and model pairs can add up.

The log reports it per modality of the target (und: words, gen: image codes), which for every single-direction
task is its direction, and splits a cross-modal sequence (text then picture, or the reverse) where it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gapeval.models.toy.model import ToyUMM
from gapeval.models.toy.sequence import IGNORE, Sequence, SequenceBuilder


@dataclass
class Losses:
    """A batch's summed answer-token cross-entropy (``total``, with grad) over ``count`` tokens, and per
    modality (und: word targets, gen: image-code targets) the sum and count the log reports."""

    total: torch.Tensor
    count: int
    sums: dict[str, list]

    def __add__(self, other: Losses) -> Losses:
        sums = {k: [a + b for a, b in zip(v, other.sums[k], strict=True)] for k, v in self.sums.items()}
        return Losses(self.total + other.total, self.count + other.count, sums)

    def mean(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The token-mean loss and the per-modality means (NaN where a batch has no such token)."""
        return self.total / self.count, {k: s / n if n else float("nan") for k, (s, n) in self.sums.items()}


def modality_sums(per_token: torch.Tensor, target: torch.Tensor, n_text: int) -> dict[str, list]:
    """Per modality, [sum, count] of ``per_token`` (detached): word targets are und, image codes gen."""
    is_gen = target >= n_text
    return {
        name: [float(per_token[sel].detach().sum()), int(sel.sum())]
        for name, sel in (("und", ~is_gen), ("gen", is_gen))
    }


def reference_losses(
    model: ToyUMM, builder: SequenceBuilder, seqs: list[Sequence], groups: int = 1
) -> Losses:
    """The shipped recipe's loss: logits only at answer tokens, over ``groups`` padded sub-batches.

    Sequences are sorted by length and run as ``groups`` padded sub-batches: the loss is the same token mean,
    with less padding to compute (padding is ~45 % of a random batch of 32 from the mixture).
    """
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    size = -(-len(order) // groups)
    out = Losses(torch.zeros(()), 0, {"und": [0.0, 0], "gen": [0.0, 0]})
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        batch, target = builder.collate([seqs[i] for i in rows])
        h = model(batch)
        memory = model.cell_memory(batch, h)
        valid = target != IGNORE
        where = valid.nonzero()[:, 0]  # logits only where there is a target: the row of each answer token
        logits = model.joint_logits(h[valid], memory[where] if memory is not None else None)
        per_token = F.cross_entropy(logits, target[valid], reduction="none")
        out = out + Losses(
            per_token.sum(), len(per_token), modality_sums(per_token, target[valid], builder.n_text)
        )
    return out
