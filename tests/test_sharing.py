"""The sharing sweep (`gapeval sweep`, issue 23): a sweep file trains and measures its models, a rerun reads
everything back, a changed file or a foreign run folder is refused, and the statistics behind its findings
can fail."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from tests_support import TINY_SWEEP as TINY
from tests_support import tiny_sweep

from experiments.sharing import analysis
from experiments.sharing.config import load_sweep
from experiments.sharing.sweep import estimate_cpu_hours, plot_emergence, run_sweep, ship_measured
from gapeval.cli import main
from gapeval.models.toy.train import TrainConfig, train


@pytest.fixture(scope="module")
def sweep(tiny_sweep_run):
    """The tiny sweep trained and measured by `gapeval sweep` (conftest's, shared with the study's tests)."""
    return tiny_sweep_run


def test_a_sweep_trains_measures_and_reports_every_model(sweep):
    _, out = sweep
    models = [json.loads(line) for line in (out / "sharing.jsonl").read_text().splitlines()]
    assert [m["model"] for m in models] == ["default-seed0", "pair-seed0"]
    assert {m["train"]["variant"] for m in models} == {"shared", "pair"}
    assert [m["emergence"][-1]["step"] if m["emergence"] else None for m in models] == [
        12,
        None,
    ]  # as trained
    conditions = {
        c["condition"]: c for c in map(json.loads, (out / "conditions.jsonl").read_text().splitlines())
    }
    assert "vs_baseline" in conditions["default"] and "vs_baseline" not in conditions["pair"]
    assert conditions["default"]["text_gen"]["n"] == 24  # every text-only realm of the 48, seed 0
    decisions = [json.loads(line) for line in (out / "propagation.jsonl").read_text().splitlines()]
    assert {(d["condition"], d["kind"], d["via"]) for d in decisions} == {
        (c, k, v)
        for c in ("default", "pair")
        for k, v in (("edit", "und"), ("edit", "gen"), ("control", "und"))
    }
    factors = [json.loads(line) for line in (out / "factors.jsonl").read_text().splitlines()]
    assert [(f["condition"], f["versus"]) for f in factors] == [("pair", "default")]
    report = (out / "report.md").read_text()
    assert "Direct transfer" in report and "](sharing.png)" in report and "](emergence.png)" in report
    assert (
        "One factor at a time" in report and "## Findings\n\n- Direct transfer above the disjoint" in report
    )
    assert (out / "sharing.png").stat().st_size > 0


def test_a_rerun_reads_everything_back(sweep):
    folder, out = sweep
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")}
    trained = (out / "training.jsonl").read_text()
    before = (out / "conditions.jsonl").read_text()
    run_sweep(load_sweep(folder / "sweep.yaml", quick=True), out, progress=False)
    assert (out / "training.jsonl").read_text() == trained  # nothing trained again
    assert {
        p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")
    } == stamps  # nothing measured again
    assert (out / "conditions.jsonl").read_text() == before


def test_shipped_models_rebuild_the_tables_without_training_or_measuring(sweep, tmp_path):
    folder, out = sweep
    config = load_sweep(folder / "sweep.yaml", quick=True)
    shipped = tmp_path / "shipped"
    assert [p.name for p in ship_measured(config, out, 0, shipped)] == ["default-seed0", "pair-seed0"]
    assert (shipped / "pair-seed0" / "step-000012" / "model.safetensors").exists()
    fresh = tmp_path / "fresh"
    run_sweep(config, fresh, progress=False, shipped=shipped)
    assert not (fresh / "training.jsonl").exists() and not (fresh / "default-seed0").exists()
    assert not (fresh / "units" / "default-seed0" / "edits").exists()  # adopted, not measured again
    assert (fresh / "conditions.jsonl").read_text() == (out / "conditions.jsonl").read_text()
    run_sweep(config, tmp_path / "seed1", seed=1, only=["pair-seed0"], progress=False, shipped=shipped)
    assert (tmp_path / "seed1" / "units" / "pair-seed0" / "edits").exists()  # other settings: measured anew


def test_a_folder_of_another_sweep_is_refused(sweep, tmp_path):
    _, out = sweep
    other = load_sweep(tiny_sweep(tmp_path, seeds=[1]), quick=True)
    with pytest.raises(ValueError, match="another configuration"):
        run_sweep(other, out, progress=False)
    redefined = {"default": {"eval_every": 12, "steps": 13}, "pair": TINY["conditions"]["pair"]}
    with pytest.raises(ValueError, match=r"another configuration \(condition default\)"):
        run_sweep(load_sweep(tiny_sweep(tmp_path, conditions=redefined), quick=True), out, only=[])


def test_a_folder_keeps_its_models_when_conditions_are_added_or_compared_otherwise(sweep, tmp_path):
    out = shutil.copytree(sweep[1], tmp_path / "out")  # the session's sweep folder is shared: work on a copy
    grown = {**TINY["conditions"], "pair": {"variant": "pair"}, "wide": {"d_model": 32, "versus": "pair"}}
    run_sweep(load_sweep(tiny_sweep(tmp_path, conditions=grown), quick=True), out, only=[], progress=False)
    # the record follows the file, and the models measured before are still reported
    assert json.loads((out / "sweep.json").read_text())["conditions"] == grown
    rows = [json.loads(line) for line in (out / "conditions.jsonl").read_text().splitlines()]
    assert {r["condition"]: r["seeds"] for r in rows} == {"default": [0], "pair": [0]}


def test_a_run_of_other_settings_is_not_resumed(tmp_path):
    config = load_sweep(tiny_sweep(tmp_path), quick=True)
    out = tmp_path / "out"
    foreign = TrainConfig().updated({**TINY["train"], "steps": 8, "eval_every": 0})
    train(foreign, out / "default-seed0", progress=False)  # leaves a resume state at step 8 of another run
    with pytest.raises(ValueError, match="other settings.*steps"):
        run_sweep(config, out, train_only=True, only=["default-seed0"], progress=False)


def test_sweep_file_errors_name_the_file_and_the_key(tmp_path):
    path = tiny_sweep(tmp_path, conditions={"wide": {"d_modle": 32}, "pair": {"variant": "pair"}})
    with pytest.raises(
        ValueError, match=r"sweep.yaml: quick.conditions.wide: unknown training settings \['d_modle'\]"
    ):
        load_sweep(path, quick=True)
    path.write_text(yaml.safe_dump({"quick": {k: v for k, v in TINY.items() if k != "seeds"}}))
    with pytest.raises(ValueError, match="missing key quick.seeds"):
        load_sweep(path, quick=True)
    assert main(["sweep", str(path), "--quick"]) == 2
    path = tiny_sweep(tmp_path, conditions={"pair": {"variant": "pair", "measure": {"edit": 4}}})
    with pytest.raises(ValueError, match=r"quick.conditions.pair.measure: unknown sizes \['edit'\]"):
        load_sweep(path, quick=True)
    path = tiny_sweep(tmp_path, conditions={"pair": {"variant": "pair", "versus": "pair"}})
    with pytest.raises(ValueError, match=r"quick.conditions.pair.versus: 'pair' is not another condition"):
        load_sweep(path, quick=True)
    path = tiny_sweep(tmp_path, references=["toy@seed1"])
    with pytest.raises(ValueError, match=r"sweep.yaml: quick.references: unknown model 'toy@seed1'"):
        load_sweep(path, quick=True)


def test_a_condition_overrides_its_own_measurement_sizes_only(tmp_path):
    path = tiny_sweep(
        tmp_path, conditions={"default": {}, "pair": {"variant": "pair", "measure": {"edits": 3}}}
    )
    config = load_sweep(path, quick=True)
    sizes = {m.condition: m.measure for m in config.models()}
    assert sizes["pair"] == {**config.measure, "edits": 3}
    assert sizes["default"] == config.measure != sizes["pair"]
    assert all("measure" not in m.train for m in config.models())  # not a training setting


def test_the_shipped_sweep_file_loads_and_its_cost_is_estimated():
    config = load_sweep()
    names = [m.name for m in config.models()]
    assert len(names) == len(set(names)) and "pair-seed1" in names
    assert all(len([m for m in config.models() if m.condition == c]) >= 2 for c in config.conditions)
    per_step = {(64, 2): 0.1, (128, 4): 1.0}
    hours = estimate_cpu_hours(config, per_step)
    steps = sum(m.train["steps"] for m in config.models() if m.train)
    assert hours == pytest.approx(steps * 0.1 / 3600)  # references cost nothing


def test_permutation_test_tells_a_real_difference_from_none():
    high = {f"r{i}": [1.0, 1.0] for i in range(10)} | {f"s{i}": [0.0, 0.0] for i in range(2)}
    low = {f"r{i}": [0.0, 0.0] for i in range(12)}
    assert analysis.permutation_greater(high, low, seed=0) < 0.001
    assert analysis.permutation_greater(low, high, seed=0) == 1.0
    assert analysis.permutation_greater(low, dict(low), seed=0) == 1.0


def _knowledge(seed: int, gen: bool) -> tuple[int, list[dict]]:
    rows = [
        {"realm": f"R{k}", "pictured": False, "und": True, "gen": gen and k < 8, "bridged": True}
        for k in range(10)
    ]
    return seed, rows + [{"realm": "P", "pictured": True, "und": True, "gen": True, "bridged": True}]


def test_transfer_is_compared_with_the_baseline_and_holm_corrected():
    rows = analysis.transfer_table(
        {"pair": [_knowledge(0, False), _knowledge(1, False)],
         "strong": [_knowledge(0, True), _knowledge(1, True)],
         "none": [_knowledge(0, False), _knowledge(1, False)]},
        "pair", seed=0,
    )  # fmt: skip
    by = {r["condition"]: r for r in rows}
    assert by["strong"]["text_gen"]["mean"] == pytest.approx(0.8) and by["strong"]["text_gen"]["n"] == 20
    assert by["strong"]["vs_baseline"]["detected"] and not by["none"]["vs_baseline"]["detected"]
    assert by["strong"]["vs_baseline"]["p_holm"] == pytest.approx(2 * by["strong"]["vs_baseline"]["p"])
    assert by["pair"]["pictured_gen"]["mean"] == 1.0


def test_one_factor_comparisons_are_two_sided_and_holm_corrected():
    knowledge = {
        "default": [_knowledge(0, True), _knowledge(1, True)],
        "fewer": [_knowledge(0, False), _knowledge(1, False)],  # a factor that lowers transfer
        "same": [_knowledge(0, True), _knowledge(1, True)],
        "unmeasured-partner": [_knowledge(0, True)],
    }
    versus = {"fewer": "default", "same": "default", "unmeasured-partner": "missing"}
    rows = {r["condition"]: r for r in analysis.factor_table(knowledge, versus, seed=0)}
    assert set(rows) == {"fewer", "same"}  # a comparison needs both conditions measured
    assert rows["fewer"]["difference"] == pytest.approx(-0.8) and rows["fewer"]["detected"]
    assert rows["fewer"]["p_holm"] == pytest.approx(2 * rows["fewer"]["p"])
    assert rows["same"]["difference"] == 0 and not rows["same"]["detected"]
    # Per seed: each training seed's own transfer; "apart" only when no seed of one reaches a seed of the other.
    assert rows["fewer"]["per_seed"] == {"fewer": [0.0, 0.0], "default": [0.8, 0.8]}
    assert rows["fewer"]["seeds_apart"] and not rows["same"]["seeds_apart"]
    overlapping = {
        "high": [_knowledge(0, True), _knowledge(1, False)],
        "low": [_knowledge(0, False), _knowledge(1, False)],
    }
    row = analysis.factor_table(overlapping, {"high": "low"}, seed=0)[0]
    assert (
        row["difference"] == pytest.approx(0.4) and not row["seeds_apart"]
    )  # seed 1 of "high" is at 0, as "low"


def _edit_records(moved: int) -> dict:
    records = []
    for e in range(4):
        for condition in ("baseline", "und"):
            new = condition == "und" and e < moved
            records += [
                {"condition": condition, "role": "target", "direction": d, "edit": f"edit-{e}", "item": f"edit-{e}/t",
                 "correct": new if d == "gen" else condition == "und", "logp_new": None, "logp_old": None}
                for d in ("und", "gen")
            ]  # fmt: skip
    return {"edit": {"records": records}}


def test_propagation_pools_training_seeds_with_each_edit_paired_to_its_own_baseline():
    cases = analysis.propagation_table({"c": [(0, _edit_records(4)), (1, _edit_records(4))]})
    (case,) = cases
    assert case["edits"] == 8 and case["up"] == 8 and case["down"] == 0  # same edit ids, kept apart by seed
    assert case["p"] == pytest.approx(0.5**8) and case["detected"]
    (none,) = analysis.propagation_table({"c": [(0, _edit_records(0)), (1, _edit_records(0))]})
    assert none["up"] == 0 and none["p"] == 1.0 and not none["detected"]


def test_shipped_checkpoints_fit_the_size_limit_in_fp16():
    """Everything under gapeval/checkpoints (the default models and the sweep's) stays within 40 MB, and every
    shipped weight file is half precision."""
    from safetensors import safe_open

    from experiments.sharing.training import SHIPPED

    root = SHIPPED.parent
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 40_000_000
    weights = list(root.rglob("model.safetensors"))
    assert weights
    for path in weights:
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path


def test_the_quick_study_reports_the_shipped_sweep_without_training(tmp_path):
    from experiments.paper_study.config import load_config
    from experiments.paper_study.study import run_study
    from experiments.sharing.training import SHIPPED

    shipped = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir())
    run_study(load_config(quick=True), tmp_path, sections=["sharing"], argv=[])
    rows = [json.loads(line) for line in (tmp_path / "sharing" / "sharing.jsonl").read_text().splitlines()]
    assert sorted(r["model"] for r in rows) == shipped and shipped
    assert not [p for p in (tmp_path / "sharing").iterdir() if p.name in shipped]  # nothing trained here


def test_specificity_tells_a_realm_specific_drawing_from_a_generic_one():
    emblems = {f"R{k}": ("circle", f"c{k}") for k in range(12)}

    def rows(own: bool) -> list[dict]:
        return [
            {"realm": r, "pictured": False, "drawn": [list(e if own else emblems["R0"])]}
            for r, e in emblems.items()
        ]

    specific = analysis.specificity([(0, rows(True))], emblems, seed=0)
    assert specific["own"]["mean"] == 1.0 and specific["other"]["mean"] == 0.0 and specific["p"] < 0.001
    generic = analysis.specificity([(0, rows(False))], emblems, seed=0)  # always draws R0's emblem
    assert generic["own"]["mean"] == pytest.approx(1 / 12) and generic["p"] > 0.05
    assert analysis.specificity([(0, [{"realm": "R1", "pictured": False}])], emblems, seed=0) is None


def test_emergence_is_plotted_per_model_skipping_steps_without_a_value(tmp_path):
    log = [
        {"step": s, "und": s / 10, "gen": s / 20, "wk_und": None if s == 5 else 0.5, "wk_gen": 0.1}
        for s in (0, 5, 10)
    ]
    rows = [
        {"condition": "default", "seed": 0, "emergence": log},
        {"condition": "default", "seed": 1, "emergence": log},
        {"condition": "pair", "seed": 0, "emergence": []},  # a model without a log is left out, not an error
    ]
    plot_emergence(rows, tmp_path / "emergence.png")
    assert (tmp_path / "emergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
