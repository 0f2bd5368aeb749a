"""Toy UMM checkpoints: a folder of safetensors weights (stored fp16), config, tokenizer and codec.

Loading checks everything against the config and names the file and the field that disagree, so a corrupt
or mismatched checkpoint fails loudly instead of producing a quietly broken model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gapeval.models.toy.architectures import build_model
from gapeval.models.toy.codec import ImageCodec
from gapeval.models.toy.model import ToyConfig, ToyUMM
from gapeval.models.toy.tokenizer import TextTokenizer

FILES = ("config.json", "model.safetensors", "tokenizer.json", "codec.safetensors")


class CheckpointError(ValueError):
    pass


def save_checkpoint(
    folder: Path, model: ToyUMM, tokenizer: TextTokenizer, codec: ImageCodec, meta: dict
) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "gapeval-toy-v1"})
    (folder / "config.json").write_text(json.dumps({"model": model.config.to_dict(), **meta}, indent=1))
    tokenizer.save(folder / "tokenizer.json")
    codec.save(folder / "codec.safetensors")


def load_checkpoint(folder: str | Path) -> tuple[ToyUMM, TextTokenizer, ImageCodec, dict]:
    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
    try:
        meta = json.loads((folder / "config.json").read_text())
        config = ToyConfig(**meta["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable model config ({e})") from e
    try:
        tokenizer = TextTokenizer.load(folder / "tokenizer.json")
    except (json.JSONDecodeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{folder / 'tokenizer.json'}: unreadable tokenizer ({e})") from e
    try:
        codec = ImageCodec.load(folder / "codec.safetensors")
        weights = load_file(str(folder / "model.safetensors"))
    except (SafetensorError, OSError, KeyError) as e:
        raise CheckpointError(f"{folder}: corrupt safetensors file ({e})") from e
    if len(tokenizer) != config.n_text:
        raise CheckpointError(
            f"{folder / 'tokenizer.json'}: {len(tokenizer)} words but config n_text={config.n_text}"
        )
    if codec.size != config.n_codes:
        raise CheckpointError(
            f"{folder / 'codec.safetensors'}: {codec.size} codes but config n_codes={config.n_codes}"
        )
    model = build_model(config)
    expected = model.state_dict()
    missing, extra = set(expected) - set(weights), set(weights) - set(expected)
    if missing or extra:
        raise CheckpointError(
            f"{folder / 'model.safetensors'}: weights do not match the config "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]})"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{folder / 'model.safetensors'}: {name} has shape {tuple(tensor.shape)}, "
                f"config expects {tuple(expected[name].shape)}"
            )
    broken = sorted(name for name, tensor in weights.items() if not torch.isfinite(tensor).all())
    if broken:  # a diverged or damaged run: it would load, decode garbage and score 0.0
        raise CheckpointError(
            f"{folder / 'model.safetensors'}: non-finite weights (NaN or inf) in {', '.join(broken[:5])}"
        )
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    model.set_text_cells(tokenizer.cell_ids())
    model.eval()
    return model, tokenizer, codec, meta
