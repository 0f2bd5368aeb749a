"""The paper's study in one call: each section in turn (skipped when a previous run finished it), then the
report. ``gapeval study`` is a thin shell over :func:`run_study`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.paper_study.config import StudyConfig
from experiments.paper_study.records import complete, finished, write_json
from experiments.paper_study.sections import section_function, section_names
from gapeval.cli_args import command_line

STUDY = "study.json"  # the configuration and every command line that ran in this folder


@dataclass
class Context:
    """What every section needs: the configuration, the output folder, the suite, and loaded models (each
    loaded once per study; editors restore a model's weights on exit, so sections can share it)."""

    config: StudyConfig
    out: Path
    items: list = field(default_factory=list)
    suite_id: str = ""
    _models: dict[str, Any] = field(default_factory=dict)

    def model(self, spec: str) -> Any:
        from gapeval.models.registry import load_model

        if spec not in self._models:
            self._models[spec] = load_model(spec, self.items)
        return self._models[spec]

    def command(
        self, name: str, add_arguments: Callable[[Any], None], *positional: Any, **values: Any
    ) -> str:
        """The command line ``gapeval NAME`` with ``values`` (by option ``dest``), built and checked by that
        command's real parser. Paths inside the study's folder are written relative to it (the report says
        to run the commands from there), so no printed command holds an absolute path."""

        def shown(value: Any) -> Any:
            return os.path.relpath(value, self.out) if isinstance(value, Path) else value

        return command_line(
            name, add_arguments, [shown(p) for p in positional], **{k: shown(v) for k, v in values.items()}
        )

    def section_command(self, section: str) -> str:
        """The command that runs ``section`` alone with this study's settings (into this output folder)."""
        from experiments.study_cli import add_arguments

        return self.command(
            "study",
            add_arguments,
            quick=self.config.profile == "quick",
            models=list(self.config.models),
            seed=self.config.seed,
            sections=[section],
            out=self.out,
        )

    def folder(self, section: str) -> Path:
        path = self.out / section
        path.mkdir(parents=True, exist_ok=True)
        return path


def check_same_study(path: Path, config: StudyConfig) -> list[str]:
    """The earlier invocations of this study in ``path``'s folder. A folder that holds a study of another
    configuration is refused: its finished sections would be reported as this one's."""
    if not path.exists():
        return []
    study = json.loads(path.read_text(encoding="utf-8"))
    if study["config"] != config.to_json():
        raise ValueError(
            f"{path.parent} holds a study with another configuration (models, seed, sizes or config file; see "
            f"{path}); use another --out"
        )
    return list(study["invocations"])


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    sections: Sequence[str] | None = None,
    argv: Sequence[str] | None = None,
) -> Path:
    """Run (or resume) ``sections`` of the study into ``out``; return the path of ``report.md``, which shows
    every section finished in ``out`` so far.

    ``argv`` is the command line recorded as the origin of the sections this call runs (default: this
    process's)."""
    import torch
    from tqdm import tqdm

    from experiments.paper_study.study_report import write_report
    from gapeval.suites import get_suite

    names = section_names()
    sections = names if sections is None else sections
    if unknown := set(sections) - set(names):
        raise ValueError(f"unknown sections {sorted(unknown)}; expected some of {names}")
    torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suite = get_suite(config.suite)
    command = shlex.join(["gapeval", *(sys.argv[1:] if argv is None else argv)])
    ctx = Context(config, out, suite.items, suite.id)
    invocations = check_same_study(out / STUDY, config)
    write_json(out / STUDY, {"config": config.to_json(), "invocations": [*invocations, command]})
    start, load = time.perf_counter(), os.getloadavg()
    for name in (bar := tqdm([s for s in names if s in sections], desc="study", unit="section")):
        bar.set_postfix_str(name)
        section = finished(out / name)
        if section is None:
            began = time.perf_counter()
            section = section_function(name)(ctx)
            section.seconds, section.command = round(time.perf_counter() - began, 1), command
            complete(out / name, section)
        else:
            tqdm.write(f"{name}: finished by a previous run ({out / name / 'done.json'}); skipped")
    runtime = {
        "seconds": round(time.perf_counter() - start, 1),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    done = [section for name in names if (section := finished(out / name)) is not None]
    return write_report(out, config, [*invocations, command], done, runtime)
