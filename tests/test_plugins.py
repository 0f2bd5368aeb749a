"""Extension points are registries: a throwaway editor and a throwaway study section, each added by one
registration and nothing else, run through `gapeval edit` and `gapeval study`; the study's printed commands
are real command lines of the real parser."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tests_support import check_commands

from experiments.paper_study import sections
from experiments.paper_study.records import Section
from gapeval.cli import main
from interventions import editing
from interventions.editing.editor import Edit, Editor


class ScaledEdit(Edit):
    def __init__(self, stats):
        self.stats = stats

    def save(self, path):
        Path(path).write_text(json.dumps(self.stats))


@dataclass
class ScaleEmbeddings(Editor):
    """Multiplies the first decoder layer's weights by ``factor`` inside the block: a crude edit with a
    visible effect, written against the contract only."""

    factor: float = 1.0
    name: str = "scale"

    def config(self):
        return {"name": self.name, "factor": self.factor}

    @contextmanager
    def apply(self, model, specs, via):
        weights = list(model.module.get_submodule(f"{model.layers_path}.0").parameters())
        before = [w.detach().clone() for w in weights]
        with torch.no_grad():
            for w in weights:
                w.mul_(self.factor)
        try:
            yield ScaledEdit({"factor": self.factor, "specs": len(specs), "via": via})
        finally:
            with torch.no_grad():
                for w, b in zip(weights, before, strict=True):
                    w.copy_(b)

    def load(self, model, path):
        return self.apply(model, [], "und")


@pytest.fixture
def registries(monkeypatch):
    monkeypatch.setattr(editing, "EDITORS", dict(editing.EDITORS))
    monkeypatch.setattr(sections, "SECTIONS", dict(sections.SECTIONS))


def test_a_registered_editor_runs_through_gapeval_edit(registries, tmp_path, capsys):
    editing.register_editor("scale", ScaleEmbeddings)
    out = tmp_path / "edit"
    argv = ["edit", "--model", "toy", "--method", "scale", "--editor-arg", "factor=0.0", "--edits", "2"]
    argv += [
        "--conditions",
        "baseline,und",
        "--locality-world",
        "2",
        "--locality-other",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["edit"]["editor"] == {"name": "scale", "factor": 0.0}
    training = [json.loads(line) for line in (out / "training.jsonl").read_text().splitlines()]
    assert training == [{"condition": "und", "unit": "all", "factor": 0.0, "specs": 2, "via": "und"}]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    locality = {
        (r["condition"], r["item"], r["direction"]): r["output"] for r in records if r["role"] == "locality"
    }
    # zeroed embeddings change what the model says; the baseline is the unedited model
    assert any(locality[("und", i, d)] != locality[("baseline", i, d)] for _, i, d in locality if _ == "und")
    assert main(argv[:-2] + ["--editor-arg", "factr=1", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown --editor-arg factr; accepted: factor" in capsys.readouterr().err


def hello_section(ctx):
    section = Section("hello", "Hello")
    section.paragraphs.append(f"{len(ctx.items)} items, models {', '.join(ctx.config.models)}")
    section.commands.append(ctx.section_command("hello"))
    return section


def test_a_registered_section_runs_through_gapeval_study(registries, tmp_path):
    sections.register_section("hello", hello_section)
    out = tmp_path / "study"
    assert main(["study", "--quick", "--sections", "hello", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## 1. Hello" in report and "420 items, models toy, toy:decoupled" in report
    done = json.loads((out / "hello" / "done.json").read_text())
    assert done["commands"] == [
        "gapeval study --quick --models toy toy:decoupled --seed 0 --sections hello --out ."
    ]
    check_commands(done["commands"])


def test_every_registered_model_is_documented_and_resolves():
    """One list: the registry is what `--model` accepts, what the README names and what `--help` prints."""
    from gapeval.models.registry import MODELS, model_forms, resolve

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for name, entry in MODELS.items():
        assert f"`{entry.form}`" in readme, f"README does not name --model {entry.form}"
        assert callable(resolve(entry.factory)), name
    assert model_forms() in build_parser_help("run")


def build_parser_help(command: str) -> str:
    import argparse

    from gapeval.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[command].format_help().split())


def test_a_registered_model_runs_through_gapeval_run(monkeypatch, tmp_path):
    from gapeval.models import registry
    from gapeval.models.oracle import OracleAdapter

    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    registry.register_model(
        "flaky",
        registry.ModelEntry(
            "flaky",
            lambda items, **kw: OracleAdapter(items, gen_error=1.0),
            "test",
            rest="none",
            takes_items=True,
        ),
    )
    out = tmp_path / "run"
    argv = ["run", "--model", "flaky", "--suite", "synth:20", "--out", str(out), "--no-progress"]
    assert main([*argv, "--bootstrap", "0"]) == 0  # no resampling: only the registry is under test here
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 20 and all(r["und"]["correct"] for r in records)
    assert not any(r["gen"]["correct"] for r in records)
    assert main(["run", "--model", "flaky:x", "--suite", "synth:20", "--out", str(tmp_path / "x")]) == 2
