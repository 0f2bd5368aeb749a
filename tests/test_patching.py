"""Activation patching (interventions/patching/grid.py and friends), checked the same way on every intervenable adapter.

The checks of issue 13: full patches reproduce the clean run and empty ones the corrupted run; nnsight writes what
the torch hooks write; attribution equals exact patching where the metric is linear in the patched activation;
transplanting an entity's states into a run of the same entity changes nothing, teacher-forced or decoded and
judged; patching during KV-cached decoding acts like feeding the clean prompt. Then ``gapeval patch`` itself, in
every mode, on the shipped toy, and its refusal of a bad pairs file.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gapeval.io import save_items
from gapeval.models.base import DIRECTIONS, ForwardPass, Intervenable
from gapeval.models.toy.adapter import ToyAdapter
from interventions.hooks import HookPoint, n_layers, residual_stream
from interventions.judged import judged
from interventions.patching.attribution import agreement, attribution_grid, informative, verify_top
from interventions.patching.grid import (
    GRIDS,
    Patch,
    Run,
    grid,
    grid_points,
    normalised,
    patched_ld,
    run,
)
from interventions.patching.pairs import Pair, check_pair, synth_pairs
from interventions.patching.patch_run import grid_study, kept
from interventions.patching.patched_decoding import (
    Condition,
    condition_patches,
    edit_records,
    edit_table,
    patched_decoding,
)
from interventions.patching.transplant import WHERE, transplant_decodes, transplant_pair, transplant_patches


@pytest.fixture(scope="module")
def pair(intervenable) -> Pair:
    return synth_pairs(intervenable, 1, seed=0)[0]


@pytest.fixture(scope="module")
def runs(intervenable, pair) -> dict[str, tuple[Run, Run]]:
    """(clean, corrupt) per direction, teacher-forced with (clean answer, corrupt answer)."""
    return {
        d: tuple(
            run(intervenable, pair.request(role, d), d, pair.answers(d)) for role in ("clean", "corrupt")
        )
        for d in DIRECTIONS
    }


def few_positions(model: Intervenable, pair: Pair, corrupt: Run) -> list[int]:
    """The span, the token before it and the last prompt token (a full tiny-Janus chat prompt is long)."""
    span = model.span_positions(corrupt.request, pair.spans[1], corrupt.direction)
    return sorted({span[0] - 1, *span, corrupt.prompt_length - 1})


def test_pairs_align_token_for_token(intervenable, pair):
    check_pair(intervenable, pair)  # raises on unequal spans or prompt lengths
    assert pair.answers("und")[0] != pair.answers("und")[1]
    bad = Pair("bad", pair.clean, pair.corrupt, (pair.spans[0], "realm"))
    with pytest.raises(ValueError):
        check_pair(intervenable, bad)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_normalised_metric_is_exactly_one_for_the_clean_embeddings_and_zero_for_a_no_op(
    intervenable, runs, direction
):
    """Writing the clean run's whole residual stream at the embeddings (prompt and answer) *is* the clean run:
    exactly 1. Writing nothing, or the corrupted run's own embeddings, is the corrupted run: exactly 0. Every
    depth of the residual stream, patched everywhere, restores the clean run too."""
    clean, corrupt = runs[direction]
    embeddings = HookPoint(0, "resid_pre")
    width = clean.acts[embeddings].shape[1]
    everywhere = tuple(range(min(width - int(o) for o in clean.inputs.offsets)))  # prompt and answer
    patches = [Patch(embeddings, everywhere), Patch(embeddings, ())]
    patches += [Patch(point, everywhere) for point in residual_stream(intervenable)[1:]]
    ld = patched_ld(intervenable, corrupt, clean, patches, skip_no_ops=False)  # the empty patch runs too
    values = normalised(ld.numpy(), clean.ld, corrupt.ld)
    assert values[0] == 1.0 and values[1] == 0.0
    own = patched_ld(intervenable, corrupt, corrupt, patches[:1], skip_no_ops=False)
    assert normalised(float(own[0]), clean.ld, corrupt.ld) == 0.0
    np.testing.assert_allclose(values[2:], 1.0, atol=1e-4)


def test_grid_has_one_cell_per_layer_and_position_and_agrees_with_single_patches(intervenable, pair, runs):
    clean, corrupt = runs["und"]
    positions = few_positions(intervenable, pair, corrupt)
    maps = grid(intervenable, clean, corrupt, positions=positions, max_rows=6)  # several chunks
    last = n_layers(intervenable)
    assert {c: m.shape for c, m in maps.items()} == {
        "resid": (last + 1, len(positions)),
        "attn_out": (last, len(positions)),
        "mlp_out": (last, len(positions)),
    }
    assert np.isfinite(np.concatenate([m.ravel() for m in maps.values()])).all()
    # Row 0 of resid is the embeddings: before the span nothing differs, at the span's first token it does.
    assert maps["resid"][0, 0] == 0.0 and maps["resid"][0, 1] != 0.0
    one = Patch(HookPoint(1, "attn_out"), (positions[-1],))
    alone = normalised(
        float(patched_ld(intervenable, corrupt, clean, [one], max_rows=2)), clean.ld, corrupt.ld
    )
    assert maps["attn_out"][1, -1] == pytest.approx(alone, abs=1e-4)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_nnsight_equals_torch_hooks(intervenable, pair, runs, direction):
    clean, corrupt = runs[direction]
    positions = few_positions(intervenable, pair, corrupt)
    points = residual_stream(intervenable) + grid_points(intervenable, "attn_out")[:2]
    cells = [
        Patch(point, (p,)) for point in points + grid_points(intervenable, "mlp_out")[:2] for p in positions
    ]
    cells.append(Patch(HookPoint(0, "resid_pre"), tuple(positions)))
    hooks = patched_ld(intervenable, corrupt, clean, cells)
    traced = patched_ld(intervenable, corrupt, clean, cells, backend="nnsight")
    torch.testing.assert_close(traced, hooks, atol=1e-5, rtol=1e-5)
    assert (hooks != corrupt.ld).any()


class LinearReadout:
    """The adapter with its heads replaced by a fixed linear readout of the last decoder layer's output.

    ld is then linear in that output, so patching the last layer's MLP output or the residual stream leaving it
    is exactly linear too, and attribution patching must equal exact patching there.
    """

    def __init__(self, model: Intervenable):
        self._model = model
        d = model.module.get_submodule(f"{model.layers_path}.0.{model.components['mlp_out']}").out_features
        generator = torch.Generator().manual_seed(0)
        self._freq, self._phase = torch.randn(d, generator=generator), torch.randn(d, generator=generator)

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    @property
    def hidden_path(self) -> str:
        return f"{self._model.layers_path}.{n_layers(self._model) - 1}"

    def answer_logprobs(self, inputs: ForwardPass, hidden: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(inputs))[:, None]
        # Weights depend on the whole answer, so the two answers' terms do not cancel where they share a token.
        key = inputs.targets + (inputs.targets * inputs.answer_mask).sum(-1, keepdim=True)
        weights = torch.cos(key[..., None].float() * self._freq + self._phase)
        value = (weights * hidden[rows, inputs.answer_positions].float()).sum(-1)
        return torch.where(inputs.answer_mask, value, torch.zeros_like(value))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_attribution_equals_exact_where_the_metric_is_linear(intervenable, pair, direction):
    linear = LinearReadout(intervenable)
    clean, corrupt = (
        run(linear, pair.request(r, direction), direction, pair.answers(direction))
        for r in ("clean", "corrupt")
    )
    positions = few_positions(intervenable, pair, corrupt)
    exact = grid(linear, clean, corrupt, positions=positions)
    estimate = attribution_grid(linear, clean, corrupt, positions=positions)
    last = n_layers(intervenable)
    for component, row in (("resid", last), ("mlp_out", last - 1)):
        scale = np.abs(exact[component][row]).max()
        assert scale > 0  # the readout sees these cells
        np.testing.assert_allclose(estimate[component][row], exact[component][row], atol=1e-5, rtol=1e-3)
    top = verify_top(linear, clean, corrupt, estimate, k=3, positions=positions)
    assert len(top) == 3 and abs(top[0]["attribution"]) >= abs(top[-1]["attribution"])
    for cell in top:
        assert cell["exact"] == pytest.approx(exact[cell["grid"]][cell["row"], cell["column"]], abs=1e-4)
        assert cell["hook"] == grid_points(intervenable, cell["grid"])[cell["row"]].name


def structural_maps(
    rng: np.random.Generator, cells: dict[str, np.ndarray], shift: float = 0.0
) -> dict[str, np.ndarray]:
    """A random map that is 0 wherever ``cells`` is False; exponential values minus ``shift`` (mostly positive,
    like patching effects)."""
    return {g: np.where(m, rng.exponential(size=m.shape) - shift, 0.0) for g, m in cells.items()}


@pytest.mark.parametrize("shift, inflated", [(0.0, 0.9), (0.3, 0.15)])
def test_agreement_reads_informative_cells_so_independent_maps_score_chance(shift, inflated):
    """Two independent maps sharing a grid's structural zeros (about 2 cells in 3, as on the toy's prompts) rank
    those zeros together: Spearman over every cell calls them similar (mean 0.94 when every effect is positive,
    0.22 when a quarter are negative). On the informative cells they are unrelated: rho near 0, top-k overlap
    near k / n, sign agreement at its chance level; the same map against itself agrees perfectly."""
    rng = np.random.default_rng(0)
    shape = {"resid": (5, 8), "attn_out": (4, 8), "mlp_out": (4, 8)}
    runs = []
    for _ in range(300):
        cells = {g: rng.random(s) < 0.35 for g, s in shape.items()}
        runs.append(agreement(structural_maps(rng, cells, shift), structural_maps(rng, cells, shift), cells))
    keys = ("spearman", "spearman_informative", "sign_agreement", "sign_chance")
    mean = {k: np.mean([r[k] for r in runs]) for k in keys}
    assert mean["spearman"] > inflated  # the old statistic: well above 0 for unrelated maps
    assert abs(mean["spearman_informative"]) < 0.03
    assert abs(mean["sign_agreement"] - mean["sign_chance"]) < 0.02
    for k in ("5", "10"):
        overlap = np.mean([r["topk_overlap"][k] for r in runs])
        chance = np.mean([r["topk_chance"][k] for r in runs])
        assert abs(overlap - chance) < 0.03 and 0.1 < chance < 0.6
    same_map = structural_maps(np.random.default_rng(1), cells, shift)
    same = agreement(same_map, same_map, cells)
    assert same["spearman_informative"] == pytest.approx(1.0)
    assert same["topk_overlap"] == {"5": 1.0, "10": 1.0} and same["sign_agreement"] == 1.0
    assert same["informative_cells"] == sum(int(m.sum()) for m in cells.values()) and same["cells"] == 13 * 8
    flipped = agreement(same_map, {g: -m for g, m in same_map.items()}, cells)
    assert flipped["spearman_informative"] == pytest.approx(-1.0) and flipped["sign_agreement"] == 0.0
    assert flipped["topk_overlap"] == {"5": 1.0, "10": 1.0}  # magnitudes agree, signs do not


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_informative_cells_are_those_whose_activations_differ(intervenable, pair, runs, direction):
    """Before the span nothing differs; the embeddings differ only inside the span (where the tokens do: BPE
    names may share a piece); after the span every later layer does."""
    clean, corrupt = runs[direction]
    cells = informative(intervenable, clean, corrupt)
    span = intervenable.span_positions(corrupt.request, pair.spans[1], direction)
    resid = cells["resid"]
    assert not resid[:, : span[0]].any()  # positions before the span: the same tokens, the same states
    assert resid[0].any() and set(np.flatnonzero(resid[0])) <= set(span)  # embeddings: inside the span only
    assert resid[1:, span[-1] + 1 :].all()  # later positions read the span through attention
    assert not cells["attn_out"][:, : span[0]].any() and cells["mlp_out"][:, span[-1]].all()


@pytest.mark.parametrize("route", [("und", "und"), ("gen", "gen"), ("und", "gen"), ("gen", "und")])
def test_transplanting_an_entity_into_a_run_of_the_same_entity_changes_nothing(intervenable, pair, route):
    """Same direction: every layer, at the span and the last token. Across directions: the embeddings of the
    entity's tokens (deeper states differ with the direction's own words, so they would change the run)."""
    a, b = route
    source = run(intervenable, pair.request("clean", a), a, pair.answers(a))
    target = run(intervenable, pair.request("clean", b), b, pair.answers(b))
    span = pair.spans[0]
    patches = transplant_patches(intervenable, source, span, target, span, "span")
    if a == b:
        patches += transplant_patches(intervenable, source, span, target, span, "end")
    else:
        patches = patches[:1]
    ld = patched_ld(intervenable, target, source, patches, max_rows=8)
    np.testing.assert_allclose(ld.numpy(), target.ld, atol=1e-4)


class Recorder:
    """The adapter, keeping every decoded answer (judged records keep no images)."""

    def __init__(self, model: Intervenable):
        self._model = model
        self.answers: list = []

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def understand(self, requests):
        texts = self._model.understand(requests)
        self.answers += texts
        return texts

    def generate(self, requests):
        images = self._model.generate(requests)
        self.answers += [np.asarray(image) for image in images]
        return images


@pytest.mark.parametrize("route", [("und", "und"), ("gen", "gen"), ("und", "gen"), ("gen", "und")])
def test_transplanting_an_entity_into_a_decode_of_the_same_entity_leaves_the_judged_answer(
    intervenable, pair, route
):
    """The judged transplant: B decodes the entity's own prompt with A's states of that entity written in its
    prompt pass. Same direction: at the span and the end, entering layers 0 and 1 and leaving the last (every
    kind of hook; the teacher-forced test above covers every layer); across: the span's embeddings."""
    a, b = route
    same = Pair("same", pair.clean, pair.clean, (pair.spans[0], pair.spans[0]))
    model = Recorder(intervenable)
    points = residual_stream(intervenable)
    wheres, hooks = (WHERE, [points[0], points[1], points[-1]]) if a == b else (("span",), points[:1])
    records = transplant_decodes(model, same, routes=[route], wheres=wheres, hooks=hooks)
    assert [(r["where"], r["hook"]) for r in records] == [("none", None)] + [
        (w, p.name) for w in wheres for p in hooks
    ]
    assert len({(r["new"], r["old"], r["output"]) for r in records}) == 1  # judged as the unpatched decode
    for answer in model.answers[1:]:  # and decoded to the same tokens, every item of every decode
        assert np.array_equal(answer, model.answers[0])
    # The control that the writes land: the other entity's embeddings at the span decode its own prompt.
    model.answers.clear()
    other = transplant_decodes(model, pair, routes=[route], wheres=("span",), hooks=points[:1])
    assert [(r["where"], r["hook"]) for r in other] == [("none", None), ("span", "blocks.0.hook_resid_pre")]
    want = Recorder(intervenable)
    judged(want, [dataclasses.replace(pair.clean, id=pair.corrupt.id)], directions=[b])  # the same seed
    assert np.array_equal(model.answers[2], want.answers[0])


