"""Janus / Janus-Pro through `transformers` (``JanusForConditionalGeneration`` + ``JanusProcessor``).

Understanding: image + prompt → text through the chat template, batched with left padding, greedy by default.
Generation: prompt → image tokens with classifier-free guidance (``generation_mode="image"``), decoded to
pixels by the model's VQ decoder.

Reproducibility: each request's ``seed`` drives its own sampler (see ``hf_common.make_row_sampler``), so a
request's draws never depend on its batch neighbours. What can still differ between batch compositions is
floating-point rounding of padded, batched matmuls; in float32 on the CPU the tests find identical outputs
alone and in a mixed-length batch; in bfloat16 on a GPU a rare token may flip.

Janus cannot condition image generation on an input image. ``input_image_policy="drop"`` (default)
generates from the text alone and records the item ids in :meth:`JanusAdapter.notes` (the runner writes them
into summary.json); ``"error"`` refuses such requests.

Intervention extensions (:class:`gapeval.models.base.Intervenable`, whose conventions hold here):

- ``layers_path`` is the language model's decoder layers, shared by both directions; ``lora_targets`` are
  their attention and MLP projections (the vision encoder's are excluded);
- ``logprob(..., "und")`` is log P(answer text | chat prompt) through the text head (the answer's tokens only:
  special tokens the template appends after it are not scored); ``logprob(..., "gen")`` is log P(VQ tokens of
  the reference image | prompt) through the generation head, conditional branch only (no guidance);
- :meth:`JanusAdapter.forward_inputs` gives the inputs of ``module(**kwargs)`` that reproduce the sequence each
  direction feeds the decoder layers (what nnsight traces and patching use), and ``span_positions`` index it;
- during ``generate`` the batch is doubled for guidance: rows ``prompt_rows(2B, "gen")`` carry the prompt, rows
  ``B..2B-1`` are the unconditional copies (prompt replaced by padding except BOS and image-start). Hooks on
  the decoder layers during generation see 2B rows; ``forward_inputs`` and ``logprob`` use B conditional rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from gapeval.models.base import ForwardPass, Request, TeacherForcing, check_direction
from gapeval.models.hf_common import (
    HFAdapter,
    chat_text,
    common_prefix_length,
    generation_config,
    span_positions_in,
)


class JanusAdapter(HFAdapter, TeacherForcing):
    """A Janus / Janus-Pro checkpoint as a GapEval UMM with the intervention extensions.

    ``options`` are :class:`HFAdapter`'s (dtype, device, device_map, batch_size=8, cfg_scale=5.0,
    max_new_tokens=64, text_temperature=0, image_temperature=1, input_image_policy="drop").
    """

    name = "janus"
    label = "Janus"

    def __init__(self, path_or_model: Any, processor: Any = None, **options: Any) -> None:
        super().__init__(**options)
        from transformers import JanusForConditionalGeneration, JanusProcessor

        loaded = self._load(JanusForConditionalGeneration, JanusProcessor, path_or_model, processor)
        self._chat = self._gen = loaded  # one checkpoint for both directions
        self._model, self.processor = loaded.model, loaded.processor

    # ---- UMM (the loops are HFAdapter's) -----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        extra = {
            "input_image_policy": self._policy.policy,
            "image_tokens": self.image_sequence_length(),
            "codebook_size": self._model.config.vq_config.num_embeddings,
        }
        return self._config({"path": self._chat.path}, extra)

    def image_sequence_length(self) -> int:
        return self._model.config.vq_config.num_patches**2

    def _understanding_inputs(self, batch: Sequence[Request]) -> Any:
        return self._encode(batch, "und")

    def _image_generation_config(self) -> Any:
        """The shared generation config with guidance_scale=1, which keeps transformers from adding its own
        guidance (ours comes first in the processors), plus the image-start id Janus's image mode reads."""
        tokenizer = self.processor.tokenizer
        config = generation_config(self._model, tokenizer, guidance_scale=1.0)
        config.generation_kwargs = {
            "boi_token_id": tokenizer.boi_token_id,
            **(getattr(config, "generation_kwargs", None) or {}),
        }
        return config

    def _generate_image_batch(self, batch: Sequence[Request], config: Any) -> Any:
        enc = self._encode(batch, "gen")
        processors = self._image_processors(batch, _doubled_batch_guidance(self.cfg_scale))
        with self._torch.no_grad():
            return self._model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                generation_mode="image",
                generation_config=config,
                logits_processor=processors,
            )

    def _image_pixels(self, tokens: Any) -> Any:
        return self._model.model.vqmodel.decode(tokens)

    # ---- Intervenable ------------------------------------------------------------------------------------

    @property
    def module(self) -> Any:
        return self._model

    @property
    def layers_path(self) -> str:
        return "model.language_model.layers"

    @property
    def hidden_path(self) -> str:
        return "model.language_model.norm"

    @property
    def embed_path(self) -> str:
        return "model.language_model.embed_tokens"

    @property
    def components(self) -> dict[str, str]:
        return {"attn": "self_attn", "mlp": "mlp", "mlp_out": "mlp.down_proj"}

    @property
    def lora_targets(self) -> list[str]:
        """The language model's attention and MLP projections (the vision encoder's are excluded)."""
        n = self._model.config.text_config.num_hidden_layers
        names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
        names += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
        return [f"{self.layers_path}.{i}.{name}" for i in range(n) for name in names]

    def prompt_rows(self, rows: int, direction: str) -> slice:
        """Image generation doubles the batch for guidance, conditional rows first."""
        check_direction(direction)
        return slice(0, rows // 2 if direction == "gen" else rows)

    def forward_inputs(
        self, requests: Sequence[Request], direction: str, answers: Sequence[Any] | None = None
    ) -> ForwardPass:
        """``module(**kwargs)`` holding what the decoder layers see in ``direction``.

        und: the chat prompt (input ids, pixel values of input images) and, with ``answers``, the answer text;
        gen: the prompt ending in the image-start token as ``inputs_embeds`` and, with ``answers`` (reference
        images or VQ token ids (B, N)), all but the last of their VQ tokens through the generation embedding.
        Rows are left-padded; ``position_ids`` follow the attention mask as in ``generate``. Only conditional
        rows (no guidance copy).
        """
        check_direction(direction)
        if answers is not None and len(answers) != len(requests):
            raise ValueError(f"forward_inputs: {len(requests)} requests but {len(answers)} answers")
        torch = self._torch
        if direction == "und":
            enc = self._encode(requests, "und", None if answers is None else [str(a) for a in answers])
            ids, mask = enc["input_ids"], enc["attention_mask"]
            kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": _positions(mask)}
            if "pixel_values" in enc:
                kwargs["pixel_values"] = enc["pixel_values"]
            spans = (
                [(ids.shape[1], 0)] * len(requests) if answers is None else self._answer_spans(requests, enc)
            )
            targets = ids
        else:
            enc = self._encode(requests, "gen")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            embeds = self._model.get_input_embeddings()(ids)
            spans = [(ids.shape[1], 0)] * len(requests)
            targets = ids
            if answers is not None:
                tokens = self._answer_tokens(answers)
                image_embeds = self._model.prepare_embeddings_for_image_generation(tokens[:, :-1])
                embeds = torch.cat([embeds, image_embeds.to(embeds.dtype)], dim=1)
                mask = torch.cat([mask, mask.new_ones(tokens.shape[0], tokens.shape[1] - 1)], dim=1)
                targets = torch.cat([ids, tokens], dim=1)  # the answer's tokens follow the prompt's columns
                spans = [(ids.shape[1], tokens.shape[1])] * len(requests)
            kwargs = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": _positions(mask)}
        return _answer_layout(direction, kwargs, mask, targets, spans)

    def answer_distributions(self, inputs: ForwardPass, hidden: Any) -> Any:
        torch = self._torch
        rows = torch.arange(len(inputs), device=hidden.device)[:, None]
        head = self._model.lm_head if inputs.direction == "und" else self._model.model.generation_head
        logits = head(hidden[rows, inputs.answer_positions.to(hidden.device)]).float()
        return torch.log_softmax(logits, dim=-1)

    def span_positions(self, request: Request, span: str, direction: str) -> list[int]:
        """Positions of the first ``span`` in the prompt, indexing this request's unpadded model input.

        The same positions index ``forward_inputs([request], direction)`` (no padding for a single request).
        """
        check_direction(direction)
        text = self._chat_text(request, direction)
        ids = self._encode([request], direction)["input_ids"][0].tolist()
        return span_positions_in(self.processor.tokenizer, text, request.prompt, span, ids)

    # ---- internals ---------------------------------------------------------------------------------------

    def _chat_text(self, request: Request, direction: str, answer: str | None = None) -> str:
        has_image = direction == "und" and request.image is not None
        return chat_text(self.processor, request.prompt, has_image, answer)

    def _encode(self, batch: Sequence[Request], direction: str, answers: Sequence[str] | None = None) -> Any:
        check_direction(direction)
        if direction == "gen":
            batch = self._policy.apply(batch, self.label, record=False)
        texts = [
            self._chat_text(r, direction, None if answers is None else answers[i])
            for i, r in enumerate(batch)
        ]
        images = [r.image.convert("RGB") for r in batch if r.image is not None]
        mode = "text" if direction == "und" else "image"
        enc = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt", generation_mode=mode
        )
        enc = enc.to(self._model.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self._model.dtype)
        return enc

    def _answer_spans(self, batch: Sequence[Request], full: Any) -> list[tuple[int, int]]:
        """Per row (padded column of the first answer token, answer length): what the filled-in assistant turn
        adds beyond the generation prompt, without special tokens the template appends after the answer."""
        prompt = self._encode(batch, "und")
        specials = set(self.processor.tokenizer.all_special_ids)
        width = full["input_ids"].shape[1]
        spans = []
        for i in range(len(batch)):
            real = full["attention_mask"][i].bool()
            ids = full["input_ids"][i][real].tolist()
            head = prompt["input_ids"][i][prompt["attention_mask"][i].bool()].tolist()
            start = common_prefix_length(ids, head)
            end = len(ids)
            while end > start and ids[end - 1] in specials:
                end -= 1
            spans.append((width - len(ids) + start, end - start))
        return spans

    def _answer_tokens(self, answers: Sequence[Any]) -> Any:
        """Reference images as VQ ids; answers already given as token ids (B, N) pass through."""
        if all(isinstance(a, Image.Image) for a in answers):
            return self.image_tokens(answers)
        torch = self._torch
        return torch.stack([torch.as_tensor(a) for a in answers]).long().to(self._model.device)

    def image_tokens(self, images: Sequence[Image.Image]) -> Any:
        """VQ token ids (B, N) of images, encoded the way generated images are decoded."""
        pixels = self.processor.image_processor(
            [im.convert("RGB") for im in images], return_tensors="pt"
        ).pixel_values
        pixels = pixels.to(device=self._model.device, dtype=self._model.dtype)
        with self._torch.no_grad():
            tokens = self._model.model.vqmodel.encode(pixels).image_tokens
        return tokens.view(len(images), -1)


