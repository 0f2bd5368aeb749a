"""Edit measurements one can defend: paired decisions with their power, held-out locality, output agreement,
the locate closed form and a subject-keyed write, the bridge positive control and refused bad input."""

from __future__ import annotations

import pytest
import torch

from gapeval.synth.suite import item_key
from gapeval.synth.world import World
from interventions.editing.metrics import (
    holm,
    joint_outcomes,
    locality,
    locality_verdict,
    mcnemar_greater,
    min_detectable_rate,
    net_logprob_shift,
    propagation,
    propagation_cases,
    sign_test,
)
from interventions.editing.ranges import Range, out_of_range
from interventions.editing.specs import hold_out, split_realms, synth_specs

WORLD = World(0)


# --- paired decisions ----------------------------------------------------------------------------------


def test_exact_mcnemar_of_a_known_table():
    # 9 pairs flipped up, 1 down: P(X >= 9 | n = 10, 1/2) = (10 + 1) / 1024
    assert mcnemar_greater([[5, 1], [9, 3]]) == pytest.approx(11 / 1024)
    assert sign_test(0, 0) == 1.0 and sign_test(3, 0) == pytest.approx(1 / 8)


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_min_detectable_rate_exact_for_small_n():
    # one-sided sign test with no flip down: p = 2^-k; k = 5 is the first with p <= 0.05
    assert min_detectable_rate(12) == pytest.approx(5 / 12)
    assert min_detectable_rate(5) == 1.0 and min_detectable_rate(4) is None
    # after Holm over 16 cases the strictest step is 0.05 / 16: k = 9 (2^-9 = 0.00195 <= 0.003125 < 2^-8)
    assert min_detectable_rate(12, family=16) == pytest.approx(9 / 12)
    assert min_detectable_rate(45, family=16) == pytest.approx(9 / 45) and 9 / 45 <= 0.20


def _rec(condition, role, item, direction, correct, edit="e0", **extra):
    return {"condition": condition, "role": role, "item": item, "direction": direction, "correct": correct,
            "edit": edit, **extra}  # fmt: skip


def _propagating(up: int, edits: int) -> list[dict]:
    records = []
    for k in range(edits):
        for condition in ("baseline", "und"):
            moved = condition == "und" and k < up
            records += [
                _rec(condition, "target", f"t{k}", "und", condition == "und", f"e{k}"),
                _rec(condition, "target", f"t{k}", "gen", moved, f"e{k}"),
            ]
    return records


def test_propagation_pairs_each_edit_with_its_own_baseline():
    case = propagation(_propagating(6, 8), "und")
    assert (case["via"], case["to"], case["up"], case["down"], case["edits"]) == ("und", "gen", 6, 0, 8)
    assert case["rate"] == 0.75 and case["baseline"] == 0.0 and case["p"] == pytest.approx(1 / 64)
    assert case["detected"] and case["min_detectable_rate"] == pytest.approx(5 / 8)
    weak = propagation(_propagating(4, 8), "und")  # 2^-4 = 0.0625: not enough at 8 edits
    assert not weak["detected"] and weak["rate"] == 0.5
    (entry,) = propagation_cases(_propagating(6, 8), ["baseline", "und"])
    keys = {"via", "to", "rate", "ci", "baseline", "p", "detected", "min_detectable_rate"}
    assert keys <= set(entry) and "p_holm" not in entry  # a single case: nothing to correct


def test_net_logprob_shift_removes_a_subject_nonspecific_shift():
    def rec(condition, new, old, ctl_new, ctl_old):
        return _rec(condition, "target", "t0", "gen", False, logp_new=new, logp_old=old,
                    control_logp_new=ctl_new, control_logp_old=ctl_old)  # fmt: skip

    records = [rec("baseline", -9.0, -1.0, -8.0, -1.0), rec("und", -4.0, -1.0, -5.0, -1.0)]
    # subject: +5; the control realm moved +3 the same way: net +2
    assert net_logprob_shift(records, "und", "gen")["mean"] == pytest.approx(2.0)


def test_locality_headline_is_output_agreement():
    records = [
        _rec("baseline", "locality", "l0", "und", False, output="red circle"),
        _rec("und", "locality", "l0", "und", False, output="blue square"),  # wrong → another wrong
        _rec("baseline", "locality", "l1", "und", True, output="a"),
        _rec("und", "locality", "l1", "und", True, output="a"),
    ]
    assert locality(records, "und", "und")["mean"] == 0.5
    assert locality_verdict(records, "und", "und")["mean"] == 1.0


def test_joint_outcomes_of_targets():
    records = _propagating(2, 4)
    joint = joint_outcomes(records, "und")
    assert (joint["p11"], joint["p10"], joint["p01"], joint["p00"], joint["n"]) == (0.5, 0.5, 0.0, 0.0, 4)


