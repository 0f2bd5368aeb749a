"""The intervention contract (gapeval.models.base.Intervenable), checked the same way on every adapter.

Nothing here knows which adapter it holds: these are the guarantees editing, patching and probing code relies on.
"""

from __future__ import annotations

import nnsight
import peft
import pytest
import torch
from nnsight import NNsight

from gapeval.models.base import ForwardPass, Intervenable, Request, final_hidden
from gapeval.suites import get_suite


@pytest.fixture(scope="module")
def items():
    return {it.category: it for it in reversed(get_suite("synth:8").items)}


def requests(items, direction: str) -> list[Request]:
    """Three prompts of different lengths, one with an input image."""
    wk, np_, rs = items["world_knowledge"], items["numerical_perception"], items["reasoning"]
    prompt = "und_prompt" if direction == "und" else "gen_prompt"
    return [
        Request(wk.id, getattr(wk, prompt)),
        Request(np_.id, getattr(np_, prompt), np_.image),
        Request(rs.id, getattr(rs, prompt), rs.image),
    ]


def layers(model: Intervenable):
    return model.module.get_submodule(model.layers_path)


def layer_outputs(model: Intervenable, inputs: ForwardPass) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in layers(model)
    ]
    try:
        with torch.no_grad():
            model.module(*inputs.args, **inputs.kwargs)
    finally:
        for h in hooks:
            h.remove()
    return seen


ANSWERS = {"und": ("the red circle", "the red square"), "gen": (list(range(16)), list(range(8)) + [9] * 8)}


def test_is_intervenable_with_frozen_weights(intervenable):
    assert isinstance(intervenable, Intervenable)
    assert not any(p.requires_grad for p in intervenable.module.parameters())


def test_paths_resolve(intervenable):
    module = intervenable.module
    assert isinstance(layers(intervenable), torch.nn.ModuleList) and len(layers(intervenable)) >= 2
    assert isinstance(module.get_submodule(intervenable.hidden_path), torch.nn.Module)
    for layer in layers(intervenable):
        for key in ("attn", "mlp", "mlp_out"):
            layer.get_submodule(intervenable.components[key])
        assert isinstance(layer.get_submodule(intervenable.components["mlp_out"]), torch.nn.Linear)
    targets = intervenable.lora_targets
    assert targets and all(isinstance(module.get_submodule(t), torch.nn.Linear) for t in targets)
    assert all(t.startswith(intervenable.layers_path + ".") for t in targets)


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_left_padding_is_described_by_offsets(intervenable, items, direction):
    """Batched rows equal the same request run alone, shifted by its offset (what ``columns`` maps)."""
    reqs = requests(items, direction)
    batch = intervenable.forward_inputs(reqs, direction)
    batched = layer_outputs(intervenable, batch)
    assert len(batched) == len(layers(intervenable))
    for row, req in enumerate(reqs):
        alone = intervenable.forward_inputs([req], direction)
        single = layer_outputs(intervenable, alone)
        n = single[0].shape[1]
        assert int(alone.offsets[0]) == 0 and int(batch.offsets[row]) + n == batched[0].shape[1]
        assert (
            int(batch.prompt_end[row])
            == batch.columns(row, [int(alone.prompt_end[0])])[0]
            == batched[0].shape[1] - 1
        )
        for b, s in zip(batched, single, strict=True):
            # float32 sums in another order: tolerance relative to the residual stream's scale (tens here)
            scale = float(s[0].abs().max())
            torch.testing.assert_close(
                b[row, batch.columns(row, range(n))], s[0], atol=1e-5 * scale, rtol=1e-4
            )


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_answer_positions_predict_the_next_token(intervenable, items, direction):
    """Two answers that share a prefix: per-token log-probs agree on the prefix and differ where they differ.

    Were a position off by one, a slot would see its own token and the prefix slots could not all agree.
    """
    reqs = requests(items, direction)[:1] * 2
    values, mask = intervenable.token_logprobs(reqs, list(ANSWERS[direction]), direction)
    inputs = intervenable.forward_inputs(reqs, direction, list(ANSWERS[direction]))
    assert values.shape == mask.shape == inputs.targets.shape and torch.equal(mask, inputs.answer_mask)
    if direction == "gen":
        assert mask.sum(1).tolist() == [16, 16]  # every image token scored, nothing after it
    same = (inputs.targets[0] == inputs.targets[1]) & mask[0] & mask[1]
    first_diff = int((~same & mask[0]).long().argmax())
    assert torch.allclose(values[0, :first_diff], values[1, :first_diff], atol=1e-5)
    assert not torch.isclose(values[0, first_diff], values[1, first_diff], atol=1e-4)
    assert (values[mask] <= 0).all() and (values[~mask] == 0).all()
    assert (inputs.prompt_end < inputs.answer_positions[:, -1]).all()


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_logprob_is_a_batch_independent_tensor(intervenable, items, direction):
    reqs = requests(items, direction)
    answers = [ANSWERS[direction][i % 2] for i in range(len(reqs))]
    with torch.no_grad():
        together = intervenable.logprob(reqs, answers, direction)
        alone = torch.cat(
            [intervenable.logprob([r], [a], direction) for r, a in zip(reqs, answers, strict=True)]
        )
        values, _ = intervenable.token_logprobs(reqs, answers, direction)
    assert together.shape == (3,) and together.dtype.is_floating_point and not together.requires_grad
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(together, values.sum(-1))
    assert intervenable.logprob([], [], direction).shape == (0,)
    with pytest.raises(ValueError):
        intervenable.logprob(reqs, answers[:1], direction)


