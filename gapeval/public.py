"""The public GapEval release as Items: its on-disk layout and Hugging Face ``datasets`` copies of it.

On disk, one folder per item ``data_<id>/`` holds ``prompt.json`` (``category``, ``subcategory``,
``und_prompt``, ``gen_prompt``, ``reference``, optional ``img`` and ``expect_image``), the input image in
``image/`` and the reference answer image in ``ref/``. Release category names map onto the toolkit's four
categories; the original name is kept in ``meta["source_category"]``. Public items carry no machine-checkable
spec (``spec=None``): their answers are free-form and need a VLM judge. The exception is the und answer of a
counting item, whose reference names objects and their counts: the text judge reads those from the reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval.io import build_item, load_items, read_image, to_rgb
from gapeval.items import Item, ItemError

SOURCE_CATEGORIES = {
    "rule based": "instruction_following",
    "counting": "numerical_perception",
    "multi hop": "world_knowledge",
    "reasoning": "reasoning",
    "physics": "reasoning",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# The release spells the input-image folder "inage" in a few items.
INPUT_IMAGE_DIRS = ("image", "inage")
REFERENCE_IMAGE_DIRS = ("ref",)
# Hugging Face column names accepted for each Item field, first match wins.
HF_COLUMNS = {
    "id": ("id", "data_id", "idx"),
    "image": ("image", "img", "input_image"),
    "reference_image": ("reference_image", "ref", "ref_image", "expect_image"),
}
PATH_SUITE_KINDS = ("public", "hf", "jsonl")
_ITEM_DIR = re.compile(r"data_(\d+)")
_SEPARATORS = re.compile(r"[\s_\-]+")


def map_category(name: Any, *, file: str, item: str) -> str:
    """The toolkit category for a release category name, tolerant of case, spaces, '_' and '-'."""
    key = _SEPARATORS.sub(" ", name).strip().lower() if isinstance(name, str) else None
    if key not in SOURCE_CATEGORIES:
        raise ItemError(
            f"unknown category {name!r}; expected one of rule_based, counting, Multi Hop, reasoning, physics",
            file=file,
            item=item,
            field="category",
        )
    return SOURCE_CATEGORIES[key]


def _references(value: Any) -> list[str]:
    """Reference texts: strings as they are, anything else as JSON text (how the release hands it to its judge).

    A list gives one accepted answer per entry; any other JSON value (an object such as a counting item's
    ``{"objects": [...], "number": [...]}``, a number, true/false) is one answer.
    """
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]


def counting_spec(value: Any) -> dict[str, Any] | None:
    """The und spec of a counting reference ``{"objects": [names], "number": [counts]}``, else None.

    The reference may also come as that object's JSON text (a dataset column holds strings). A reference of
    another shape stays text only: a VLM judge reads it.
    """
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    names, numbers = value.get("objects"), value.get("number")
    if not (isinstance(names, list) and isinstance(numbers, list) and names and len(names) == len(numbers)):
        return None
    tally: dict[str, int] = {}
    for name, number in zip(names, numbers, strict=True):
        if isinstance(number, str) and number.strip().isdigit():
            number = int(number)
        if not (isinstance(name, str) and name.strip() and name.strip() not in tally):
            return None
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            return None
        tally[name.strip()] = number
    return {"und": {"type": "tally", "tally": tally}}


def item_from_record(
    record: Mapping[str, Any],
    *,
    item_id: str,
    image: Image.Image | None,
    reference_image: Image.Image | None,
    source: str,
    file: str,
) -> Item:
    """An Item from one release record (a prompt.json object or a dataset row); images already resolved."""
    category = record.get("category")
    mapped = map_category(category, file=file, item=item_id)
    subcategory = record.get("subcategory")
    und_prompt = record.get("und_prompt")
    return build_item(
        file,
        id=item_id,
        category=mapped,
        subcategory=subcategory if subcategory else category.strip(),
        und_prompt=und_prompt if und_prompt is not None else record.get("problem"),
        gen_prompt=record.get("gen_prompt"),
        image=image,
        reference=_references(record.get("reference")),
        reference_image=reference_image,
        spec=counting_spec(record.get("reference")),
        meta={"source_category": category, "source": source},
    )


def _folder_image(
    item_dir: Path, folders: tuple[str, ...], named: Any, *, file: str, item: str, field: str
) -> Image.Image | None:
    """The one image file in ``folders``; ``named`` (prompt.json's relative path or file name) picks among
    several, and is the fallback when the folders are absent or empty."""
    candidates = [
        path
        for folder in folders
        if (item_dir / folder).is_dir()
        for path in sorted((item_dir / folder).iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    named = named if isinstance(named, str) and named.strip() else None
    if len(candidates) == 1:
        return read_image(candidates[0], file=file, item=item, field=field)
    if named is not None:
        matches = [p for p in candidates if p.name == Path(named).name]
        direct = item_dir / named
        if matches:
            return read_image(matches[0], file=file, item=item, field=field)
        if (
            not Path(named).is_absolute()
            and direct.resolve().is_relative_to(item_dir.resolve())
            and direct.is_file()
        ):
            return read_image(direct, file=file, item=item, field=field)
        raise ItemError(
            f"names image {named!r}, which is not in {item_dir}", file=file, item=item, field=field
        )
    if candidates:
        names = ", ".join(p.name for p in candidates)
        raise ItemError(
            f"{len(candidates)} images ({names}) and prompt.json does not name one",
            file=file,
            item=item,
            field=field,
        )
    return None


def _read_prompt_json(path: Path, item_id: str) -> Mapping[str, Any]:
    if not path.is_file():
        raise ItemError("missing prompt.json", file=str(path), item=item_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ItemError(f"malformed JSON: {err}", file=str(path), item=item_id) from None
    # Some release files wrap the object in a list; the release's own judge reads the first entry.
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        raise ItemError("expected a JSON object", file=str(path), item=item_id)
    return data


def _item_dirs(root: Path) -> list[tuple[int, Path]]:
    """``data_<id>`` folders directly under root, or one level down (a download with a ``data/`` folder)."""
    for pattern in ("*", "*/*"):
        found = [
            (int(m.group(1)), p)
            for p in root.glob(pattern)
            if p.is_dir() and (m := _ITEM_DIR.fullmatch(p.name))
        ]
        if found:
            return sorted(found)
    return []


def load_public(root: str | Path) -> list[Item]:
    """All items of a public GapEval tree, sorted by numeric id (``data_7`` has id ``"7"``)."""
    root = Path(root)
    found = _item_dirs(root)
    if not found:
        raise FileNotFoundError(f"no data_<id> folders under {root}")
    items: list[Item] = []
    seen: dict[int, Path] = {}
    for number, item_dir in found:
        item_id, prompt_path = str(number), item_dir / "prompt.json"
        if number in seen:
            raise ItemError(
                f"duplicate id: {seen[number]} and {item_dir}",
                file=str(prompt_path),
                item=item_id,
                field="id",
            )
        seen[number] = item_dir
        record = _read_prompt_json(prompt_path, item_id)
        where = str(prompt_path)
        items.append(
            item_from_record(
                record,
                item_id=item_id,
                image=_folder_image(
                    item_dir, INPUT_IMAGE_DIRS, record.get("img"), file=where, item=item_id, field="img"
                ),
                reference_image=_folder_image(
                    item_dir,
                    REFERENCE_IMAGE_DIRS,
                    record.get("expect_image"),
                    file=where,
                    item=item_id,
                    field="expect_image",
                ),
                source=str(item_dir.relative_to(root)),
                file=where,
            )
        )
    return items


def _hf_image(value: Any, base: Path, *, file: str, item: str, field: str) -> Image.Image | None:
    """A dataset cell as an RGB image: a decoded PIL image, a {bytes, path} record, or a relative path."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return to_rgb(value)
    if isinstance(value, dict) and value.get("bytes"):
        try:
            with Image.open(BytesIO(value["bytes"])) as image:
                return to_rgb(image)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ItemError(f"cannot read image bytes: {err}", file=file, item=item, field=field) from err
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and path.strip():
        resolved = Path(path) if Path(path).is_absolute() else base / path
        return read_image(resolved, file=file, item=item, field=field)
    raise ItemError(f"expected an image, got {type(value).__name__}", file=file, item=item, field=field)


def _pick_split(dataset: Any, split: str | None, path: Path) -> tuple[Any, str]:
    from datasets import DatasetDict

    if not isinstance(dataset, DatasetDict):
        return dataset, split or "train"
    names = sorted(dataset)
    if split is None and len(names) == 1:
        split = names[0]
    if split not in dataset:
        wanted = "choose one" if split is None else f"no split {split!r}"
        raise ValueError(f"{path}: {wanted} of the splits {', '.join(names)} (e.g. hf:{path}#{names[0]})")
    return dataset[split], split


def looks_like_hf_dataset(path: Path) -> bool:
    """A ``save_to_disk`` folder, or a folder of data files that ``datasets.load_dataset`` can read."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    suffixes = (".parquet", ".arrow", ".json", ".jsonl", ".csv")
    return path.is_dir() and any(p.suffix in suffixes and p.name != "prompt.json" for p in path.rglob("*"))


def load_public_hf(
    path: str | Path, split: str | None = None, cache_dir: str | Path | None = None
) -> list[Item]:
    """Items from a local Hugging Face dataset (``save_to_disk`` output, or a folder of parquet/json files).

    Columns follow prompt.json's keys (see HF_COLUMNS for the image and id columns). ``split`` may be left out
    when the dataset has a single split. Nothing is fetched from the Hub.
    """
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no dataset folder at {path}")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    else:
        loaded = datasets.load_dataset(str(path), cache_dir=None if cache_dir is None else str(cache_dir))
    table, split = _pick_split(loaded, split, path)
    columns = {
        field: next((c for c in names if c in table.column_names), None)
        for field, names in HF_COLUMNS.items()
    }
    items: list[Item] = []
    seen: dict[str, int] = {}
    for row_number, row in enumerate(table):
        item_id = str(row[columns["id"]]) if columns["id"] else str(row_number)
        where = f"{path} [{split} row {row_number}]"
        if item_id in seen:
            raise ItemError(
                f"duplicate id (first in row {seen[item_id]})", file=where, item=item_id, field="id"
            )
        seen[item_id] = row_number
        images = {
            field: _hf_image(row[column], path, file=where, item=item_id, field=column) if column else None
            for field, column in columns.items()
            if field != "id"
        }
        items.append(
            item_from_record(row, item_id=item_id, **images, source=f"{split}[{row_number}]", file=where)
        )
    return sorted(items, key=lambda it: (0, int(it.id), "") if it.id.isdigit() else (1, 0, it.id))


def resolve_path_suite(kind: str, path: str) -> list[Item]:
    """The items behind ``--suite KIND:PATH``.

    ``jsonl``: the toolkit format (gapeval.io). ``public``: a public GapEval download, either the data_<id>
    layout or a Hugging Face dataset. ``hf``: a Hugging Face dataset. For datasets with several splits, append
    ``#SPLIT`` to the path.
    """
    if kind not in PATH_SUITE_KINDS:
        raise ValueError(f"unknown suite kind {kind!r}; expected one of {', '.join(PATH_SUITE_KINDS)}")
    if kind == "jsonl":
        return load_items(path)
    split = None
    if "#" in path and not Path(path).exists():
        path, split = path.rsplit("#", 1)
    folder = Path(path)
    if kind == "public" and _item_dirs(folder):
        return load_public(folder)
    if kind == "hf" or looks_like_hf_dataset(folder):
        return load_public_hf(folder, split=split)
    raise FileNotFoundError(
        f"{folder}: neither data_<id> folders (public GapEval layout) nor a datasets dataset"
    )
