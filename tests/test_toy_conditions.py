"""Training conditions as data (issue 23): the world's realms and pictured share, the consistency task, the
architectures (the non-unified pair among them), width and depth, and the fast training path."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gapeval.cli import main
from gapeval.io import suite_hash
from gapeval.models.toy import load_toy
from gapeval.models.toy.adapter import ToyAdapter
from gapeval.models.toy.codec import CELL, GRID, N_TOKENS, _interior_shift, cell_patches
from gapeval.models.toy.data import REALM_TASKS, MixtureSampler, vocabulary_texts
from gapeval.models.toy.losses import reference_losses
from gapeval.models.toy.packed import _GroupAttention, _Regroup, _Spread, pack, packed_losses
from gapeval.models.toy.sequence import IGNORE
from gapeval.models.toy.tokenizer import TextTokenizer, words
from gapeval.models.toy.train import TrainConfig, _Run, train
from gapeval.synth import World, build_suite
from gapeval.synth.world import all_kinds, random_scene, render, to_grid_array
from gapeval.testing import INTERVENABLE_CHECKS, run_check

KNOBS = [
    {},
    {"n_realms": 192},
    {"n_realms": 384, "pictured_share": 0.25},
    {"pictured_share": 1.0},
    {"pictured_share": 0.0},
    {"consistency": 2.0},
    {"n_realms": 96, "pictured_share": 0.75, "consistency": 1.5},
]


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    return train(TrainConfig.quick("pair"), out / "pair", progress=False)


@pytest.fixture(scope="module")
def pair_adapter(pair_run):
    return ToyAdapter(pair_run)


@pytest.mark.parametrize("check", list(INTERVENABLE_CHECKS))
def test_the_pair_meets_the_intervention_contract(pair_adapter, check: str) -> None:
    """The conformance kit's checks (tests/test_conformance.py) on a quick-trained non-unified pair."""
    run_check(pair_adapter, check)


# --- the world --------------------------------------------------------------------------------------------