def test_hidden_path_feeds_the_heads(intervenable, items):
    reqs = requests(items, "und")
    inputs = intervenable.forward_inputs(reqs, "und", ["the red circle"] * 3)
    with torch.no_grad():
        hidden = final_hidden(intervenable, inputs)
        direct = intervenable.answer_logprobs(inputs, hidden)
    assert hidden.shape[:2] == inputs.answer_mask.shape[:1] + (
        layer_outputs(intervenable, inputs)[0].shape[1],
    )
    torch.testing.assert_close(direct.sum(-1), intervenable.logprob(reqs, ["the red circle"] * 3, "und"))
    with torch.no_grad():
        dist = intervenable.answer_distributions(inputs, hidden)
    assert dist.shape[:2] == inputs.answer_mask.shape
    torch.testing.assert_close(dist.logsumexp(-1), torch.zeros(dist.shape[:2]), atol=1e-4, rtol=0)
    picked = dist.gather(-1, inputs.targets[..., None])[..., 0]
    torch.testing.assert_close(direct[inputs.answer_mask], picked[inputs.answer_mask])


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_span_positions_mark_where_the_prompts_start_to_differ(intervenable, items, direction):
    """Swapping the span's words for others leaves every earlier state unchanged and changes the span's."""
    wk = items["world_knowledge"]
    prompt = wk.und_prompt if direction == "und" else wk.gen_prompt
    name = prompt.rstrip(".").split()[-1]
    other = "Tave" if name != "Tave" else "Ziga"
    clean, corrupt = Request("a", prompt), Request("b", prompt.replace(name, other))
    positions = intervenable.span_positions(clean, name, direction)
    assert positions == sorted(positions) and positions
    a = layer_outputs(intervenable, intervenable.forward_inputs([clean], direction))
    b = layer_outputs(intervenable, intervenable.forward_inputs([corrupt], direction))
    first = positions[0]
    torch.testing.assert_close(a[0][0, :first], b[0][0, :first])
    assert not torch.allclose(a[0][0, first], b[0][0, first])
    with pytest.raises(ValueError):
        intervenable.span_positions(clean, "dragon", direction)


def test_nnsight_sees_what_hooks_see(intervenable, items):
    inputs = intervenable.forward_inputs(requests(items, "und"), "und")
    traced = NNsight(intervenable.module)
    saved = []
    with torch.no_grad(), traced.trace(*inputs.args, **inputs.kwargs):
        for layer in (
            traced.get(intervenable.layers_path) if hasattr(traced, "get") else _walk(traced, intervenable)
        ):
            out = layer.output
            saved.append(nnsight.save(out[0] if isinstance(out, tuple) else out))
    for s, h in zip(saved, layer_outputs(intervenable, inputs), strict=True):
        torch.testing.assert_close(s, h)


def _walk(traced, model: Intervenable):
    node = traced
    for name in model.layers_path.split("."):
        node = getattr(node, name)
    return node


def test_lora_on_the_targets_trains_and_leaves_the_base_intact(intervenable, items):
    reqs = requests(items, "und")[:2]
    answers = ["the red circle", "the red square"]
    before = {k: v.clone() for k, v in intervenable.module.state_dict().items()}
    with torch.no_grad():
        base = intervenable.logprob(reqs, answers, "und")
    wrapped = peft.get_peft_model(
        intervenable.module, peft.LoraConfig(r=2, lora_alpha=4, target_modules=intervenable.lora_targets)
    )
    try:
        adapted = {
            n.split(".lora_A")[0].removeprefix("base_model.model.")
            for n, _ in wrapped.named_parameters()
            if ".lora_A" in n
        }
        assert adapted == set(intervenable.lora_targets)
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        loss = -intervenable.logprob(reqs, answers, "und").sum()
        assert loss.requires_grad
        loss.backward()
        torch.optim.SGD(trainable, lr=1e-3).step()
        with torch.no_grad():
            after = intervenable.logprob(reqs, answers, "und")
        assert float(after.sum()) > float(base.sum())  # a small step up the gradient
    finally:
        wrapped.unload()
    with torch.no_grad():
        torch.testing.assert_close(intervenable.logprob(reqs, answers, "und"), base, atol=0, rtol=0)
    after_state = intervenable.module.state_dict()
    assert before.keys() == after_state.keys() and all(torch.equal(before[k], after_state[k]) for k in before)


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_decoding_passes_follow_the_documented_layout(intervenable, items, direction):
    """The prompt pass ends every request at its last column and ``prompt_rows`` picks the requests' rows;
    later passes are one token wide."""
    reqs = requests(items, direction)
    widths, rows = [], []

    def seen(t: torch.Tensor) -> None:
        widths.append(t.shape[1])
        rows.append(t.shape[0])

    from interventions.hooks import rewrite

    decode = intervenable.understand if direction == "und" else intervenable.generate
    with rewrite(intervenable, 0, "resid_post", seen):
        decode(reqs)
    prompt_passes = [k for k, w in enumerate(widths) if w > 1]
    assert prompt_passes and all(widths[k] == 1 for k in range(prompt_passes[-1] + 1, len(widths)))
    in_prompt = sum(len(range(rows[k])[intervenable.prompt_rows(rows[k], direction)]) for k in prompt_passes)
    assert in_prompt == len(reqs)
    assert max(widths) == max(
        int(intervenable.forward_inputs([r], direction).prompt_end[0]) + 1 for r in reqs
    )
