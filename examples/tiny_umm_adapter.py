"""A worked ``py:MODULE:FACTORY`` adapter for a model outside ``transformers`` (docs/adapters.md walks through it).

``tiny_umm_model.py`` plays the research repository: a plain-torch unified model with its own tokenizer,
image codec and KV cache. This file is what you would write for such a model — the benchmark contract
(:class:`gapeval.models.base.UMM`) and the intervention contract (:class:`gapeval.models.base.Intervenable`) —
and nothing in the toolkit changes::

    python -m gapeval run --model py:examples.tiny_umm_adapter:build --model-arg seed=1 \\
        --suite synth:6 --out runs/tiny-umm

(``python -m`` puts the current folder on the import path; with the ``gapeval`` script set ``PYTHONPATH=.``.)
Check it with ``gapeval.testing.check_intervenable(build())``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from PIL import Image

from examples.tiny_umm_model import (
    BOS,
    EOS,
    GEN,
    IMG,
    TEXT_VOCAB,
    UND,
    Codec,
    KVCache,
    TinyConfig,
    TinyDecoder,
    decode_text,
    encode_text,
    random_model,
)
from gapeval.models.base import ForwardPass, Request, TeacherForcing, check_direction

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
LINEARS += ("mlp.up_proj", "mlp.down_proj")


class TinyUMMAdapter(TeacherForcing):
    """The tiny model as a GapEval UMM with the intervention extensions.

    ``TeacherForcing`` supplies ``answer_logprobs``, ``logprob`` and ``token_logprobs`` from
    :meth:`forward_inputs` and :meth:`answer_distributions`, so log-probabilities mean what they mean in every
    other adapter.
    """

    name = "tiny-umm"

    def __init__(
        self, model: TinyDecoder, *, batch_size: int = 8, max_new_tokens: int = 16, temperature: float = 0.0
    ) -> None:
        self.model = model.eval().requires_grad_(False)  # frozen: only weights an intervention adds train
        self.codec = Codec(model.config)
        self.batch_size, self.max_new_tokens, self.temperature = batch_size, max_new_tokens, temperature
        # Text answers never contain the sequence's structural tokens: decoding and scoring both rule them out.
        self._text_bias = torch.zeros(TEXT_VOCAB)
        self._text_bias[[BOS, UND, GEN, IMG]] = float("-inf")

    # ---- UMM: what `gapeval run` needs -----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The model's config (its seed fixes the weights) and the decoding settings: a change is a new run."""
        return {
            "adapter": self.name,
            **asdict(self.model.config),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }

    def understand(self, requests: Sequence[Request]) -> list[str]:
        answers: list[str] = []
        for batch in self._batches(requests):
            rows = self._decode(batch, "und", self.max_new_tokens)
            answers += [decode_text(row[: row.index(EOS)] if EOS in row else row) for row in rows]
        return answers

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]:
        n_codes = self.model.config.grid**2
        return [
            self.codec.decode(row) for b in self._batches(requests) for row in self._decode(b, "gen", n_codes)
        ]

    # ---- Intervenable: what editing, patching and probing need -------------------------------------------

    @property
    def module(self) -> TinyDecoder:
        return self.model

    @property
    def layers_path(self) -> str:
        return "layers"

    @property
    def hidden_path(self) -> str:
        return "norm"

    @property
    def embed_path(self) -> str:
        return "embed"

    @property
    def components(self) -> dict[str, str]:
        return {"attn": "self_attn", "mlp": "mlp", "mlp_out": "mlp.down_proj"}

    @property
    def lora_targets(self) -> list[str]:
        return [f"layers.{i}.{name}" for i in range(len(self.model.layers)) for name in LINEARS]

    def forward_inputs(
        self, requests: Sequence[Request], direction: str, answers: Sequence[Any] | None = None
    ) -> ForwardPass:
        """``module(ids, mask)``: each prompt, then its answer's tokens but the last (the last token predicts
        nothing that is scored: there is no end-of-answer term). Answers are text for und, PIL images or codes
        for gen."""
        check_direction(direction)
        if answers is not None and len(answers) != len(requests):
            raise ValueError(f"forward_inputs: {len(requests)} requests but {len(answers)} answers")
        prompts = [self._prompt(r, direction) for r in requests]
        if answers is None:
            tokens: list[list[int]] = [[] for _ in requests]
        else:
            tokens = [self._answer_tokens(a, direction) for a in answers]
        shift = 0 if direction == "und" else TEXT_VOCAB  # head vocabulary → sequence ids
        ids, mask = self._left_pad(
            [p + [t + shift for t in a[:-1]] for p, a in zip(prompts, tokens, strict=True)]
        )
        n_answer = max((len(a) for a in tokens), default=0)
        offsets = (mask == 0).sum(1).cpu()
        prompt_end = offsets + torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long)
        positions = torch.zeros(len(requests), n_answer, dtype=torch.long)
        targets = torch.zeros(len(requests), n_answer, dtype=torch.long)
        answer_mask = torch.zeros(len(requests), n_answer, dtype=torch.bool)
        for row, answer in enumerate(tokens):  # right-aligned: the last slot of every row is its last token
            slots = slice(n_answer - len(answer), n_answer)
            positions[row, slots] = torch.arange(len(answer)) + prompt_end[row]
            targets[row, slots] = torch.tensor(answer, dtype=torch.long)
            answer_mask[row, slots] = True
        return ForwardPass(direction, (ids, mask), {}, offsets, prompt_end, positions, targets, answer_mask)

    def answer_distributions(self, inputs: ForwardPass, hidden: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(inputs), device=hidden.device)[:, None]
        return self._log_probs(hidden[rows, inputs.answer_positions.to(hidden.device)], inputs.direction)

    def prompt_rows(self, rows: int, direction: str) -> slice:
        """Every row of a decoding pass is a request (a model with guidance would add unconditional rows)."""
        check_direction(direction)
        return slice(0, rows)

    def span_positions(self, request: Request, span: str, direction: str) -> list[int]:
        """Byte positions of the first ``span`` in the prompt, after what precedes the prompt's text."""
        check_direction(direction)
        at = request.prompt.find(span) if span else -1
        if at < 0:
            raise ValueError(f"span {span!r} does not occur in prompt {request.prompt!r}")
        start = len(self._prompt(request, direction)) - 1 - len(encode_text(request.prompt))
        start += len(encode_text(request.prompt[:at]))
        return list(range(start, start + len(encode_text(span))))

    # ---- internals ---------------------------------------------------------------------------------------

    def _prompt(self, request: Request, direction: str) -> list[int]:
        """[BOS] ([IMG] image codes) prompt bytes [UND | GEN]: the last token predicts the first answer token."""
        image = (
            []
            if request.image is None
            else [IMG, *(TEXT_VOCAB + c for c in self.codec.encode(request.image))]
        )
        return [BOS, *image, *encode_text(request.prompt), UND if direction == "und" else GEN]

    def _answer_tokens(self, answer: Any, direction: str) -> list[int]:
        if direction == "und":
            return encode_text(str(answer))
        if isinstance(answer, Image.Image):
            return self.codec.encode(answer)
        return [int(c) for c in answer]

    def _log_probs(self, hidden: torch.Tensor, direction: str) -> torch.Tensor:
        """Log-probabilities over the direction's vocabulary, as decoding draws from them."""
        if direction == "und":
            return torch.log_softmax(
                self.model.text_head(hidden).float() + self._text_bias.to(hidden.device), -1
            )
        return torch.log_softmax(self.model.image_head(hidden).float(), -1)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max((len(r) for r in rows), default=0)
        ids = torch.tensor([[BOS] * (width - len(r)) + r for r in rows], dtype=torch.long).view(
            len(rows), width
        )
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self._device), mask.view(len(rows), width).to(self._device)

    @property
    def _device(self) -> torch.device:
        return self.model.embed.weight.device

    def _batches(self, requests: Sequence[Request]) -> list[Sequence[Request]]:
        size = max(1, int(self.batch_size))
        return [requests[i : i + size] for i in range(0, len(requests), size)]

    @torch.no_grad()
    def _decode(self, batch: Sequence[Request], direction: str, steps: int) -> list[list[int]]:
        """One pass over the left-padded prompts, then one token per pass with the KV cache.

        Each row draws from its own generator seeded with the request's seed, so a request's answer does not
        depend on its batch; temperature 0 is greedy. Text stops once every row has ended its answer.
        """
        ids, mask = self._left_pad([self._prompt(r, direction) for r in batch])
        cache: KVCache = []
        hidden = self.model(ids, mask, cache)[:, -1]
        generators = [torch.Generator(device=self._device).manual_seed(int(r.seed)) for r in batch]
        drawn: list[torch.Tensor] = []
        for step in range(steps):
            tokens = self._pick(self._log_probs(hidden, direction), generators)
            drawn.append(tokens)
            done = direction == "und" and bool((torch.stack(drawn, 1) == EOS).any(1).all())
            if done or step == steps - 1:
                break
            mask = torch.cat([mask, mask.new_ones(len(batch), 1)], 1)
            fed = tokens if direction == "und" else tokens + TEXT_VOCAB
            hidden = self.model(fed[:, None], mask, cache)[:, -1]
        return torch.stack(drawn, 1).tolist() if drawn else [[] for _ in batch]

    def _pick(self, log_probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        if self.temperature <= 0:
            return log_probs.argmax(-1)
        probs = torch.softmax(log_probs / self.temperature, -1)
        return torch.cat(
            [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
        )


def build(
    seed: int = 0,
    layers: int = 2,
    width: int = 32,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    device: str = "cpu",
) -> TinyUMMAdapter:
    """The factory ``--model py:examples.tiny_umm_adapter:build`` calls; ``--model-arg`` keys are its keywords."""
    model = random_model(TinyConfig(layers=layers, width=width, seed=seed)).to(device)
    return TinyUMMAdapter(
        model, batch_size=batch_size, max_new_tokens=max_new_tokens, temperature=temperature
    )