# --- held-out locality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["edit", "inject"])
def test_locality_retain_and_corpus_are_disjoint_by_realm(kind):
    from gapeval.suites import get_suite

    pool = get_suite("synth").items
    specs = synth_specs(WORLD, kind, 12, seed=1)
    keep, held = split_realms(WORLD, specs, seed=1)
    edited = {s.subject for s in specs}
    assert keep and held and not set(keep) & set(held) and not (set(keep) | set(held)) & edited
    split = hold_out(WORLD, specs, pool, seed=1)
    assert split.controls == held

    def realms(items):
        return {i.meta.get("realm") for i in items if i.category == "world_knowledge"}

    assert realms(split.locality) and realms(split.locality) <= set(held)
    assert realms(split.retain) and realms(split.retain) <= set(keep)
    assert realms(split.corpus) and realms(split.corpus) <= set(keep)
    shown = {item_key(i) for i in split.locality}
    assert not shown & {item_key(i) for i in split.retain + split.corpus}
    for items in (split.locality, split.retain, split.corpus):
        assert not any(s.mentions(i.und_prompt) or s.mentions(i.gen_prompt) for s in specs for i in items)
    assert split_realms(WORLD, specs, seed=1) == (keep, held) != split_realms(WORLD, specs, seed=2)


# --- locate --------------------------------------------------------------------------------------------


def test_closed_form_maps_each_key_to_its_residual():
    from interventions.editing.locate import closed_form_update

    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(5, 12, generator=gen)  # 5 linearly independent keys in 12 dimensions
    residual = torch.randn(5, 7, generator=gen)
    update = closed_form_update(keys, residual)  # λ = 0, no kept keys
    torch.testing.assert_close(keys @ update.T, residual, atol=1e-4, rtol=1e-4)


def test_a_subject_keyed_edit_succeeds_where_the_answer_reads_the_subject():
    """The built-in UMM reads the realm's name from its position at every answer token (docs/patching.md), so
    a value written at the subject's last token of a layer below the last reaches the answer."""
    from gapeval.models.base import Request
    from gapeval.models.toy.adapter import ToyAdapter
    from gapeval.suites import get_suite
    from interventions.editing.locate import LocateEditor

    toy = ToyAdapter.from_spec("shared")
    (spec,) = synth_specs(WORLD, "edit", 6)[:1]
    editor = LocateEditor(key_site="subject", corpus=get_suite("synth:40").items)
    requests = [Request(spec.id, p) for p in spec.train["und"]]
    assert all(a.strip() != spec.new.text for a in toy.understand(requests))
    with editor.apply(toy, [spec], via="und"):
        assert [a.strip() for a in toy.understand(requests)] == [spec.new.text] * len(requests)


# --- bad input -----------------------------------------------------------------------------------------


def test_ranges_name_the_option():
    assert out_of_range({"max_steps": 0}, {"max_steps": Range(1)}, "--editor-arg {}") == (
        "--editor-arg max_steps must be in [1, inf), got 0"
    )
    assert (
        out_of_range({"p": 1.0}, {"p": Range(0, 1, open_lo=True, open_hi=True)})
        == "p must be in (0, 1), got 1.0"
    )
    assert out_of_range({"layers": (0, 2)}, {"layers": Range(0)}) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--edits", "-3"], "--edits must be in [1, inf), got -3"),
        (["--edits", "49"], "--edits must be in [1, 48] for edit specs"),
        (["--editor-arg", "max_steps=0"], "--method lora: --editor-arg max_steps must be in [1, inf), got 0"),
        (["--method", "locate", "--editor-arg", "value_target_p=1.5"], "value_target_p must be in (0, 1)"),
        (["--method", "embedding", "--editor-arg", "lr=0"], "--editor-arg lr must be in (0, inf), got 0"),
        (["--locality-world", "-1"], "--locality-world must be in [0, inf), got -1"),
        (["--threads", "0"], "--threads must be in [1, inf), got 0"),
    ],
)
def test_bad_numbers_are_refused_up_front(tmp_path, capsys, argv, message):
    from gapeval.cli import main

    # a model spec that cannot load: the check must come first
    out = tmp_path / "o"
    assert main(["edit", "--model", "toy:/no/such/checkpoint", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


# --- the positive control ------------------------------------------------------------------------------


def test_bridge_is_a_model_spec_that_draws_its_own_answer():
    from gapeval.models.base import Intervenable, Request
    from gapeval.models.bridge import synth_question
    from gapeval.models.registry import load_model

    assert synth_question("Draw the emblem of the realm founded by Tave.") == (
        "What is the emblem of the realm founded by Tave?"
    )
    assert synth_question("Count the circles.") is None
    model = load_model("bridge:toy")
    assert isinstance(model, Intervenable) and model.embed_path == "embed_tokens"
    realm = WORLD.realms[0]
    (image,) = model.generate([Request("not-in-any-suite", f"Draw the emblem of {realm.name}.")])
    assert model.transcript["not-in-any-suite"]["prompt"].startswith("Draw: ")
    assert image.size == model.model.generate([Request("x", "Draw: red circle at r0c0.")])[0].size


def test_gapeval_edit_detects_propagation_on_the_bridge(tmp_path, capsys):
    """The positive control end to end: a text-only edit of the model behind reason-then-draw reaches its
    pictures, and the same decision rule that finds nothing on the plain toy says so."""
    import json

    from gapeval.cli import main

    out = tmp_path / "bridge"
    argv = [
        "edit",
        "--model",
        "bridge:toy",
        "--edits",
        "6",
        "--conditions",
        "baseline,und",
        "--out",
        str(out),
    ]
    assert main([*argv, "--locality-world", "4", "--locality-other", "1"]) == 0
    (case,) = json.loads((out / "summary.json").read_text())["propagation"]
    assert (case["via"], case["to"], case["detected"]) == ("und", "gen", True)
    assert case["p"] <= 1 / 64 and case["min_detectable_rate"] == pytest.approx(5 / 6)
    assert "propagation: Train-on-Und → gen" in capsys.readouterr().out
