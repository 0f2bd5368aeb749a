"""The built-in UMM: codec, tokenizer, training machinery, checkpoints, decoding and intervention extensions."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gapeval.items import Item
from gapeval.judges.image import SynthImageJudge
from gapeval.judges.text import TextJudge
from gapeval.models.base import Request
from gapeval.models.toy.adapter import ToyAdapter, shipped_checkpoint
from gapeval.models.toy.checkpoint import CheckpointError, load_checkpoint
from gapeval.models.toy.codec import ImageCodec
from gapeval.models.toy.data import (
    UND_ANSWERS,
    MixtureSampler,
    find_option,
    mark_option,
    read_option,
    suite_keys,
    vocabulary_texts,
)
from gapeval.models.toy.model import CELL_BIAS_INIT, Batch, ToyConfig, ToyUMM
from gapeval.models.toy.sequence import SequenceBuilder
from gapeval.models.toy.tokenizer import TextTokenizer
from gapeval.models.toy.train import TrainConfig, train
from gapeval.synth import World, build_suite, item_key, render
from gapeval.synth.suite import GENERATORS, WK_GEN, WK_UND
from gapeval.synth.world import parse_scene, read_cell, render_pixels


@pytest.fixture(scope="module")
def suite():
    return build_suite()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    final = train(TrainConfig.quick("shared"), out / "shared", progress=False)
    return out, final


def test_codec_round_trip_keeps_judge_verdicts(suite):
    codec = ImageCodec.fit(k=64, n_images=300, seed=1)
    judge = SynthImageJudge()
    passed = sum(judge.judge(it, codec.decode(codec.encode(it.reference_image))).correct for it in suite)
    assert passed / len(suite) >= 0.99
    # Pure codebook: every code decodes to one readable cell (an object or empty, framed or not).
    for patch in codec.codebook:
        assert read_cell((patch.reshape(10, 10, 3) * 255).round().astype("uint8")).problem is None


def test_codec_encoding_ignores_jitter(suite):
    codec = ImageCodec.fit(k=64, n_images=300, seed=1)
    item = suite[0]
    scene = World(0).realms[0].emblem_scene
    codes = {tuple(codec.encode(render(scene, random.Random(k)))) for k in range(20)}
    assert len(codes) == 1
    with pytest.raises(ValueError, match="expected 16 codes"):
        codec.decode([0] * 15)
    assert item.reference_image is not None


@pytest.mark.parametrize("variant", ["shared", "decoupled"])
def test_shipped_tokenizers_cover_the_suite(suite, variant):
    """The vocabulary is fixed when a model is trained: a suite worded differently since then would reach the
    shipped models as <unk>. (A tokenizer built now covers the suite by construction, so it is not the test.)"""
    for checkpoint in (shipped_checkpoint(variant, 3000), shipped_checkpoint(variant)):
        tok = TextTokenizer.load(checkpoint / "tokenizer.json")
        for it in suite:
            for text in (it.und_prompt, it.gen_prompt, *it.reference):
                ids = tok.encode(text)
                assert tok.unk_id not in ids, (checkpoint.name, text)
                assert tok.decode(ids).replace(" ", "").lower() == text.lower().replace(" ", "")


def test_tokenizer_cells_and_letters():
    tok = TextTokenizer.build(vocabulary_texts(World(0)))
    assert tok.cell_of(tok.index["r2c3"]) == 11 and tok.cell_of(tok.index["red"]) is None
    # Option letters name the bottom row; the article "a" stays an ordinary word.
    assert [tok.cell_of(tok.index[x]) for x in "ABCD"] == [12, 13, 14, 15]
    assert tok.cell_of(tok.index["a"]) is None
    assert tok.encode("Draw a red circle. Option A.")[1] != tok.encode("Option A")[-1]


def test_training_data_is_disjoint_from_the_suite(suite):
    keys = suite_keys()
    assert keys == {item_key(it) for it in suite}
    sampler = MixtureSampler(World(0), seed=5, suite_keys=keys)
    prompts = {(it.und_prompt, it.image.tobytes() if it.image else None) for it in suite}
    prompts |= {(it.gen_prompt, it.image.tobytes() if it.image else None) for it in suite}
    for _ in range(3000):
        ex = sampler.sample(1.0)
        assert (ex.prompt, ex.image.tobytes() if ex.image is not None else None) not in prompts
    # Emblems are drawn in training only for the realms the world marks as pictured.
    world = World(0)
    drawn = {ex.prompt for ex in (sampler.sample(1.0) for _ in range(3000)) if ex.task == "picture"}
    unpictured = [r for r in world.realms if not r.pictured]
    assert drawn and not any(r.name in p or r.founder in p for p in drawn for r in unpictured)


@pytest.mark.parametrize("variant", ["shared", "decoupled"])
def test_training_pictures_drawn_as_arrays_build_the_sequences_their_images_would(variant):
    """The trainer draws its pictures straight to pixel arrays (no PIL round trip): no sequence may notice."""
    world = World(0)
    builder = SequenceBuilder(
        TextTokenizer.build(vocabulary_texts(world)), ImageCodec.fit(k=16, n_images=40, seed=0), variant
    )
    sampler = MixtureSampler(world, 4, set(), consistency=0.5)

    def as_image(x):
        return Image.fromarray(x, "RGB") if isinstance(x, np.ndarray) else x

    arrays = 0
    for _ in range(300):
        ex = sampler.sample(1.0)
        arrays += isinstance(ex.answer, np.ndarray)
        pil = dataclasses.replace(
            ex, image=as_image(ex.image), answer=as_image(ex.answer), then=as_image(ex.then)
        )
        a, b = builder.example_of(ex), builder.example_of(pil)
        assert (a.ids, a.cell, a.next_cell, a.patch, a.target) == (
            b.ids,
            b.cell,
            b.next_cell,
            b.patch,
            b.target,
        )
        assert (a.patches is None) == (b.patches is None)
        assert a.patches is None or np.array_equal(a.patches, b.patches)
    assert arrays > 50  # the check is not vacuous
    # The suite's generators draw the same pixels as arrays and key them the same (training's exclusion).
    for make in GENERATORS.values():
        image, array = make(world, random.Random(7)), make(world, random.Random(7), draw=render_pixels)
        assert item_key(image) == item_key(array)
        assert np.array_equal(np.asarray(image["reference_image"]), array["reference_image"])


def test_world_knowledge_phrasing_rotates_per_realm(suite):
    # Every phrasing is asked by the suite for some realms and taught in training for the others, so no
    # phrasing is unseen in training and no suite question is seen.
    used = {it.meta["phrasing"] for it in suite if it.category == "world_knowledge"}
    assert used == set(range(len(WK_UND)))
    asked = {it.und_prompt for it in suite} | {it.gen_prompt for it in suite}
    sampler = MixtureSampler(World(0), seed=3, suite_keys=set())
    taught = set()
    for _ in range(4000):
        ex = sampler.sample(1.0)
        if ex.task in ("fact", "picture") and "emblem" in ex.prompt:
            assert ex.prompt not in asked
            taught.add(ex.prompt.split(" the emblem")[0])
    assert taught == {p.split(" the emblem")[0] for p in WK_UND + WK_GEN}


def test_option_tasks_agree_with_their_pictures():
    world, rng = World(0), random.Random(2)
    for _ in range(30):
        ex = read_option(world, rng, 1.0)
        letter = ex.prompt.split("option ")[1][0]
        arr = np.asarray(ex.image)
        col = "ABCD".index(letter)
        assert read_cell(arr[30:40, col * 10 : col * 10 + 10]).obj.kind == ex.answer
        ex = find_option(world, rng, 1.0)
        kind, letter = ex.answer.rsplit(" ", 1)  # the kind it looks for, then the letter
        assert kind == ex.prompt.split("is the ")[1].split("?")[0]
        col = "ABCD".index(letter)
        assert read_cell(np.asarray(ex.image)[30:40, col * 10 : col * 10 + 10]).obj.kind == kind
        ex = mark_option(world, rng, 1.0)
        marks = parse_scene(ex.answer).scene.marks
        assert marks == {(3, "ABCD".index(ex.prompt.split("option ")[1][0]))}


@pytest.mark.parametrize("category", ["reasoning", "numerical_perception"])
def test_taught_und_answers_pass_the_judge_and_end_with_the_reference(category):
    """Training answers name their evidence first; the judge must still score them exactly as the reference."""
    world, rng, judge = World(0), random.Random(3), TextJudge()
    maker, answer = GENERATORS[category], UND_ANSWERS[category]
    for i in range(200):
        fields = maker(world, rng)
        taught = answer(fields)
        assert taught.endswith(fields["reference"][0]) and taught != fields["reference"][0]
        item = Item(id=f"x{i}", **fields)
        assert judge.judge(item, taught).correct
        # ... and the evidence alone, without the final answer, does not pass.
        evidence = taught[: -len(fields["reference"][0])]
        assert not judge.judge(item, evidence).correct


def test_cell_pointer_scores_cell_words_against_input_image_cells():
    torch.manual_seed(0)
    model = ToyUMM(ToyConfig(n_text=20, n_codes=8, n_cells=4, cell_output=True, cell_pointer=True))
    model.set_text_cells([0] * 16 + [1, 2, 3, 4])
    # <bos> <img> 4 image codes (cells 1..4) </img> word, word naming cell 2; then a generated code in cell 1.
    batch = Batch(
        ids=torch.tensor([[2, 4, 21, 22, 23, 24, 5, 9, 17, 20]]),
        cell=torch.tensor([[0, 0, 1, 2, 3, 4, 0, 0, 2, 1]]),
        next_cell=torch.zeros(1, 10, dtype=torch.long),
        attn=torch.ones(1, 10, dtype=torch.long),
    )
    h = torch.randn(1, 10, 128)
    memory = model.cell_memory(batch, h)
    assert memory.shape == (1, 4, 128) and not memory.any()  # zero-initialised: no effect at the start
    with torch.no_grad():
        model.pointer_proj.weight.copy_(torch.eye(128))
    memory = model.cell_memory(batch, h)
    # Only the input image's tokens are memory: not the cell word at 8, not the generated code at 9.
    assert torch.equal(memory[0], h[0, 2:6])
    logits = model.text_logits(h, memory)
    gain = logits - model.text_logits(h)
    assert torch.allclose(gain[..., :16], torch.zeros(1, 10, 16))
    assert torch.allclose(gain[0, :, 16 + 2], h[0] @ h[0, 4])  # word naming cell 3 scores against cell 3
    no_image = Batch(batch.ids[:, 6:], batch.cell[:, 6:], batch.next_cell[:, 6:], batch.attn[:, 6:])
    assert not model.cell_memory(no_image, h[:, 6:]).any()
    # Codes generated right after "<bos> <gen>" sit where an input image would, but say which cell comes next.
    drawn = Batch(batch.ids[:, :4], batch.cell[:, :4], torch.tensor([[0, 1, 2, 3]]), batch.attn[:, :4])
    assert not model.cell_memory(drawn, h[:, :4]).any()


def test_cell_bias_and_cell_output():
    """Positions about a cell start out attending to that cell's image token; cell words are said via it."""
    torch.manual_seed(0)
    model = ToyUMM(ToyConfig(n_text=20, n_codes=8, cell_bias=True, cell_output=True))
    model.set_text_cells([0] * 10 + list(range(1, 11)))
    # Sequence: 3 image tokens in cells 1..3, then a word naming cell 2, then a generation step drawing cell 3.
    batch = Batch(
        ids=torch.tensor([[20, 21, 22, 15, 23]]),
        cell=torch.tensor([[1, 2, 3, 2, 1]]),
        next_cell=torch.tensor([[0, 0, 0, 0, 3]]),
        attn=torch.ones(1, 5, dtype=torch.long),
    )
    allowed = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    masks = model._layer_masks(batch, allowed, None)
    head0 = masks[0][0, 0]
    assert head0[3, 1] == CELL_BIAS_INIT and head0[3, 0] == 0 and head0[3, 2] == 0
    assert head0[4, 2] == CELL_BIAS_INIT and head0[4, 0] == 0  # the next cell, not the current one
    assert torch.isinf(head0[0, 1]) and (masks[0][0, 1] <= 0).all()  # causal; other heads start unbiased
    h = torch.randn(1, 128)
    plain = h @ model.embed_tokens.weight[:20].T
    diff = model.text_logits(h) - plain
    assert torch.allclose(diff[0, :10], torch.zeros(10)) and not torch.allclose(diff[0, 10:], torch.zeros(10))


