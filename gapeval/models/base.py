"""What every model adapter provides, and the extra surface interventions and probes need.

Adapters are batched and seeded: the runner hands them lists of requests and expects one answer per request,
in order. Interventions (LoRA, activation patching) and probes only talk to models through
:class:`Intervenable`, so the same code runs on the built-in toy UMM and on real UMMs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image


@dataclass
class Request:
    """One prompt in one direction. ``seed`` makes sampling reproducible per item, whatever the batching."""

    item_id: str
    prompt: str
    image: Image.Image | None = None
    seed: int = 0


@runtime_checkable
class UMM(Protocol):
    """A unified multimodal model: text answers (understanding) and image answers (generation)."""

    name: str

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description written into the run manifest (a changed config is a new run)."""
        ...

    def understand(self, requests: Sequence[Request]) -> list[str]: ...

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]: ...


@runtime_checkable
class Intervenable(UMM, Protocol):
    """The extensions interventions and probes use (see DESIGN.md, "Models")."""

    @property
    def module(self) -> Any:
        """The torch.nn.Module that holds every trainable weight (what peft wraps and nnsight traces)."""
        ...

    @property
    def layers_path(self) -> str:
        """Dotted path from ``module`` to the ModuleList of decoder layers, e.g. ``"model.language_model.layers"``."""
        ...

    @property
    def lora_targets(self) -> list[str]:
        """Module-name suffixes a peft ``LoraConfig(target_modules=...)`` should adapt."""
        ...

    def logprob(self, requests: Sequence[Request], answers: Sequence[Any], direction: str) -> list[float]:
        """Teacher-forced log-probability of each reference answer (text for ``und``, image for ``gen``)."""
        ...

    def span_positions(self, request: Request, span: str, direction: str) -> list[int]:
        """Token positions of ``span`` in the prompt as the model sees it in ``direction``."""
        ...
