"""Conformance checks for model adapters: what the runner and the intervention tools rely on, checked by value.

The runner, editing, patching and probing code never look at an adapter's type; they trust the guarantees of
:class:`gapeval.models.base.UMM` and :class:`gapeval.models.base.Intervenable`. An adapter written for a model
the toolkit does not ship (``--model py:MODULE:FACTORY``) can break one of them silently — an answer position
off by one, padding that leaks into a row — and every number computed on it is then wrong without an error.
:func:`check_umm` and :func:`check_intervenable` run the checks on any adapter and raise
:class:`ConformanceError` (an ``AssertionError``) naming the first check that failed.

The checks compare numbers, so run them on a float32 instance (a tiny configuration, or the real model on the
CPU): their tolerances are float32's. They call ``understand``/``generate`` and may leave traces in an
adapter's run notes, so check a fresh adapter and build another for the run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from gapeval.models.base import UMM, ForwardPass, Intervenable, Request, final_hidden

DIRECTIONS = ("und", "gen")
UND_ANSWERS = ("the red circle", "the red square")  # share a prefix, then differ
PIXEL_ROUNDING = 1  # levels of 255 an image may differ by between a batch and a request alone


class ConformanceError(AssertionError):
    """An adapter broke the contract; ``check`` names the check (``run_check(model, check)`` reruns it)."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"conformance check {check!r} failed: {reason}")
        self.check = check


@dataclass(frozen=True)
class Inputs:
    """What the checks feed an adapter: three prompts per direction of different lengths (two with an input
    image), a prompt ending in a name (for spans) and a reference image (a generation answer)."""

    und: tuple[Request, ...]
    gen: tuple[Request, ...]
    named_und: str
    named_gen: str
    image: Image.Image

    def requests(self, direction: str) -> list[Request]:
        return list(self.und if direction == "und" else self.gen)


@functools.lru_cache(maxsize=1)
def default_inputs() -> Inputs:
    """Prompts from the synthetic suite (built in code, nothing read from disk)."""
    from gapeval.suites import get_suite

    items = {it.category: it for it in reversed(get_suite("synth:8").items)}
    chosen = [items["world_knowledge"], items["numerical_perception"], items["reasoning"]]
    wk = items["world_knowledge"]
    # Distinct seeds: a sampler that serves a batch from one seed answers differently alone.
    return Inputs(
        und=tuple(Request(it.id, it.und_prompt, it.image, seed=11 + i) for i, it in enumerate(chosen)),
        gen=tuple(Request(it.id, it.gen_prompt, it.image, seed=11 + i) for i, it in enumerate(chosen)),
        named_und=wk.und_prompt,
        named_gen=wk.gen_prompt,
        image=items["numerical_perception"].reference_image,
    )


Check = Callable[[Any, Inputs], None]


def expect(condition: bool, reason: str) -> None:
    """``assert`` that survives ``python -O``."""
    if not condition:
        raise AssertionError(reason)


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, **tolerance: float) -> None:
    """``torch.testing.assert_close`` on the CPU, with ``what`` in the message."""
    try:
        torch.testing.assert_close(actual.detach().cpu(), expected.detach().cpu(), **tolerance)
    except AssertionError as err:
        raise AssertionError(f"{what}: {err}") from None


def raises(error: type[Exception], call: Callable[[], Any], what: str) -> None:
    try:
        call()
    except error:
        return
    raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")


# ---- UMM: what the benchmark runner relies on ------------------------------------------------------------


def check_surface(model: Any, _inputs: Inputs) -> None:
    """A name, and a config that is JSON and stable (it keys the run: a changed config is a new run)."""
    expect(isinstance(model, UMM), f"{type(model).__name__} lacks name/config/understand/generate")
    expect(
        isinstance(model.name, str) and bool(model.name), f"name must be a non-empty str, got {model.name!r}"
    )
    config = model.config()
    expect(isinstance(config, dict), f"config() must return a dict, got {type(config).__name__}")
    try:
        first = json.dumps(config, sort_keys=True)
    except TypeError as err:
        raise AssertionError(f"config() is not JSON-serialisable: {err}") from None
    expect(first == json.dumps(model.config(), sort_keys=True), "config() changed between two calls")


