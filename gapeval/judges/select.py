"""Which judge decides an item's answer in one direction.

Items with a machine-checkable ``spec`` get the rule judges (exact and free); text answers without a spec are
matched against ``item.reference``; images without a spec need a VLM judge. When none is configured the verdict
is an *error* (``correct=None``), so an unjudgeable answer is never counted as wrong.
"""

from __future__ import annotations

from functools import cache

from PIL import Image

from gapeval.items import Item
from gapeval.judges.base import Judge, Verdict

NO_IMAGE_JUDGE = "no image judge configured for items without spec"


class UnconfiguredImageJudge:
    """Stands in for a missing VLM judge: every verdict is an error naming what to configure."""

    id = "none"

    def judge(self, item: Item, answer: str | Image.Image) -> Verdict:
        return Verdict(correct=None, judge=self.id, error=NO_IMAGE_JUDGE)


@cache
def _text_judge() -> Judge:
    from gapeval.judges.text import TextJudge

    return TextJudge()


@cache
def _synth_image_judge() -> Judge:
    from gapeval.judges.image import SynthImageJudge

    return SynthImageJudge()


def judge_for(item: Item, direction: str, vlm: Judge | None = None) -> Judge:
    """The judge for ``item`` in ``direction`` ("und" or "gen"); ``vlm`` judges images of items without spec."""
    if direction == "und":
        return _text_judge()
    if direction != "gen":
        raise ValueError(f"direction must be 'und' or 'gen', got {direction!r}")
    if item.spec is not None and item.spec.get("gen") is not None:
        return _synth_image_judge()
    return vlm if vlm is not None else UnconfiguredImageJudge()


def needs_vlm(items: list[Item]) -> bool:
    """True when some item's image can only be judged by a VLM."""
    return any(item.spec is None or item.spec.get("gen") is None for item in items)
