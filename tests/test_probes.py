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
from sklearn.linear_model import LogisticRegression

from gapeval.models.base import final_hidden
from gapeval.suites import get_suite
from gapeval.synth.world import World
from interventions.hooks import recording
from probes.capture import POSITIONS, capture, layer_site, load_states, pooling, position_columns
from probes.dataset import item_span, world_knowledge_items, world_knowledge_set
from probes.erase import Where, erased_accuracy, erasing, where
from probes.erasers import fit_leace, fit_mean_projection, random_eraser
from probes.linear import control_labels, fold_scores, grouped_folds, layer_probes, majority_share
from probes.probe_report import plot, table

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


def test_a_planted_feature_is_found_and_shuffled_labels_give_chance():
    states, labels, types = planted()
    folds = grouped_folds(types)
    control = control_labels(labels, types, seed=1)
    scores = layer_probes(states, states, labels, control, folds)
    assert scores["acc_und"].mean > 0.95 and scores["und_to_gen"].mean > 0.95
    chance = majority_share(labels)
    assert abs(scores["control_und"].mean - 1 / 4) < 0.15  # held-out entities' random labels: chance
    shuffled = np.random.default_rng(2).permutation(labels)
    noise = layer_probes(states, states, shuffled, control, folds)
    assert noise["acc_und"].mean < chance + 0.12
    assert len(scores["acc_und"].folds) == 4 and scores["acc_und"].std >= 0


def test_transfer_fails_when_the_other_direction_encodes_differently():
    states, labels, types = planted()
    other, same, _ = planted(axes=1)  # the same labels, written along other directions
    assert np.array_equal(same, labels)
    folds = grouped_folds(types)
    scores = layer_probes(states, other, labels, control_labels(labels, types), folds)
    assert scores["acc_und"].mean > 0.95 and scores["acc_gen"].mean > 0.95
    assert scores["und_to_gen"].mean < 0.6 and scores["gen_to_und"].mean < 0.6


def test_grouped_folds_never_split_an_entity_and_controls_are_per_type():
    _, labels, types = planted()
    for train, test in grouped_folds(types):
        assert not set(types[train]) & set(types[test])
    control = control_labels(labels, types, seed=3)
    for t in np.unique(types):
        assert len(set(control[types == t])) == 1
    assert sorted(np.bincount(control)) == sorted(np.bincount(labels))  # same class shares
    assert not np.array_equal(control, labels)


@pytest.mark.parametrize("fit", [fit_leace, fit_mean_projection])
def test_erasers_remove_the_linear_feature_and_random_control_keeps_it(fit):
    states, labels, _ = planted(d=24)
    x = torch.as_tensor(states, dtype=torch.float32)
    eraser = fit(x, labels)
    assert eraser.rank == 3  # classes - 1
    erased = eraser(x).numpy()
    kept = random_eraser(eraser.bias, eraser.rank, seed=0)(x).numpy()
    in_sample = LogisticRegression(max_iter=2000)
    assert in_sample.fit(kept, labels).score(kept, labels) > 0.95
    if fit is fit_leace:  # LEACE's guarantee: no linear classifier beats a constant on the fitted states
        assert in_sample.fit(erased, labels).score(erased, labels) < majority_share(labels) + 0.1


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
    n = len(model.module.get_submodule(model.layers_path))
    fp = model.forward_inputs([request], direction, None if answer is None else [answer])
    sites = [layer_site(k) for k in range(n + 1)]
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
        with erasing(intervenable, 1, eraser, Where(None, True)):
            inside = final_hidden(intervenable, fp)
        after = final_hidden(intervenable, fp)
    assert not torch.allclose(before, inside, atol=1e-3)
    torch.testing.assert_close(before, after, atol=0, rtol=0)


def test_erasing_at_a_relative_position_touches_only_that_column(intervenable, probe_set):
    requests, spans = probe_set.requests["gen"][:4], probe_set.spans[:4]  # different lengths: padding differs
    fp = intervenable.forward_inputs(requests, "gen")
    seen_at = (1, "resid_pre")  # what leaves captured layer 1 (layer 0's output), after every hook on it
    for position in ("entity", "last"):
        ats = [where(intervenable, r, "gen", position, s) for r, s in zip(requests, spans, strict=True)]
        with torch.no_grad(), recording(intervenable, [seen_at]) as seen:
            intervenable.module(*fp.args, **fp.kwargs)
            eraser = random_eraser(torch.zeros(seen[seen_at][0].shape[-1]), rank=4, seed=0)
            with erasing(intervenable, 1, eraser, ats[0]):
                intervenable.module(*fp.args, **fp.kwargs)
        clean, erased = seen[seen_at]
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
    site = (1, "resid_pre")
    after = []
    with erasing(intervenable, 1, eraser, Where(None, True)), recording(intervenable, [site]) as seen:
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
    before = fold_scores(states.numpy(), {"x": states.numpy()}, both, [(every, every)])["x"].mean
    erased = fold_scores(after.numpy(), {"x": after.numpy()}, both, [(every, every)])["x"].mean
    assert before > 0.9 and erased < majority_share(both) + 0.1


