"""The runner: run directory contents, resume after SIGKILL, refusal of mismatched runs, recorded errors."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gapeval.judges.select import NO_IMAGE_JUDGE, judge_for
from gapeval.manifest import RunMismatchError
from gapeval.models.oracle import OracleAdapter
from gapeval.rundir import RESULTS, load_records
from gapeval.runner import run
from gapeval.synth.suite import build_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    return build_suite()


@pytest.fixture(scope="module")
def small():
    return build_suite(40, seed=1)


def _run(model, items, out, **kw):
    kw.setdefault("suite_id", "synth-test")
    kw.setdefault("progress", False)
    kw.setdefault("bootstrap", 5)
    return run(model, items, out, **kw)


def _small_oracle(items):
    return OracleAdapter(items, und_error=0.3, gen_error=0.5, correlation=0.2)


@pytest.fixture(scope="module")
def clean(suite, tmp_path_factory):
    """The error-free oracle on the full synth suite."""
    return _run(OracleAdapter(suite), suite, tmp_path_factory.mktemp("clean") / "run", batch_size=64)


@pytest.fixture(scope="module")
def noisy(suite, tmp_path_factory):
    """The oracle with und and gen error rates 0.3 and 0.5 on the full synth suite."""
    model = OracleAdapter(suite, und_error=0.3, gen_error=0.5)
    return _run(model, suite, tmp_path_factory.mktemp("noisy") / "run", batch_size=64)


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    """An uninterrupted run on the small suite: what every resumed or repeated run must equal."""
    return _run(_small_oracle(small), small, tmp_path_factory.mktemp("reference") / "run", batch_size=4)


def _accuracy(records, direction):
    return sum(r[direction]["correct"] for r in records) / len(records)


def test_error_free_oracle_scores_one_everywhere(suite, clean):
    records = load_records(clean)
    assert [r["id"] for r in records] == [i.id for i in suite]
    assert all(r["und"]["correct"] is True and r["gen"]["correct"] is True for r in records)
    summary = json.loads((clean / "summary.json").read_text())
    assert set(summary["categories"]) == {
        "instruction_following",
        "numerical_perception",
        "world_knowledge",
        "reasoning",
    }
    for row in [summary["overall"], *summary["categories"].values()]:
        assert row["und_acc"] == 1.0 and row["gen_acc"] == 1.0 and row["n_error"] == 0
    manifest = json.loads((clean / "manifest.json").read_text())
    assert manifest["model"] == {"name": "oracle", "config": OracleAdapter(suite).config()}
    assert manifest["suite"]["n_items"] == len(suite) and len(manifest["suite"]["hash"]) == 64
    assert {"torch", "transformers", "peft", "numpy", "gapeval", "python"} <= set(manifest["versions"])
    assert (clean / "report.md").exists() and (clean / "report.png").exists()
    first = records[0]
    assert set(first) == {"id", "category", "subcategory", "und", "gen"}
    assert first["gen"]["image"] == f"images/{first['id']}.png" and (clean / first["gen"]["image"]).exists()
    assert first["und"]["judge"] == "text-rule-v1" and first["gen"]["judge"] == "synth-pixel-v1"


def test_error_rates_give_expected_accuracies_and_a_larger_gap(clean, noisy):
    records = load_records(noisy)
    n = len(records)
    assert abs(_accuracy(records, "und") - 0.7) < 3.5 * math.sqrt(0.21 / n)
    assert abs(_accuracy(records, "gen") - 0.5) < 3.5 * math.sqrt(0.25 / n)
    gap = json.loads((noisy / "summary.json").read_text())["overall"]["gap_reference"]
    clean_gap = json.loads((clean / "summary.json").read_text())["overall"]["gap_reference"]
    assert gap > clean_gap + 0.1


def test_same_command_twice_gives_identical_results(small, reference, tmp_path):
    again = _run(_small_oracle(small), small, tmp_path / "again", batch_size=3)
    assert (again / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()
    for image in (reference / "images").iterdir():
        assert image.read_bytes() == (again / "images" / image.name).read_bytes()


def test_finished_run_is_not_redone(small, reference, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    _run(_small_oracle(small), small, reference)
    assert "already complete" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == before


@pytest.mark.parametrize("change", ["config", "seed", "suite", "edit"])
def test_mismatched_run_directory_is_refused(small, reference, change):
    before = (reference / RESULTS).read_bytes()
    items = build_suite(40, seed=2) if change == "suite" else small
    model = OracleAdapter(items, und_error=0.3, gen_error=0.5, correlation=0.2 if change != "config" else 0.0)
    kw = {"seed": 1} if change == "seed" else {"edit": "lora-1"} if change == "edit" else {}
    field = "model" if change == "config" else change
    with pytest.raises(RunMismatchError, match=f"holds a different run.*{field}"):
        _run(model, items, reference, **kw)
    assert (reference / RESULTS).read_bytes() == before


def test_resume_drops_torn_line_and_never_duplicates(small, reference, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lines = (reference / RESULTS).read_bytes().splitlines(keepends=True)
    (out / "manifest.json").write_bytes((reference / "manifest.json").read_bytes())
    (out / RESULTS).write_bytes(b"".join(lines[:11]) + lines[11][:25])  # killed mid-write
    _run(_small_oracle(small), small, out, batch_size=5)
    assert (out / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()


def test_corrupt_committed_line_is_a_clear_error(small, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "summary.json").unlink()
    lines = (out / RESULTS).read_text().splitlines(keepends=True)
    (out / RESULTS).write_text("".join(lines[:3]) + "{oops\n" + "".join(lines[4:]))
    with pytest.raises(ValueError, match=r"results.jsonl, line 4"):
        _run(_small_oracle(small), small, out)


class FlakyOracle(OracleAdapter):
    """Fails understanding on batches holding a chosen item, and returns one image too few for another."""

    def __init__(self, items, explode, short):
        super().__init__(items)
        self.explode, self.short = explode, short

    def understand(self, requests):
        if any(r.item_id == self.explode for r in requests):
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().understand(requests)

    def generate(self, requests):
        images = super().generate(requests)
        return images[:-1] if any(r.item_id == self.short for r in requests) else images


def test_model_errors_are_recorded_per_item(small, tmp_path):
    ids = [i.id for i in small]
    out = _run(FlakyOracle(small, explode=ids[5], short=ids[20]), small, tmp_path / "run", batch_size=4)
    records = {r["id"]: r for r in load_records(out)}
    assert len(records) == len(small)
    for item_id in ids[4:8]:
        und = records[item_id]["und"]
        assert und["correct"] is None and und["output"] is None
        assert und["error"] == "model: RuntimeError: CUDA out of memory (simulated)"
        assert records[item_id]["gen"]["correct"] is True
    for item_id in ids[20:24]:
        gen = records[item_id]["gen"]
        assert gen["correct"] is None and gen["image"] is None and "3 answers for 4 requests" in gen["error"]
    assert sum(r["und"]["correct"] is True for r in records.values()) == len(small) - 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n_error"] == 8


class OutageOracle(OracleAdapter):
    """Every call fails while ``down`` is set (a transient outage); ``down`` is not part of the config."""

    down = True

    def understand(self, requests):
        if self.down:
            raise ConnectionError("backend unreachable (simulated)")
        return super().understand(requests)


def test_resume_retries_items_whose_record_holds_an_error(small, reference, tmp_path, capsys):
    model = OutageOracle(small, und_error=0.3, gen_error=0.5, correlation=0.2)
    out = _run(model, small, tmp_path / "run", batch_size=4)
    assert all(r["und"]["error"] for r in load_records(out))
    capsys.readouterr()
    model.down = False
    _run(model, small, out, batch_size=4)
    err = capsys.readouterr().err
    assert "already complete" not in err and "retrying 40 with errors" in err
    assert (out / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()  # one line per item, no error
    assert json.loads((out / "summary.json").read_text())["overall"]["n_error"] == 0
    _run(model, small, out, batch_size=4)
    assert "already complete" in capsys.readouterr().err


SLOW_MODEL = """
import time
from gapeval.models.oracle import OracleAdapter
from gapeval.synth.suite import build_suite