def check_understand(model: Any, inputs: Inputs) -> None:
    """One text per request, in order, whatever the batch (a request alone answers the same)."""
    requests = inputs.requests("und")
    batched = model.understand(requests)
    expect(
        isinstance(batched, list) and len(batched) == len(requests),
        f"{len(requests)} requests, got {batched!r}",
    )
    expect(all(isinstance(t, str) for t in batched), f"answers must be str, got {batched!r}")
    alone = [model.understand([r])[0] for r in requests]
    expect(batched == alone, f"batched answers {batched!r} differ from each request alone {alone!r}")
    expect(model.understand([]) == [], "understand([]) must be []")


def check_generate(model: Any, inputs: Inputs) -> None:
    """One image per request, in order, whatever the batch: a request alone draws the same image, up to the
    pixel decoder's rounding (a batched convolution may round a pixel to the next of 255 levels)."""
    requests = inputs.requests("gen")
    batched = model.generate(requests)
    expect(
        isinstance(batched, list) and len(batched) == len(requests),
        f"{len(requests)} requests, got {batched!r}",
    )
    expect(all(isinstance(im, Image.Image) for im in batched), "images must be PIL images")
    for row, request in enumerate(requests):
        alone = np.asarray(model.generate([request])[0], dtype=np.int16)
        together = np.asarray(batched[row], dtype=np.int16)
        expect(
            alone.shape == together.shape and int(np.abs(alone - together).max()) <= PIXEL_ROUNDING,
            f"image {row} ({request.item_id}) differs between the batch and the request alone",
        )
    expect(model.generate([]) == [], "generate([]) must be []")


# ---- Intervenable: what editing, patching and probing rely on ----------------------------------------------


def layers(model: Intervenable) -> torch.nn.Module:
    return model.module.get_submodule(model.layers_path)


def first_tensor(output: Any) -> torch.Tensor:
    """A module's output tensor: itself, or the first element of a tuple (as decoder layers may return)."""
    return output[0] if isinstance(output, tuple) else output