def test_erased_accuracy_decodes_both_directions_at_every_kind_of_position(intervenable, probe_set):
    world = World(0)
    items = world_knowledge_items(get_suite("synth").items)[:4]
    spans = [item_span(world, it) for it in items]
    fp = intervenable.forward_inputs(probe_set.requests["und"][:1], "und")
    eraser = random_eraser(torch.zeros(final_hidden(intervenable, fp).shape[-1]), rank=2, seed=0)
    for direction in ("und", "gen"):
        for position in ("entity", "answer", "all"):
            value = erased_accuracy(intervenable, items, spans, direction, 1, eraser, position, batch_size=4)
            assert value is None or 0.0 <= value <= 1.0


def test_report_table_and_plot(tmp_path):
    score = {"mean": 0.5, "std": 0.1, "folds": [0.4, 0.6]}
    keys = ("acc_und", "acc_gen", "control_und", "control_gen", "und_to_gen", "gen_to_und")
    erase = {"rank": 5, "drop_und": 0.3, "drop_gen": -0.1, "random_drop_und": 0.0, "random_drop_gen": None}
    result = {
        "model": "m",
        "attribute": "colour",
        "position": "last",
        "rows_per_direction": 8,
        "folds": 4,
        "split_groups": "entity",
        "chance": 0.25,
        "majority": 0.3,
        "layers": [{"layer": name, **dict.fromkeys(keys, score), "erase": erase} for name in ("embed", "0")],
        "erasure": {"method": "leace", "at": "all", "baseline": {"und": 0.9, "gen": 0.5}},
    }
    text = table(result)
    assert "-0.10" in text and "0.30" in text and "sel und" in text and len(text.splitlines()) == 5
    assert plot(result, tmp_path / "p.png").stat().st_size > 1000


def test_probe_command_is_registered_with_its_defaults(tmp_path):
    from gapeval.cli import build_parser

    args = build_parser().parse_args(
        ["probe", "--model", "toy", "--attribute", "colour", "--out", str(tmp_path)]
    )
    assert (args.position, args.method, args.erase_at, args.threads, args.seed) == (
        "last",
        "leace",
        "all",
        1,
        0,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["probe", "--model", "toy", "--attribute", "size", "--out", str(tmp_path)])


def test_probe_command_writes_one_row_per_layer(tmp_path, capsys):
    from gapeval.cli import main

    out = tmp_path / "probe"
    argv = ["probe", "--model", "toy", "--attribute", "colour", "--limit", "8", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "probe.json").read_text())
    assert (result["realms"], result["rows_per_direction"]) == (8, 8 * 6)
    assert [layer["layer"] for layer in result["layers"]] == ["embed", "0", "1", "2", "3"]
    probe_keys = {"acc_und", "acc_gen", "control_und", "control_gen", "und_to_gen", "gen_to_und"}
    erase_keys = {f"{kind}{d}" for kind in ("", "random_", "drop_", "random_drop_") for d in ("und", "gen")}
    for layer in result["layers"]:
        assert set(layer) == {"layer", "erase", *probe_keys}
        assert all(0.0 <= layer[key]["mean"] <= 1.0 and len(layer[key]["folds"]) == 4 for key in probe_keys)
        assert set(layer["erase"]) == {"rank", *erase_keys}
    assert result["layers"][0]["erase"]["rank"] == 0  # every prompt ends in the same token: nothing to erase
    assert set(result["erasure"]["baseline"]) == {"und", "gen"}
    assert Image.open(out / "probe.png").size[0] > 100
    assert (
        len(capsys.readouterr().out.splitlines()) == 1 + 1 + 5 + 1 + 1
    )  # title, head, layers, erasure, wrote


def test_probe_command_refuses_too_few_realms(tmp_path, capsys):
    from gapeval.cli import main

    argv = ["probe", "--model", "toy", "--attribute", "colour", "--limit", "1", "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    assert "at least 2 realms" in capsys.readouterr().err
