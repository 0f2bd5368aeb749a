"""Ask items in both directions and judge the answers, in memory: the outcome measure every intervention uses.

The same requests (seeds), judges and verdicts as ``gapeval run`` (:func:`gapeval.runner.evaluate_batch`), but
nothing is written, so an edited or patched model can be judged many times in one study. Images are kept when
asked for (``keep_images``) so callers can save the ones they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, UMM, Request
from gapeval.runner import JudgePlan, checked_answer, item_seed, safe_verdict


def judged(
    model: UMM,
    items: Sequence[Item],
    *,
    directions: Sequence[str] = DIRECTIONS,
    seed: int = 0,
    batch_size: int = 64,
    judges: JudgePlan | None = None,
    keep_images: bool = False,
) -> list[dict[str, Any]]:
    """One record per item: ``{"id", "category", DIRECTION: {"output", "correct", "reason"}}``.

    ``output`` is the text answer (und) or the PIL image when ``keep_images`` (gen; else None). A judge error,
    or an Exception the adapter returns for one request, leaves ``correct`` None with the reason, as in a run;
    an exception the model raises propagates (under an intervention it is a bug, not an item's error).
    ``directions`` may be one of them only.
    """
    plan = judges or JudgePlan(items, None)
    records = [{"id": it.id, "category": it.category} for it in items]
    for direction in directions:
        call = model.understand if direction == "und" else model.generate
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            answers = call(
                [Request(i.id, i.prompt(direction), i.image, item_seed(seed, i.id)) for i in chunk]
            )
            kind = str if direction == "und" else Image.Image
            for k, (item, raw) in enumerate(zip(chunk, answers, strict=True)):
                answer, error = checked_answer(raw, kind)
                if error is None:
                    verdict = safe_verdict(plan.judge(item, direction), item, answer)
                    correct, reason = verdict.correct, verdict.reason or verdict.error or ""
                else:  # the adapter failed this one request: an error, never a wrong answer
                    correct, reason = None, error
                records[start + k][direction] = {
                    "output": answer if isinstance(answer, str) or keep_images else None,
                    "correct": correct,
                    "reason": reason,
                }
    return records


def accuracy(records: Sequence[dict[str, Any]], direction: str) -> float | None:
    """Share of judged records that are correct in ``direction`` (None when none was judged)."""
    marks = [r[direction]["correct"] for r in records if r.get(direction, {}).get("correct") is not None]
    return sum(marks) / len(marks) if marks else None