def test_transplant_across_directions_is_per_layer_and_normalised(intervenable, pair):
    """The span's embedding is the same token's embedding in both directions: transplanted, the receiving run
    is the run on the other entity's prompt (its log-prob difference, whatever the gap)."""
    result = transplant_pair(intervenable, pair)
    assert set(result) == {"und->gen", "gen->und"}
    for values in result.values():
        assert values["span"].shape == values["end"].shape == (n_layers(intervenable) + 1,)
        on_clean, on_corrupt = values["gap"]
        ld = values["span"][0] * (on_clean - on_corrupt) + on_corrupt  # back from the normalised value
        assert ld == pytest.approx(on_clean, abs=1e-4)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_patching_the_whole_prompt_during_decoding_decodes_the_clean_prompt(
    intervenable, pair, runs, direction
):
    """The KV-cache path: writes land in the prefill, the decoding steps read them through the cache."""
    clean, corrupt = runs[direction]
    decode = intervenable.understand if direction == "und" else intervenable.generate
    want = decode([pair.request("clean", direction)])[0]
    patches = condition_patches(intervenable, pair, direction, Condition(HookPoint(0, "resid_pre"), "prompt"))
    with patched_decoding(intervenable, clean, patches, corrupt.prompt_length, direction):
        got = decode([pair.request("corrupt", direction)])[0]
    after = decode([pair.request("corrupt", direction)])[0]  # hooks are gone
    unpatched = decode([pair.request("corrupt", direction)])[0]
    as_data = np.asarray if direction == "gen" else str
    assert np.array_equal(as_data(got), as_data(want))
    assert np.array_equal(as_data(after), as_data(unpatched))