def test_extended_worlds_keep_the_default_world_reserve_and_suite():
    assert suite_hash(build_suite())[:12] == "d5345b8f0d82"
    default, same = World(0), World.extended(0)
    assert same.realms == default.realms and same.reserve_known == default.reserve_known
    big = World.extended(0, n_realms=384)
    assert big.realms[:48] == default.realms and len(big.realms) == 384
    assert big.reserve_known == default.reserve_known and big.reserve_unseen == default.reserve_unseen
    every = big.realms + big.reserve_known + big.reserve_unseen
    assert len({w for r in every for w in words(f"{r.name} {r.founder}")}) == 2 * len(every)
    few = World.extended(0, n_realms=24).realms  # a prefix, with the share applied to it
    assert [(r.name, r.emblem) for r in few] == [(r.name, r.emblem) for r in default.realms[:24]]
    assert sum(r.pictured for r in few) == 12
    shares = [World.extended(0, 192, s) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    pictured = [{r.name for r in w.realms if r.pictured} for w in shares]
    assert [len(p) for p in pictured] == [0, 48, 96, 144, 192]
    assert all(a <= b for a, b in zip(pictured, pictured[1:], strict=False))  # nested
    # The default realms keep their status at the default share.
    assert [r.pictured for r in shares[2].realms[:48]] == [r.pictured for r in default.realms]


def test_the_vocabulary_grows_with_the_realms_and_not_otherwise():
    default = TextTokenizer.build(vocabulary_texts(World(0))).vocab
    assert TextTokenizer.build(vocabulary_texts(World.extended(0))).vocab == default
    big = World.extended(0, n_realms=192)
    vocab = set(TextTokenizer.build(vocabulary_texts(big)).vocab)
    assert {w for r in big.realms for w in words(f"{r.name} {r.founder}")} <= vocab
    assert set(default) <= vocab and len(vocab) == len(default) + 2 * 144


# --- the mixture ------------------------------------------------------------------------------------------


def _drawn_realms(world: World, sampler: MixtureSampler, n: int) -> tuple[set[str], set[str]]:
    """Realms named in examples that draw something, and realms named at all (names or founders)."""
    by_word = {w.lower(): r.name for r in world.realms for w in (r.name, r.founder)}
    drawn, named = set(), set()
    for k in range(n):
        ex = sampler.sample(k / n)
        text = " ".join(t for t in (ex.prompt, ex.answer, ex.then) if isinstance(t, str))
        realms = {by_word[w] for w in words(text) if w in by_word}
        named |= realms
        if ex.direction == "gen" or ex.then is not None:
            assert ex.task in REALM_TASKS or not realms, ex
            drawn |= realms
    return drawn, named


@pytest.mark.parametrize(
    "knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default"
)
def test_a_text_only_realm_is_never_drawn_in_training(knobs):
    cfg = TrainConfig().updated(knobs)
    world = World.extended(cfg.world_seed, cfg.n_realms, cfg.pictured_share)
    sampler = MixtureSampler(world, 1, set(), cfg.consistency)
    drawn, named = _drawn_realms(world, sampler, 6000)
    pictured = {r.name for r in world.realms if r.pictured}
    assert drawn <= pictured
    assert len(named) > 0.5 * len(world.realms)  # realms are taught (the check is not vacuous)
    if cfg.consistency and pictured:
        assert drawn  # the consistency task draws the pictured realms


def test_consistency_sequences_state_then_draw_or_draw_then_state(tmp_path):
    run = _Run(TrainConfig.quick().updated({"consistency": 50.0}), tmp_path)
    examples = [e for e in (run.sampler.sample(1.0) for _ in range(200)) if e.task == "consistency"]
    assert {e.direction for e in examples} == {"und", "gen"}
    tok, n_text = run.tokenizer, len(run.tokenizer)
    for e in examples:
        seq = run.builder.example_of(e)
        targets = [t for t in seq.target if t != IGNORE]
        codes = [t for t in targets if t >= n_text]
        assert len(codes) == N_TOKENS and tok.eos_id in targets
        first_code = targets.index(codes[0])
        if e.direction == "und":  # words, then <eos>, then the picture (the <gen> after <eos> is given)
            assert targets[first_code - 1] == tok.eos_id and seq.ids.count(tok.gen_id) == 1
        else:  # the picture, then the words
            assert first_code == 0 and targets[-1] == tok.eos_id and seq.ids.count(tok.und_id) == 1


# --- the fast path ----------------------------------------------------------------------------------------


def test_vectorised_cell_patches_equal_the_per_cell_canonicalisation():
    rng = random.Random(4)
    for _ in range(300):
        scene = random_scene(rng, rng.randint(0, 16), kinds=all_kinds())
        cells = list(scene.objects) or [(0, 0)]
        scene.marks = frozenset(rng.sample(cells, rng.randint(0, min(2, len(cells)))))
        image = render(scene, rng)
        arr = to_grid_array(image)
        per_cell = [
            _interior_shift(arr[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL])
            for r in range(GRID)
            for c in range(GRID)
        ]
        expected = np.stack(per_cell).reshape(N_TOKENS, -1).astype(np.float32) / 255.0
        assert cell_patches(image).tobytes() == expected.tobytes()


@pytest.mark.parametrize("variant", ["shared", "decoupled", "pair"])
def test_the_packed_engine_computes_the_reference_loss(tmp_path, variant):
    run = _Run(TrainConfig.quick(variant).updated({"consistency": 1.0}), tmp_path)
    for step in range(3):
        run._step(step)
    seqs = [run.builder.example_of(run.sampler.sample(1.0)) for _ in range(16)]
    params = [p for p in run.model.parameters()]
    results = []
    for engine in (reference_losses, packed_losses):
        loss, parts = run.model.training_losses(engine, run.builder, seqs, 4).mean()
        results.append((loss, parts, torch.autograd.grad(loss, params, allow_unused=True)))
    (ref, ref_parts, ref_grads), (fast, fast_parts, fast_grads) = results
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=0)
    assert ref_parts == pytest.approx(fast_parts, rel=1e-5)
    for a, b in zip(ref_grads, fast_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * float(a.abs().max()) + 1e-9)