def test_quick_training_writes_checkpoints_and_logs(quick_run):
    out, final = quick_run
    run = out / "shared"
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000015", "step-000030"]
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 30 and "loss_und" in rows[-1] and "loss_gen" in rows[-1]
    meta = json.loads((final / "config.json").read_text())
    assert set(meta["val_loss"]) == {"und", "gen"}
    assert rows[0]["loss_gen"] > meta["val_loss"]["gen"]  # it learns something even in 30 steps


def test_retraining_with_the_same_seed_reproduces_losses(quick_run, tmp_path):
    _, final = quick_run
    again = train(TrainConfig.quick("shared"), tmp_path / "again", progress=False)
    first = json.loads((final / "config.json").read_text())["val_loss"]
    second = json.loads((again / "config.json").read_text())["val_loss"]
    assert {k: round(v, 3) for k, v in first.items()} == {k: round(v, 3) for k, v in second.items()}


def test_decoupled_variant_trains_and_decodes(tmp_path, suite):
    final = train(TrainConfig.quick("decoupled"), tmp_path / "dec", progress=False)
    adapter = ToyAdapter(final)
    assert hasattr(adapter.module, "und_encoder") and hasattr(adapter.module, "gen_head")
    items = suite[:3] + suite[-3:]
    texts = adapter.understand([Request(i.id, i.und_prompt, i.image) for i in items])
    images = adapter.generate([Request(i.id, i.gen_prompt, i.image) for i in items])
    assert len(texts) == len(images) == 6 and all(im.size == (40, 40) for im in images)


