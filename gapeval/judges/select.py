"""Which judge decides an item's answer in one direction.

Items with a machine-checkable ``spec`` get the rule judges (exact and free); text answers without a spec are
matched against ``item.reference`` — unless every reference is structured JSON (an object or a list, as some
public release items give), which no string match can decide; those text answers, and images without a spec,
need a VLM judge. When none is configured the verdict is an *error* (``correct=None``), so an unjudgeable
answer is never counted as wrong.
"""

from __future__ import annotations

import json
from functools import cache

from PIL import Image

from gapeval.items import Item
from gapeval.judges.base import Judge, Verdict

NO_IMAGE_JUDGE = "no image judge configured for items without spec"
NO_TEXT_RULE = "no VLM judge configured for a structured (JSON) reference that the text rules cannot read"


class UnconfiguredJudge:
    """Stands in for a missing VLM judge: every verdict is an error naming what to configure."""

    id = "none"

    def __init__(self, error: str = NO_IMAGE_JUDGE):
        self.error = error

    def judge(self, item: Item, answer: str | Image.Image) -> Verdict:
        return Verdict(correct=None, judge=self.id, error=self.error)


@cache
def _text_judge() -> Judge:
    from gapeval.judges.text import TextJudge

    return TextJudge()


@cache
def _synth_image_judge() -> Judge:
    from gapeval.judges.image import SynthImageJudge

    return SynthImageJudge()


def _structured(reference: str) -> bool:
    if not reference.lstrip().startswith(("{", "[")):
        return False
    try:
        return isinstance(json.loads(reference), dict | list)
    except json.JSONDecodeError:
        return False


def _text_rules_decide(item: Item) -> bool:
    """True when the text judge can read the und answer: by the und spec, or against a plain-text reference."""
    has_spec = item.spec is not None and item.spec.get("und") is not None
    return has_spec or not item.reference or not all(map(_structured, item.reference))


def judge_for(item: Item, direction: str, vlm: Judge | None = None) -> Judge:
    """The judge for ``item`` in ``direction`` ("und" or "gen"); ``vlm`` judges what the rules cannot."""
    if direction == "und":
        if _text_rules_decide(item):
            return _text_judge()
        return vlm if vlm is not None else UnconfiguredJudge(NO_TEXT_RULE)
    if direction != "gen":
        raise ValueError(f"direction must be 'und' or 'gen', got {direction!r}")
    if item.spec is not None and item.spec.get("gen") is not None:
        return _synth_image_judge()
    return vlm if vlm is not None else UnconfiguredJudge()


def needs_vlm(items: list[Item], direction: str) -> bool:
    """True when some item's answer in ``direction`` can only be judged by a VLM."""
    if direction == "und":
        return not all(map(_text_rules_decide, items))
    return any(item.spec is None or item.spec.get("gen") is None for item in items)