def test_edit_table_judges_both_directions_per_condition(intervenable, pair):
    conditions = [Condition(), Condition(HookPoint(0, "resid_pre"), "prompt")]
    records = edit_records(intervenable, [pair], conditions)
    assert len(records) == 2 * len(conditions)
    table = {row["condition"]: row for row in edit_table(records)}
    assert set(table) == {"none", "blocks.0.hook_resid_pre:prompt"}
    same_seed = dataclasses.replace(pair.clean, id=pair.corrupt.id)
    baseline = judged(intervenable, [same_seed])[0]
    for d in DIRECTIONS:  # patching the whole prompt at the embeddings answers like the clean prompt
        assert table["blocks.0.hook_resid_pre:prompt"][f"{d}_new"] == baseline[d]["correct"]


# --- gapeval patch on the shipped toy ----------------------------------------------------------------------


def patch_command(out, *options: str) -> int:
    from gapeval.cli import main

    return main(["patch", "--model", "toy", "--pairs", "2", "--out", str(out), *options])


def read_run(out) -> tuple[dict, dict[str, np.ndarray], set[str]]:
    """summary.json, arrays.npz (no pickle) and the PNGs a run wrote; every PNG is a real picture."""
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "arrays.npz", allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    pngs = {p.name for p in out.glob("*.png")}
    for name in pngs:
        assert Image.open(out / name).size[0] > 100
    return summary, arrays, pngs


