"""Pieces the `transformers`-based adapters (Janus, Emu3) share: :class:`HFAdapter`, their base (options,
loading, run config and notes, the seeded text and image decoding loops), and the helpers under it — option
parsing, dtype/device, seeded per-row sampling, chat prompts, prompt-span alignment, pixel decoding and the
input-image policy.

Kept free of module-level torch/transformers imports so that ``import gapeval`` stays light; the helpers import
them when called.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from PIL import Image

from gapeval.models.base import Request

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
INPUT_IMAGE_POLICIES = ("drop", "error")
A = TypeVar("A", bound="HFAdapter")
# Options every HFAdapter takes, after the path in ``--model janus:PATH,key=value`` (converters from text).
SPEC_OPTIONS: dict[str, Callable[[str], Any]] = {
    "dtype": str,
    "device": str,
    "device_map": str,
    "batch_size": int,
    "cfg_scale": float,
    "max_new_tokens": int,
    "text_temperature": float,
    "image_temperature": float,
    "input_image_policy": str,
}


def parse_spec(
    spec: str, converters: dict[str, Callable[[str], Any]], overrides: dict[str, Any] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Split ``"PATH[,PATH2][,key=value...]"`` (the part after ``janus:``/``emu3:`` in ``--model``).

    Returns the positional parts (paths) and the options, converted by ``converters``; ``overrides``
    (``--model-arg`` keyword arguments, already typed) win over options in the spec. An unknown or malformed
    option is an error that names it and lists the accepted keys.
    """
    positional: list[str] = []
    raw: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",")):
        if "=" in part:
            key, value = (s.strip() for s in part.split("=", 1))
            raw[key] = value
        elif part:
            positional.append(part)
    raw.update(overrides or {})
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in converters:
            raise ValueError(
                f"model spec {spec!r}: unknown option {key!r} (accepted: {', '.join(sorted(converters))})"
            )
        try:
            options[key] = converters[key](value) if isinstance(value, str) else value
        except ValueError as err:
            raise ValueError(f"model spec {spec!r}: option {key}={value!r} is invalid: {err}") from err
    return positional, options


def resolve_device(device: str) -> str:
    """``"auto"`` picks the first CUDA device when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """Canonical dtype name; ``"auto"`` is bfloat16 on accelerators and float32 on the CPU."""
    if dtype == "auto":
        return "float32" if device == "cpu" else "bfloat16"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (accepted: auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


@dataclass
class Loaded:
    """A model and its processor ready for inference, with what ``config()`` should record."""

    model: Any
    processor: Any
    path: str
    dtype: str
    device_type: str


def load_model(
    model_cls: Any,
    processor_cls: Any,
    path_or_model: Any,
    processor: Any,
    dtype: str,
    device: str,
    device_map: str | None,
) -> Loaded:
    """Load ``path_or_model`` (a hub id, a local folder, or an in-memory model with its processor).

    ``device_map`` (e.g. ``"auto"``) spreads a checkpoint over several GPUs through accelerate; otherwise the
    whole model goes to ``device``. The device *type* is what runs record, so shards on ``cuda:0`` and
    ``cuda:1`` describe the same configuration.
    """
    device = "cuda" if device_map else resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if isinstance(path_or_model, str):
        path = path_or_model
        model = model_cls.from_pretrained(path, dtype=torch_dtype(dtype), device_map=device_map)
        processor = processor if processor is not None else processor_cls.from_pretrained(path)
    else:
        if processor is None:
            raise ValueError(f"{model_cls.__name__}: pass the processor along with an in-memory model")
        model = path_or_model
        path = getattr(model.config, "name_or_path", "") or "<in-memory>"
    if device_map is None:
        model.to(device=device, dtype=torch_dtype(dtype))
    # Frozen for evaluation: only weights an edit adds (e.g. peft's LoRA) train, and log-probs carry gradients
    # exactly when such weights are present.
    model.requires_grad_(False)
    return Loaded(model.eval(), processor, path, dtype, device.split(":")[0])


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_row_sampler(seeds: Sequence[int], temperature: float) -> Any:
    """A LogitsProcessor that draws each row's next token from its own ``torch.Generator``.

    ``transformers`` samples the whole batch from one global RNG, so a request's output would depend on its
    batch neighbours. Here row ``i`` consumes only the generator seeded with ``seeds[i]``, and the processor
    returns scores that are ``-inf`` everywhere except the drawn token, so greedy decoding (``do_sample=False``)
    emits exactly that draw. Put it last: it must see the final (guided, constrained) scores.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.generators: list[torch.Generator] | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if scores.shape[0] != len(seeds):
                raise ValueError(f"row sampler got {scores.shape[0]} rows of scores for {len(seeds)} seeds")
            if self.generators is None:
                self.generators = [torch.Generator(device=scores.device).manual_seed(int(s)) for s in seeds]
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            picks = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)]
            chosen = torch.cat(picks)
            out = torch.full_like(scores, -math.inf)
            return out.scatter_(1, chosen[:, None], 0.0)

    if temperature <= 0:
        raise ValueError(f"sampling temperature must be > 0, got {temperature}")
    return RowSeededSampler()


