"""The built-in unified model: trained on the synth world, shipped as safetensors checkpoints.

``load_toy("shared")`` / ``load_toy("decoupled")`` give the final shipped checkpoints; ``"shared@STEP"`` an
intermediate one (the emergence study); a folder path any checkpoint made by ``gapeval train-toy``.
"""

from __future__ import annotations

from typing import Any


def load_toy(variant: str = "shared", **kwargs: Any):
    from gapeval.models.toy.adapter import ToyAdapter

    return ToyAdapter.from_spec(variant, **kwargs)


__all__ = ["load_toy"]
