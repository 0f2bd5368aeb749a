"""The benchmark item: one question posed in both directions (understanding and generation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

CATEGORIES = ("instruction_following", "numerical_perception", "world_knowledge", "reasoning")
DIRECTIONS = ("und", "gen")


class ItemError(ValueError):
    """A malformed item; the message names the file, the item id and the field."""

    def __init__(
        self, message: str, *, file: str | None = None, item: str | None = None, field: str | None = None
    ):
        where = ", ".join(
            f"{k}={v}" for k, v in (("file", file), ("item", item), ("field", field)) if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)
        self.reason, self.file, self.item, self.field = message, file, item, field


@dataclass
class Item:
    """One benchmark question.

    ``spec`` holds machine-checkable answers per direction (``{"und": {...}, "gen": {...}}``) for rule judges;
    ``reference`` holds accepted text answers for judges that compare strings or for a VLM judge's rubric.
    """

    id: str
    category: str
    subcategory: str
    und_prompt: str
    gen_prompt: str
    image: Image.Image | None = None
    reference: list[str] = field(default_factory=list)
    reference_image: Image.Image | None = None
    spec: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_item(self)

    def prompt(self, direction: str) -> str:
        return self.und_prompt if direction == "und" else self.gen_prompt


def validate_item(item: Item, file: str | None = None) -> None:
    """Raise ItemError naming the field if the item breaks the data contract."""

    def need_str(name: str, allow_empty: bool = False) -> None:
        value = getattr(item, name)
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            raise ItemError(
                f"{name} must be a non-empty string, got {value!r}", file=file, item=str(item.id), field=name
            )

    if not isinstance(item.id, str) or not item.id.strip():
        raise ItemError(f"id must be a non-empty string, got {item.id!r}", file=file, field="id")
    need_str("category")
    if item.category not in CATEGORIES:
        raise ItemError(
            f"unknown category {item.category!r}; expected one of {', '.join(CATEGORIES)}",
            file=file,
            item=item.id,
            field="category",
        )
    need_str("subcategory", allow_empty=True)
    need_str("und_prompt")
    need_str("gen_prompt")
    if not isinstance(item.reference, list) or not all(isinstance(r, str) for r in item.reference):
        raise ItemError("reference must be a list of strings", file=file, item=item.id, field="reference")
    for name in ("image", "reference_image"):
        value = getattr(item, name)
        if value is not None and not isinstance(value, Image.Image):
            raise ItemError(f"{name} must be a PIL image or None", file=file, item=item.id, field=name)
    if item.spec is not None:
        if not isinstance(item.spec, dict) or not set(item.spec) <= set(DIRECTIONS):
            raise ItemError("spec must be a dict keyed by 'und'/'gen'", file=file, item=item.id, field="spec")
    if not isinstance(item.meta, dict):
        raise ItemError("meta must be a dict", file=file, item=item.id, field="meta")