def _autograd_attention(rows, heads, shapes, masks):
    """What ``_GroupAttention`` stands for, recorded op by op by autograd."""
    d = rows.shape[1] // 3
    outs = []
    for (b, t), part, mask in zip(shapes, rows.split([b * t for b, t in shapes]), masks, strict=True):
        q, k, v = part.view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = (x.reshape(b * heads, t, d // heads) for x in (q, k, v))
        p = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=(d // heads) ** -0.5).softmax(-1)
        outs.append(torch.bmm(p, v).view(b, heads, t, d // heads).transpose(1, 2).reshape(b * t, d))
    return torch.cat(outs)


@pytest.mark.parametrize("bias", [True, False])
def test_the_packed_attention_gives_autograds_gradients_byte_for_byte(bias):
    """The hand-written backward must be a pure saving: the same products, the same bytes (so the fast
    engine's recipes, the sweep's checkpoints among them, are reproduced by the code as it is now)."""
    gen = torch.Generator().manual_seed(0)
    heads, shapes = 3, [(2, 5), (3, 7)]
    rows = torch.randn(sum(b * t for b, t in shapes), 3 * 12, generator=gen)
    causal = [torch.full((t, t), float("-inf")).triu(1) for _, t in shapes]
    bias_t = torch.randn(heads, generator=gen)
    grad = torch.randn(rows.shape[0], 12, generator=gen)
    results = []
    for attention in (_autograd_attention, lambda r, h, s, m: _GroupAttention.apply(r, h, s, *m)):
        x = rows.clone().requires_grad_()
        w = bias_t.clone().requires_grad_(bias)
        masks = [(c + w[:, None, None]).repeat(b, 1, 1) for c, (b, _) in zip(causal, shapes, strict=True)]
        out = attention(x, heads, shapes, masks)
        inputs = [x, w] if bias else [x]
        results.append((out, *torch.autograd.grad(out, inputs, grad)))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_regrouping_rows_gives_index_selects_gradient():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=gen, requires_grad=True)
    index, inverse = torch.tensor([3, 0, 4, 1, 2]), torch.tensor([1, 3, 4, 0, 2])
    grad = torch.randn(5, 4, generator=gen)
    fast = torch.autograd.grad(_Regroup.apply(x, index, inverse), x, grad)[0]
    assert torch.equal(fast, torch.autograd.grad(x.index_select(0, index), x, grad)[0])
    # rows that go nowhere (inverse one past the end) get a zero gradient, as index_select's scatter gives them
    some, where = torch.tensor([4, 1]), torch.tensor([2, 1, 2, 2, 0])
    fast = torch.autograd.grad(_Regroup.apply(x, some, where), x, grad[:2])[0]
    assert torch.equal(fast, torch.autograd.grad(x.index_select(0, some), x, grad[:2])[0])


def test_spreading_rows_gives_index_selects_gradient_byte_for_byte():
    """Many tokens read one sequence's pointer memory: ``index_add_`` must sum them as autograd does."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 5, generator=gen, requires_grad=True)
    index = torch.tensor([0, 0, 0, 2, 2, 3, 5, 5, 5, 5])  # row 1 and 4 read by no token: zero gradient
    # contiguous, and transposed as the pointer scores' einsum hands it back (summed in its own memory order)
    for grad in (
        torch.randn(len(index), 3, 5, generator=gen),
        torch.randn(len(index), 5, 3, generator=gen).mT,
    ):
        fast = torch.autograd.grad(_Spread.apply(x, index), x, grad)[0]
        assert torch.equal(fast, torch.autograd.grad(x.index_select(0, index), x, grad)[0])
        assert fast.is_contiguous() and not fast[[1, 4]].any()


def test_packing_keeps_every_token_once_and_sequences_apart(tmp_path):
    run = _Run(TrainConfig.quick("shared"), tmp_path)
    seqs = [run.builder.example_of(run.sampler.sample(1.0)) for _ in range(7)]
    packed = pack(seqs, groups=3)
    n = sum(len(s) for s in seqs)
    assert torch.equal(packed.ids, torch.tensor([i for s in seqs for i in s.ids]))
    assert packed.ids.dtype == packed.target.dtype == torch.long
    # every token sits in exactly one padded row slot, and the two orders invert each other
    assert torch.equal(packed.padded[packed.back], torch.arange(n))
    assert sorted(packed.padded[packed.padded < n].tolist()) == list(range(n))
    assert torch.equal(packed.rows, packed.padded.where(packed.padded < n, 0))
    for s, seq in enumerate(seqs):  # positions restart, and a row holds one sequence, left-aligned
        mine = (packed.seq == s).nonzero()[:, 0]
        assert torch.equal(packed.positions[mine], torch.arange(len(seq)))
        slots = packed.back[mine]
        assert torch.equal(slots, slots[0] + torch.arange(len(seq)))
    widths = [g.rows.shape[1] for g in packed.groups]
    assert widths == sorted(widths) and sum(len(g.rows) for g in packed.groups) == len(seqs)


# --- the settings as data: CLI, config file, checkpoint, resume ----------------------------------------------


def _resumable(out, extra, kill_at: str | None, monkeypatch) -> None:
    from gapeval.models.toy import resume as resume_mod

    real = resume_mod.save_file

    def killed(tensors, path):
        if kill_at and kill_at in path:
            raise KeyboardInterrupt
        real(tensors, path)

    monkeypatch.setattr(resume_mod, "save_file", killed)
    try:
        main(["train-toy", "--quick", "--no-progress", "--out", str(out), *extra])
    except KeyboardInterrupt:
        monkeypatch.setattr(resume_mod, "save_file", real)
        assert main(["train-toy", "--resume", str(out), "--no-progress"]) == 0
    monkeypatch.setattr(resume_mod, "save_file", real)


def test_every_condition_is_recorded_and_resumes_byte_for_byte(tmp_path, monkeypatch):
    settings = {
        "variant": "pair",
        "engine": "packed",
        "n_realms": 96,
        "pictured_share": 0.75,
        "consistency": 1.5,
        "d_model": 24,
        "n_layers": 3,
        "n_heads": 3,
    }
    config = tmp_path / "conditions.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in settings.items() if k != "n_layers"))
    extra = ["--config", str(config), "--n-layers", "3"]
    _resumable(tmp_path / "whole", extra, None, monkeypatch)
    _resumable(tmp_path / "killed", extra, "step-000020", monkeypatch)
    for step in ("step-000015", "step-000030"):
        whole, killed = (tmp_path / run / step for run in ("whole", "killed"))
        assert (whole / "model.safetensors").read_bytes() == (killed / "model.safetensors").read_bytes()
        meta = json.loads((whole / "config.json").read_text())
        assert {k: meta["train"][k] for k in settings} == settings
    state = json.loads(next((tmp_path / "killed" / "resume").glob("step-*/state.json")).read_text())
    assert {k: state["config"][k] for k in settings} == settings
    weights = load_file(str(tmp_path / "whole" / "step-000030" / "model.safetensors"))
    assert weights["layers.2.self_attn.gen.q_proj.weight"].shape == (24, 24)
    assert len(TextTokenizer.load(tmp_path / "whole" / "step-000030" / "tokenizer.json")) > 296 + 2 * 40


def test_bad_settings_fail_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_realm: 96\n")
    assert main(["train-toy", "--quick", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown training settings ['n_realm']" in capsys.readouterr().err
    assert main(["train-toy", "--quick", "--pictured-share", "0", "--consistency", "1", "--out", "x"]) == 2
    assert "consistency task needs pictured realms" in capsys.readouterr().err


# --- the pair as one adapter ------------------------------------------------------------------------------


def test_the_pair_loads_from_its_folder_and_keeps_its_members_apart(pair_run):
    adapter = load_toy(str(pair_run))
    assert adapter.name == "toy-pair" and adapter.config()["variant"] == "pair"
    module = adapter.module
    und = {n for n, _ in module.named_parameters() if ".und." in f".{n}"}
    gen = {n for n, _ in module.named_parameters() if ".gen." in f".{n}"}
    assert und and len(und) == len(gen) and und | gen == {n for n, _ in module.named_parameters()}
    embedding = module.get_submodule(adapter.embed_path)  # each member's own, through one path
    assert embedding.weight.shape == (len(adapter.tokenizer) + adapter.codec.size, module.config.d_model)
    # A change to the gen member's weights leaves every und answer as it was, and the reverse.
    items = build_suite()[:6]
    from gapeval.models.base import Request

    und_reqs = [Request(i.id, i.und_prompt, i.image) for i in items]
    gen_reqs = [Request(i.id, i.gen_prompt, i.image) for i in items]
    before = adapter.logprob(und_reqs, ["red circle at r0c0"] * 6, "und")
    before_gen = adapter.logprob(gen_reqs, [list(range(16))] * 6, "gen")
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in gen:
                p.add_(0.1)
        assert torch.equal(adapter.logprob(und_reqs, ["red circle at r0c0"] * 6, "und"), before)
        assert not torch.equal(adapter.logprob(gen_reqs, [list(range(16))] * 6, "gen"), before_gen)