def layer_outputs(model: Intervenable, inputs: ForwardPass) -> list[torch.Tensor]:
    """Every decoder layer's output (the residual stream after it) in one teacher-forced pass, on the CPU."""
    seen: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: seen.append(first_tensor(out).detach().cpu()))
        for layer in layers(model)
    ]
    try:
        with torch.no_grad():
            model.module(*inputs.args, **inputs.kwargs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def gen_answers(model: Intervenable, inputs: Inputs) -> tuple[list[int], list[int]]:
    """Two image answers as token ids sharing their first half: the reference image's tokens, and the same
    with the second half moved to other codes (the adapter's own image tokens, whatever their number)."""
    probe = model.forward_inputs(inputs.requests("gen")[:1], "gen", [inputs.image])
    with torch.no_grad():
        vocabulary = model.answer_distributions(probe, final_hidden(model, probe)).shape[-1]
    tokens = probe.targets[0][probe.answer_mask[0]].cpu()
    expect(len(tokens) >= 2, f"a reference image gave {len(tokens)} answer tokens")
    other = tokens.clone()
    other[len(tokens) // 2 :] = (other[len(tokens) // 2 :] + 1) % vocabulary
    return tokens.tolist(), other.tolist()


def answers_for(model: Intervenable, inputs: Inputs, direction: str) -> tuple[Any, Any]:
    return UND_ANSWERS if direction == "und" else gen_answers(model, inputs)


def check_frozen(model: Any, _inputs: Inputs) -> None:
    expect(isinstance(model, Intervenable), f"{type(model).__name__} lacks members of Intervenable")
    trainable = [n for n, p in model.module.named_parameters() if p.requires_grad]
    expect(not trainable, f"base weights must be frozen at load; trainable: {trainable[:5]}")


def check_paths(model: Intervenable, _inputs: Inputs) -> None:
    """The dotted paths resolve to what their names promise."""
    module = model.module
    stack = layers(model)
    expect(
        isinstance(stack, torch.nn.ModuleList) and len(stack) >= 2, "layers_path must be a ModuleList of >= 2"
    )
    expect(
        isinstance(module.get_submodule(model.hidden_path), torch.nn.Module), "hidden_path must be a module"
    )
    for layer in stack:
        for key in ("attn", "mlp", "mlp_out"):
            layer.get_submodule(model.components[key])
        expect(
            isinstance(layer.get_submodule(model.components["mlp_out"]), torch.nn.Linear), "mlp_out: a Linear"
        )
    targets = model.lora_targets
    expect(bool(targets), "lora_targets is empty")
    expect(
        all(isinstance(module.get_submodule(t), torch.nn.Linear) for t in targets),
        "a LoRA target is no Linear",
    )
    expect(all(t.startswith(model.layers_path + ".") for t in targets), "LoRA targets must lie in the layers")


def check_left_padding(model: Intervenable, inputs: Inputs, direction: str) -> None:
    """Batched rows equal the same request run alone, shifted by its offset (what ``columns`` maps)."""
    requests = inputs.requests(direction)
    batch = model.forward_inputs(requests, direction)
    batched = layer_outputs(model, batch)
    expect(
        len(batched) == len(layers(model)), f"{len(batched)} layer outputs for {len(layers(model))} layers"
    )
    width = batched[0].shape[1]
    for row, request in enumerate(requests):
        alone = model.forward_inputs([request], direction)
        single = layer_outputs(model, alone)
        n = single[0].shape[1]
        expect(int(alone.offsets[0]) == 0, "a request alone must have no left padding")
        expect(
            int(batch.offsets[row]) + n == width,
            f"row {row}: offset {int(batch.offsets[row])} + {n} != {width}",
        )
        end = batch.columns(row, [int(alone.prompt_end[0])])[0]
        expect(
            int(batch.prompt_end[row]) == end == width - 1,
            f"row {row}: prompt_end {int(batch.prompt_end[row])}, alone maps to {end}, last column {width - 1}",
        )
        for k, (b, s) in enumerate(zip(batched, single, strict=True)):
            # float32 sums in another order: tolerance relative to the residual stream's scale
            scale = float(s[0].abs().max())
            close(
                b[row, batch.columns(row, range(n))],
                s[0],
                f"layer {k}, row {row}: batched vs alone",
                atol=1e-5 * scale,
                rtol=1e-4,
            )


def check_answer_positions(model: Intervenable, inputs: Inputs, direction: str) -> None:
    """Two answers that share a prefix, then differ: each slot reads the state just before its token.

    The prompt's last column predicts the first answer token; at every slot up to the first differing token
    both answers see the same context (same distribution), and the log-probs differ only from that token on.
    A slot one column late would see its own token; one column early, the prompt's last column is skipped.
    """
    requests = inputs.requests(direction)[:1] * 2
    answers = list(answers_for(model, inputs, direction))
    values, mask = model.token_logprobs(requests, answers, direction)
    values, mask = values.detach().cpu(), mask.cpu()
    teacher = model.forward_inputs(requests, direction, answers)
    targets, answer_mask = teacher.targets.cpu(), teacher.answer_mask.cpu()
    expect(
        values.shape == mask.shape == targets.shape, f"shapes {values.shape}, {mask.shape}, {targets.shape}"
    )
    expect(torch.equal(mask, answer_mask), "token_logprobs' mask differs from forward_inputs' answer_mask")
    expect(
        bool((values[mask] <= 0).all()) and bool((values[~mask] == 0).all()), "log-probs > 0 or padding != 0"
    )
    if direction == "gen":
        check_image_answers(model, inputs, answers, targets, mask)
    prompt_only = model.forward_inputs(requests[:1], direction)
    unpadded_end = int(prompt_only.prompt_end[0] - prompt_only.offsets[0])
    for row in range(2):
        first = int(mask[row].long().argmax())
        expect(
            int(teacher.answer_positions[row, first]) == int(teacher.prompt_end[row]),
            f"row {row}: the first answer slot reads column {int(teacher.answer_positions[row, first])}, "
            f"not prompt_end {int(teacher.prompt_end[row])}",
        )
        expect(
            teacher.prompt_length(row) - 1 == unpadded_end,
            f"row {row}: prompt_end moves when an answer follows the prompt",
        )
    with torch.no_grad():
        dist = model.answer_distributions(teacher, final_hidden(model, teacher)).cpu()
    tokens = [targets[row][mask[row]] for row in range(2)]
    length = min(len(t) for t in tokens)
    differing = (tokens[0][:length] != tokens[1][:length]).nonzero()
    shared = int(differing[0]) if len(differing) else length
    expect(0 < shared < length, f"the answers' tokens {[t.tolist() for t in tokens]} share no proper prefix")
    v0, v1 = values[0][mask[0]], values[1][mask[1]]
    close(v0[:shared], v1[:shared], "log-probs over the shared prefix", atol=1e-5, rtol=0)
    expect(
        not torch.isclose(v0[shared], v1[shared], atol=1e-4),
        f"log-probs agree at answer token {shared}, where the answers differ",
    )
    close(
        dist[0][mask[0]][: shared + 1],
        dist[1][mask[1]][: shared + 1],
        f"distributions up to answer token {shared} (a slot sees a token it predicts)",
        atol=1e-5,
        rtol=1e-4,
    )


def check_image_answers(
    model: Intervenable, inputs: Inputs, answers: list[Any], targets: torch.Tensor, mask: torch.Tensor
) -> None:
    """Every image token is scored and nothing after it; an image scores as its own tokens."""
    n = len(answers[0])
    expect(mask.sum(1).tolist() == [n, n], f"{n} image tokens, {mask.sum(1).tolist()} scored")
    for row, answer in enumerate(answers):
        expect(targets[row][mask[row]].tolist() == answer, f"row {row}: targets are not the answer's tokens")
    with torch.no_grad():
        as_image = model.logprob(inputs.requests("gen")[:1], [inputs.image], "gen")
        as_tokens = model.logprob(inputs.requests("gen")[:1], answers[:1], "gen")
    close(as_image, as_tokens, "an image and its tokens score differently", atol=1e-5, rtol=1e-5)


def check_logprob_batching(model: Intervenable, inputs: Inputs, direction: str) -> None:
    """``logprob`` is a (B,) float tensor without gradients on frozen weights, whatever the batch."""
    requests = inputs.requests(direction)
    pair = answers_for(model, inputs, direction)
    answers = [pair[i % 2] for i in range(len(requests))]
    with torch.no_grad():
        together = model.logprob(requests, answers, direction)
        alone = torch.cat(
            [model.logprob([r], [a], direction) for r, a in zip(requests, answers, strict=True)]
        )
        values, _ = model.token_logprobs(requests, answers, direction)
    expect(tuple(together.shape) == (len(requests),), f"logprob shape {tuple(together.shape)}")
    expect(together.dtype.is_floating_point, f"logprob dtype {together.dtype}")
    close(together, alone, "logprob batched vs alone", atol=1e-4, rtol=1e-5)
    close(together, values.sum(-1), "logprob vs the sum of token_logprobs")
    with torch.enable_grad():
        expect(
            not model.logprob(requests[:1], answers[:1], direction).requires_grad,
            "gradients on frozen weights",
        )
    expect(tuple(model.logprob([], [], direction).shape) == (0,), "logprob([], []) must have shape (0,)")
    raises(ValueError, lambda: model.logprob(requests, answers[:1], direction), "mismatched requests/answers")


def check_hidden_path(model: Intervenable, inputs: Inputs, direction: str) -> None:
    """``hidden_path`` is what the heads read: distributions from it are normalised and agree with
    ``answer_logprobs`` and ``logprob``, and rewriting its output moves ``logprob`` as the heads predict."""
    requests = inputs.requests(direction)
    answer = answers_for(model, inputs, direction)[0]
    teacher = model.forward_inputs(requests, direction, [answer] * len(requests))
    with torch.no_grad():
        hidden = final_hidden(model, teacher)
        direct = model.answer_logprobs(teacher, hidden).cpu()
        dist = model.answer_distributions(teacher, hidden).cpu()
        expected = model.logprob(requests, [answer] * len(requests), direction)
    width = layer_outputs(model, teacher)[0].shape[1]
    expect(
        tuple(hidden.shape[:2]) == (len(requests), width), f"hidden {tuple(hidden.shape)}, {width} columns"
    )
    close(direct.sum(-1), expected, "answer_logprobs from hidden_path vs logprob")
    mask, targets = teacher.answer_mask.cpu(), teacher.targets.cpu()
    expect(dist.shape[:2] == mask.shape, f"distributions {tuple(dist.shape)} for slots {tuple(mask.shape)}")
    close(
        dist.logsumexp(-1), torch.zeros(dist.shape[:2]), "distributions are not normalised", atol=1e-4, rtol=0
    )
    picked = dist.gather(-1, targets[..., None])[..., 0]
    close(direct[mask], picked[mask], "answer_logprobs vs answer_distributions at the targets")
    # The heads read hidden_path's output and nothing computed after it: bend that output (elementwise, not
    # affinely, so a norm after it cannot undo the change) and logprob follows answer_logprobs on it.
    handle = model.module.get_submodule(model.hidden_path).register_forward_hook(
        lambda _m, _i, out: (bend(out[0]), *out[1:]) if isinstance(out, tuple) else bend(out)
    )
    try:
        with torch.no_grad():
            rewritten = model.logprob(requests, [answer] * len(requests), direction)
    finally:
        handle.remove()
    with torch.no_grad():
        bent = model.answer_logprobs(teacher, bend(hidden)).sum(-1)
    close(rewritten, bent, "logprob with hidden_path's output bent vs answer_logprobs on the bent states")
    expect(not torch.allclose(rewritten, expected), "bending hidden_path's output leaves logprob unchanged")


def bend(hidden: torch.Tensor) -> torch.Tensor:
    return hidden + torch.sin(3 * hidden)


def check_span_positions(model: Intervenable, inputs: Inputs, direction: str) -> None:
    """Swapping the span's word for another leaves every earlier state unchanged and changes the span's."""
    prompt = inputs.named_und if direction == "und" else inputs.named_gen
    name = prompt.rstrip(".").split()[-1]
    other = next(w for w in ("Tave", "Ziga") if w[0] != name[0])
    clean, corrupt = Request("clean", prompt), Request("corrupt", prompt.replace(name, other))
    positions = model.span_positions(clean, name, direction)
    expect(bool(positions) and positions == sorted(positions), f"positions of {name!r}: {positions}")
    a = layer_outputs(model, model.forward_inputs([clean], direction))[0][0]
    b = layer_outputs(model, model.forward_inputs([corrupt], direction))[0][0]
    first = positions[0]
    close(a[:first], b[:first], f"layer 0 before {name!r} (position {first})")
    expect(not torch.allclose(a[first], b[first]), f"layer 0 at {name!r} (position {first}) ignores the word")
    raises(ValueError, lambda: model.span_positions(clean, "dragon", direction), "a span not in the prompt")


def check_nnsight(model: Intervenable, inputs: Inputs) -> None:
    """nnsight, tracing ``module`` on ``forward_inputs``, reads the same layer outputs as plain hooks."""
    import nnsight
    from nnsight import NNsight

    teacher = model.forward_inputs(inputs.requests("und"), "und")
    traced = NNsight(model.module)
    node = traced
    for name in model.layers_path.split("."):
        node = getattr(node, name)
    saved = []
    with torch.no_grad(), traced.trace(*teacher.args, **teacher.kwargs):
        for layer in node:
            saved.append(nnsight.save(first_tensor(layer.output)))
    hooked = layer_outputs(model, teacher)
    expect(len(saved) == len(hooked), f"nnsight saw {len(saved)} layers, hooks {len(hooked)}")
    for k, (s, h) in enumerate(zip(saved, hooked, strict=True)):
        close(s, h, f"layer {k}: nnsight vs hooks")


def check_lora(model: Intervenable, inputs: Inputs) -> None:
    """peft LoRA on ``lora_targets`` adapts exactly them, trains through ``logprob``, and unloads cleanly."""
    import peft

    requests = inputs.requests("und")[:2]
    answers = list(UND_ANSWERS)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with torch.no_grad():
        base = model.logprob(requests, answers, "und")
    wrapped = peft.get_peft_model(
        model.module, peft.LoraConfig(r=2, lora_alpha=4, target_modules=model.lora_targets)
    )
    try:
        adapted = {
            n.split(".lora_A")[0].removeprefix("base_model.model.")
            for n, _ in wrapped.named_parameters()
            if ".lora_A" in n
        }
        expect(
            adapted == set(model.lora_targets), f"peft adapted {sorted(adapted ^ set(model.lora_targets))}"
        )
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        loss = -model.logprob(requests, answers, "und").sum()
        expect(loss.requires_grad, "logprob carries no gradient through LoRA weights")
        loss.backward()
        torch.optim.SGD(trainable, lr=1e-3).step()
        with torch.no_grad():
            after = model.logprob(requests, answers, "und")
        expect(float(after.sum()) > float(base.sum()), "a step up the gradient did not raise the log-prob")
    finally:
        wrapped.unload()
    with torch.no_grad():
        close(model.logprob(requests, answers, "und"), base, "log-probs after unloading LoRA", atol=0, rtol=0)
    state = model.module.state_dict()
    expect(before.keys() == state.keys(), "unloading LoRA changed the module's weight names")
    changed = [k for k in before if not torch.equal(before[k], state[k])]
    expect(not changed, f"LoRA training changed base weights: {changed[:5]}")


def check_decoding_layout(model: Intervenable, inputs: Inputs, direction: str) -> None:
    """Decoding runs one prompt pass per (sub-)batch ending each request at its last column, then one token
    per pass; ``prompt_rows`` picks the rows that hold requests, and a request's prompt pass is what
    ``forward_inputs`` runs (so patching and probing see what decoding sees)."""
    requests = inputs.requests(direction)
    shapes = [tuple(t.shape[:2]) for t in decoding_passes(model, requests, direction)]
    prompt_passes = [k for k, (_, w) in enumerate(shapes) if w > 1]
    expect(bool(prompt_passes), "no pass wider than one token: the prompt never ran in one pass")
    later = [w for _, w in shapes[prompt_passes[-1] + 1 :]]
    expect(all(w == 1 for w in later), f"passes after the prompt pass are {sorted(set(later))} tokens wide")
    held = sum(len(range(shapes[k][0])[model.prompt_rows(shapes[k][0], direction)]) for k in prompt_passes)
    expect(held == len(requests), f"prompt_rows picks {held} rows for {len(requests)} requests")
    longest = max(int(model.forward_inputs([r], direction).prompt_end[0]) + 1 for r in requests)
    widest = max(w for _, w in shapes)
    expect(widest == longest, f"widest pass {widest} columns, longest prompt {longest}")
    alone = decoding_passes(model, requests[-1:], direction)[0]
    taught = layer_outputs(model, model.forward_inputs(requests[-1:], direction))[0]
    rows = alone[model.prompt_rows(alone.shape[0], direction)]
    expect(
        rows.shape == taught.shape, f"prompt pass {tuple(rows.shape)}, forward_inputs {tuple(taught.shape)}"
    )
    scale = float(taught.abs().max())
    close(rows, taught, "layer 0 in the prompt pass vs forward_inputs", atol=1e-5 * scale, rtol=1e-4)


def decoding_passes(model: Intervenable, requests: Sequence[Request], direction: str) -> list[torch.Tensor]:
    """Layer 0's output in every forward pass of ``understand``/``generate`` on ``requests``, on the CPU."""
    seen: list[torch.Tensor] = []

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        seen.append(first_tensor(out).detach().cpu())

    handle = layers(model)[0].register_forward_hook(hook)
    try:
        (model.understand if direction == "und" else model.generate)(requests)
    finally:
        handle.remove()
    return seen


def per_direction(check: Callable[[Any, Inputs, str], None]) -> dict[str, Check]:
    return {
        f"{check.__name__.removeprefix('check_')}:{d}": functools.partial(check, direction=d)
        for d in DIRECTIONS
    }


UMM_CHECKS: dict[str, Check] = {
    "surface": check_surface,
    "understand": check_understand,
    "generate": check_generate,
}
INTERVENABLE_CHECKS: dict[str, Check] = {
    **UMM_CHECKS,
    "frozen": check_frozen,
    "paths": check_paths,
    **per_direction(check_left_padding),
    **per_direction(check_answer_positions),
    **per_direction(check_logprob_batching),
    **per_direction(check_hidden_path),
    **per_direction(check_span_positions),
    "nnsight": check_nnsight,
    "lora": check_lora,
    **per_direction(check_decoding_layout),
}


def run_check(model: Any, name: str, inputs: Inputs | None = None) -> None:
    """Run one check by name; any failure, or any error the adapter raises in it, is a ConformanceError."""
    if name not in INTERVENABLE_CHECKS:
        raise ValueError(f"unknown check {name!r}; known: {', '.join(INTERVENABLE_CHECKS)}")
    try:
        INTERVENABLE_CHECKS[name](model, inputs or default_inputs())
    except Exception as err:
        reason = str(err) if isinstance(err, AssertionError) else f"{type(err).__name__}: {err}"
        raise ConformanceError(name, reason) from err


def run_checks(model: Any, names: Iterable[str], inputs: Inputs | None = None) -> None:
    for name in names:
        run_check(model, name, inputs)


def check_umm(model: Any, inputs: Inputs | None = None) -> None:
    """Check a benchmark-only adapter (``UMM``): what ``gapeval run`` relies on."""
    run_checks(model, UMM_CHECKS, inputs)


def check_intervenable(model: Any, inputs: Inputs | None = None, skip: Sequence[str] = ()) -> None:
    """Check an ``Intervenable`` adapter: the UMM checks plus what editing, patching and probing rely on.

    ``skip`` names checks to leave out (e.g. ``"nnsight"`` where it is not installed)."""
    unknown = sorted(set(skip) - set(INTERVENABLE_CHECKS))
    if unknown:
        raise ValueError(f"unknown checks to skip {unknown}; known: {', '.join(INTERVENABLE_CHECKS)}")
    run_checks(model, [n for n in INTERVENABLE_CHECKS if n not in skip], inputs)
