"""The checkpoints that ship with the package: they load, run through `gapeval run`, and still score.

Greedy decoding reproduces the shipped weights' answers exactly, so the per-direction accuracies must match
the numbers the README documents (within half a point, i.e. two of 420 items): a broken checkpoint, codec,
tokenizer or decoder, or a README that no longer describes the shipped models, shows up here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gapeval.cli import main
from gapeval.models.toy import load_toy
from gapeval.models.toy.adapter import CHECKPOINTS, shipped_checkpoint
from gapeval.models.toy.checkpoint import CheckpointError
from gapeval.rundir import load_records
from gapeval.summary import joint_counts

README = Path(__file__).resolve().parents[1] / "README.md"
TOLERANCE = 0.005
# Every category is above 0.20 in both directions (lowest: decoupled numerical-perception gen 0.215,
# instruction und 0.295).
CATEGORY_FLOOR = 0.20


def _readme_rows(name: str) -> dict[str, tuple[float, float]]:
    """(und acc, gen acc) per variant from the README table rows whose first cell is `name` (a regex with one
    group, the variant)."""
    rows = re.findall(rf"^\| `{name}` \| ([\d.]+) \| ([\d.]+) \|", README.read_text(), flags=re.M)
    return {variant: (float(und), float(gen)) for variant, und, gen in rows}


def documented_accuracies() -> dict[str, tuple[float, float]]:
    """The README's table of the shipped (seed-0) checkpoints."""
    return _readme_rows(r"(\w+)")


def documented_seed1() -> dict[str, tuple[float, float]]:
    """The README's rows for training seed 1 (``toy:VARIANT@seed1``)."""
    return _readme_rows(r"toy:(\w+)@seed1")


def test_readme_documents_both_variants():
    assert set(documented_accuracies()) == {"shared", "decoupled"}
    assert set(documented_seed1()) == {"shared", "decoupled"}


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
    und, gen = documented_accuracies()[variant]
    assert overall["n"] == 420 and overall["n_error"] == 0
    assert abs(overall["und_acc"] - und) <= TOLERANCE, overall["und_acc"]
    assert abs(overall["gen_acc"] - gen) <= TOLERANCE, overall["gen_acc"]
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


@pytest.mark.parametrize(("variant", "seed"), [(v, s) for s in (0, 1) for v in ("shared", "decoupled")])
def test_emergence_log_ships_and_ends_where_the_final_checkpoint_scores(variant, seed):
    """The log is the suite judged along training: its last row is the final checkpoint's run, which is the
    README's row (for seed 1, the second training seed, the README's seed-1 rows)."""
    folder = shipped_checkpoint(variant, seed=seed).parent
    rows = [json.loads(line) for line in (folder / "emergence.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    final = max(int(p.name.removeprefix("step-")) for p in folder.glob("step-*"))
    assert len(rows) >= 16 and steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == final
    und, gen = (documented_accuracies() if seed == 0 else documented_seed1())[variant]
    assert abs(rows[-1]["und_acc"] - und) <= TOLERANCE and abs(rows[-1]["gen_acc"] - gen) <= TOLERANCE


@pytest.mark.parametrize("variant", ["shared", "decoupled"])
def test_second_training_seed_loads_by_spec(variant):
    """``toy:VARIANT@seed1`` is the final checkpoint of the seed-1 run: same recipe, another training seed."""
    from gapeval.models.base import Request
    from gapeval.models.registry import load_model
    from gapeval.suites import get_suite

    model = load_model(f"toy:{variant}@seed1", [])
    assert model.meta["train"]["seed"] == 1 and model.meta["train"]["variant"] == variant
    assert model.meta["step"] == model.meta["train"]["steps"]
    assert model.config()["weights_sha256"] != load_model(f"toy:{variant}", []).config()["weights_sha256"]
    item = next(i for i in get_suite("synth").items if i.category == "world_knowledge")
    [text] = model.understand([Request(item.id, item.und_prompt, item.image)])
    [picture] = model.generate([Request(item.id, item.gen_prompt)])
    assert isinstance(text, str) and text and picture.size == item.reference_image.size


@pytest.mark.parametrize("variant", ["shared", "decoupled"])
def test_shipped_models_know_reserve_founders_but_not_their_emblems(variant):
    """Injection targets must be new to the model: emblem accuracy at most three times naming a shape and a
    colour at random; the known kind's founders were taught, so they are answered."""
    from experiments.reserve_knowledge import reserve_knowledge
    from gapeval.models.registry import load_model

    found = reserve_knowledge(load_model(f"toy:{variant}", []))
    for kind in ("known", "unseen"):
        assert max(found[kind]["und"], found[kind]["gen"]) <= 3 * found["chance"], (kind, found)
    assert found["known"]["founder"] >= 0.9, found