def test_patch_command_grid(tmp_path, capsys):
    assert patch_command(tmp_path, "--mode", "grid", "--top", "5") == 0
    summary, arrays, pngs = read_run(tmp_path)
    layers = n_layers(ToyAdapter.from_spec("shared"))
    assert summary["mode"] == "grid" and summary["settings"]["pairs"] == 2
    assert pngs == {f"grid_{d}_{c}.png" for d in DIRECTIONS for c in GRIDS}
    for d in DIRECTIONS:
        entry = summary["directions"][d]
        assert len(entry["pairs"]) == 2 and entry["dropped"] == [] and min(map(abs, entry["gaps"])) >= 0.5
        assert entry["columns"][-1] == "end" and "span" in entry["columns"]
        for c in GRIDS:
            assert arrays[f"grid/{d}/{c}"].shape == (2, layers + (c == "resid"), len(entry["columns"]))
        # The embeddings at the span are all that differs between the prompts: patching them is the clean run.
        assert entry["resid_profile"]["span"][0] == pytest.approx(1.0, abs=1e-4)
    assert len(summary["top"]) == 5 and summary["top"][0]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert "grid/und/resid" in capsys.readouterr().out


def test_patch_command_transplant_gives_metric_and_judged_outputs(tmp_path, capsys):
    assert patch_command(tmp_path, "--mode", "transplant") == 0
    summary, arrays, pngs = read_run(tmp_path)
    rows = len(summary["hooks"])
    assert pngs == {"transplant_und_to_gen.png", "transplant_gen_to_und.png"} and summary["skipped"] == []
    for route, entry in summary["routes"].items():
        assert entry["pairs"] == entry["judged"]["pairs"] == 2
        for where in WHERE:
            assert arrays[f"transplant/{route}/{where}"].shape == (2, rows)
            assert arrays[f"judged/{route}/{where}/new"].shape == (2, rows)
        judged = entry[
            "judged"
        ]  # unpatched: its own entity; the span's embedding transplanted: the other one
        assert (judged["none"]["new"], judged["none"]["old"]) == ([0.0], [1.0])
        assert (judged["span"]["new"][0], judged["span"]["old"][0]) == (1.0, 0.0)
        # The entity's token embedding is the same in both directions: transplanted, it is the other's prompt.
        assert entry["span"]["mean"][0] == pytest.approx(1.0, abs=1e-4)
    assert len(summary["records"]) == 2 * 2 * (1 + 2 * rows)
    printed = capsys.readouterr().out
    assert "judged decodes" in printed and "unpatched" in printed


