"""The built-in unified model: trained on the synth world, shipped as safetensors checkpoints.

``load_toy("shared")`` / ``load_toy("decoupled")`` give the final shipped checkpoints; ``"shared@STEP"`` an
intermediate one (the emergence study), ``"shared@seedN"`` one trained with another seed; a folder path any
checkpoint made by ``gapeval train-toy``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SPEC_FORM = "VARIANT, VARIANT@STEP (an integer), VARIANT@seedN or a checkpoint folder"
_SHIPPED = re.compile(r"[A-Za-z_][\w-]*(@(\d+|seed\d+))?")


def load_toy(variant: str = "shared", **kwargs: Any):
    """The toy adapter for ``variant`` (see the module docstring); a malformed spec is a one-line error."""
    from gapeval.models.toy.adapter import ToyAdapter

    if variant and not Path(variant).is_dir() and not _SHIPPED.fullmatch(variant):
        raise ValueError(f"toy model spec {variant!r}: expected {SPEC_FORM}")
    return ToyAdapter.from_spec(variant, **kwargs)


__all__ = ["load_toy"]
