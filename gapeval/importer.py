"""``gapeval import``: outputs generated with the GapEval release's own scripts, as a normal run directory.

In the release's layout each ``data_<id>/`` holds the item and, next to it, one folder per model with
``text.json`` (``{"output_text": ...}``) and the generated image file(s). Importing answers every item from
those files through the ordinary runner, so the run directory is judged, scored, reported and resumable like
any other. A missing or unreadable output is an error on that item alone (a later import retries it), never
a crash and never a wrong answer.

The verdicts come from the toolkit's judges, or (``verdicts="release"``) from the ``new_res.json`` the
release's judging script wrote beside the answers (see gapeval.release_verdicts): no judge, no network, and
the same verdicts as behind the published numbers. Several models at once also give the rows file the
release's scoring script reads (``{model: [[p11, p10, p01, p00], ...]}``) and a summary across the models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval.files import atomic_write, write_json_atomic
from gapeval.io import read_image
from gapeval.items import Item
from gapeval.judges.base import Judge
from gapeval.models.base import Request
from gapeval.public import IMAGE_SUFFIXES, INPUT_IMAGE_DIRS, REFERENCE_IMAGE_DIRS, load_public
from gapeval.release_verdicts import IMAGE_VERDICTS, describe_counts, release_judges, verdict_counts
from gapeval.rundir import load_records, read_summary
from gapeval.runner import run
from gapeval.summary import JOINT_KEYS

LAYOUTS = ("gapeval",)
VERDICT_SOURCES = ("judge", "release")  # the toolkit's judges, or the release's new_res.json
TEXT_FILE = "text.json"
ROWS_FILE, IMPORT_SUMMARY = "rows.json", "summary.md"  # beside the run directories of several models
RELEASE_LABEL = "new_res.json verdicts"  # how a summary introduces the counts of verdict_counts
ITEM_DIRS = (*INPUT_IMAGE_DIRS, *REFERENCE_IMAGE_DIRS)  # the item's own folders, not a model's


def read_text_output(folder: Path) -> str:
    """The understanding answer: ``output_text`` of the folder's text.json."""
    path = folder / TEXT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("output_text"), str):
        raise ValueError(f'{path}: expected {{"output_text": "..."}}')
    return data["output_text"]


