"""The toolkit's own suite format: ``items.jsonl`` plus an ``images/`` folder of PNGs.

One JSON object per line holds every Item field; images are stored losslessly as PNG and referenced by a path
relative to the JSONL file, so a suite folder can be moved, diffed and shared. ``load_items(save_items(x))``
gives back equal items (same pixels, same fields). Images in the toolkit are RGB: anything else is converted
(transparent pixels composited onto white) when saved, loaded or hashed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval.files import atomic_write, numbered_jsonl
from gapeval.items import Item, ItemError, validate_item

ITEMS_FILE = "items.jsonl"
IMAGES_DIR = "images"
REQUIRED_FIELDS = ("id", "category", "und_prompt", "gen_prompt")
OPTIONAL_FIELDS = ("subcategory", "reference", "image", "reference_image", "spec", "meta")
IMAGE_FIELDS = ("image", "reference_image")
DATA_FIELDS = ("id", "category", "subcategory", "und_prompt", "gen_prompt", "reference", "spec", "meta")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def to_rgb(image: Image.Image) -> Image.Image:
    """A detached plain RGB copy with no metadata, so that equal pixels mean equal images."""
    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    else:
        out = image.convert("RGB")
    out.info = {}
    return out


def read_image(path: Path, *, file: str, item: str | None, field: str) -> Image.Image:
    """Load an image fully into memory (no open file handle) as RGB, or raise ItemError naming where."""
    if not path.is_file():
        raise ItemError(f"image file {path} does not exist", file=file, item=item, field=field)
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ItemError(f"cannot read image {path}: {err}", file=file, item=item, field=field) from err


def build_item(file: str, **fields: Any) -> Item:
    """Construct an Item; a contract violation is re-raised with ``file`` added to the error."""
    try:
        return Item(**fields)
    except ItemError as err:
        raise ItemError(err.reason, file=file, item=err.item, field=err.field) from None


def _data_fields(item: Item) -> dict[str, Any]:
    """Every Item field except the images, as plain JSON data (the images are stored or hashed apart)."""
    return {name: getattr(item, name) for name in DATA_FIELDS}


def _json_problem(value: Any, path: str) -> str | None:
    """Where ``value`` stops being plain JSON data (which would not round-trip equal), or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}"
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _json_problem(v, f"{path}[{i}]"))), None)
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str):
                return f"{path} has non-string key {key!r}"
            if problem := _json_problem(v, f"{path}[{key!r}]"):
                return problem
        return None
    return f"{path} is a {type(value).__name__}"


def _image_names(item_ids: Iterable[str]) -> dict[tuple[str, str], str]:
    """Distinct, filesystem-safe PNG names per (item id, field), even for ids differing only in case."""
    names: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    for item_id in item_ids:
        stem = _UNSAFE_FILENAME.sub("_", item_id)[:100]
        for field, suffix in (("image", ""), ("reference_image", "_ref")):
            name, n = f"{stem}{suffix}.png", 1
            while name.casefold() in taken:
                n += 1
                name = f"{stem}{suffix}-{n}.png"
            taken.add(name.casefold())
            names[item_id, field] = name
    return names


def save_items(items: Iterable[Item], folder: str | Path) -> Path:
    """Write ``folder/items.jsonl`` and ``folder/images/*.png``; return the JSONL path.

    spec and meta must be plain JSON data (dicts with string keys, lists, str, int, finite float, bool, None):
    a tuple would come back as a list, so it is refused rather than silently changed.
    """
    items = list(items)
    folder = Path(folder)
    target = folder / ITEMS_FILE
    seen: set[str] = set()
    for item in items:
        validate_item(item)
        if item.id in seen:
            raise ItemError("duplicate id", file=str(target), item=item.id, field="id")
        seen.add(item.id)
        for name in ("spec", "meta", "reference"):
            if problem := _json_problem(getattr(item, name), name):
                raise ItemError(f"not plain JSON data: {problem}", file=str(target), item=item.id, field=name)
    (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    names = _image_names(item.id for item in items)
    lines = []
    for item in items:
        record = _data_fields(item)
        for field in IMAGE_FIELDS:
            image = getattr(item, field)
            record[field] = None
            if image is not None:
                relative = f"{IMAGES_DIR}/{names[item.id, field]}"
                to_rgb(image).save(folder / relative, format="PNG")
                record[field] = relative
        lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    return atomic_write(target, "".join(lines))


def _item_from_line(record: Any, base: Path, where: str) -> Item:
    if not isinstance(record, dict):
        raise ItemError(f"expected a JSON object, got {type(record).__name__}", file=where)
    item_id = record.get("id")
    label = str(item_id) if item_id is not None else None
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise ItemError(f"missing required field {name!r}", file=where, item=label, field=name)
    unknown = sorted(set(record) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ItemError(f"unknown field(s) {', '.join(unknown)}", file=where, item=label, field=unknown[0])
    fields = {"subcategory": "", **record}
    for name in IMAGE_FIELDS:
        relative = fields.get(name)
        if relative is None:
            continue
        if not isinstance(relative, str) or not relative.strip():
            raise ItemError(
                f"expected a relative image path or null, got {relative!r}",
                file=where,
                item=label,
                field=name,
            )
        path = (base / relative).resolve()
        if Path(relative).is_absolute() or not path.is_relative_to(base.resolve()):
            raise ItemError(
                f"image path {relative!r} leaves the suite folder", file=where, item=label, field=name
            )
        fields[name] = read_image(path, file=where, item=label, field=name)
    return build_item(where, **fields)


def load_items(folder_or_jsonl: str | Path) -> list[Item]:
    """Read a suite written by ``save_items`` (a folder holding items.jsonl, or the JSONL file itself).

    Errors name the file and line, the item id and the field.
    """
    path = Path(folder_or_jsonl)
    jsonl = path / ITEMS_FILE if path.is_dir() else path
    if not jsonl.is_file():
        raise FileNotFoundError(f"no suite file at {jsonl}")
    items: list[Item] = []
    first_line: dict[str, int] = {}

    def malformed(path: Path, number: int, problem: str) -> ItemError:
        return ItemError(f"malformed JSON: {problem}", file=f"{path}:{number}")

    for number, record in numbered_jsonl(jsonl, error=malformed, objects_only=False):
        where = f"{jsonl}:{number}"
        item = _item_from_line(record, jsonl.parent, where)
        if item.id in first_line:
            raise ItemError(
                f"duplicate id (first on line {first_line[item.id]})",
                file=where,
                item=item.id,
                field="id",
            )
        first_line[item.id] = number
        items.append(item)
    return items


def _image_digest(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    rgb = to_rgb(image)
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


def _canonical_json(value: Any, item_id: str, field: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ItemError(f"not JSON data: {err}", item=item_id, field=field) from None


def suite_hash(items: Iterable[Item]) -> str:
    """sha256 over the items' content (text, spec, meta, RGB pixels), independent of item order.

    Run manifests record it so a run directory is never resumed against a changed suite; it is unchanged by a
    save/load round trip.
    """
    lines = []
    for item in sorted(items, key=lambda it: it.id):
        fields = _data_fields(item) | {field: _image_digest(getattr(item, field)) for field in IMAGE_FIELDS}
        lines.append(
            _canonical_json({k: _canonical_json(v, item.id, k) for k, v in fields.items()}, item.id, "id")
        )
    digest = hashlib.sha256(b"gapeval-suite-v1\n")
    digest.update("\n".join(lines).encode("utf-8"))
    return digest.hexdigest()