@pytest.mark.parametrize("prefill_rows", [24, 3])  # one prompt sub-batch per chunk, or several joined
def test_kv_cache_decoding_matches_reference_decoding(quick_run, suite, prefill_rows, monkeypatch):
    monkeypatch.setattr("gapeval.models.toy.adapter.PREFILL_ROWS", prefill_rows)
    adapter = ToyAdapter(quick_run[1], batch_size=4)
    # Generated cell words get the same cell embedding as in training (r0c0 is cell 0, stored as 1).
    assert adapter._token_cells[adapter.tokenizer.index["r0c0"]] == 1
    assert adapter._token_cells[adapter.tokenizer.index["red"]] == 0
    items = suite[::53]
    for direction in ("und", "gen"):
        requests = [Request(i.id, i.prompt(direction), i.image) for i in items]
        batched = adapter.understand(requests) if direction == "und" else adapter.generate(requests)
        for req, out in zip(requests, batched, strict=True):
            ref = adapter.reference_decode(req, direction)
            assert (ref == out) if direction == "und" else (ref.tobytes() == out.tobytes())


def test_prompts_prefilled_in_sub_batches_continue_like_one_batch(quick_run, suite, monkeypatch):
    """Joined sub-batch caches give the same states as one padded prefill in request order, row for row."""
    adapter = ToyAdapter(quick_run[1])
    items = suite[::37]  # prompts of many lengths, with and without images, not in length order
    requests = [Request(i.id, i.und_prompt, i.image) for i in items]
    n = len(items)
    step = adapter._step(
        torch.full((n,), 9), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    )
    with torch.no_grad():
        batch, _ = adapter.builder.collate(
            [adapter.builder.prompt(r.prompt, r.image, "und") for r in requests]
        )
        one: dict = {}
        h1 = adapter.model(batch, one)[:, -1]
        next1 = adapter.model(step, one)[:, -1]
        monkeypatch.setattr("gapeval.models.toy.adapter.PREFILL_ROWS", 2)
        h2, joined = adapter._prefill(requests, "und")
        memory2 = joined["memory"]
        next2 = adapter.model(step, joined)[:, -1]
    assert torch.allclose(h1, h2, atol=1e-5) and torch.allclose(one["memory"], memory2, atol=1e-5)
    assert torch.allclose(next1, next2, atol=1e-5)


