"""Probes: capture through nnsight, grouped probes with controls and transfer, erasers, erasure in the forward.

Statistics are checked on planted synthetic states; everything that touches a model takes the ``intervenable``
fixture, so it runs on the toy (both variants) and tiny Janus without knowing which it holds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression, RidgeClassifier

from gapeval.models.base import final_hidden
from gapeval.suites import get_suite
from gapeval.synth.world import World
from interventions.hooks import HookPoint, recording, residual_stream
from probes.capture import POSITIONS, capture, load_states, pooling, position_columns
from probes.dataset import item_span, world_knowledge_items, world_knowledge_set
from probes.erase import Where, erased_accuracy, erased_records, erasing, where
from probes.erasers import Eraser, fit_leace, fit_mean_projection, matched_random, random_eraser
from probes.linear import (
    cluster_ci,
    grouped_folds,
    holm,
    majority_share,
    p_value,
    probe,
    ridge_predict,
    shuffled_labels,
    standardise,
)
from probes.names import label_in_input
from probes.probe_report import plot, table
from probes.probe_run import probe_study
from probes.untrained import untrained

# --- statistics on synthetic states ----------------------------------------------------------------------


def planted(
    seed: int = 0, n_types: int = 40, per_type: int = 6, d: int = 24, classes: int = 4, axes: int = 0
):
    """States with the label written along one random direction per class (drawn from ``axes``), plus noise;
    types = entities."""
    rng = np.random.default_rng(seed)
    type_label = rng.integers(0, classes, n_types)
    types = np.repeat(np.arange(n_types), per_type)
    labels = type_label[types]
    directions = np.random.default_rng(1000 + axes).normal(size=(classes, d))
    states = rng.normal(size=(len(types), d)) + 3.0 * directions[labels]
    return states, labels, types


def within(states, labels, types, shuffles=None):
    scores, nulls = probe(states, {"x": states}, labels, grouped_folds(types), shuffles)
    return scores["x"], nulls.get("x")


def test_the_probe_is_scikit_learns_ridge_classifier():
    """The closed form fits every labelling at once; for one labelling it is RidgeClassifier on scaled states."""
    states, labels, types = planted(d=24)
    other, _, _ = planted(seed=1, d=24)
    train, test = grouped_folds(types)[0]
    x_train, x_test = standardise(states[train], states[test])
    got = ridge_predict(x_train, labels[None, train], [x_test], 4)[0][0]
    want = RidgeClassifier(alpha=10.0).fit(x_train, labels[train]).predict(x_test)
    np.testing.assert_array_equal(got, want)
    wide = np.concatenate([states, other, other], 1)  # more features than rows: the dual form
    x_train, x_test = standardise(wide[train[:50]], wide[test])
    got = ridge_predict(x_train, labels[None, train[:50]], [x_test], 4)[0][0]
    want = RidgeClassifier(alpha=10.0).fit(x_train, labels[train[:50]]).predict(x_test)
    np.testing.assert_array_equal(got, want)


def test_a_planted_feature_passes_the_permutation_test_and_noise_fails_it():
    states, labels, types = planted()
    shuffles = shuffled_labels(labels, types, np.zeros_like(types), 200, seed=0)
    score, null = within(states, labels, types, shuffles)
    assert score.mean == 1.0 and len(score.folds) == 4
    assert p_value(score.mean, null) == 1 / 201  # no shuffle reaches it
    assert abs(null.mean() - 0.27) < 0.05  # shuffled realms' labels: near the majority share (0.275)
    ps = []  # states that carry no label: p-values spread evenly over (0, 1]
    for seed in range(30):
        noise = np.random.default_rng(100 + seed).normal(size=states.shape)
        score, null = within(noise, labels, types, shuffles[:100])
        ps.append(p_value(score.mean, null))
    assert 0.35 < np.mean(ps) < 0.65 and sum(p < 0.05 for p in ps) <= 4


def test_shuffles_keep_one_label_per_unit_and_the_class_shares():
    _, labels, types = planted()
    for train, test in grouped_folds(types):
        assert not set(types[train]) & set(types[test])
    shuffles = shuffled_labels(labels, types, np.zeros_like(types), 20, seed=3)
    for row in shuffles:
        assert all(len(set(row[types == t])) == 1 for t in np.unique(types))
        assert np.array_equal(np.bincount(row, minlength=4), np.bincount(labels, minlength=4))
    assert not (shuffles == labels).all(1).any()
    full = world_knowledge_set(World(0))  # realm facts: realms swap labels; entity: rows within a template
    units, blocks = full.permutation_units("colour")
    assert np.array_equal(units, full.entities()) and not blocks.any()
    units, blocks = full.permutation_units("entity")
    assert np.array_equal(units, np.arange(len(full))) and np.array_equal(blocks, full.templates())
    assert np.array_equal(full.groups("colour"), full.entities())
    assert np.array_equal(full.groups("entity"), full.templates())
    blocks = np.arange(len(labels)) % 6  # entity: rows are units, shuffled within their template
    rows = shuffled_labels(labels, np.arange(len(labels)), blocks, 5, seed=0)
    for b in range(6):
        assert all(sorted(r[blocks == b]) == sorted(labels[blocks == b]) for r in rows)


def test_transfer_uses_each_directions_own_scaler_and_fails_when_encodings_differ():
    states, labels, types = planted()
    other, same, _ = planted(axes=1)  # the same labels, written along other directions
    assert np.array_equal(same, labels)
    folds = grouped_folds(types)
    moved = 5.0 * states + 40.0  # the same code, shifted and rescaled: its own scaler undoes it exactly
    scores, _ = probe(states, {"acc": states, "moved": moved, "other": other}, labels, folds)
    assert scores["acc"].mean == 1.0 and np.array_equal(scores["moved"].correct, scores["acc"].correct)
    assert scores["other"].mean < 0.6
    back, _ = probe(other, {"acc": other, "other": states}, labels, folds)
    assert back["acc"].mean == 1.0 and back["other"].mean < 0.6


def test_holm_and_the_cluster_bootstrap():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    clusters = np.repeat(np.arange(10), 3)
    assert cluster_ci(np.ones(30), clusters) == (1.0, 1.0)
    values = np.repeat([1.0, 0.0], 15)  # half the clusters right, half wrong
    low, high = cluster_ci(values, clusters, n=2000)
    assert 0.15 < low < 0.35 and 0.65 < high < 0.85
    assert cluster_ci(np.stack([np.ones(30), values]), clusters, n=2000) == pytest.approx(
        (1 - high, 1 - low), abs=0.05
    )


@pytest.mark.parametrize("fit", [fit_leace, fit_mean_projection])
def test_erasers_remove_the_linear_feature_and_the_matched_control_keeps_it(fit):
    states, labels, _ = planted(d=24)
    x = torch.as_tensor(states, dtype=torch.float32)
    eraser = fit(x, labels)
    assert eraser.rank == 3  # classes - 1
    control = matched_random(eraser, x, seed=0)
    assert control.rank == eraser.rank
    assert control.perturbation(x) == pytest.approx(eraser.perturbation(x), rel=1e-6)  # the same size of edit
    assert random_eraser(eraser.bias, eraser.rank, seed=0).perturbation(x) < eraser.perturbation(x) / 2
    in_sample = LogisticRegression(max_iter=2000)
    kept = control(x).numpy()
    assert in_sample.fit(kept, labels).score(kept, labels) > 0.95
    erased = eraser(x).numpy()
    if fit is fit_leace:  # LEACE's guarantee: no linear classifier beats a constant on the fitted states
        assert in_sample.fit(erased, labels).score(erased, labels) < majority_share(labels) + 0.1


def test_positions_whose_input_holds_the_label_are_refused(tmp_path):
    assert label_in_input("last", "colour") is None and label_in_input("entity", "colour") is None
    assert "teacher-forced answer" in label_in_input("answer", "shape")
    assert "the label itself" in label_in_input("entity_last", "entity")
    with pytest.raises(ValueError, match="would read the label from the input"):
        probe_study(None, "colour", "answer", tmp_path)  # refused before the model is touched


# --- on every intervenable adapter -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_set():
    """Realms of every colour, one-hop and two-hop prompts of different lengths."""
    full = world_knowledge_set(World(0))
    rows, colours = [], set()
    for i, row in enumerate(full.rows):
        if row["colour"] not in colours or len(rows) < 8 and row["phrasing"] == i % 3:
            colours.add(row["colour"])
            rows.append(i)
    return full.subset(rows[:10])


def single_forward_states(model, request, direction, answer=None):
    """Every captured layer's states of one request alone, read with plain hooks: (L + 1, T, d)."""
    fp = model.forward_inputs([request], direction, None if answer is None else [answer])
    sites = residual_stream(model)
    with torch.no_grad(), recording(model, sites) as seen:
        model.module(*fp.args, **fp.kwargs)
    return fp, torch.stack([seen[s][0][0] for s in sites]).float()


