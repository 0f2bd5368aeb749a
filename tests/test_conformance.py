"""The adapter contract (gapeval.models.base.Intervenable), checked by the kit in gapeval.testing.

Every adapter of the ``intervenable`` fixture runs every check (one test each, so a failure names the adapter
and the check). Then the kit itself: each check fails on an adapter broken in the way it guards against (the
worked example in examples/, with one member broken).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from gapeval.testing import INTERVENABLE_CHECKS, ConformanceError, check_intervenable, run_check


@pytest.mark.parametrize("check", list(INTERVENABLE_CHECKS))
def test_contract(intervenable, check: str) -> None:
    run_check(intervenable, check)


# ---- the kit can fail --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Any:
    """The example adapter's class, imported from the repository root."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
        from examples import tiny_umm_adapter

    return tiny_umm_adapter


def broken(example: Any, **members: Any) -> Any:
    """A fresh example adapter whose class overrides ``members`` (methods, or properties as plain values)."""
    adapter = example.build()
    base = example.TinyUMMAdapter
    attrs = {k: v if callable(v) else property(lambda _self, v=v: v) for k, v in members.items()}
    adapter.__class__ = type("Broken", (base,), attrs)
    return adapter


def shifted_inputs(base: Callable, **change: Callable[[Any], Any]) -> Callable:
    """``forward_inputs`` with some fields of its ForwardPass rewritten."""

    def forward_inputs(self: Any, *args: Any, **kwargs: Any) -> Any:
        inputs = base(self, *args, **kwargs)
        return replace(inputs, **{k: f(inputs) for k, f in change.items()})

    return forward_inputs


def unfrozen(example: Any) -> Any:
    adapter = example.build()
    adapter.module.layers[0].mlp.up_proj.weight.requires_grad_(True)
    return adapter


def unused_layers(example: Any) -> Any:
    adapter = broken(example, layers_path="shadow")
    adapter.module.shadow = copy.deepcopy(adapter.module.layers)  # resolves, but the forward never runs it
    return adapter


def breaks(example: Any) -> dict[str, Callable[[], Any]]:
    """Per check, an adapter broken the way that check guards against."""
    base = example.TinyUMMAdapter
    forward = base.forward_inputs
    return {
        "surface": lambda: broken(example, config=lambda self: {"layers": {2}}),  # a set is no JSON
        "understand": lambda: broken(example, understand=lambda self, rs: base.understand(self, rs[::-1])),
        "generate": lambda: broken(example, generate=lambda self, rs: base.generate(self, rs[::-1])),
        "frozen": lambda: unfrozen(example),
        "paths": lambda: broken(example, components={"attn": "self_attn", "mlp": "mlp", "mlp_out": "mlp"}),
        "left_padding:gen": lambda: broken(
            example, forward_inputs=shifted_inputs(forward, offsets=lambda i: i.offsets * 0)
        ),
        "answer_positions:und": lambda: broken(  # one column early
            example, forward_inputs=shifted_inputs(forward, answer_positions=lambda i: i.answer_positions - 1)
        ),
        "answer_positions:gen": lambda: broken(  # one column late: a slot sees the token it predicts
            example,
            forward_inputs=shifted_inputs(
                forward, answer_positions=lambda i: (i.answer_positions + 1).clamp(max=i.args[0].shape[1] - 1)
            ),
        ),
        "logprob_batching:und": lambda: broken(  # padding leaks into the rows
            example,
            forward_inputs=shifted_inputs(forward, args=lambda i: (i.args[0], torch.ones_like(i.args[1]))),
        ),
        "hidden_path:und": lambda: broken(  # logits, not log-probabilities
            example, answer_distributions=lambda self, i, h: base.answer_distributions(self, i, h).exp()
        ),
        "span_positions:gen": lambda: broken(
            example,
            span_positions=lambda self, *a: [p + 1 for p in base.span_positions(self, *a)],
        ),
        "nnsight": lambda: unused_layers(example),
        "lora": lambda: broken(example, logprob=lambda self, *a: base.logprob(self, *a).detach()),
        "decoding_layout:und": lambda: broken(example, prompt_rows=lambda self, rows, d: slice(0, rows // 2)),
        "decoding_layout:gen": lambda: broken(  # teacher forcing forgets the input image decoding reads
            example,
            forward_inputs=lambda self, rs, d, a=None: forward(
                self, [replace(r, image=None) for r in rs], d, a
            ),
        ),
    }


CAUGHT = [
    "surface",
    "understand",
    "generate",
    "frozen",
    "paths",
    "left_padding:gen",
    "answer_positions:und",
    "answer_positions:gen",
    "logprob_batching:und",
    "hidden_path:und",
    "span_positions:gen",
    "nnsight",
    "lora",
    "decoding_layout:und",
    "decoding_layout:gen",
]


def test_every_check_has_a_broken_adapter() -> None:
    kinds = {name.split(":")[0] for name in INTERVENABLE_CHECKS}
    assert kinds == {name.split(":")[0] for name in CAUGHT}


@pytest.mark.parametrize("check", CAUGHT)
def test_each_check_fails_on_an_adapter_broken_its_way(example, check: str) -> None:
    adapter = breaks(example)[check]()
    run_check(example.build(), check)  # the unbroken example passes it
    with pytest.raises(ConformanceError, match=f"'{check}' failed") as failure:
        run_check(adapter, check)
    assert failure.value.check == check


def test_check_intervenable_names_the_first_failing_check(example) -> None:
    with pytest.raises(ConformanceError, match="'frozen' failed: base weights must be frozen") as failure:
        check_intervenable(unfrozen(example), skip=["understand", "generate"])
    assert isinstance(failure.value, AssertionError) and failure.value.check == "frozen"
    with pytest.raises(ValueError, match="unknown checks"):
        check_intervenable(example.build(), skip=["colour"])