def image_files(folder: Path) -> list[Path]:
    """The folder's image files, sorted by name (the order the release's judge lists them in)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def first_image_name(folder: Path) -> str | None:
    """The name of the image a run shows for this folder (the one "first" release verdicts must match)."""
    images = image_files(folder)
    return images[0].name if images else None


def read_image_output(folder: Path) -> Image.Image:
    """The generation answer: the folder's image file, the first by name when there are several (the
    release's judge lists them sorted)."""
    images = image_files(folder)
    if not images:
        raise FileNotFoundError(f"no image file ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return read_image(images[0], file=str(images[0]), item=None, field="image")


class ReleaseOutputs:
    """A model whose answers are files in the release's layout (the adapter protocol of models/base.py).

    A failed read is returned in place of that answer, so the runner records it as the item's error.
    ``notes`` feeds the summary's ``model_notes`` (the runner calls it once the results are complete).
    """

    def __init__(
        self,
        data_dir: str | Path,
        model_dir: str,
        items: Sequence[Item],
        notes: Callable[[], dict[str, Any]] | None = None,
    ):
        root = Path(data_dir)
        self.model_dir = model_dir
        self.name = f"import:{model_dir}"
        self.folders = {item.id: root / item.meta["source"] / model_dir for item in items}
        self._notes = notes

    def config(self) -> dict[str, Any]:
        return {"layout": "gapeval", "model_dir": self.model_dir}

    def notes(self) -> dict[str, Any]:
        return self._notes() if self._notes is not None else {}

    def _answers(self, requests: Sequence[Request], read: Callable[[Path], Any]) -> list[Any]:
        answers = []
        for request in requests:
            try:
                answers.append(read(self.folders[request.item_id]))
            except (OSError, ValueError) as exc:
                answers.append(exc)
        return answers

    def understand(self, requests: Sequence[Request]) -> list[str | Exception]:
        return self._answers(requests, read_text_output)

    def generate(self, requests: Sequence[Request]) -> list[Image.Image | Exception]:
        return self._answers(requests, read_image_output)


# --- importing -------------------------------------------------------------------------------------------


def _check_options(layout: str, verdicts: str, image_verdict: str, judge_overrides: Any) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if verdicts not in VERDICT_SOURCES:
        raise ValueError(f"unknown verdicts {verdicts!r}; expected one of {', '.join(VERDICT_SOURCES)}")
    if image_verdict not in IMAGE_VERDICTS:
        raise ValueError(
            f"unknown image verdict {image_verdict!r}; expected one of {', '.join(IMAGE_VERDICTS)}"
        )
    if verdicts == "judge" and image_verdict != "first":
        raise ValueError(f"image verdict {image_verdict!r} needs the release's verdicts (--verdicts release)")
    if verdicts == "release" and judge_overrides:
        raise ValueError("the release's verdicts replace the judges: judge overrides do not apply")


def _load(data_dir: str | Path, model_dirs: Sequence[str]) -> list[Item]:
    """The release's items, once every model folder name is checked to have outputs."""
    if not model_dirs:
        raise ValueError("no model folder given")
    if len(set(model_dirs)) != len(model_dirs):
        raise ValueError(f"a model folder is named twice: {', '.join(model_dirs)}")
    for name in model_dirs:
        if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
            raise ValueError(f"model folder {name!r}: expected a folder name inside data_<id>/, not a path")
    items = load_public(data_dir)
    for name in model_dirs:
        folders = ReleaseOutputs(data_dir, name, items).folders.values()
        if not any(folder.is_dir() for folder in folders):
            first = next(iter(folders)).parent
            found = sorted(p.name for p in first.iterdir() if p.is_dir() and p.name not in ITEM_DIRS)
            raise FileNotFoundError(
                f"no data_<id>/{name}/ output folders under {data_dir}; {first.name} has {found or 'none'}"
            )
    return items


def _import_one(
    items: Sequence[Item],
    data_dir: str | Path,
    model_dir: str,
    out: Path,
    *,
    verdicts: str,
    image_verdict: str,
    judge_overrides: dict[str, Judge] | None,
    **run_options: Any,
) -> Path:
    if verdicts == "release":
        model = ReleaseOutputs(
            data_dir, model_dir, items, notes=lambda: {"release_verdicts": verdict_counts(load_records(out))}
        )
        judge_overrides = release_judges(model.folders, image_verdict, first_image_name)
    else:
        model = ReleaseOutputs(data_dir, model_dir, items)
    return run(
        model, items, out, suite_id=f"public:{data_dir}", judge_overrides=judge_overrides, **run_options
    )


def import_outputs(
    data_dir: str | Path,
    model_dir: str,
    out_dir: str | Path,
    *,
    layout: str = "gapeval",
    verdicts: str = "judge",
    image_verdict: str = "first",
    batch_size: int = 16,
    judge_overrides: dict[str, Judge] | None = None,
    progress: bool = True,
    bootstrap: int = 1000,
) -> Path:
    """Judge and score the outputs in ``DATA_DIR/data_<id>/MODEL_DIR/`` into the run directory ``out_dir``.

    The items are the release's own (``public:DATA_DIR``); the run resumes like ``gapeval run``.
    ``verdicts="release"`` takes each verdict from the folder's new_res.json instead of judging;
    ``image_verdict`` (first, any, all) then says which image's verdict counts when there are several.
    """
    return import_models(
        data_dir,
        [model_dir],
        out_dir,
        layout=layout,
        verdicts=verdicts,
        image_verdict=image_verdict,
        batch_size=batch_size,
        judge_overrides=judge_overrides,
        progress=progress,
        bootstrap=bootstrap,
    )[model_dir]


def import_models(
    data_dir: str | Path,
    model_dirs: Sequence[str],
    out_dir: str | Path,
    *,
    layout: str = "gapeval",
    verdicts: str = "judge",
    image_verdict: str = "first",
    batch_size: int = 16,
    judge_overrides: dict[str, Judge] | None = None,
    progress: bool = True,
    bootstrap: int = 1000,
) -> dict[str, Path]:
    """Import several models' outputs (options as :func:`import_outputs`); return their run directories.

    One model: ``out_dir`` is its run directory. Several: each gets ``out_dir/MODEL_DIR/``, and ``out_dir``
    also holds ``rows.json`` (the joint rows the release's scoring script reads, so ``gapeval score`` on it
    gives the release's numbers) and ``summary.md`` (every model's table, with identified gaps, CIs, κ and
    McNemar).
    """
    _check_options(layout, verdicts, image_verdict, judge_overrides)
    items = _load(data_dir, model_dirs)
    out = Path(out_dir)
    runs = {
        name: _import_one(
            items,
            data_dir,
            name,
            out if len(model_dirs) == 1 else out / name,
            verdicts=verdicts,
            image_verdict=image_verdict,
            judge_overrides=judge_overrides,
            batch_size=batch_size,
            progress=progress,
            bootstrap=bootstrap,
        )
        for name in model_dirs
    }
    if len(runs) > 1:
        write_rows(runs, out / ROWS_FILE)
        atomic_write(out / IMPORT_SUMMARY, import_summary(runs, data_dir))
    return runs


# --- the rows file and the summary across models ---------------------------------------------------------


def _summary(run_dir: Path) -> dict[str, Any]:
    summary = read_summary(run_dir)
    if summary is None:
        raise FileNotFoundError(f"{run_dir}: no summary.json (has the run finished?)")
    return summary


def joint_rows(summary: Mapping[str, Any]) -> dict[str, list[float]]:
    """``{category: [p11, p10, p01, p00]}`` of a run summary, in the canonical category order, for every
    category with scored items (the rows the summary's own Gap Score is fitted to)."""
    from gapeval.report import rows

    return {
        category: [stats[key] for key in JOINT_KEYS]
        for category, stats in rows(dict(summary))[:-1]
        if stats.get("n")
    }


def write_rows(runs: Mapping[str, Path], path: str | Path) -> Path:
    """The release's scoring input ``{model: [[p11, p10, p01, p00], ...]}`` (one row per category) from run
    directories; a model without scored items has no rows and is left out (the import summary says so)."""
    table = {name: list(joint_rows(_summary(run_dir)).values()) for name, run_dir in runs.items()}
    return write_json_atomic(path, {name: rows for name, rows in table.items() if rows})


def import_summary(runs: Mapping[str, Path], data_dir: str | Path) -> str:
    """Markdown across the imported models: each run's table (report.table) and where its verdicts came from."""
    from gapeval.report import table

    lines = [
        f"# GapEval import: {len(runs)} models from {data_dir}",
        "",
        f"`{ROWS_FILE}` holds each model's joint rows for the release's scoring script: "
        f"`gapeval score {ROWS_FILE}` writes the release's Gap Scores to `rows_gapres.json`.",
    ]
    for name, run_dir in runs.items():
        summary = _summary(run_dir)
        categories = list(joint_rows(summary))
        lines += ["", f"## {name}", "", f"- run directory: `{run_dir}`"]
        lines.append(f"- rows: {', '.join(categories)}" if categories else "- rows: none (no item scored)")
        counts = summary.get("model_notes", {}).get("release_verdicts")
        if counts:
            lines.append(f"- {RELEASE_LABEL}: {describe_counts(counts)}")
        lines += ["", table(summary)]
    return "\n".join(lines) + "\n"


def describe_import(runs: Mapping[str, Path], out_dir: str | Path | None = None) -> str:
    """What ``gapeval import`` prints: each run's headline (with its new_res.json counts); for several models
    also the rows file and the summary."""
    from gapeval.report import headline

    blocks = []
    for name, run_dir in runs.items():
        first, *rest = headline(run_dir).splitlines()
        counts = _summary(run_dir).get("model_notes", {}).get("release_verdicts")
        lines = [first, *([f"{RELEASE_LABEL}: {describe_counts(counts)}"] if counts else []), *rest]
        blocks.append(lines if len(runs) == 1 else [f"{name}: {lines[0]}", *(f"  {x}" for x in lines[1:])])
    if len(runs) > 1 and out_dir is not None:
        blocks.append([f"rows: {Path(out_dir) / ROWS_FILE}", f"summary: {Path(out_dir) / IMPORT_SUMMARY}"])
    return "\n".join(line for block in blocks for line in block)