def generation_config(model: Any, tokenizer: Any, **overrides: Any) -> Any:
    """A copy of the checkpoint's generation config with missing special ids taken from the tokenizer and
    sampling knobs cleared (sampling is done by :func:`make_row_sampler`, never by transformers)."""
    config = copy.deepcopy(model.generation_config)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, key, None) is None:
            setattr(config, key, getattr(tokenizer, key))
    config.temperature = config.top_p = config.top_k = None
    config.update(do_sample=False, **overrides)
    return config


def generate_text(
    model: Any, tokenizer: Any, inputs: Any, seeds: Sequence[int], temperature: float, max_new_tokens: int
) -> list[str]:
    """Decode answers for one encoded, left-padded batch: greedy at temperature 0, else seeded per row."""
    import torch
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList([make_row_sampler(seeds, temperature)] if temperature > 0 else [])
    config = generation_config(model, tokenizer, max_new_tokens=max_new_tokens)
    with torch.no_grad():
        out = model.generate(**inputs, generation_config=config, logits_processor=processors)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def chat_text(processor: Any, prompt: str, has_image: bool, answer: str | None = None) -> str:
    """The prompt as the model's chat template renders it (image placeholder first, then the text).

    With ``answer`` the assistant turn is filled in (for teacher forcing); without it the template ends with
    the generation prompt.
    """
    content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return processor.apply_chat_template(messages, add_generation_prompt=answer is None, tokenize=False)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def span_positions_in(
    tokenizer: Any, text: str, prompt: str, span: str, model_ids: Sequence[int]
) -> list[int]:
    """Positions in ``model_ids`` of the tokens covering the first ``span`` inside ``prompt``.

    ``text`` is the string handed to the processor (the chat-formatted prompt); ``model_ids`` are the ids the
    processor produced from it, which may add a system prompt or BOS in front, expand image placeholders and
    append image-start tokens. Special tokens split tokenization, so the tokens from the span to the end of
    ``text`` appear unchanged in ``model_ids``; their last occurrence anchors the span.
    """
    where = text.rfind(prompt.strip())
    if where < 0:
        raise ValueError(f"prompt not found in its chat-formatted text: {prompt!r}")
    offset = prompt.strip().find(span)
    if not span or offset < 0:
        raise ValueError(f"span {span!r} does not occur in prompt {prompt!r}")
    start, end = where + offset, where + offset + len(span)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    covered = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if not covered:
        raise ValueError(f"span {span!r} maps to no token in {text!r}")
    tail = ids[covered[0] :]
    model_ids = list(model_ids)
    for anchor in range(len(model_ids) - len(tail), -1, -1):
        if model_ids[anchor : anchor + len(tail)] == tail:
            return [anchor + i - covered[0] for i in range(covered[0], covered[-1] + 1)]
    raise ValueError(f"span {span!r}: the prompt's tokens were not found in the model input")


