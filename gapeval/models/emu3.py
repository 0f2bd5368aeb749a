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

from gapeval.models.base import Request
from gapeval.models.hf_common import SPEC_OPTIONS, HFAdapter, chat_text, generation_config


class Emu3Adapter(HFAdapter):
    """Emu3 chat + generation checkpoints as one GapEval UMM.

    ``options`` are :class:`HFAdapter`'s (dtype, device, device_map, max_new_tokens=64, text_temperature=0,
    image_temperature=1, input_image_policy="drop"); Emu3 defaults to smaller batches and weaker guidance.
    """

    name = "emu3"
    label = "Emu3"
    spec_options = {**SPEC_OPTIONS, "image_area": int, "ratio": str, "negative_prompt": str}
    spec_form = "CHAT_PATH[,GEN_PATH]"
    spec_paths = (1, 2)

    def __init__(
        self,
        chat_model: Any,
        gen_model: Any = None,
        chat_processor: Any = None,
        gen_processor: Any = None,
        *,
        batch_size: int = 4,
        cfg_scale: float = 3.0,
        image_area: int | None = None,
        ratio: str = "1:1",
        negative_prompt: str = "",
        **options: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, cfg_scale=cfg_scale, **options)
        from transformers import Emu3ForConditionalGeneration, Emu3Processor

        classes = (Emu3ForConditionalGeneration, Emu3Processor)
        self._chat = self._load(*classes, chat_model, chat_processor)
        same = (
            gen_model is None
            or gen_model is chat_model
            or (isinstance(gen_model, str) and gen_model == chat_model)
        )
        self._gen = self._chat if same else self._load(*classes, gen_model, gen_processor or chat_processor)
        self.image_area = int(image_area or self._gen.processor.image_area)
        self.ratio = ratio
        self.negative_prompt = negative_prompt

    def config(self) -> dict[str, Any]:
        height, width = self.image_grid()
        extra = {
            "image_token_grid": [height, width],
            "negative_prompt": self.negative_prompt,
            "input_image_policy": self._policy.policy,
        }
        return self._config({"chat_path": self._chat.path, "gen_path": self._gen.path}, extra)

    def image_sequence_length(self) -> int:
        """Rows of visual tokens each ending in end-of-line, then end-of-frame, end-of-image, end-of-sequence."""
        height, width = self.image_grid()
        return height * (width + 1) + 3

    def _understanding_inputs(self, batch: Sequence[Request]) -> Any:
        texts = [self._chat_prompt(r) for r in batch]
        images = [r.image.convert("RGB") for r in batch if r.image is not None]
        enc = self._chat.processor(
            text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt"
        )
        return enc.to(self._chat.model.device)

    def _image_generation_config(self) -> Any:
        model, tokenizer = self._gen.model, self._gen.processor.tokenizer
        return generation_config(
            model, tokenizer, max_new_tokens=self.image_sequence_length(), guidance_scale=self.cfg_scale
        )

    def _generate_image_batch(self, batch: Sequence[Request], config: Any) -> Any:
        """Image tokens under the grammar; guidance runs the negative prompt as transformers' separate
        unconditional branch."""
        model, processor = self._gen.model, self._gen.processor
        padded = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
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
        height, width = self.image_grid()
        processors = self._image_processors(batch, self._grammar(height, width, prompt_length))
        with self._torch.no_grad():
            ids = model.generate(
                **enc,
                generation_config=config,
                logits_processor=processors,
                negative_prompt_ids=negative["input_ids"],
                negative_prompt_attention_mask=negative["attention_mask"],
            )
        return ids[:, prompt_length:]

    def _image_pixels(self, tokens: Any) -> Any:
        height, width = self.image_grid()
        return self._gen.model.decode_image_tokens(image_tokens=tokens, height=height, width=width)

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