def test_patch_command_attribution(tmp_path):
    assert patch_command(tmp_path, "--mode", "attribution", "--top", "3") == 0
    summary, arrays, pngs = read_run(tmp_path)
    assert pngs == {f"attribution_{d}_{c}.png" for d in DIRECTIONS for c in GRIDS}
    for d in DIRECTIONS:
        entry = summary["directions"][d]
        assert len(entry["agreement"]) == 2
        assert [len(v["cells"]) for v in entry["top_verified"]] == [3, 3]
        for c in GRIDS:
            assert arrays[f"attribution/{d}/{c}"].shape == arrays[f"exact/{d}/{c}"].shape


def test_patch_command_edit(tmp_path):
    conditions = ["none", "blocks.0.hook_resid_pre:span", "blocks.1.hook_resid_pre:end"]
    assert patch_command(tmp_path, "--mode", "edit", *(f"--condition={c}" for c in conditions)) == 0
    summary, arrays, pngs = read_run(tmp_path)
    assert arrays == {} and pngs == set()
    assert [row["condition"] for row in summary["table"]] == conditions
    assert len(summary["records"]) == 2 * len(DIRECTIONS) * len(conditions)
    table = {row["condition"]: row for row in summary["table"]}
    for d in (
        DIRECTIONS
    ):  # the toy knows both realms: unpatched it keeps its own; the clean span's embedding flips it
        assert (table["none"][f"{d}_new"], table["none"][f"{d}_old"]) == (0.0, 1.0)
        assert table["blocks.0.hook_resid_pre:span"][f"{d}_new"] == 1.0