def _answer_layout(
    direction: str, kwargs: dict[str, Any], mask: Any, tokens: Any, spans: Sequence[tuple[int, int]]
) -> ForwardPass:
    """A :class:`ForwardPass` whose answer of row ``b`` is ``tokens[b, start:start + n]`` for ``spans[b]``.

    The hidden state at column ``c - 1`` predicts the token at column ``c``, so the answer's predicting
    columns start one before it and the prompt ends there.
    """
    import torch

    n_answer = max((n for _, n in spans), default=0)
    rows = len(spans)
    positions = torch.zeros(rows, n_answer, dtype=torch.long)
    targets = torch.zeros(rows, n_answer, dtype=torch.long)
    answer_mask = torch.zeros(rows, n_answer, dtype=torch.bool)
    for b, (start, n) in enumerate(spans):
        if n:
            cols = torch.arange(start - 1, start - 1 + n)
            positions[b, n_answer - n :] = cols
            targets[b, n_answer - n :] = tokens[b, start : start + n].cpu()
            answer_mask[b, n_answer - n :] = True
    offsets = (mask == 0).long().sum(1).cpu()
    prompt_end = torch.tensor([start - 1 for start, _ in spans], dtype=torch.long)
    return ForwardPass(direction, (), kwargs, offsets, prompt_end, positions, targets, answer_mask)


def _positions(mask: Any) -> Any:
    """Position ids that skip left padding, as ``generate`` computes them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _doubled_batch_guidance(scale: float) -> Any:
    """Classifier-free guidance over Janus's doubled batch (conditional rows first), for any scale.

    transformers' own guidance processor refuses scales <= 1; here 1 means the conditional branch alone.
    """
    from transformers import LogitsProcessor

    class DoubledBatchGuidance(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            half = scores.shape[0] // 2
            cond, uncond = scores[:half], scores[half:]
            return uncond + (cond - uncond) * scale

    return DoubledBatchGuidance()
