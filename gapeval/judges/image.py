"""Pixel judging of generated images for synth items: read the picture back, then check the item's spec.

The judge sees only pixels (:func:`gapeval.synth.world.parse_scene`), never a model's image tokens, so any
UMM can be scored the same way. A picture with an unreadable cell is a wrong answer — the judge never guesses
what a smudge was meant to be. Anything the model returned that is not a usable image (None, text, an empty
canvas) is also a wrong answer: the model failed at generation. Only a missing or malformed spec — the judge
cannot decide — gives ``correct=None`` with an error naming the item and the field. Adapter crashes are the
runner's to record; it should not call the judge for them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from PIL import Image

from gapeval.items import Item, ItemError
from gapeval.judges.base import Verdict
from gapeval.judges.text import compare_cells, compare_counts, compare_multiset, read_spec
from gapeval.synth.world import Scene, cell_word, parse_scene


def check_scene(found: Scene, expected: Scene) -> tuple[bool, str]:
    """Objects by cell and white marks, both exactly."""
    same_objects, reason = compare_cells(found.objects, expected.objects)
    same_marks = found.marks == expected.marks
    marks = ", ".join(map(cell_word, sorted(found.marks))) or "none"
    wanted = ", ".join(map(cell_word, sorted(expected.marks))) or "none"
    return same_objects and same_marks, f"{reason}; marks {marks}; expected {wanted}"


class SynthImageJudge:
    """Judges generation (image) answers by the item's ``spec["gen"]`` (types scene, counts, objects)."""

    id = "synth-pixel-v1"

    def judge(self, item: Item, answer: Any) -> Verdict:
        try:
            spec = read_spec(item, "gen")
            if spec.type in ("option", "tally"):  # a letter, or names of objects the synth world cannot draw
                raise ItemError(
                    f"a {spec.type} spec cannot be checked in pixels", item=item.id, field="spec.gen.type"
                )
        except ItemError as exc:
            return Verdict(None, self.id, error=str(exc))
        if not isinstance(answer, Image.Image):
            return Verdict(False, self.id, f"the answer is a {type(answer).__name__}, not an image")
        if answer.width == 0 or answer.height == 0:
            return Verdict(False, self.id, f"the image is empty ({answer.width}x{answer.height})")
        parsed = parse_scene(answer)
        if not parsed.readable:
            cells = "; ".join(f"{cell_word(c)}: {p}" for c, p in sorted(parsed.problems.items()))
            return Verdict(False, self.id, f"unreadable cells: {cells}")
        scene = parsed.scene
        if spec.type == "scene":
            correct, reason = check_scene(scene, spec.scene)
        elif spec.type == "counts":
            correct, reason = compare_counts(Counter(scene.objects.values()), spec.counts)
        else:
            correct, reason = compare_multiset(Counter(scene.objects.values()), spec.objects)
        return Verdict(correct, self.id, reason)
