"""What a judge returns and the one method it must provide."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from PIL import Image

from gapeval.items import Item


@dataclass
class Verdict:
    """One judged answer. ``correct`` is None when judging failed: that is an error, never a wrong answer."""

    correct: bool | None
    judge: str
    reason: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge(Protocol):
    """Judges one direction of an item. ``id`` is recorded with every verdict."""

    id: str

    def judge(self, item: Item, answer: str | Image.Image) -> Verdict: ...
