"""The checkpoints that ship with the package: they load, run through `gapeval run`, and still score.

The accuracy floors sit a little under what the shipped weights measured when they were committed (see the
README), so a broken checkpoint, codec, tokenizer or decoder shows up here.
"""

from __future__ import annotations

import json

import pytest

from gapeval.cli import main
from gapeval.models.toy import load_toy
from gapeval.models.toy.adapter import CHECKPOINTS
from gapeval.models.toy.checkpoint import CheckpointError
from gapeval.rundir import load_records
from gapeval.summary import joint_counts

# Measured at commit time: shared und 0.826 / gen 0.814, decoupled und 0.814 / gen 0.764; every category was
# above 0.20 in both directions (lowest: decoupled numerical-perception gen 0.308, instruction und 0.311).
FLOORS = {"shared": (0.79, 0.77), "decoupled": (0.77, 0.72)}
CATEGORY_FLOOR = 0.20


@pytest.mark.parametrize("variant", ["shared", "decoupled"])
def test_shipped_model_runs_the_whole_suite(variant, tmp_path):
    out = tmp_path / variant
    assert (
        main(
            [
                "run",
                "--model",
                f"toy:{variant}",
                "--suite",
                "synth",
                "--out",
                str(out),
                "--no-progress",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    counts = joint_counts(load_records(out))
    overall = counts.pop("overall")
    und_floor, gen_floor = FLOORS[variant]
    assert overall["n"] == 420 and overall["n_error"] == 0
    assert overall["und_acc"] >= und_floor and overall["gen_acc"] >= gen_floor
    assert len(counts) == 4
    for category, c in counts.items():
        assert min(c["und_acc"], c["gen_acc"]) > CATEGORY_FLOOR, (category, c)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["config"]["variant"] == variant


def test_intermediate_checkpoints_ship_for_the_emergence_study():
    for variant in ("shared", "decoupled"):
        steps = sorted(p.name for p in (CHECKPOINTS / f"toy-{variant}").glob("step-*"))
        assert len(steps) >= 3
        first = int(steps[0].removeprefix("step-"))
        assert load_toy(f"{variant}@{first}").meta["step"] == first
    with pytest.raises(CheckpointError, match="no shipped checkpoint at step 7"):
        load_toy("shared@7")
