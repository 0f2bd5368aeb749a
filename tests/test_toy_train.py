"""Training the built-in UMM: reserve realms in the world and the mixture, emergence logging, resuming."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gapeval.cli import main
from gapeval.emergence import eval_items
from gapeval.io import suite_hash
from gapeval.models.toy import resume as resume_mod
from gapeval.models.toy.adapter import ToyAdapter
from gapeval.models.toy.data import MixtureSampler, vocabulary_texts
from gapeval.models.toy.tokenizer import TextTokenizer, words
from gapeval.runner import run
from gapeval.synth import World, build_suite


@pytest.fixture(scope="module")
def world():
    return World(0)


def _names(realms) -> set[str]:
    return {w for r in realms for w in words(f"{r.name} {r.founder}")}


def test_reserve_realms_leave_the_world_and_the_suite_unchanged(world):
    assert suite_hash(build_suite())[:12] == "d5345b8f0d82"
    assert world.realms == World(0, n_reserve=0).realms
    known, unseen = world.reserve_known, world.reserve_unseen
    assert len(known) >= 12 and len(unseen) >= 12
    every = world.realms + known + unseen
    assert len(_names(every)) == 2 * len(every)  # no name or founder used twice, in any case
    assert not any(r.pictured for r in known + unseen)
    assert world.realm(unseen[3].name) is unseen[3] and world.realm(world.realms[0].name) is world.realms[0]


def test_reserve_names_are_in_the_vocabulary_and_nothing_else(world):
    tokenizer = TextTokenizer.build(vocabulary_texts(world))
    reserve = _names(world.reserve_known + world.reserve_unseen)
    assert reserve <= set(tokenizer.vocab)
    suite_words = {
        w for it in build_suite() for t in (it.und_prompt, it.gen_prompt, *it.reference) for w in words(t)
    }
    assert not reserve & suite_words
    # A reserve name that is also another word of the language would be taught after all.
    clashing = dataclasses.replace(world.reserve_unseen[0], founder="Describe")
    bad = World(0)
    bad.reserve_unseen = [clashing, *bad.reserve_unseen[1:]]
    with pytest.raises(ValueError, match="describe"):
        vocabulary_texts(bad)


def test_mixture_teaches_known_reserve_founders_and_nothing_else_about_reserve_realms(world):
    sampler = MixtureSampler(world, 3, set())
    known, unseen = _names(world.reserve_known), _names(world.reserve_unseen)
    taught = set()
    for k in range(12000):
        ex = sampler.sample(k / 12000)
        said = {w for t in (ex.prompt, ex.answer if isinstance(ex.answer, str) else "") for w in words(t)}
        assert not said & unseen, ex
        if ex.task == "reserve_fact":
            assert ex.direction == "und" and ex.image is None
            taught.add((ex.prompt.split()[0], ex.answer))
        else:
            assert not said & known, ex
    by_name = {r.name: r for r in world.reserve_known}
    by_founder = {r.founder: r for r in world.reserve_known}
    # Both founder questions, answered right, for every known reserve realm; never an emblem.
    assert {by_name[a].founder for q, a in taught if q == "Which"} == set(by_founder)
    assert {by_founder[a].name for q, a in taught if q == "Who"} == set(by_name)


# --- emergence and resuming (quick runs through the CLI) ---------------------------------------------------


def _train(out, *extra) -> None:
    assert main(["train-toy", "--quick", "--no-progress", "--out", str(out), *extra]) == 0


def _log(path, drop: str) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != drop} for line in path.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    _train(root / "plain")
    _train(root / "eval", "--eval-every", "20")
    return root


def _same_checkpoints(a, b) -> None:
    for step in ("step-000015", "step-000030"):
        assert (a / step / "model.safetensors").read_bytes() == (b / step / "model.safetensors").read_bytes()
    assert _log(a / "train_log.jsonl", "elapsed_s") == _log(b / "train_log.jsonl", "elapsed_s")


def test_emergence_logging_leaves_training_unchanged(runs):
    _same_checkpoints(runs / "plain", runs / "eval")
    assert not (runs / "plain" / "emergence.jsonl").exists()
    rows = [json.loads(line) for line in (runs / "eval" / "emergence.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 20, 30]
    for row in rows:
        assert row["n"] == 24 and row["n11"] + row["n10"] + row["n01"] + row["n00"] == 24
        assert set(row["categories"]) == {
            "instruction_following",
            "numerical_perception",
            "world_knowledge",
            "reasoning",
        }
        assert 0 <= row["gap_reference"] <= 1 and 0 <= row["und_acc"] <= 1


def test_emergence_row_equals_a_run_of_the_checkpoint(runs, tmp_path):
    final = json.loads((runs / "eval" / "emergence.jsonl").read_text().splitlines()[-1])
    items = eval_items(24)
    out = run(
        ToyAdapter(runs / "eval" / "step-000030"), items, tmp_path, suite_id="x", progress=False, bootstrap=0
    )
    overall = json.loads((out / "summary.json").read_text())["overall"]
    assert {k: overall[k] for k in ("n11", "n10", "n01", "n00")} == {
        k: final[k] for k in ("n11", "n10", "n01", "n00")
    }


def test_stratified_subset_keeps_the_category_mix():
    items = eval_items(140)
    counts = {c: sum(it.category == c for it in items) for c in {it.category for it in items}}
    assert counts == {
        "reasoning": 66,
        "world_knowledge": 32,
        "numerical_perception": 22,
        "instruction_following": 20,
    }
    assert len({it.id for it in items}) == 140 and eval_items(420) == build_suite()


def test_a_run_killed_mid_save_resumes_to_the_same_result(runs, tmp_path, monkeypatch):
    real_save = resume_mod.save_file

    def killed_at_step_20(tensors, path):
        if "step-000020" in path:
            Path(path).write_bytes(b"torn")
            raise KeyboardInterrupt
        real_save(tensors, path)

    monkeypatch.setattr(resume_mod, "save_file", killed_at_step_20)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", "--eval-every", "20")
    monkeypatch.setattr(resume_mod, "save_file", real_save)
    killed = tmp_path / "run"
    # The log rows and evaluation of step 20 were written before the kill; the last complete state is step 15.
    assert [r["step"] for r in _log(killed / "emergence.jsonl", "")] == [0, 20]
    assert sorted(p.name for p in (killed / "resume").iterdir()) == [".step-000020.tmp", "step-000015"]
    state = load_file(str(killed / "resume" / "step-000015" / "tensors.safetensors"))
    assert state["rng.torch"].dtype == torch.uint8 and any(k.startswith("optim.") for k in state)

    assert main(["train-toy", "--resume", str(killed), "--no-progress"]) == 0
    _same_checkpoints(runs / "eval", killed)
    assert _log(killed / "emergence.jsonl", "eval_s") == _log(runs / "eval" / "emergence.jsonl", "eval_s")
    assert [p.name for p in (killed / "resume").iterdir()] == ["step-000030"]


def test_a_run_being_trained_is_refused_to_a_second_process_and_nothing_is_touched(runs, tmp_path):
    import shutil

    from gapeval.models.toy.train import TrainConfig, resume, train

    held = tmp_path / "held"
    shutil.copytree(runs / "plain", held)
    before = {p: p.read_bytes() for p in held.rglob("*") if p.is_file()}
    with resume_mod.run_lock(held):  # what the first trainer holds while it runs (a separate open file)
        with pytest.raises(RuntimeError, match="another process is training this run"):
            resume(held, progress=False)
        with pytest.raises(RuntimeError, match="another process is training this run"):
            train(TrainConfig(), held, progress=False)
    assert {p: p.read_bytes() for p in held.rglob("*") if p.is_file()} == before  # logs and states untouched
    assert (
        resume(held, progress=False) == held / "step-000030"
    )  # released: the finished run is found as it is
