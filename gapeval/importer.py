"""``gapeval import``: outputs generated with the GapEval release's own scripts, as a normal run directory.

In the release's layout each ``data_<id>/`` holds the item and, next to it, one folder per model with
``text.json`` (``{"output_text": ...}``) and the generated image file(s). Importing answers every item from
those files through the ordinary runner, so the run directory is judged, scored, reported and resumable like
any other. A missing or unreadable output is an error on that item alone (a later import retries it), never
a crash and never a wrong answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval.io import read_image
from gapeval.items import Item
from gapeval.judges.base import Judge
from gapeval.models.base import Request
from gapeval.public import IMAGE_SUFFIXES, INPUT_IMAGE_DIRS, REFERENCE_IMAGE_DIRS, load_public
from gapeval.runner import run

LAYOUTS = ("gapeval",)
TEXT_FILE = "text.json"
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


def read_image_output(folder: Path) -> Image.Image:
    """The generation answer: the folder's image file, the first by name when there are several (the
    release's judge lists them sorted)."""
    images = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    )
    if not images:
        raise FileNotFoundError(f"no image file ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return read_image(images[0], file=str(images[0]), item=None, field="image")


class ReleaseOutputs:
    """A model whose answers are files in the release's layout (the adapter protocol of models/base.py).

    A failed read is returned in place of that answer, so the runner records it as the item's error.
    """

    def __init__(self, data_dir: str | Path, model_dir: str, items: Sequence[Item]):
        root = Path(data_dir)
        self.model_dir = model_dir
        self.name = f"import:{model_dir}"
        self.folders = {item.id: root / item.meta["source"] / model_dir for item in items}

    def config(self) -> dict[str, Any]:
        return {"layout": "gapeval", "model_dir": self.model_dir}

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


def import_outputs(
    data_dir: str | Path,
    model_dir: str,
    out_dir: str | Path,
    *,
    layout: str = "gapeval",
    batch_size: int = 16,
    judge_overrides: dict[str, Judge] | None = None,
    progress: bool = True,
    bootstrap: int = 1000,
) -> Path:
    """Judge and score the outputs in ``DATA_DIR/data_<id>/MODEL_DIR/`` into the run directory ``out_dir``.

    The items are the release's own (``public:DATA_DIR``); the run resumes like ``gapeval run``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    items = load_public(data_dir)
    model = ReleaseOutputs(data_dir, model_dir, items)
    if not any(folder.is_dir() for folder in model.folders.values()):
        first = next(iter(model.folders.values())).parent
        found = sorted(p.name for p in first.iterdir() if p.is_dir() and p.name not in ITEM_DIRS)
        raise FileNotFoundError(
            f"no data_<id>/{model_dir}/ output folders under {data_dir}; {first.name} has {found or 'none'}"
        )
    return run(
        model,
        items,
        out_dir,
        suite_id=f"public:{data_dir}",
        batch_size=batch_size,
        judge_overrides=judge_overrides,
        progress=progress,
        bootstrap=bootstrap,
    )