def pixels_to_pil(pixels: Any, mean: Sequence[float], std: Sequence[float]) -> list[Image.Image]:
    """Normalised ``(B, 3, H, W)`` pixels from a VQ decoder → RGB images (the image processor's inverse)."""
    import torch

    m = torch.tensor(list(mean), dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    rgb = ((pixels.float() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    arrays = rgb.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arrays]


@dataclass
class InputImagePolicy:
    """What an adapter does with an input image on a generation request it cannot condition on.

    ``"drop"`` generates from the text alone and records the item; ``"error"`` refuses the request. The
    record goes into the run's summary through the adapter's ``notes()``, so dropped images are never silent.
    """

    policy: str = "drop"
    dropped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in INPUT_IMAGE_POLICIES:
            raise ValueError(f"input_image_policy must be one of {INPUT_IMAGE_POLICIES}, got {self.policy!r}")

    def apply(self, requests: Sequence[Request], model: str, record: bool = True) -> list[Request]:
        """Requests without their input images; ``record=False`` for calls outside a run (log-probs, spans)."""
        with_image = [r.item_id for r in requests if r.image is not None]
        if with_image and self.policy == "error":
            raise ValueError(
                f"{model} cannot condition image generation on an input image; items {with_image} have one "
                "(use input_image_policy='drop' to generate from the text alone)"
            )
        if record:
            self.dropped.extend(with_image)
        return [replace(r, image=None) if r.image is not None else r for r in requests]

    def notes(self) -> dict[str, Any]:
        return {
            "input_image_policy": self.policy,
            "gen_input_images_dropped": len(self.dropped),
            "gen_input_images_dropped_items": sorted(set(self.dropped)),
        }


class HFAdapter:
    """What the `transformers` adapters share, so each one holds only what its model does differently.

    The base owns the options, loading (dtype, device, frozen weights), ``from_spec``, the run config's common
    fields, ``notes`` and the decoding loops: text answers in seeded batches, and images as seeded token
    batches decoded to pixels, with input images on generation requests handled by the policy. A subclass
    loads its checkpoints into ``_chat`` (understanding) and ``_gen`` (generation; the same object for a
    single checkpoint) and supplies the model-specific steps: :meth:`_understanding_inputs`,
    :meth:`_image_generation_config`, :meth:`_generate_image_batch`, :meth:`_image_pixels` and
    :meth:`image_sequence_length`.
    """

    name: ClassVar[str]
    label: ClassVar[str]  # the model's name in messages, e.g. "Janus"
    spec_options: ClassVar[dict[str, Callable[[str], Any]]] = SPEC_OPTIONS
    spec_form: ClassVar[str] = "PATH"  # the paths a spec names, for errors
    spec_paths: ClassVar[tuple[int, ...]] = (1,)  # how many paths a spec may name
    _chat: Loaded
    _gen: Loaded

    def __init__(
        self,
        *,
        dtype: str = "auto",
        device: str = "auto",
        device_map: str | None = None,
        batch_size: int = 8,
        cfg_scale: float = 5.0,
        max_new_tokens: int = 64,
        text_temperature: float = 0.0,
        image_temperature: float = 1.0,
        input_image_policy: str = "drop",
    ) -> None:
        import torch

        self._torch = torch
        self._placement = (dtype, device, device_map)
        self.batch_size = batch_size
        self.cfg_scale = float(cfg_scale)
        self.max_new_tokens = max_new_tokens
        self.text_temperature = text_temperature
        self.image_temperature = image_temperature
        self._policy = InputImagePolicy(input_image_policy)

    @classmethod
    def from_spec(cls: type[A], spec: str, **overrides: Any) -> A:
        """``PATH[,key=value...]`` (the part after ``NAME:`` in ``--model``); ``overrides`` are constructor
        options given separately (``--model-arg``) and win over the spec's."""
        paths, options = parse_spec(spec, cls.spec_options, overrides)
        if len(paths) not in cls.spec_paths:
            raise ValueError(f"{cls.name} model spec {spec!r}: expected {cls.spec_form}, got {paths}")
        return cls(*paths, **options)

    def _load(self, model_cls: Any, processor_cls: Any, path_or_model: Any, processor: Any) -> Loaded:
        return load_model(model_cls, processor_cls, path_or_model, processor, *self._placement)

    def _config(self, paths: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
        """The run config: the adapter, its checkpoint ``paths``, the common options, then ``extra``."""
        return {
            "adapter": self.name,
            **paths,
            "dtype": self._chat.dtype,
            "device": self._chat.device_type,
            "cfg_scale": self.cfg_scale,
            "max_new_tokens": self.max_new_tokens,
            "text_temperature": self.text_temperature,
            "image_temperature": self.image_temperature,
            **extra,
        }

    def notes(self) -> dict[str, Any]:
        """Run facts for summary.json: how many generation requests had their input image dropped."""
        return self._policy.notes()

    def understand(self, requests: Sequence[Request]) -> list[str]:
        model, tokenizer = self._chat.model, self._chat.processor.tokenizer
        answers: list[str] = []
        for batch in chunks(requests, self.batch_size):
            enc = self._understanding_inputs(batch)
            seeds = [r.seed for r in batch]
            answers += generate_text(model, tokenizer, enc, seeds, self.text_temperature, self.max_new_tokens)
        return answers

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]:
        requests = self._policy.apply(requests, self.label)
        tokens = self.generate_tokens(requests)
        image_processor = self._gen.processor.image_processor
        images: list[Image.Image] = []
        for start in range(0, len(requests), self.batch_size):
            with self._torch.no_grad():
                pixels = self._image_pixels(tokens[start : start + self.batch_size])
            images.extend(pixels_to_pil(pixels, image_processor.image_mean, image_processor.image_std))
        return images

    def generate_tokens(self, requests: Sequence[Request]) -> Any:
        """The token ids (B, :meth:`image_sequence_length`) that ``generate`` decodes; input images follow the
        policy without being recorded (``generate`` records them)."""
        torch = self._torch
        requests = self._policy.apply(requests, self.label, record=False)
        config = self._image_generation_config()
        out = [self._generate_image_batch(batch, config) for batch in chunks(requests, self.batch_size)]
        if not out:
            return torch.zeros((0, self.image_sequence_length()), dtype=torch.long)
        return torch.cat(out)

    def _image_processors(self, batch: Sequence[Request], first: Any) -> Any:
        """``first`` (the model's guidance or grammar), then each row's seeded sampler unless image tokens are
        greedy (temperature 0)."""
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList([first])
        if self.image_temperature > 0:
            processors.append(make_row_sampler([r.seed for r in batch], self.image_temperature))
        return processors

    # ---- what a subclass supplies ------------------------------------------------------------------------

    def _understanding_inputs(self, batch: Sequence[Request]) -> Any:
        """The encoded, left-padded prompts of ``batch`` on the chat model's device."""
        raise NotImplementedError

    def _image_generation_config(self) -> Any:
        """The generation config of one image batch (see :func:`generation_config`)."""
        raise NotImplementedError

    def _generate_image_batch(self, batch: Sequence[Request], config: Any) -> Any:
        """Generated image token ids (B, :meth:`image_sequence_length`) of one batch, under no_grad."""
        raise NotImplementedError

    def _image_pixels(self, tokens: Any) -> Any:
        """Normalised pixels (B, 3, H, W) of generated token ids."""
        raise NotImplementedError

    def image_sequence_length(self) -> int:
        """How many token ids a generated image has."""
        raise NotImplementedError
