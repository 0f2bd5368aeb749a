"""Activation patching (interventions/patching.py and friends), checked the same way on every intervenable adapter.

The checks of issue 13: full patches reproduce the clean run and empty ones the corrupted run; nnsight writes what
the torch hooks write; attribution equals exact patching where the metric is linear in the patched activation;
transplanting an entity's states into a run of the same entity changes nothing; patching during KV-cached
decoding acts like feeding the clean prompt.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gapeval.models.base import DIRECTIONS, ForwardPass, Intervenable
from interventions.attribution import attribution_grid, compare, verify_top
from interventions.judged import judged
from interventions.pairs import Pair, check_pair, synth_pairs
from interventions.patch_edit import Condition, condition_patches, edit_records, edit_table, patched_decoding
from interventions.patching import Patch, Run, grid, n_layers, normalised, patched_ld, run, site_of
from interventions.transplant import transplant_pair, transplant_patches


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
def test_patching_every_position_gives_one_and_nothing_gives_zero(intervenable, runs, direction):
    clean, corrupt = runs[direction]
    assert clean.ld != corrupt.ld
    width = clean.acts[(0, "resid_pre")].shape[1]
    everywhere = tuple(range(min(width - int(o) for o in clean.inputs.offsets)))  # prompt and answer
    last = n_layers(intervenable)
    patches = [Patch(*site_of(intervenable, "resid", row), everywhere) for row in range(last + 1)]
    patches.append(Patch(0, "resid_pre", ()))
    ld = patched_ld(intervenable, corrupt, clean, patches, skip_no_ops=False)  # the empty patch runs too
    values = normalised(ld.numpy(), clean.ld, corrupt.ld)
    np.testing.assert_allclose(values[:-1], 1.0, atol=1e-4)
    assert abs(values[-1]) <= 1e-4


def test_grid_has_one_cell_per_layer_and_position_and_agrees_with_single_patches(intervenable, pair, runs):
    clean, corrupt = runs["und"]
    positions = few_positions(intervenable, pair, corrupt)
    maps = grid(intervenable, clean, corrupt, positions=positions, max_rows=6)  # several chunks
    last = n_layers(intervenable)
    assert {c: m.shape for c, m in maps.items()} == {
        "resid": (last + 1, len(positions)),
        "attn": (last, len(positions)),
        "mlp": (last, len(positions)),
    }
    assert np.isfinite(np.concatenate([m.ravel() for m in maps.values()])).all()
    # Row 0 of resid is the embeddings: before the span nothing differs, at the span's first token it does.
    assert maps["resid"][0, 0] == 0.0 and maps["resid"][0, 1] != 0.0
    one = Patch(*site_of(intervenable, "attn", 1), (positions[-1],))
    alone = normalised(
        float(patched_ld(intervenable, corrupt, clean, [one], max_rows=2)), clean.ld, corrupt.ld
    )
    assert maps["attn"][1, -1] == pytest.approx(alone, abs=1e-4)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_nnsight_equals_torch_hooks(intervenable, pair, runs, direction):
    clean, corrupt = runs[direction]
    positions = few_positions(intervenable, pair, corrupt)
    cells = [
        Patch(*site_of(intervenable, c, row), (p,))
        for c, rows in (("resid", n_layers(intervenable) + 1), ("attn", 2), ("mlp", 2))
        for row in range(rows)
        for p in positions
    ]
    cells.append(Patch(0, "resid_pre", tuple(positions)))
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
    for component, row in (("resid", last), ("mlp", last - 1)):
        scale = np.abs(exact[component][row]).max()
        assert scale > 0  # the readout sees these cells
        np.testing.assert_allclose(estimate[component][row], exact[component][row], atol=1e-5, rtol=1e-3)
    assert -1.0 <= compare(estimate, exact) <= 1.0
    top = verify_top(linear, clean, corrupt, estimate, k=3, positions=positions)
    assert len(top) == 3 and abs(top[0]["attribution"]) >= abs(top[-1]["attribution"])
    for cell in top:
        assert cell["exact"] == pytest.approx(exact[cell["component"]][cell["row"], cell["column"]], abs=1e-4)


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


def test_transplant_across_directions_is_per_layer_and_normalised(intervenable, pair):
    result = transplant_pair(intervenable, pair)
    assert set(result) == {"und->gen", "gen->und"}
    for values in result.values():
        assert values["span"].shape == values["end"].shape == (n_layers(intervenable) + 1,)
        assert values["gap"].shape == (2,) and np.isfinite(values["span"]).all()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_patching_the_whole_prompt_during_decoding_decodes_the_clean_prompt(
    intervenable, pair, runs, direction
):
    """The KV-cache path: writes land in the prefill, the decoding steps read them through the cache."""
    clean, corrupt = runs[direction]
    decode = intervenable.understand if direction == "und" else intervenable.generate
    want = decode([pair.request("clean", direction)])[0]
    patches = condition_patches(intervenable, pair, direction, Condition("resid", 0, "prompt"))
    with patched_decoding(intervenable, clean, patches, corrupt.prompt_length, direction):
        got = decode([pair.request("corrupt", direction)])[0]
    after = decode([pair.request("corrupt", direction)])[0]  # hooks are gone
    unpatched = decode([pair.request("corrupt", direction)])[0]
    as_data = np.asarray if direction == "gen" else str
    assert np.array_equal(as_data(got), as_data(want))
    assert np.array_equal(as_data(after), as_data(unpatched))


def test_edit_table_judges_both_directions_per_condition(intervenable, pair):
    conditions = [Condition(), Condition("resid", 0, "prompt")]
    records = edit_records(intervenable, [pair], conditions)
    assert len(records) == 2 * len(conditions)
    table = {row["condition"]: row for row in edit_table(records)}
    assert set(table) == {"none", "resid:0:prompt"}
    same_seed = dataclasses.replace(pair.clean, id=pair.corrupt.id)
    baseline = judged(intervenable, [same_seed])[0]
    for d in DIRECTIONS:  # patching the whole prompt at the embeddings answers like the clean prompt
        assert table["resid:0:prompt"][f"{d}_new"] == baseline[d]["correct"]