class SlowOracle(OracleAdapter):
    def generate(self, requests):
        time.sleep(0.15)
        return super().generate(requests)


def make(**kwargs):
    return SlowOracle(build_suite(40, seed=1), **kwargs)
"""


def test_sigkill_then_resume_equals_uninterrupted_run(small, reference, tmp_path):
    (tmp_path / "slow_model.py").write_text(SLOW_MODEL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "gapeval",
        "run",
        "--model",
        "py:slow_model:make",
        "--suite",
        "synth:n=40,seed=1",
    ]
    cmd += ["--out", str(out), "--batch-size", "2", "--no-progress", "--bootstrap", "5"]
    cmd += ["--model-arg", "und_error=0.3", "--model-arg", "gen_error=0.5", "--model-arg", "correlation=0.2"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / RESULTS
    deadline = time.monotonic() + 60
    while (not results.exists() or results.read_bytes().count(b"\n") < 6) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = results.read_bytes().count(b"\n")
    assert 6 <= killed_at < len(small), "the run was not interrupted halfway"
    assert not (out / "summary.json").exists()

    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming, {killed_at} of 40 items already done" in done.stderr
    assert results.read_bytes() == (reference / RESULTS).read_bytes()
    ids = [r["id"] for r in load_records(out)]
    assert len(ids) == len(set(ids)) == len(small)


class BrokenJudge:
    id = "broken"

    def judge(self, item, answer):
        raise TimeoutError("judge endpoint timed out")


def test_unjudgeable_answers_are_errors_not_wrong_answers(small, tmp_path, monkeypatch):
    from gapeval.judges import vlm

    monkeypatch.delenv(vlm.ENV_BASE_URL, raising=False)
    items = [dataclasses.replace(item, spec=None) for item in small[:6]]
    out = _run(OracleAdapter(items), items, tmp_path / "nospec")
    for record in load_records(out):
        assert record["und"]["correct"] is True  # matched against item.reference
        assert record["gen"] | {"image": None} == {
            "image": None,
            "correct": None,
            "judge": "none",
            "reason": "",
            "error": NO_IMAGE_JUDGE,
        }
    assert json.loads((out / "manifest.json").read_text())["judges"] == {
        "und": ["text-rule-v1"],
        "gen": ["none"],
    }
    broken = _run(
        OracleAdapter(small[:6]), small[:6], tmp_path / "broken", judge_overrides={"und": BrokenJudge()}
    )
    for record in load_records(broken):
        assert record["und"]["correct"] is None and record["und"]["judge"] == "broken"
        assert record["und"]["error"] == "judge: TimeoutError: judge endpoint timed out"
        assert record["gen"]["correct"] is True


def test_judge_selection(small):
    item, bare = small[0], dataclasses.replace(small[0], spec=None)
    assert judge_for(item, "und").id == judge_for(bare, "und").id == "text-rule-v1"
    assert judge_for(item, "gen").id == "synth-pixel-v1"
    assert judge_for(bare, "gen").judge(bare, item.reference_image).error == NO_IMAGE_JUDGE
    assert judge_for(bare, "gen", vlm=BrokenJudge()).id == "broken"
    assert judge_for(item, "gen", vlm=BrokenJudge()).id == "synth-pixel-v1"


def test_report_chart_shows_the_summary(noisy, monkeypatch):
    """The chart's bars are the summary's numbers: und and gen accuracy per category, then the joint shares."""
    from tests_support import SavedFigures

    from gapeval.report import rows, write_report

    saved = SavedFigures(monkeypatch)
    write_report(noisy)
    summary = json.loads((noisy / "summary.json").read_text())
    data = [row for _, row in rows(summary)]
    und, gen = [round(r["und_acc"], 9) for r in data], [round(r["gen_acc"], 9) for r in data]
    assert saved.bars(noisy / "report.png", 0) == und + gen
    joint = saved.bars(noisy / "report.png", 1)
    assert joint[: len(data)] == [round(r["p11"], 9) for r in data]  # the first stacked layer: both right
    assert 0.4 < min(und) and max(gen) < 0.7  # the error rates show: not a chart of a perfect model
