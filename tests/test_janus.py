"""The Janus adapter on a tiny random Janus built in code: the UMM surface and the intervention extensions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_hf import tiny_janus

from gapeval.models.base import Intervenable, Request
from gapeval.models.janus import JanusAdapter
from gapeval.threads import one_torch_thread


def picture(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


REQUESTS = [
    Request("wk-1", "What colour is the emblem of Valdoria?", None, seed=11),
    Request("if-1", "Describe the vase after it is hit by a hammer.", picture(1), seed=12),
    Request("np-1", "Count the balls.", picture(2, (24, 48)), seed=13),
]


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def adapter() -> JanusAdapter:
    model, processor = tiny_janus(seed=0)
    return JanusAdapter(model, processor, dtype="float32", device="cpu", batch_size=3, max_new_tokens=5)


def test_protocols_and_config(adapter: JanusAdapter) -> None:
    assert isinstance(adapter, Intervenable)
    config = adapter.config()
    assert config["dtype"] == "float32" and config["device"] == "cpu" and config["cfg_scale"] == 5.0
    assert config["image_tokens"] == 16 and config["codebook_size"] == 64


def test_understand_is_batch_independent(adapter: JanusAdapter) -> None:
    batched = adapter.understand(REQUESTS)
    alone = [adapter.understand([r])[0] for r in REQUESTS]
    assert len(batched) == 3 and all(isinstance(t, str) for t in batched)
    assert batched == alone
    assert (
        adapter.understand([]) == []
        and adapter.generate([]) == []
        and adapter.logprob([], [], "gen").shape == (0,)
    )


def test_generate_is_seeded_per_request(adapter: JanusAdapter) -> None:
    text_only = [Request(r.item_id, r.prompt, None, r.seed) for r in REQUESTS]
    images = adapter.generate(text_only)
    assert [im.size for im in images] == [(32, 32)] * 3 and all(im.mode == "RGB" for im in images)
    alone = adapter.generate([text_only[1]])[0]
    assert np.array_equal(np.asarray(alone), np.asarray(images[1]))
    tokens = adapter.generate_tokens([text_only[1], Request("x", text_only[1].prompt, None, seed=99)])
    assert tokens.shape == (2, 16) and not torch.equal(tokens[0], tokens[1])


def test_input_images_on_generation_are_dropped_and_reported() -> None:
    model, processor = tiny_janus(seed=0)
    dropping = JanusAdapter(model, processor, device="cpu", batch_size=2)
    assert len(dropping.generate(REQUESTS)) == 3
    notes = dropping.notes()
    assert notes["gen_input_images_dropped"] == 2 and notes["gen_input_images_dropped_items"] == [
        "if-1",
        "np-1",
    ]
    strict = JanusAdapter(model, processor, device="cpu", input_image_policy="error")
    with pytest.raises(ValueError, match="if-1"):
        strict.generate(REQUESTS)
    with pytest.raises(ValueError, match="input_image_policy"):
        JanusAdapter(model, processor, device="cpu", input_image_policy="ignore")


def test_from_spec_loads_a_saved_checkpoint(tmp_path) -> None:
    model, processor = tiny_janus(seed=3)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = JanusAdapter.from_spec(f"{tmp_path},dtype=float32,device=cpu,cfg_scale=2.5", max_new_tokens=4)
    assert loaded.config()["path"] == str(tmp_path) and loaded.cfg_scale == 2.5 and loaded.max_new_tokens == 4
    reference = JanusAdapter(model, processor, device="cpu", max_new_tokens=4)
    assert loaded.understand(REQUESTS[:2]) == reference.understand(REQUESTS[:2])
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        JanusAdapter.from_spec(f"{tmp_path},colour=red")


def test_und_logprob_matches_cached_generation(adapter: JanusAdapter) -> None:
    """Teacher forcing scores the greedy continuation exactly as the KV-cached decoder produced it."""
    model, tokenizer = adapter.module, adapter.processor.tokenizer
    request = REQUESTS[1]
    inputs = adapter.forward_inputs([request], "und").kwargs
    special = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens]
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            max_new_tokens=4,
            do_sample=False,
            suppress_tokens=special,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, inputs["input_ids"].shape[1] :]
    expected = sum(torch.log_softmax(s[0], -1)[t].item() for s, t in zip(out.logits, new, strict=True))
    answer = tokenizer.decode(new)
    with torch.no_grad():
        got = adapter.logprob([request], [answer], "und")
    assert got.tolist() == pytest.approx([expected], abs=1e-4)


def test_gen_logprob_follows_the_generation_head(adapter: JanusAdapter) -> None:
    """Greedy unguided tokens are the argmax of the teacher-forced generation head at every position."""
    greedy = JanusAdapter(adapter.module, adapter.processor, device="cpu", cfg_scale=1.0, image_temperature=0)
    requests = [Request(r.item_id, r.prompt, None, r.seed) for r in REQUESTS]
    tokens = greedy.generate_tokens(requests)
    inputs = greedy.forward_inputs(requests, "gen", answers=tokens).kwargs
    with torch.no_grad():
        hidden = adapter.module.model(**inputs).last_hidden_state[:, -tokens.shape[1] :]
        argmax = adapter.module.model.generation_head(hidden).argmax(-1)
        scores = greedy.logprob(requests, tokens, "gen")
        from_images = greedy.logprob(requests, [picture(5), picture(6), picture(7)], "gen")
    assert torch.equal(argmax, tokens)
    worst = -16 * math.log(64)  # 16 tokens, 64 codes: greedy tokens beat a uniform guess
    assert all(worst < s < 0 for s in scores)
    assert all(math.isfinite(s) and s < 0 for s in from_images)


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_span_positions_index_the_forward_inputs(adapter: JanusAdapter, direction: str) -> None:
    embed = adapter.module.get_input_embeddings()
    for request, span in ((REQUESTS[0], "emblem"), (REQUESTS[1], "vase")):
        positions = adapter.span_positions(request, span, direction)
        span_ids = torch.tensor(adapter.processor.tokenizer(span, add_special_tokens=False)["input_ids"])
        inputs = adapter.forward_inputs([request], direction).kwargs
        if direction == "und":
            assert torch.equal(inputs["input_ids"][0, positions], span_ids)
        else:
            assert torch.equal(inputs["inputs_embeds"][0, positions], embed(span_ids))
    with pytest.raises(ValueError, match="does not occur"):
        adapter.span_positions(REQUESTS[0], "dragon", direction)


def test_lora_on_targets_changes_logprobs_in_both_directions() -> None:
    from peft import LoraConfig, get_peft_model

    model, processor = tiny_janus(seed=1)
    janus = JanusAdapter(model, processor, device="cpu", cfg_scale=1.0, image_temperature=0)
    requests = [Request(r.item_id, r.prompt, r.image, r.seed) for r in REQUESTS[:2]]
    answers = ["red", "broken into pieces"]
    tokens = janus.generate_tokens(requests)
    with torch.no_grad():
        before = (
            janus.logprob(requests, answers, "und").tolist(),
            janus.logprob(requests, tokens, "gen").tolist(),
        )
    peft_model = get_peft_model(
        janus.module, LoraConfig(r=4, lora_alpha=8, target_modules=janus.lora_targets)
    )
    adapted = {n.split(".lora_A")[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    assert len(adapted) == len(janus.lora_targets) and all(".language_model.layers." in n for n in adapted)
    with torch.no_grad():
        assert janus.logprob(requests, answers, "und").tolist() == pytest.approx(before[0], abs=1e-5)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    loss = -janus.logprob(requests, answers, "und").sum()  # a tensor: LoRA weights take part
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = (
            janus.logprob(requests, answers, "und").tolist(),
            janus.logprob(requests, tokens, "gen").tolist(),
        )
    assert all(a > b + 1e-3 for a, b in zip(after[0], before[0], strict=True))  # trained direction improved
    assert any(
        abs(a - b) > 1e-4 for a, b in zip(after[1], before[1], strict=True)
    )  # shared layers moved gen too


def test_nnsight_reads_every_decoder_layer_in_both_directions(adapter: JanusAdapter) -> None:
    import nnsight
    from nnsight import NNsight

    traced = NNsight(adapter.module)
    layers_of = traced
    for name in adapter.layers_path.split("."):
        layers_of = getattr(layers_of, name)
    n_layers = adapter.module.config.text_config.num_hidden_layers
    for direction in ("und", "gen"):
        inputs = adapter.forward_inputs(REQUESTS, direction).kwargs
        saved: list[torch.Tensor] = []
        with torch.no_grad():
            with traced.trace(**inputs):
                for i in range(n_layers):
                    saved.append(nnsight.save(layers_of[i].output))
            reference = adapter.module.model(**inputs, output_hidden_states=True).hidden_states
        length = inputs["attention_mask"].shape[1]
        assert [tuple(s.shape) for s in saved] == [(3, length, 32)] * n_layers
        for i in range(n_layers - 1):  # the last entry of hidden_states is after the final norm
            assert torch.allclose(saved[i], reference[i + 1], atol=1e-5)


def test_generation_doubles_the_batch_with_conditional_rows_first(adapter: JanusAdapter) -> None:
    seen: list[torch.Tensor] = []
    hook = adapter.module.get_input_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(args[0])
    )
    try:
        requests = [Request(r.item_id, r.prompt, None, r.seed) for r in REQUESTS[:2]]
        adapter.generate_tokens(requests)
    finally:
        hook.remove()
    prompt_rows = seen[0]
    assert prompt_rows.shape[0] == 4
    conditional = adapter.module.get_input_embeddings()(prompt_rows[adapter.prompt_rows(4, "gen")])
    assert torch.equal(conditional, adapter.forward_inputs(requests, "gen").kwargs["inputs_embeds"])
    tokenizer = adapter.processor.tokenizer
    kept = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.boi_token_id}
    assert set(prompt_rows[2:].unique().tolist()) <= kept


def test_gapeval_run_on_synth_items_reports_dropped_images(tmp_path) -> None:
    import json

    from gapeval.cli import main
    from gapeval.rundir import load_records
    from gapeval.suites import get_suite

    model, processor = tiny_janus(seed=4)
    model.save_pretrained(tmp_path / "janus")
    processor.save_pretrained(tmp_path / "janus")
    out = tmp_path / "run"
    spec = f"janus:{tmp_path / 'janus'},device=cpu,dtype=float32"
    args = ["run", "--model", spec, "--suite", "synth:12", "--out", str(out), "--no-progress"]
    assert main([*args, "--model-arg", "max_new_tokens=4"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    notes = json.loads((out / "summary.json").read_text())["model_notes"]
    with_image = sorted(item.id for item in get_suite("synth:12").items if item.image is not None)
    assert len(load_records(out)) == 12 and manifest["model"]["config"]["max_new_tokens"] == 4
    assert with_image and notes["gen_input_images_dropped_items"] == with_image
