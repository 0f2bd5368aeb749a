"""The Emu3 adapter on tiny random chat and generation models built in code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_hf import tiny_emu3

from gapeval.models.base import UMM, Request
from gapeval.models.emu3 import Emu3Adapter
from gapeval.testing import check_umm
from gapeval.threads import one_torch_thread


def picture(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


REQUESTS = [
    Request("wk-1", "Draw the emblem of Valdoria.", None, seed=21),
    Request("if-1", "Describe the vase after it is hit by a hammer.", picture(1), seed=22),
    Request("np-1", "How many balls?", picture(2, (24, 48)), seed=23),
]


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def models():
    return tiny_emu3(seed=0), tiny_emu3(seed=1)


@pytest.fixture(scope="module")
def adapter(models) -> Emu3Adapter:
    (chat, chat_processor), (gen, gen_processor) = models
    return Emu3Adapter(
        chat,
        gen,
        chat_processor,
        gen_processor,
        dtype="float32",
        device="cpu",
        max_new_tokens=5,
        image_area=256,
    )


def test_protocol_and_config(adapter: Emu3Adapter) -> None:
    assert isinstance(adapter, UMM)
    config = adapter.config()
    assert (
        config["image_token_grid"] == [2, 2] and config["cfg_scale"] == 3.0 and config["dtype"] == "float32"
    )


def test_passes_the_benchmark_checks_of_the_kit(models) -> None:
    """Emu3 is benchmark-only: ``check_umm`` (on a fresh adapter, since the checks leave run notes)."""
    (chat, chat_processor), (gen, gen_processor) = models
    check_umm(Emu3Adapter(chat, gen, chat_processor, gen_processor, device="cpu", image_area=256))


def test_understand_is_batch_independent(adapter: Emu3Adapter) -> None:
    batched = adapter.understand(REQUESTS)
    assert len(batched) == 3 and all(isinstance(t, str) for t in batched)
    assert batched == [adapter.understand([r])[0] for r in REQUESTS]
    assert adapter.understand([]) == [] and adapter.generate([]) == []


def test_generated_tokens_follow_the_image_grammar(adapter: Emu3Adapter) -> None:
    tokens = adapter.generate_tokens(REQUESTS[:2])
    mapping = adapter._gen.model.vocabulary_mapping
    tokenizer = adapter._gen.processor.tokenizer
    visual = set(mapping.image_tokens)
    height, width = adapter.image_grid()
    assert tokens.shape == (2, height * (width + 1) + 3)
    for row in tokens.tolist():
        grid = [row[r * (width + 1) : (r + 1) * (width + 1)] for r in range(height)]
        assert all(set(line[:-1]) <= visual and line[-1] == mapping.eol_token_id for line in grid)
        assert row[-3:] == [tokenizer.eof_token_id, tokenizer.eoi_token_id, tokenizer.eos_token_id]


def test_generate_is_seeded_per_request(adapter: Emu3Adapter) -> None:
    text_only = [Request(r.item_id, r.prompt, None, r.seed) for r in REQUESTS]
    images = adapter.generate(text_only)
    assert [im.size for im in images] == [(16, 16)] * 3 and all(im.mode == "RGB" for im in images)
    assert np.array_equal(np.asarray(adapter.generate([text_only[2]])[0]), np.asarray(images[2]))
    reseeded = adapter.generate_tokens([Request("x", text_only[0].prompt, None, seed=s) for s in (1, 2, 1)])
    assert torch.equal(reseeded[0], reseeded[2]) and not torch.equal(reseeded[0], reseeded[1])


def test_input_images_on_generation_follow_the_policy(models) -> None:
    (chat, chat_processor), _ = models
    dropping = Emu3Adapter(chat, None, chat_processor, image_area=256, device="cpu")
    assert len(dropping.generate(REQUESTS)) == 3
    assert dropping.notes()["gen_input_images_dropped_items"] == ["if-1", "np-1"]
    strict = Emu3Adapter(chat, None, chat_processor, image_area=256, device="cpu", input_image_policy="error")
    with pytest.raises(ValueError, match="np-1"):
        strict.generate(REQUESTS)


def test_from_spec_loads_separate_chat_and_generation_checkpoints(models, tmp_path) -> None:
    for (model, processor), name in zip(models, ("chat", "gen"), strict=True):
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    spec = f"{tmp_path / 'chat'},{tmp_path / 'gen'},dtype=float32,device=cpu"
    loaded = Emu3Adapter.from_spec(spec, image_area=256, max_new_tokens=5)
    config = loaded.config()
    assert config["chat_path"].endswith("chat") and config["gen_path"].endswith("gen")
    (chat, chat_processor), (gen, gen_processor) = models
    reference = Emu3Adapter(
        chat, gen, chat_processor, gen_processor, device="cpu", image_area=256, max_new_tokens=5
    )
    assert loaded.understand(REQUESTS[1:]) == reference.understand(REQUESTS[1:])
    assert torch.equal(loaded.generate_tokens(REQUESTS[:1]), reference.generate_tokens(REQUESTS[:1]))
    with pytest.raises(ValueError, match="CHAT_PATH"):
        Emu3Adapter.from_spec("a,b,c")
