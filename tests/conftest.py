"""Shared test setup: never touch the Hugging Face Hub; one torch thread (tiny models run faster so);
the fixtures that several modules read (the intervenable adapters, the tiny sweep, the tiny study)."""

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only with GAPEVAL_SLOW=1 (their results are reported in the issue notes)."""
    if os.environ.get("GAPEVAL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; run with GAPEVAL_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Every intervenable adapter: intervention and probe tests take the ``intervenable`` fixture and so run on all.
INTERVENABLE = ("toy-shared", "toy-decoupled", "tiny-janus")


def make_intervenable(name: str):
    """A fresh adapter by id: the shipped toy checkpoints, or a tiny random Janus built in code."""
    if name.startswith("toy-"):
        from gapeval.models.toy.adapter import ToyAdapter

        return ToyAdapter.from_spec(name.removeprefix("toy-"))
    from tiny_hf import tiny_janus

    from gapeval.models.janus import JanusAdapter

    model, processor = tiny_janus(seed=0)
    return JanusAdapter(
        model, processor, dtype="float32", device="cpu", batch_size=4, max_new_tokens=6, cfg_scale=1.0
    )


@pytest.fixture(scope="module", params=INTERVENABLE)
def intervenable(request):
    return make_intervenable(request.param)


@pytest.fixture(scope="session")
def tiny_sweep_run(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny two-model sweep of tests_support trained and measured by `gapeval sweep`, once per session:
    (its folder, holding sweep.yaml; the sweep's output folder). Its users leave both as they found them."""
    from tests_support import tiny_sweep

    from gapeval.cli import main

    folder = tmp_path_factory.mktemp("sweep")
    out = folder / "out"
    assert main(["sweep", str(tiny_sweep(folder)), "--quick", "--out", str(out), "--no-progress"]) == 0
    return folder, out


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, tiny_sweep_run):
    """Every section of a tiny study of the built-in model, each by its own `run_study` call, into one folder:
    (that folder, the study's configuration). Its users leave both as they found them.

    The sharing section resumes a copy of ``tiny_sweep_run`` (the same sweep file), so it reports the models
    that fixture trained and measured instead of training them again."""
    import yaml
    from tests_support import TINY_STUDY

    from experiments.paper_study.config import DEFAULT_CONFIG, load_config
    from experiments.paper_study.sections import section_names
    from experiments.paper_study.study import run_study

    sweep_folder, sweep_out = tiny_sweep_run
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    data["suite"] = "synth:40"
    data["sizes"]["quick"] = {**TINY_STUDY, "sharing": {"config": str(sweep_folder / "sweep.yaml")}}
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path, quick=True, models=["toy"])
    out = tmp_path_factory.mktemp("study")
    shutil.copytree(sweep_out, out / "sharing")
    for name in section_names():
        run_study(config, out, sections=[name], argv=["study", "--sections", name])
    return out, config
