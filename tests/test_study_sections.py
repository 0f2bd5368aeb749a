"""Every section of `gapeval study` at a tiny size on the built-in model: it finishes, reports, and every
command it prints is a real command line of the real parser with no absolute path in it."""

from __future__ import annotations

import time

import pytest
import yaml
from tests_support import check_commands, tiny_sweep

from experiments.paper_study.config import DEFAULT_CONFIG, load_config
from experiments.paper_study.records import finished
from experiments.paper_study.sections import section_names
from experiments.paper_study.study import run_study

TINY = {
    "gap": {"bootstrap": 20, "other_seeds": False, "oracles": 1},
    "edit": {
        "specs": 2,
        "kinds": ["edit"],
        "editors": ["lora"],
        "conditions": ["baseline", "und"],
        "lora_max_steps": 2,
    },
    "bridge": {"specs": 2, "editors": ["lora"]},
    "emergence": {"training_seeds": [0], "spot_checks": 1, "threshold": 0.5},
    "mechanism": {"pairs": 2, "probe_realms": 8, "attribute": "colour", "position": "last"},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study of every section into one folder (sections share the loaded model)."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    data["suite"] = "synth:40"
    folder = tmp_path_factory.mktemp("config")
    data["sizes"]["quick"] = {
        **TINY,
        "sharing": {"config": str(tiny_sweep(folder, conditions={"pair": {"variant": "pair"}}))},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path, quick=True, models=["toy"])
    out = tmp_path_factory.mktemp("study")
    seconds = {}
    for name in section_names():
        start = time.perf_counter()
        run_study(config, out, sections=[name], argv=["study", "--sections", name])
        seconds[name] = time.perf_counter() - start
    return out, seconds


@pytest.mark.parametrize("name", ["gap", "edit", "bridge", "emergence", "mechanism", "sharing"])
def test_each_section_finishes_with_real_commands(study, name):
    out, _ = study
    section = finished(out / name)
    assert section is not None and section.name == name
    assert section.tables or section.paragraphs
    assert section.commands, f"{name} prints no command behind its numbers"
    check_commands(section.commands)
    for record in section.records:
        assert (out / record).exists(), record
    assert f"{section.title}" in (out / "report.md").read_text()
