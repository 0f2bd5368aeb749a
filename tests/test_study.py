"""`gapeval study`: the reason-then-draw wrapper's request flow, the gap table of conftest's tiny study
recomputed from its JSONL, reproduced and resumed, emergence read from a log, and the command's registration."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PIL import Image

from experiments.paper_study.config import load_config
from experiments.paper_study.sections import gap_table as gap
from experiments.paper_study.sections.emergence_curves import lead
from experiments.paper_study.study import run_study
from experiments.paper_study.toy_runs import training_runs
from gapeval.files import read_jsonl
from gapeval.models.base import Request
from gapeval.models.bridge import DESCRIBED_SCENE, ReasonThenDraw, check_template, fill


class Scripted:
    """A fake UMM that answers text from a table (keyed by prompt) and draws blank pictures, recording every
    call so the wrapper's request flow can be checked."""

    name = "scripted"

    def __init__(self, answers: dict[str, str | Exception]):
        self.answers, self.calls = answers, []

    def config(self):
        return {}

    def understand(self, requests):
        self.calls.append(("und", [(r.item_id, r.prompt, r.image, r.seed) for r in requests]))
        return [self.answers[r.prompt] for r in requests]

    def generate(self, requests):
        self.calls.append(("gen", [(r.item_id, r.prompt, r.image, r.seed) for r in requests]))
        return [Image.new("RGB", (4, 4)) for _ in requests]


def test_reason_then_draw_asks_in_text_then_draws_the_answer():
    picture = Image.new("RGB", (2, 2))
    model = Scripted({"What is the emblem of A?": "red circle at r0c1.", "What is B?": RuntimeError("boom")})
    bridge = ReasonThenDraw(model, {"a": "What is the emblem of A?", "b": "What is B?"}, DESCRIBED_SCENE)
    out = bridge.generate(
        [
            Request("a", "Draw the emblem of A.", picture, 7),
            Request("b", "Draw B.", None, 8),
            Request("c", "Draw C."),
        ]
    )
    assert model.calls == [
        ("und", [("a", "What is the emblem of A?", picture, 7), ("b", "What is B?", None, 8)]),
        ("gen", [("a", "Draw: red circle at r0c1.", picture, 7)]),
    ]
    assert isinstance(out[0], Image.Image)
    assert isinstance(out[1], RuntimeError) and "boom" in str(out[1])
    assert isinstance(out[2], KeyError)  # no question for this item: an error in its place, not a crash
    assert bridge.transcript == {
        "a": {
            "question": "What is the emblem of A?",
            "answer": "red circle at r0c1.",
            "prompt": "Draw: red circle at r0c1.",
        }
    }
    assert bridge.understand([Request("a", "What is the emblem of A?")]) == ["red circle at r0c1."]
    model.answers["Name C."] = "blue square at r1c1"
    bridge.questions["c"] = "Name C."
    bridge.generate([Request("c", "Draw C.")])  # items split over calls: the transcript keeps them all
    assert set(bridge.transcript) == {"a", "c"}


def test_templates_are_filled_by_plain_substitution():
    assert (
        fill("{prompt} (Answer: {answer})", prompt="Draw {x}.", answer="{prompt}")
        == "Draw {x}. (Answer: {prompt})"
    )
    with pytest.raises(ValueError, match="unknown placeholders"):
        check_template("{answer.__class__}")
    with pytest.raises(ValueError, match="must contain"):
        check_template("Draw: {prompt}")


def _tiny_config(**sizes):
    config = load_config(quick=True)
    config.suite = "synth:n=40,seed=0"
    config.sizes.update(sizes)
    return config