def test_sampling_is_seeded_per_request(quick_run, suite):
    adapter = ToyAdapter(quick_run[1], temperature=1.0)
    reqs = [Request(i.id, i.gen_prompt, i.image, seed=7) for i in suite[:4]]
    first = [im.tobytes() for im in adapter.generate(reqs)]
    assert first == [im.tobytes() for im in adapter.generate(reqs)]
    reseeded = [Request(r.item_id, r.prompt, r.image, seed=8) for r in reqs]
    assert first != [im.tobytes() for im in adapter.generate(reseeded)]


def test_corrupt_or_mismatched_checkpoints_fail_clearly(quick_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(quick_run[1], bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        load_checkpoint(bad)
    shutil.rmtree(bad)
    shutil.copytree(quick_run[1], bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["model"]["d_model"] = 64
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="tokenizer|shape"):
        load_checkpoint(bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.json"):
        load_checkpoint(bad)


def test_checkpoint_with_non_finite_weights_is_refused(quick_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan"
    shutil.copytree(quick_run[1], bad)
    weights = load_file(str(bad / "model.safetensors"))
    name = sorted(weights)[3]
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"non-finite weights .* in {name}"):
        load_checkpoint(bad)


def test_span_positions_refuse_words_outside_the_vocabulary(quick_run):
    """Unknown words all become <unk>: a span of them would be "found" at any other unknown word."""
    adapter = ToyAdapter(quick_run[1])
    request = Request("x", "Who founded Qwertyx? Tell me the emblem of the realm.")
    with pytest.raises(ValueError, match="cannot represent"):
        adapter.span_positions(request, "Qwertyx", "und")
    assert adapter.span_positions(request, "the realm", "und") == adapter.span_positions(
        request, "the realm", "gen"
    )


def test_specs_select_shipped_steps_and_training_seeds(quick_run, tmp_path, monkeypatch):
    import shutil

    from gapeval.models.toy import adapter as toy_adapter

    root = tmp_path / "checkpoints"
    shutil.copytree(quick_run[1], root / "toy-shared" / "step-000030")
    shutil.copytree(quick_run[1], root / "toy-shared" / "step-000015")
    shutil.copytree(quick_run[1], root / "toy-shared-seed1" / "step-000030")
    monkeypatch.setattr(toy_adapter, "CHECKPOINTS", root)
    assert ToyAdapter.from_spec("shared").checkpoint == root / "toy-shared" / "step-000030"
    assert ToyAdapter.from_spec("shared@15").checkpoint == root / "toy-shared" / "step-000015"
    assert ToyAdapter.from_spec("shared@seed1").checkpoint == root / "toy-shared-seed1" / "step-000030"
    with pytest.raises(CheckpointError, match="'shared' seed 2"):
        ToyAdapter.from_spec("shared@seed2")
    with pytest.raises(CheckpointError, match="step 99"):
        ToyAdapter.from_spec("shared@99")
