"""The built-in UMM behind the adapter protocol, with the intervention extensions (see models/base.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gapeval.models.base import ForwardPass, Request, TeacherForcing, check_direction
from gapeval.models.toy.checkpoint import CheckpointError, load_checkpoint
from gapeval.models.toy.codec import N_TOKENS
from gapeval.models.toy.model import Batch, ToyUMM
from gapeval.models.toy.sequence import IGNORE, SequenceBuilder
from gapeval.models.toy.sequence import Sequence as ToySequence
from gapeval.models.toy.tokenizer import SPECIALS, words

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
PREFILL_ROWS = 24  # rows per length-sorted prompt sub-batch (see ToyAdapter._prefill)
COMPONENTS = {"attn": "self_attn", "mlp": "mlp", "mlp_out": "mlp.down_proj"}


def shipped_checkpoint(variant: str = "shared", step: int | None = None, seed: int = 0) -> Path:
    """Path of a checkpoint committed with the package (the final one unless ``step`` is given).

    Seed 0 (the defaults ``toy``, ``toy:decoupled``) lives in ``toy-VARIANT/``; another training seed in
    ``toy-VARIANT-seedN/``.
    """
    root = CHECKPOINTS / (f"toy-{variant}" if seed == 0 else f"toy-{variant}-seed{seed}")
    steps = sorted(root.glob("step-*"))
    name = f"{variant!r}" + (f" seed {seed}" if seed else "")
    if not steps:
        raise CheckpointError(f"no shipped checkpoints for variant {name} under {root}")
    if step is None:
        return steps[-1]
    wanted = root / f"step-{step:06d}"
    if wanted not in steps:
        raise CheckpointError(
            f"no shipped checkpoint at step {step} for {name}; have {[p.name for p in steps]}"
        )
    return wanted


class ToyAdapter(TeacherForcing):
    """Batched greedy (or seeded sampled) decoding with a KV cache for both directions."""

    def __init__(
        self,
        checkpoint: str | Path,
        batch_size: int = 64,
        temperature: float = 0.0,
        max_new_tokens: int = 48,
        threads: int | None = None,
    ):
        self.checkpoint = Path(checkpoint)
        self.model, self.tokenizer, self.codec, self.meta = load_checkpoint(self.checkpoint)
        self.model.requires_grad_(False)  # frozen: only what an intervention adds (e.g. LoRA) trains
        self.variant = self.model.config.variant
        self.name = f"toy-{self.variant}"
        self.builder = SequenceBuilder(self.tokenizer, self.codec, self.model.input_variant)
        self.batch_size, self.temperature, self.max_new_tokens = (
            int(batch_size),
            float(temperature),
            max_new_tokens,
        )
        if threads:
            torch.set_num_threads(int(threads))
        n_text = len(self.tokenizer)
        banned = [self.tokenizer.index[s] for s in SPECIALS if s != "<eos>"]
        self._text_bias = torch.zeros(n_text)
        self._text_bias[banned] = float("-inf")
        self._token_cells = torch.tensor(self.tokenizer.cell_ids())

    @classmethod
    def from_spec(cls, spec: str = "", **kwargs) -> ToyAdapter:
        """``""``/``shared``/``decoupled``, ``VARIANT@STEP`` (a shipped checkpoint along training),
        ``VARIANT@seedN`` (the final checkpoint of training seed N), or a checkpoint folder."""
        spec = spec or "shared"
        if Path(spec).is_dir():
            return cls(spec, **kwargs)
        variant, _, at = spec.partition("@")
        if at.startswith("seed"):
            return cls(shipped_checkpoint(variant, seed=int(at.removeprefix("seed"))), **kwargs)
        return cls(shipped_checkpoint(variant, int(at) if at else None), **kwargs)

    def config(self) -> dict[str, Any]:
        weights = (self.checkpoint / "model.safetensors").read_bytes()
        return {
            "variant": self.variant,
            "checkpoint": self.checkpoint.name,
            "step": self.meta.get("step"),
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
        }

    # --- generation ------------------------------------------------------------------------------------------

    def _pick(self, logits: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        if generators is None:
            return logits.argmax(-1)
        probs = torch.softmax(logits / self.temperature, -1)
        return torch.cat(
            [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
        )

    def _generators(self, requests: Sequence[Request]) -> list[torch.Generator] | None:
        if self.temperature <= 0:
            return None
        return [torch.Generator().manual_seed(int(r.seed)) for r in requests]

    def _chunks(self, requests: Sequence[Request]):
        for i in range(0, len(requests), self.batch_size):
            yield requests[i : i + self.batch_size]

    def _prefill(self, requests: Sequence[Request], direction: str) -> tuple[torch.Tensor, dict]:
        """Run the prompts: last hidden states and the KV cache, in request order.

        Prompts run in length-sorted sub-batches of at most ``PREFILL_ROWS`` (a third of a mixed batch is
        padding otherwise, and the prompt pass is most of the decoding time), then decode as one batch.
        """
        seqs = [self.builder.prompt(r.prompt, r.image, direction) for r in requests]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        states, caches, model = [], [], self.model.view(direction)
        for start in range(0, len(order), PREFILL_ROWS):
            batch, _ = self.builder.collate([seqs[i] for i in order[start : start + PREFILL_ROWS]])
            caches.append({})
            states.append(model(batch, caches[-1])[:, -1])
        back = torch.argsort(torch.tensor(order))
        return torch.cat(states)[back], ToyUMM.select_rows(ToyUMM.join_caches(caches), back)

    @torch.no_grad()
    def _understand_batch(self, requests: Sequence[Request]) -> list[str]:
        h, cache = self._prefill(requests, "und")
        gens, eos, model = self._generators(requests), self.tokenizer.eos_id, self.model.view("und")
        out = torch.full((len(requests), self.max_new_tokens), eos)
        rows = torch.arange(len(requests))  # rows still decoding; finished ones leave the batch and cache
        for step in range(self.max_new_tokens):
            tok = self._pick(model.text_logits(h, cache.get("memory")) + self._text_bias, gens)
            out[rows, step] = tok
            going = tok != eos
            if not going.all():
                if not going.any():
                    break
                rows, tok = rows[going], tok[going]
                gens = [g for g, keep in zip(gens, going.tolist(), strict=True) if keep] if gens else None
                cache = ToyUMM.select_rows(cache, going)
            h = model(self._step(tok, self._token_cells[tok], torch.zeros_like(tok)), cache)[:, -1]
        texts = []
        for row in out.tolist():
            texts.append(self.tokenizer.decode(row[: row.index(eos)] if eos in row else row))
        return texts

    @torch.no_grad()
    def _generate_batch(self, requests: Sequence[Request]) -> list[Image.Image]:
        h, cache = self._prefill(requests, "gen")
        gens, model = self._generators(requests), self.model.view("gen")
        codes = torch.zeros(len(requests), N_TOKENS, dtype=torch.long)
        n_text = len(self.tokenizer)
        for k in range(N_TOKENS):
            codes[:, k] = self._pick(model.image_logits(h), gens)
            if k < N_TOKENS - 1:
                cell = torch.full_like(codes[:, k], k + 1)
                h = model(self._step(n_text + codes[:, k], cell, cell + 1), cache)[:, -1]
        return [self.codec.decode(row) for row in codes.tolist()]

    @staticmethod
    def _step(ids: torch.Tensor, cell: torch.Tensor, next_cell: torch.Tensor) -> Batch:
        return Batch(
            ids=ids[:, None],
            cell=cell[:, None],
            next_cell=next_cell[:, None],
            attn=torch.ones_like(ids)[:, None],
        )

    def understand(self, requests: Sequence[Request]) -> list[str]:
        self.model.eval()
        return [t for chunk in self._chunks(requests) for t in self._understand_batch(chunk)]

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]:
        self.model.eval()
        return [im for chunk in self._chunks(requests) for im in self._generate_batch(chunk)]

    @torch.no_grad()
    def reference_decode(self, request: Request, direction: str) -> str | Image.Image:
        """Greedy decoding of one request with no KV cache: re-runs the whole sequence for every token.

        The baseline the batched decoder is checked against (tests) and timed against (benchmarks/).
        """
        seq = self.builder.prompt(request.prompt, request.image, direction)
        prompt_len, n_text, model = len(seq), len(self.tokenizer), self.model.view(direction)
        steps = self.max_new_tokens if direction == "und" else N_TOKENS
        for k in range(steps):
            batch, _ = self.builder.collate([seq])
            states = model(batch)
            h = states[:, -1]
            if direction == "und":
                memory = model.cell_memory(batch, states)
                tok = int((model.text_logits(h, memory) + self._text_bias).argmax(-1))
                if tok == self.tokenizer.eos_id:
                    break
                seq.push(tok, cell=int(self._token_cells[tok]))
            else:
                code = int(model.image_logits(h).argmax(-1))
                seq.push(n_text + code, cell=k + 1, next_cell=k + 2 if k < N_TOKENS - 1 else 0)
        if direction == "und":
            return self.tokenizer.decode(seq.ids[prompt_len:])
        return self.codec.decode([i - n_text for i in seq.ids[-N_TOKENS:]])

    # --- intervention extensions (gapeval.models.base.Intervenable) ------------------------------------------

    @property
    def module(self) -> ToyUMM:
        return self.model

    @property
    def layers_path(self) -> str:
        return "layers"

    @property
    def hidden_path(self) -> str:
        return "norm"

    @property
    def embed_path(self) -> str:
        return "embed_tokens"

    @property
    def components(self) -> dict[str, str]:
        return dict(COMPONENTS)

    @property
    def lora_targets(self) -> list[str]:
        return self.model.lora_targets()

    def _sequence(self, request: Request, direction: str, answer: Any) -> ToySequence:
        if answer is None:
            return self.builder.prompt(request.prompt, request.image, direction)
        if direction == "gen" and not isinstance(answer, Image.Image):  # codes of the answer image
            seq = self.builder.prompt(request.prompt, request.image, direction)
            return self.builder.add_image_answer(seq, [int(c) for c in answer])
        return self.builder.example(request.prompt, request.image, direction, answer)

    def forward_inputs(
        self, requests: Sequence[Request], direction: str, answers: Sequence[Any] | None = None
    ) -> ForwardPass:
        """``module(batch)`` on the sequences of :mod:`sequence`; gen answers are PIL images or 16 codes."""
        check_direction(direction)
        if answers is not None and len(answers) != len(requests):
            raise ValueError(f"forward_inputs: {len(requests)} requests but {len(answers)} answers")
        seqs = [
            self._sequence(r, direction, None if answers is None else answers[i])
            for i, r in enumerate(requests)
        ]
        batch, target = self.builder.collate(seqs)
        width = batch.ids.shape[1]
        offsets = torch.tensor([width - len(s) for s in seqs], dtype=torch.long)
        predicts = target != IGNORE
        if direction == "und":  # no end-of-answer term: drop the last target (<eos>) of each row
            last = width - 1 - predicts.flip(1).long().argmax(1)
            predicts[torch.arange(len(seqs)), last] = False
        counts = predicts.sum(1)
        n_answer = int(counts.max()) if len(seqs) else 0
        positions = torch.zeros(len(seqs), n_answer, dtype=torch.long)
        targets = torch.zeros(len(seqs), n_answer, dtype=torch.long)
        mask = torch.arange(n_answer)[None, :] >= (n_answer - counts)[:, None]
        shift = 0 if direction == "und" else len(self.tokenizer)
        for row in range(len(seqs)):
            cols = predicts[row].nonzero()[:, 0]
            positions[row, n_answer - len(cols) :] = cols
            targets[row, n_answer - len(cols) :] = target[row, cols] - shift
        # The direction token ends the prompt: the first column with a target, or the last one without answers.
        has_answer = (target != IGNORE).any(1)
        prompt_end = torch.where(has_answer, (target != IGNORE).long().argmax(1), width - 1)
        kwargs = self.model.pass_kwargs(direction)
        return ForwardPass(direction, (batch,), kwargs, offsets, prompt_end, positions, targets, mask)

    def answer_distributions(self, inputs: ForwardPass, hidden: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(inputs))[:, None]
        h = hidden[rows, inputs.answer_positions]
        model = self.model.view(inputs.direction)
        if inputs.direction == "und":
            memory = model.cell_memory(inputs.args[0], hidden)
            logits = model.text_logits(h, memory) + self._text_bias
        else:
            logits = model.image_logits(h)
        return torch.log_softmax(logits, -1)

    def prompt_rows(self, rows: int, direction: str) -> slice:
        check_direction(direction)
        return slice(0, rows)  # no rows of its own: every row is a request

    def span_positions(self, request: Request, span: str, direction: str) -> list[int]:
        """Positions (in the unpadded sequence) of the words of ``span`` inside the prompt, first occurrence."""
        check_direction(direction)
        unknown = [w for w in words(span) if w not in self.tokenizer.index]
        if unknown or not words(span):
            raise ValueError(f"span {span!r} has words the model cannot represent: {unknown}")
        seq = self.builder.prompt(request.prompt, request.image, direction)
        target = self.tokenizer.encode(span)
        ids = seq.ids
        for start in range(seq.prompt_start, len(ids) - len(target) + 1):
            if ids[start : start + len(target)] == target:
                return list(range(start, start + len(target)))
        raise ValueError(f"span {span!r} not found in prompt {request.prompt!r}")