def test_gap_table_is_recomputed_from_its_records_reproduced_and_skipped_once_finished(
    tiny_study, tmp_path, monkeypatch
):
    from gapeval.rundir import load_records
    from gapeval.summary import summarize

    study, config = tiny_study
    rows = read_jsonl(study / "gap" / "gap.jsonl")
    text = (study / "report.md").read_text()
    assert gap.gap_table(rows) in text and gap.accuracy_table(rows) in text
    run_dirs = {r["run_dir"] for r in rows if "run_dir" in r}
    assert len(run_dirs) == 2  # the built-in model and the calibration oracle
    for run_dir in run_dirs:
        records = load_records(study / run_dir)
        summary = summarize(records, bootstrap=config.sizes["gap"]["bootstrap"], seed=config.seed)
        recomputed = gap.summary_rows("x", "x", summary)
        written = [r for r in rows if r.get("run_dir") == run_dir]
        assert [{k: r[k] for k in gap.FIELDS} for r in recomputed] == [
            {k: r[k] for k in gap.FIELDS} for r in written
        ]
    assert "published, not run here" in text and "Calibration:" in text
    run_study(config, tmp_path, sections=["gap"], argv=["study", "--sections", "gap"])
    assert read_jsonl(tmp_path / "gap" / "gap.jsonl") == rows  # same seed, fresh folder: same numbers

    def fail(ctx):
        raise AssertionError("a finished section must not run again")

    monkeypatch.setattr(gap, "gap_section", fail)
    done = (tmp_path / "gap" / "done.json").read_text()
    again = run_study(config, tmp_path, sections=["gap"], argv=["study", "--sections", "gap"])
    assert (tmp_path / "gap" / "done.json").read_text() == done
    assert gap.gap_table(rows) in again.read_text()
    with pytest.raises(ValueError, match="another configuration"):
        run_study(replace(config, seed=1), tmp_path, sections=["gap"], argv=[])


def test_emergence_reads_a_log_and_skips_models_without_one(tmp_path):
    run = tmp_path / "train"
    run.mkdir()
    curve = [(0, 0.0, 0.0), (100, 0.3, 0.1), (200, 0.6, 0.2), (300, 0.8, 0.5), (400, 0.9, 0.8)]
    log = [{"step": s, "n": 10, "und_acc": u, "gen_acc": g, "gap_reference": u - g} for s, u, g in curve]
    (run / "emergence.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    order = lead(log, 0.5)
    assert (order["und_step"], order["gen_step"], order["order"]) == (200, 300, "und first")
    assert order["und_mean"] > order["gen_mean"]

    config = _tiny_config()
    config.models = ["oracle", f"toy:{run}"]
    text = run_study(config, tmp_path / "out", sections=["emergence"], argv=[]).read_text()
    assert "`oracle`: no training run behind this spec" in text
    assert "und reached 0.5 first in 1" in text
    assert (tmp_path / "out" / "emergence" / "emergence.png").exists()
    assert len(read_jsonl(tmp_path / "out" / "emergence" / "emergence.jsonl")) == len(log)
    config.models = ["oracle"]
    text = run_study(config, tmp_path / "none", sections=["emergence"], argv=[]).read_text()
    assert "- Emergence order: not measured" in text and "nothing to plot" in text


def test_emergence_names_the_training_seeds_that_are_not_shipped(tmp_path):
    run, family = training_runs("toy:shared", [0, 7])
    assert run.seed == 0 and [r.seed for r in family] == [0]
    seed1, family = training_runs("toy:shared@seed1", [0, 1])  # both shipped seeds, the spec's own is seed 1
    assert seed1.seed == 1 and seed1.spec == "toy:shared@seed1" and [r.seed for r in family] == [0, 1]
    assert training_runs(f"toy:{run.folder}", [0, 7])[0].seed is None  # a user's folder has no shipped seed
    config = _tiny_config(emergence={"training_seeds": [0, 7], "spot_checks": 0, "threshold": 0.5})
    config.models = ["toy"]
    text = run_study(config, tmp_path, sections=["emergence"], argv=[]).read_text()
    assert "`toy`: training seed(s) 7 not shipped" in text
    assert not list((tmp_path / "emergence" / "spot").glob("*.json"))  # spot_checks 0: none


def test_study_is_registered_and_help_stays_light():
    import subprocess
    import sys

    from gapeval.cli import build_parser

    args = build_parser().parse_args(["study", "--quick"])
    assert args.out.as_posix() == "runs/study" and args.quick and args.models is None
    probe = "import sys, gapeval.cli; print('torch' in sys.modules, 'yaml' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == [
        "False",
        "False",
    ]
