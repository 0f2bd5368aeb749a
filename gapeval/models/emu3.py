"""Emu3 through `transformers` (``Emu3ForConditionalGeneration`` + ``Emu3Processor``).

BAAI released Emu3 as two checkpoints: a chat model for understanding and a generation model for images
(``Emu3-Chat-hf`` / ``Emu3-Gen-hf``). The adapter takes both (``emu3:CHAT,GEN``) or one path for both.

Generation decodes image tokens under a grammar: an image of ``h × w`` tokens is ``h`` rows of ``w`` visual
tokens each closed by an end-of-line token, then end-of-frame, end-of-image and end-of-sequence. Every other
token is masked out at each step, so the output always decodes. Classifier-free guidance runs the negative
prompt as a separate unconditional branch (transformers' unbatched guidance). Seeds and the input-image
policy behave as in :mod:`gapeval.models.janus`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from gapeval.models.base import Request
from gapeval.models.hf_common import (
    InputImagePolicy,
    chat_text,
    chunks,
    generate_text,
    generation_config,
    load_model,
    make_row_sampler,
    parse_spec,
    pixels_to_pil,
)

SPEC_OPTIONS = {
    "dtype": str,
    "device": str,
    "device_map": str,
    "batch_size": int,
    "cfg_scale": float,
    "max_new_tokens": int,
    "text_temperature": float,
    "image_temperature": float,
    "image_area": int,
    "ratio": str,
    "negative_prompt": str,
    "input_image_policy": str,
}


class Emu3Adapter:
    """Emu3 chat + generation checkpoints as one GapEval UMM."""

    name = "emu3"

    def __init__(
        self,
        chat_model: Any,
        gen_model: Any = None,
        chat_processor: Any = None,
        gen_processor: Any = None,
        *,
        dtype: str = "auto",
        device: str = "auto",
        device_map: str | None = None,
        batch_size: int = 4,
        cfg_scale: float = 3.0,
        max_new_tokens: int = 64,
        text_temperature: float = 0.0,
        image_temperature: float = 1.0,
        image_area: int | None = None,
        ratio: str = "1:1",
        negative_prompt: str = "",
        input_image_policy: str = "drop",
    ) -> None:
        import torch
        from transformers import Emu3ForConditionalGeneration, Emu3Processor

        def load(model: Any, processor: Any) -> Any:
            return load_model(
                Emu3ForConditionalGeneration, Emu3Processor, model, processor, dtype, device, device_map
            )

        self._chat = load(chat_model, chat_processor)
        same = (
            gen_model is None
            or gen_model is chat_model
            or (isinstance(gen_model, str) and gen_model == chat_model)
        )
        self._gen = self._chat if same else load(gen_model, gen_processor or chat_processor)
        self._torch = torch
        self.batch_size = batch_size
        self.cfg_scale = float(cfg_scale)
        self.max_new_tokens = max_new_tokens
        self.text_temperature = text_temperature
        self.image_temperature = image_temperature
        self.image_area = int(image_area or self._gen.processor.image_area)
        self.ratio = ratio
        self.negative_prompt = negative_prompt
        self._policy = InputImagePolicy(input_image_policy)

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> Emu3Adapter:
        """``CHAT_PATH[,GEN_PATH][,key=value...]``, e.g. ``BAAI/Emu3-Chat-hf,BAAI/Emu3-Gen-hf,dtype=bfloat16``;
        ``overrides`` are constructor options given separately (``--model-arg``)."""
        paths, options = parse_spec(spec, SPEC_OPTIONS, overrides)
        if len(paths) not in (1, 2):
            raise ValueError(f"emu3 model spec {spec!r}: expected CHAT_PATH[,GEN_PATH], got {paths}")
        return cls(paths[0], paths[-1], **options)

    def config(self) -> dict[str, Any]:
        height, width = self.image_grid()
        return {
            "adapter": "emu3",
            "chat_path": self._chat.path,
            "gen_path": self._gen.path,
            "dtype": self._chat.dtype,
            "device": self._chat.device_type,
            "cfg_scale": self.cfg_scale,
            "max_new_tokens": self.max_new_tokens,
            "text_temperature": self.text_temperature,
            "image_temperature": self.image_temperature,
            "image_token_grid": [height, width],
            "negative_prompt": self.negative_prompt,
            "input_image_policy": self._policy.policy,
        }

    def notes(self) -> dict[str, Any]:
        """Run facts for summary.json: how many generation requests had their input image dropped."""
        return self._policy.notes()

    def understand(self, requests: Sequence[Request]) -> list[str]:
        model, processor = self._chat.model, self._chat.processor
        answers: list[str] = []
        for batch in chunks(requests, self.batch_size):
            texts = [self._chat_prompt(r) for r in batch]
            images = [r.image.convert("RGB") for r in batch if r.image is not None]
            enc = processor(
                text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt"
            ).to(model.device)
            seeds = [r.seed for r in batch]
            answers += generate_text(
                model, processor.tokenizer, enc, seeds, self.text_temperature, self.max_new_tokens
            )
        return answers

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]:
        requests = self._policy.apply(requests, "Emu3")
        tokens = self.generate_tokens(requests)
        model, ip = self._gen.model, self._gen.processor.image_processor
        height, width = self.image_grid()
        images: list[Image.Image] = []
        for start in range(0, len(requests), self.batch_size):
            batch = tokens[start : start + self.batch_size]
            pixels = model.decode_image_tokens(image_tokens=batch, height=height, width=width)
            images.extend(pixels_to_pil(pixels, ip.image_mean, ip.image_std))
        return images

    def generate_tokens(self, requests: Sequence[Request]) -> Any:
        """Generated ids (B, h·(w+1)+3): rows of visual tokens each ending in end-of-line, then EOF, EOI, EOS.

        Input images follow the policy without being recorded (``generate`` records them).
        """
        from transformers import LogitsProcessorList

        torch = self._torch
        model, processor = self._gen.model, self._gen.processor
        requests = self._policy.apply(requests, "Emu3", record=False)
        height, width = self.image_grid()
        config = generation_config(
            model, processor.tokenizer, max_new_tokens=height * (width + 1) + 3, guidance_scale=self.cfg_scale
        )
        padded = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
        out = []
        for batch in chunks(requests, self.batch_size):
            enc = processor(
                text=[r.prompt for r in batch],
                return_for_image_generation=True,
                image_area=self.image_area,
                ratio=self.ratio,
                **padded,
            )
            enc.pop("image_sizes")
            enc = enc.to(model.device)
            negative = processor(text=[self.negative_prompt] * len(batch), **padded).to(model.device)
            prompt_length = enc["input_ids"].shape[1]
            processors = LogitsProcessorList([self._grammar(height, width, prompt_length)])
            if self.image_temperature > 0:
                processors.append(make_row_sampler([r.seed for r in batch], self.image_temperature))
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    generation_config=config,
                    logits_processor=processors,
                    negative_prompt_ids=negative["input_ids"],
                    negative_prompt_attention_mask=negative["attention_mask"],
                )
            out.append(ids[:, prompt_length:])
        if not out:
            return torch.zeros((0, height * (width + 1) + 3), dtype=torch.long)
        return torch.cat(out)

    def image_grid(self) -> tuple[int, int]:
        """(rows, columns) of visual tokens in a generated image, from ``image_area`` and ``ratio``."""
        processor = self._gen.processor
        return processor.calculate_generate_size(self.ratio, self.image_area, processor.downsample_ratio)

    def _chat_prompt(self, request: Request) -> str:
        processor = self._chat.processor
        if processor.chat_template:
            return chat_text(processor, request.prompt, request.image is not None)
        return ("<image>" if request.image is not None else "") + request.prompt

    def _grammar(self, height: int, width: int, prompt_length: int) -> Any:
        """LogitsProcessor allowing only the token the image layout expects at each generated position."""
        import torch
        from transformers import LogitsProcessor

        model, tokenizer = self._gen.model, self._gen.processor.tokenizer
        mapping = model.vocabulary_mapping
        visual = torch.tensor(mapping.image_tokens)
        eol = mapping.eol_token_id
        eof, eoi, eos, pad = (
            tokenizer.eof_token_id,
            tokenizer.eoi_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )
        pixels_end = height * (width + 1)

        def allowed(step: int) -> Any:
            if step < pixels_end:
                return torch.tensor([eol]) if (step + 1) % (width + 1) == 0 else visual
            ends = {pixels_end: eof, pixels_end + 1: eoi, pixels_end + 2: eos}
            return torch.tensor([ends.get(step, pad)])

        class ImageGrammar(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                keep = allowed(input_ids.shape[1] - prompt_length).to(scores.device)
                masked = torch.full_like(scores, -float("inf"))
                masked[:, keep] = scores[:, keep]
                return masked

        return ImageGrammar()
