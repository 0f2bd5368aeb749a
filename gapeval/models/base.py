"""What every model adapter provides, and the extra surface interventions and probes need.

Adapters are batched and seeded: the runner hands them lists of requests and expects one answer per request,
in order. Interventions (LoRA, activation patching) and probes only talk to models through
:class:`Intervenable`, so the same code runs on the built-in toy UMM and on real UMMs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image

if TYPE_CHECKING:
    import torch

DIRECTIONS = ("und", "gen")


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

    def understand(self, requests: Sequence[Request]) -> list[str]:
        """One text answer per request, in order. An adapter that fails one request may put an Exception in
        its place: the run records it as that item's error and retries it on resume."""
        ...

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]:
        """One image per request, in order (an Exception in place of one, as for :meth:`understand`)."""
        ...


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


@dataclass
class ForwardPass:
    """The inputs of one forward pass of :attr:`Intervenable.module` for a batch in one direction.

    ``module(*args, **kwargs)`` runs exactly the sequences the decoder layers see in ``direction``: the prompt
    as that direction feeds it and, when answers were given, the answer teacher-forced (text tokens for und,
    the reference image's tokens for gen). Rows are left-padded: unpadded position ``p`` of row ``b`` (what
    :meth:`Intervenable.span_positions` returns) is column ``offsets[b] + p``. ``answer_positions`` are the
    columns whose final hidden states predict ``targets`` (right-aligned, ``answer_mask`` marks real slots), so
    metrics read answer log-probabilities the same way in both directions and in every adapter.
    """

    direction: str
    args: tuple
    kwargs: dict[str, Any]
    offsets: torch.Tensor  # (B,) left padding per row
    prompt_end: torch.Tensor  # (B,) column of the last prompt token (it predicts the first answer token)
    answer_positions: torch.Tensor  # (B, A) columns whose hidden states predict ``targets``
    targets: torch.Tensor  # (B, A) answer token ids in the direction's own head vocabulary
    answer_mask: torch.Tensor  # (B, A) bool
    extra: dict[str, Any] = field(default_factory=dict)  # adapter-private (e.g. what its heads also need)

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def prompt_length(self, row: int = 0) -> int:
        """Number of prompt tokens of ``row`` (unpadded): its prompt ends at position ``prompt_length - 1``."""
        return int(self.prompt_end[row] - self.offsets[row]) + 1

    def columns(self, row: int, positions: Sequence[int]) -> list[int]:
        """Padded columns of unpadded ``positions`` in ``row`` (e.g. a span from ``span_positions``)."""
        return [int(self.offsets[row]) + int(p) for p in positions]


