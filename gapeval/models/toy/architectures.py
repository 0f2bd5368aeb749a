"""Toy architectures by ``ToyConfig.variant``: what the trainer builds and a checkpoint loads."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gapeval.models.toy.model import ToyConfig, ToyUMM
from gapeval.models.toy.pair import PairUMM

ARCHITECTURES: dict[str, Callable[[ToyConfig], nn.Module]] = {
    "shared": ToyUMM,
    "decoupled": ToyUMM,
    "pair": PairUMM,
}


def build_model(config: ToyConfig) -> nn.Module:
    """A freshly initialised model of ``config``'s architecture."""
    return ARCHITECTURES[config.variant](config)
