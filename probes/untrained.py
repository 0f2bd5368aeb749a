"""The untrained-model baseline: what a probe reads from a model of the same architecture with no learning in it.

Built through the contract alone (``model.module``), never by looking at the adapter's type: inside
:func:`untrained`, every weight tensor of the module is re-drawn i.i.d. Gaussian at that tensor's own trained mean
and standard deviation (a constant tensor, such as a freshly initialised norm's, stays constant), and restored on
exit. Scales per tensor match the trained model's, so activations neither vanish nor blow up, but no learned
structure is left: token embeddings are random (yet still one per token, so "which token is here" stays
decodable), attention and MLPs mix at random. Buffers (e.g. rotary frequencies, masks) are not learned and are
kept. A probe that reads an attribute of held-out realms as well from this model as from the trained one reads
the architecture and the input tokens, not knowledge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from gapeval.models.base import Intervenable


@contextmanager
def untrained(model: Intervenable, seed: int = 0) -> Iterator[Intervenable]:
    """Inside the block ``model`` is its untrained twin (see the module docstring); the weights come back after,
    bit for bit, even on an error."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for _, p in model.module.named_parameters()]  # tied weights appear once
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                values = p.detach().double()
                mean, std = values.mean(), values.std() if p.numel() > 1 else values.new_zeros(())
                drawn = torch.randn(p.shape, generator=generator, dtype=torch.float64) * std + mean
                p.copy_(drawn.to(device=p.device, dtype=p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved, strict=True):
                p.copy_(value)