@pytest.fixture(scope="module")
def captured(intervenable, probe_set, tmp_path_factory):
    return capture(
        intervenable, probe_set, tmp_path_factory.mktemp("states"), POSITIONS, batch_size=4, progress=False
    )


def test_capture_matches_a_single_request_read_with_hooks(intervenable, probe_set, captured):
    n_layers = len(intervenable.module.get_submodule(intervenable.layers_path))
    for direction in ("und", "gen"):
        states = {p: load_states(captured, direction, p) for p in POSITIONS}
        for s in states.values():
            assert s.shape[:2] == (len(probe_set), n_layers + 1) and s.dtype == torch.float32
        for row in (0, len(probe_set) - 1):  # first and last batch, different padding
            request, span = probe_set.requests[direction][row], probe_set.spans[row]
            answer = probe_set.answers[direction][row]
            fp, alone = single_forward_states(intervenable, request, direction, answer)
            for p in POSITIONS:
                cols = position_columns(intervenable, fp, [request], [span], p)[0]
                torch.testing.assert_close(states[p][row], alone[:, cols].mean(1), atol=2e-5, rtol=1e-4)
            assert position_columns(intervenable, fp, [request], [span], "last")[0] == [int(fp.prompt_end[0])]
        assert not torch.allclose(states["last"][:, -1], states["entity"][:, -1])