@runtime_checkable
class Intervenable(UMM, Protocol):
    """What interventions and probes use; they never look at the adapter's type (docs/adapters.md).

    Conventions shared by every adapter:

    - the base weights are frozen at load: only weights an intervention adds (a LoRA adapter) train, and
      log-probabilities carry gradients exactly when such weights take part and grad mode is on;
    - log-probabilities cover the answer's own tokens and **no end-of-answer term** (chat templates end a
      turn differently; an image has a fixed number of tokens), normalised over the direction's vocabulary
      as decoding normalises them;
    - module paths are dotted names relative to :attr:`module` (``module.get_submodule(path)``);
    - ``understand``/``generate`` run the decoder layers on left-padded prompts in one pass per (sub-)batch
      (rows may be regrouped between sub-batches), then on one new token per step (KV cache): a request's last
      prompt token is the last column of its prompt pass, so hooks can address prompt positions counted from
      the end, and :meth:`prompt_rows` says which rows of a pass carry the requests.
    """

    @property
    def module(self) -> Any:
        """The torch.nn.Module that holds every weight (what peft wraps and nnsight traces)."""
        ...

    @property
    def layers_path(self) -> str:
        """Path of the ModuleList of decoder layers, e.g. ``"model.language_model.layers"``.

        Each layer's output is the residual stream after it (a tensor, or a tuple whose first element is)."""
        ...

    @property
    def hidden_path(self) -> str:
        """Path of the module whose output is the final hidden states the output heads read (final norm)."""
        ...

    @property
    def embed_path(self) -> str:
        """Path of the nn.Embedding that turns the prompt's text token ids into the decoder's input vectors
        (called with the (B, T) ids of a pass; what an editor of a name's input rows hooks)."""
        ...

    @property
    def components(self) -> dict[str, str]:
        """Sub-module paths inside one decoder layer: ``attn`` and ``mlp`` (outputs added to the residual
        stream) and ``mlp_out`` (the MLP's output projection, the Linear a locate-then-edit update writes)."""
        ...

    @property
    def lora_targets(self) -> list[str]:
        """Full paths of the Linear modules a LoRA adapter trains (peft ``target_modules``)."""
        ...

    def forward_inputs(
        self, requests: Sequence[Request], direction: str, answers: Sequence[Any] | None = None
    ) -> ForwardPass:
        """One teacher-forced forward pass (answers: text for und; PIL images or token ids for gen)."""
        ...

    def answer_distributions(self, inputs: ForwardPass, hidden: torch.Tensor) -> torch.Tensor:
        """(B, A, V) log-probabilities over the direction's vocabulary at each answer slot, from ``hidden``, the
        output of :attr:`hidden_path` (B, T, d) on ``inputs`` (e.g. for a KL term that keeps a model's answers)."""
        ...

    def answer_logprobs(self, inputs: ForwardPass, hidden: torch.Tensor) -> torch.Tensor:
        """(B, A) log-probability of each answer token (``targets``); 0 where ``answer_mask`` is False."""
        ...

    def logprob(self, requests: Sequence[Request], answers: Sequence[Any], direction: str) -> torch.Tensor:
        """(B,) teacher-forced log-probability of each answer: the sum of :meth:`token_logprobs`."""
        ...

    def token_logprobs(
        self, requests: Sequence[Request], answers: Sequence[Any], direction: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) per-token log-probabilities of each answer and the (B, A) mask of real tokens."""
        ...

    def prompt_rows(self, rows: int, direction: str) -> slice:
        """Of the ``rows`` a decoder layer sees in one pass of ``understand``/``generate``, those holding the
        requests (the others are the adapter's own, e.g. unconditional copies for guidance): what a hook that
        edits decoding should write."""
        ...

    def span_positions(self, request: Request, span: str, direction: str) -> list[int]:
        """Unpadded positions of the tokens of ``span`` in the prompt as the model sees it in ``direction``.

        Raises ValueError when the span is absent or the model cannot represent it (an unknown word)."""
        ...


def final_hidden(model: Intervenable, inputs: ForwardPass) -> torch.Tensor:
    """Run ``model.module`` on ``inputs`` and return the output of ``model.hidden_path`` (B, T, d)."""
    captured: list[Any] = []
    target = model.module.get_submodule(model.hidden_path)
    handle = target.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        model.module(*inputs.args, **inputs.kwargs)
    finally:
        handle.remove()
    out = captured[-1]
    return out[0] if isinstance(out, tuple) else out


class TeacherForcing:
    """``answer_logprobs``, ``logprob`` and ``token_logprobs`` for an adapter that has ``forward_inputs`` and
    ``answer_distributions``.

    One implementation, so every adapter's log-probabilities mean the same thing. Requests run in chunks of
    the adapter's ``batch_size``.
    """

    batch_size: int

    def answer_logprobs(self, inputs: ForwardPass, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        dist = self.answer_distributions(inputs, hidden)  # type: ignore[attr-defined]
        picked = dist.gather(-1, inputs.targets.to(dist.device)[..., None])[..., 0]
        return torch.where(inputs.answer_mask.to(dist.device), picked, torch.zeros_like(picked))

    def token_logprobs(
        self, requests: Sequence[Request], answers: Sequence[Any], direction: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        check_direction(direction)
        if len(requests) != len(answers):
            raise ValueError(f"logprob: {len(requests)} requests but {len(answers)} answers")
        values, masks = [], []
        for start in range(0, len(requests), max(1, int(self.batch_size))):
            stop = start + max(1, int(self.batch_size))
            inputs = self.forward_inputs(requests[start:stop], direction, answers[start:stop])  # type: ignore[attr-defined]
            hidden = final_hidden(self, inputs)  # type: ignore[arg-type]
            values.append(self.answer_logprobs(inputs, hidden))
            masks.append(inputs.answer_mask)
        if not values:
            return torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.bool)
        width = max(v.shape[1] for v in values)
        # Chunks are right-aligned like their rows: pad on the left to the widest chunk.
        values = [torch.nn.functional.pad(v, (width - v.shape[1], 0)) for v in values]
        masks = [torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in masks]
        return torch.cat(values), torch.cat(masks)

    def logprob(self, requests: Sequence[Request], answers: Sequence[Any], direction: str) -> torch.Tensor:
        values, _ = self.token_logprobs(requests, answers, direction)
        return values.sum(-1)
