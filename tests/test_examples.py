"""The worked example adapter in examples/ does what docs/adapters.md says: it passes the kit and runs through
``gapeval run`` as ``py:examples.tiny_umm_adapter:build``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gapeval.models.base import Request
from gapeval.testing import check_intervenable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``examples`` is imported from the repository root, as ``python -m gapeval`` run there would."""
    monkeypatch.syspath_prepend(str(ROOT))


def test_the_example_passes_the_kit() -> None:
    from examples.tiny_umm_adapter import build

    check_intervenable(build())


def test_sampling_follows_each_request_seed() -> None:
    from examples.tiny_umm_adapter import build

    adapter = build(temperature=1.0, max_new_tokens=8)
    requests = [Request(f"r{seed}", "Name the emblem of Ziga.", seed=seed) for seed in (1, 2, 1)]
    texts = adapter.understand(requests)
    assert texts[0] == texts[2] != texts[1]
    pixels = [np.asarray(im) for im in adapter.generate(requests)]
    assert np.array_equal(pixels[0], pixels[2]) and not np.array_equal(pixels[0], pixels[1])


def test_gapeval_run_on_synth_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gapeval.cli import main
    from gapeval.rundir import holds_error, load_records

    out = tmp_path / "run"
    model = ["--model", "py:examples.tiny_umm_adapter:build", "--model-arg", "seed=1"]
    args = ["run", *model, "--model-arg", "max_new_tokens=4", "--suite", "synth:6", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    records = load_records(out)
    assert len(records) == 6 and not any(holds_error(r) for r in records)
    assert all(isinstance(r["und"]["output"], str) and (out / r["gen"]["image"]).is_file() for r in records)
    config = json.loads((out / "manifest.json").read_text())["model"]["config"]
    assert config["adapter"] == "tiny-umm" and config["seed"] == 1 and config["max_new_tokens"] == 4
    typo = ["run", "--model", model[1], "--model-arg", "colour=red", "--suite", "synth:6", "--out", str(out)]
    assert main(typo) != 0 and "unknown --model-arg colour" in capsys.readouterr().err