def test_erase_hook_acts_inside_the_block_and_restores_the_model(intervenable, probe_set):
    fp = intervenable.forward_inputs(probe_set.requests["und"][:3], "und")
    with torch.no_grad():
        before = final_hidden(intervenable, fp)
        d = before.shape[-1]
        eraser = random_eraser(torch.zeros(d), rank=d // 2, seed=0)
        with erasing(intervenable, HookPoint(1, "resid_pre"), eraser, Where(None, True)):
            inside = final_hidden(intervenable, fp)
        after = final_hidden(intervenable, fp)
    assert not torch.allclose(before, inside, atol=1e-3)
    torch.testing.assert_close(before, after, atol=0, rtol=0)


def test_erasing_at_a_relative_position_touches_only_that_column(intervenable, probe_set):
    requests, spans = probe_set.requests["gen"][:4], probe_set.spans[:4]  # different lengths: padding differs
    fp = intervenable.forward_inputs(requests, "gen")
    point = HookPoint(
        1, "resid_pre"
    )  # captured layer 1; a hook registered after the erasure reads its output
    for position in ("entity", "last"):
        ats = [where(intervenable, r, "gen", position, s) for r, s in zip(requests, spans, strict=True)]
        with torch.no_grad():
            with recording(intervenable, [point]) as seen:
                intervenable.module(*fp.args, **fp.kwargs)
            (clean,) = seen[point]
            eraser = random_eraser(torch.zeros(clean.shape[-1]), rank=4, seed=0)
            with erasing(intervenable, point, eraser, ats[0]), recording(intervenable, [point]) as seen:
                intervenable.module(*fp.args, **fp.kwargs)
            (erased,) = seen[point]
        width = clean.shape[1]
        for b, at in enumerate(ats):  # relative columns land on each row's own columns in a padded batch
            assert [width + r for r in at.relative] == position_columns(
                intervenable, fp, requests, spans, position
            )[b]
        changed = (clean - erased).abs().amax(-1).amax(0) > 1e-6
        assert changed.nonzero()[:, 0].tolist() == [width + r for r in ats[0].relative]


def test_leace_at_every_position_leaves_no_linear_trace_in_the_stream(intervenable, tmp_path):
    """Fitted on captured entity-span states of layer 1, LEACE applied in the forward pass at every position:
    what flows on into decoder layer 1 (hooks read it as its input) is the erased state, and an in-sample
    linear probe that read colour there before falls to the constant predictor."""
    full = world_knowledge_set(World(0))
    ps = full.subset(range(0, len(full), 6))  # 48 realms, one prompt each
    labels, _ = ps.labels("colour")
    both = np.concatenate([labels, labels])
    clean = capture(intervenable, ps, tmp_path, ["entity"], progress=False)
    states = torch.cat([load_states(clean, d, "entity")[:, 1] for d in ("und", "gen")])
    eraser = fit_leace(states, both)
    site = HookPoint(1, "resid_pre")
    after = []
    with erasing(intervenable, site, eraser, Where(None, True)), recording(intervenable, [site]) as seen:
        for d in ("und", "gen"):
            fp = intervenable.forward_inputs(ps.requests[d], d)
            with torch.no_grad():
                intervenable.module(*fp.args, **fp.kwargs)
            stream = seen[site][-1].float()
            cols = position_columns(intervenable, fp, ps.requests[d], ps.spans, "entity")
            after.append(torch.einsum("bt,btd->bd", pooling(cols, stream.shape[1]), stream))
    after = torch.cat(after)
    torch.testing.assert_close(after, eraser(states), atol=1e-4, rtol=1e-4)
    every = np.arange(len(both))
    before = probe(states.numpy(), {"x": states.numpy()}, both, [(every, every)])[0]["x"].mean
    erased = probe(after.numpy(), {"x": after.numpy()}, both, [(every, every)])[0]["x"].mean
    # After LEACE the states' covariance with the labels is 0, so the least-squares probe's weights are 0.
    assert before > 0.8 and erased <= majority_share(both) + 0.05


def test_erasure_decodes_both_directions_at_every_kind_of_position(intervenable, probe_set):
    """An eraser that moves nothing decodes exactly the unedited answers wherever it acts; one that zeroes the
    stream at every position changes the text answers; accuracy is the records' share correct."""
    world = World(0)
    items = world_knowledge_items(get_suite("synth").items)[:4]
    spans = [item_span(world, it) for it in items]
    d = final_hidden(intervenable, intervenable.forward_inputs(probe_set.requests["und"][:1], "und")).shape[
        -1
    ]
    nothing = Eraser(torch.zeros(d, 1), torch.zeros(1, d), torch.zeros(d))
    everything = Eraser(torch.eye(d), torch.eye(d), torch.zeros(d))
    point = HookPoint(1, "resid_pre")
    for direction in ("und", "gen"):
        plain = erased_records(intervenable, items, spans, direction, point, None, batch_size=4)
        marks = [r[direction]["correct"] for r in plain]
        for position in ("entity", "answer", "all"):
            same = erased_records(
                intervenable, items, spans, direction, point, nothing, position, batch_size=4
            )
            assert [r[direction] for r in same] == [r[direction] for r in plain]
        value = erased_accuracy(intervenable, items, spans, direction, point, everything, batch_size=4)
        zeroed = erased_records(intervenable, items, spans, direction, point, everything, batch_size=4)
        judged_marks = [r[direction]["correct"] for r in zeroed if r[direction]["correct"] is not None]
        assert value == (sum(judged_marks) / len(judged_marks) if judged_marks else None)
        if direction == "und":
            assert [r["und"]["output"] for r in zeroed] != [r["und"]["output"] for r in plain]
        assert len(marks) == 4


def test_the_untrained_twin_is_built_through_the_contract_and_restored(intervenable, probe_set):
    """Inside the block every weight tensor is re-drawn at its own mean and spread (so the forward changes);
    after it the model is bit for bit the trained one."""
    params = dict(intervenable.module.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    fp = intervenable.forward_inputs(probe_set.requests["gen"][:2], "gen")
    with torch.no_grad():
        trained = final_hidden(intervenable, fp)
        with untrained(intervenable, seed=0) as twin:
            assert twin is intervenable
            inside = final_hidden(intervenable, fp)
            big = max((n for n in params if params[n].numel() > 1000), key=lambda n: params[n].numel())
            drawn, kept = params[big].double(), before[big].double()
            assert not torch.equal(drawn, kept)
            assert drawn.mean().item() == pytest.approx(
                kept.mean().item(), abs=0.05 * kept.std().item() + 1e-6
            )
            assert drawn.std().item() == pytest.approx(kept.std().item(), rel=0.05)
        after = final_hidden(intervenable, fp)
    assert not torch.allclose(trained, inside)
    assert all(torch.equal(p, before[n]) for n, p in params.items())
    torch.testing.assert_close(after, trained, atol=0, rtol=0)


def test_report_stars_only_findings_and_marks_smoke_runs(tmp_path):
    def score(mean, ci, finding, **extra):
        return {"mean": mean, "std": 0.1, "folds": [mean] * 4, "ci": ci, "finding": finding, **extra}

    def drop(value, ci):
        return {"value": value, "ci": ci}

    within = {"p_holm": 0.01, "untrained_accuracy": 0.2, "selectivity": 0.5}
    erase_dir = {"drop": drop(0.3, [0.2, 0.4]), "random_drop": drop(-0.1, [-0.2, 0.0]), "finding": True}
    layer = {
        "acc_und": score(0.7, [0.6, 0.8], True, **within),
        "acc_gen": score(0.35, [0.25, 0.45], False, **within),
        "und_to_gen": score(0.3, [0.2, 0.4], False),
        "gen_to_und": score(0.3, [0.2, 0.4], False),
        "erase": {
            "rank": [5, 5, 4, 5],
            "perturbation": {"leace": 2.0, "random": 2.0},
            "und": erase_dir,
            "gen": erase_dir,
        },
    }
    result = {
        "model": "m",
        "attribute": "colour",
        "position": "last",
        "rows_per_direction": 8,
        "realms": 2,
        "folds": 2,
        "split_groups": "entity",
        "chance": 0.25,
        "majority": 0.4,
        "smoke": True,
        "shuffles": 1000,
        "layers": [{"layer": f"blocks.{i}.hook_resid_pre"} | layer for i in range(2)],
        "erasure": {"method": "leace", "at": "all", "baseline": {"und": 0.9, "gen": 0.5}},
    }
    lines = table(result).splitlines()
    assert "SMOKE RUN" in lines[0] and "majority class 0.40" in lines[0]
    assert len(lines) == 1 + 3 + 1 + 3 + 1  # title, probes (head + 2), note, erasure (head + 2), note
    row = lines[2].split()
    assert row[:4] == ["blocks.0.hook_resid_pre", "0.70", "[0.60,0.80]*", "0.010"]
    assert "[0.25,0.45]" in row and "[0.25,0.45]*" not in row  # its CI includes the majority: no star
    erase = lines[6].split()
    assert erase[:4] == ["blocks.0.hook_resid_pre", "4/5", "0.30", "[0.20,0.40]*"] and "-0.10" in erase
    assert plot(result, tmp_path / "p.png").stat().st_size > 1000


def test_probe_command_is_registered_with_its_defaults(tmp_path):
    from gapeval.cli import build_parser

    args = build_parser().parse_args(
        ["probe", "--model", "toy", "--attribute", "colour", "--out", str(tmp_path)]
    )
    assert (args.position, args.method, args.erase_at, args.threads, args.seed, args.shuffles) == (
        "last",
        "leace",
        "all",
        1,
        0,
        1000,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["probe", "--model", "toy", "--attribute", "size", "--out", str(tmp_path)])


def test_probe_command_writes_one_row_per_layer_with_its_baselines(tmp_path, capsys):
    from gapeval.cli import main

    out = tmp_path / "probe"
    argv = ["probe", "--model", "toy", "--attribute", "colour", "--limit", "8", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "probe.json").read_text())
    assert (result["realms"], result["rows_per_direction"], result["smoke"]) == (8, 8 * 6, True)
    assert [layer["layer"] for layer in result["layers"]] == [
        *(f"blocks.{i}.hook_resid_pre" for i in range(4)),
        "blocks.3.hook_resid_post",
    ]
    for layer in result["layers"]:
        assert set(layer) == {"layer", "erase", "acc_und", "acc_gen", "und_to_gen", "gen_to_und"}
        for d in ("und", "gen"):
            s = layer[f"acc_{d}"]
            assert s["mean"] == pytest.approx(np.mean(s["folds"]))  # 2 realms a fold: equal folds
            assert 1 / 1001 <= s["p_permutation"] <= s["p_holm"] <= 1.0
            assert s["selectivity"] == pytest.approx(s["mean"] - s["untrained_accuracy"])
            assert s["finding"] == (s["ci"][0] > result["majority"] and s["p_holm"] < 0.05)
            e = layer["erase"][d]
            assert e["drop"]["value"] == pytest.approx(
                e["drop_minus_random"]["value"] + e["random_drop"]["value"]
            )
        shift = layer["erase"]["perturbation"]
        assert shift["random"] == pytest.approx(shift["leace"], rel=1e-5)  # the matched control
    embed = result["layers"][0]  # every prompt ends in the same token: one state for all, nothing to erase
    for d in ("und", "gen"):
        assert embed[f"acc_{d}"]["untrained_accuracy"] == embed[f"acc_{d}"]["mean"]  # the same constant probe
        assert embed[f"acc_{d}"]["selectivity"] == 0.0 and not embed[f"acc_{d}"]["finding"]
        assert embed["erase"][d]["drop"] == {"value": 0.0, "ci": [0.0, 0.0]}
    assert embed["erase"]["rank"] == [0, 0, 0, 0] and embed["erase"]["perturbation"]["leace"] == 0.0
    assert set(result["erasure"]["baseline"]) == {"und", "gen"} and result["erasure"]["held_out"]
    assert Image.open(out / "probe.png").size[0] > 100
    printed = capsys.readouterr().out.splitlines()
    assert (
        "SMOKE RUN" in printed[0] and len(printed) == 1 + 6 + 1 + 6 + 1 + 1
    )  # title, probes, note, erasure, note, wrote


def test_probe_command_refuses_the_answer_position(tmp_path, capsys):
    from gapeval.cli import main

    argv = [
        "probe",
        "--model",
        "toy",
        "--attribute",
        "colour",
        "--position",
        "answer",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would read the label from the input" in err and len(err.splitlines()) == 1


def test_probe_command_refuses_too_few_realms(tmp_path, capsys):
    from gapeval.cli import main

    argv = ["probe", "--model", "toy", "--attribute", "colour", "--limit", "1", "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    assert "at least 2 realms" in capsys.readouterr().err