def test_patch_command_that_keeps_no_pair_says_why_and_exits_2(tmp_path, capsys):
    assert patch_command(tmp_path, "--mode", "attribution", "--min-gap", "1000") == 2
    err = capsys.readouterr().err
    for d in DIRECTIONS:
        assert (
            f"{d}: kept 0 of 2 pairs; dropped 2 with |LD_clean - LD_corrupt| < --min-gap 1000 nats (" in err
        )
    assert "no pair was kept" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(len(summary["directions"][d]["dropped"]) == 2 for d in DIRECTIONS)


def test_a_run_says_how_many_pairs_each_direction_kept(intervenable, pair, tmp_path):
    """On tiny random Janus the gap is far below 0.5 nats, so nothing is kept; the toys keep the pair."""
    summary, _ = grid_study(intervenable, [pair], tmp_path, min_gap=0.5, max_rows=64)
    lines, any_kept = kept(summary, 1, 0.5)
    gaps = {
        d: abs(g)
        for d in DIRECTIONS
        for g in summary["directions"][d]["gaps"] + [x["gap"] for x in summary["directions"][d]["dropped"]]
    }
    for d, line in zip(DIRECTIONS, lines, strict=True):
        if gaps[d] >= 0.5:
            assert line == f"{d}: kept 1 of 1 pairs"
        else:
            assert (
                line
                == f"{d}: kept 0 of 1 pairs; dropped 1 with |LD_clean - LD_corrupt| < --min-gap 0.5 nats ({pair.id} {summary['directions'][d]['dropped'][0]['gap']:.3g})"
            )
    assert any_kept == any(g >= 0.5 for g in gaps.values())


@pytest.fixture(scope="module")
def pairs_suite(tmp_path_factory):
    """A toolkit-format suite holding one synth pair's two items, and a valid pairs line for it."""
    pair = synth_pairs(ToyAdapter.from_spec("shared"), 1, seed=0)[0]
    folder = save_items([pair.clean, pair.corrupt], tmp_path_factory.mktemp("suite"))
    line = {
        "id": "p",
        "clean": pair.clean.id,
        "corrupt": pair.corrupt.id,
        "clean_span": pair.spans[0],
        "corrupt_span": pair.spans[1],
    }
    return folder, line


def test_patch_command_reads_a_pairs_file(tmp_path, pairs_suite):
    folder, line = pairs_suite
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(line) + "\n\n")
    out = tmp_path / "out"
    options = ("--pairs-file", str(pairs), "--items", str(folder), "--mode", "edit", "--condition", "none")
    assert patch_command(out, *options) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["pair"] for r in summary["records"]] == ["p", "p"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"id": "q", "clean": ', "not a JSON line"),
        ("[1, 2]", "expected an object"),
        (
            '{"id": "q", "clean": "nope", "corrupt": "nope", "clean_span": "a", "corrupt_span": "b"}',
            "unknown item",
        ),
        ("span", "spans at positions"),
        ("absent", "not found"),
    ],
)
def test_patch_command_names_the_bad_line_of_a_pairs_file(tmp_path, pairs_suite, capsys, bad, message):
    folder, line = pairs_suite
    if bad in ("span", "absent"):  # valid JSON and ids; a span elsewhere than the other, or not in the prompt
        bad = json.dumps(line | {"corrupt_span": "emblem" if bad == "span" else "red"})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(line) + "\n" + bad + "\n")
    assert patch_command(tmp_path / "out", "--pairs-file", str(pairs), "--items", str(folder)) == 2
    err = capsys.readouterr().err
    assert f"{pairs}:2:" in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (("--mode", "edit", "--condition", "blocks.9.hook_resid_pre:span"), "for L in 0..3"),
        (
            ("--mode", "edit", "--condition", "blocks.1.hook_attn:end"),
            "blocks.L.{hook_resid_pre|hook_attn_out",
        ),
        (("--mode", "edit", "--condition", "resid:0:span"), "expected a name like blocks.0.hook_resid_pre"),
        (("--mode", "edit", "--condition", "blocks.1.hook_attn_out:middle"), "WHERE one of"),
        (("--pairs", "0"), "--pairs must be at least 1"),
    ],
)
def test_patch_command_refuses_bad_options_in_one_line(tmp_path, capsys, options, message):
    assert patch_command(tmp_path / "out", *options) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
