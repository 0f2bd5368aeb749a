"""Ask items in both directions and judge the answers, in memory: the outcome measure every intervention uses.

The same requests (seeds), judges and verdicts as ``gapeval run`` (:func:`gapeval.runner.evaluate_batch`), but
nothing is written, so an edited or patched model can be judged many times in one study. Images are kept when
asked for (``keep_images``) so callers can save the ones they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, UMM, Request
from gapeval.runner import JudgePlan, item_seed


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

    ``output`` is the text answer (und) or the PIL image when ``keep_images`` (gen; else None). A judge error
    leaves ``correct`` None with the reason, as in a run. ``directions`` may be one of them only.
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
            for k, (item, answer) in enumerate(zip(chunk, answers, strict=True)):
                verdict = plan.judge(item, direction).judge(item, answer)
                keep = answer if isinstance(answer, str) or keep_images else None
                records[start + k][direction] = {
                    "output": keep,
                    "correct": verdict.correct,
                    "reason": verdict.reason or verdict.error or "",
                }
    return records


def accuracy(records: Sequence[dict[str, Any]], direction: str) -> float | None:
    """Share of judged records that are correct in ``direction`` (None when none was judged)."""
    marks = [r[direction]["correct"] for r in records if r.get(direction, {}).get("correct") is not None]
    return sum(marks) / len(marks) if marks else None
