"""A scripted UMM that answers from the ground truth and errs at set rates, for testing the pipeline.

Whether the oracle errs on an item is decided once per item from ``(seed, item id)`` — not from the batch or
the order of calls — so runs are reproducible and resumable. The two directions' errors are jointly
Bernoulli: marginals ``und_error`` and ``gen_error``, Pearson correlation ``correlation`` between the two
error indicators. Not every correlation is reachable for given marginals: the probability of erring in both
directions, ``p*q + rho*sqrt(p(1-p)q(1-q))``, is clipped to its feasible range ``[max(0, p+q-1), min(p, q)]``
and the correlation actually used is reported by :meth:`OracleAdapter.notes`.

A wrong answer is plausible rather than garbage: another same-category item's reference that the judges must
reject (text that differs from every accepted answer; an image whose ``spec["gen"]`` differs, or whose pixels
differ when items carry no spec). Without such a candidate it falls back to the input image unchanged, then to
a blank canvas, and for text to "I don't know".
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any

from PIL import Image

from gapeval.items import Item, ItemError
from gapeval.models.base import Request

FALLBACK_TEXT = "I don't know."


def joint_error_probability(und_error: float, gen_error: float, correlation: float) -> float:
    """P(both directions err), clipped to what the marginals allow."""
    spread = math.sqrt(und_error * (1 - und_error) * gen_error * (1 - gen_error))
    both = und_error * gen_error + correlation * spread
    return min(max(both, max(0.0, und_error + gen_error - 1.0)), min(und_error, gen_error))


def item_rng(seed: int, item_id: str) -> random.Random:
    """A generator that depends only on the seed and the item (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class OracleAdapter:
    """Answers from ``item.reference[0]`` / ``item.reference_image``; errs per item as described above."""

    name = "oracle"

    def __init__(
        self,
        items: Sequence[Item],
        und_error: float = 0.0,
        gen_error: float = 0.0,
        correlation: float = 0.0,
        seed: int = 0,
    ):
        for label, value, low in (
            ("und_error", und_error, 0.0),
            ("gen_error", gen_error, 0.0),
            ("correlation", correlation, -1.0),
        ):
            if not isinstance(value, (int, float)) or not low <= value <= 1.0:
                raise ValueError(f"oracle: {label} must be a number in [{low:g}, 1], got {value!r}")
        for item in items:
            if not item.reference:
                raise ItemError("the oracle needs a text reference", item=item.id, field="reference")
            if item.reference_image is None:
                raise ItemError("the oracle needs a reference image", item=item.id, field="reference_image")
        self.items = {item.id: item for item in items}
        self.by_category: dict[str, list[Item]] = {}
        for item in items:
            self.by_category.setdefault(item.category, []).append(item)
        self.und_error, self.gen_error = float(und_error), float(gen_error)
        self.correlation, self.seed = float(correlation), int(seed)
        self.both_error = joint_error_probability(self.und_error, self.gen_error, self.correlation)
        self._digests: dict[str, str] = {}

    def config(self) -> dict[str, Any]:
        return {
            "und_error": self.und_error,
            "gen_error": self.gen_error,
            "correlation": self.correlation,
            "seed": self.seed,
        }

    def notes(self) -> dict[str, Any]:
        spread = math.sqrt(self.und_error * (1 - self.und_error) * self.gen_error * (1 - self.gen_error))
        effective = (self.both_error - self.und_error * self.gen_error) / spread if spread > 0 else 0.0
        return {"p_both_error": self.both_error, "correlation_effective": effective}

    def errors(self, item_id: str) -> tuple[bool, bool]:
        """(und errs, gen errs) for one item: one uniform draw split into both / und only / gen only / neither."""
        u = item_rng(self.seed, item_id).random()
        und_wrong = u < self.und_error
        gen_wrong = (
            u < self.both_error or self.und_error <= u < self.und_error + self.gen_error - self.both_error
        )
        return und_wrong, gen_wrong

    def understand(self, requests: Sequence[Request]) -> list[str]:
        return [self._answer_text(self._item(r)) for r in requests]

    def generate(self, requests: Sequence[Request]) -> list[Image.Image]:
        return [self._answer_image(self._item(r)) for r in requests]

    def _item(self, request: Request) -> Item:
        try:
            return self.items[request.item_id]
        except KeyError:
            raise KeyError(f"oracle: no ground truth for item {request.item_id!r}") from None

    def _wrong_rng(self, item: Item, direction: str) -> random.Random:
        return item_rng(self.seed, f"{item.id}\0wrong-{direction}")

    def _answer_text(self, item: Item) -> str:
        if not self.errors(item.id)[0]:
            return item.reference[0]
        accepted = {r.strip().lower() for r in item.reference}
        candidates = [
            other.reference[0]
            for other in self.by_category[item.category]
            if other.reference[0].strip().lower() not in accepted and _specs_differ(other, item, "und")
        ]
        return self._wrong_rng(item, "und").choice(candidates) if candidates else FALLBACK_TEXT

    def _answer_image(self, item: Item) -> Image.Image:
        if not self.errors(item.id)[1]:
            return item.reference_image.copy()
        candidates = [other for other in self.by_category[item.category] if self._gen_differs(other, item)]
        if candidates:
            return self._wrong_rng(item, "gen").choice(candidates).reference_image.copy()
        if item.image is not None:
            return item.image.copy()
        return Image.new("RGB", item.reference_image.size, "white")

    def _gen_differs(self, other: Item, item: Item) -> bool:
        """Would a judge reject ``other``'s reference image as an answer to ``item``?"""
        if other.id == item.id:
            return False
        if _spec(item, "gen") is not None and _spec(other, "gen") is not None:
            return _specs_differ(other, item, "gen")
        return self._pixels(other) != self._pixels(item)

    def _pixels(self, item: Item) -> str:
        """Digest of a reference image's size and RGB pixels, computed once per item."""
        if item.id not in self._digests:
            image = item.reference_image.convert("RGB")
            self._digests[item.id] = hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()
        return self._digests[item.id]


def _spec(item: Item, direction: str) -> Any:
    return None if item.spec is None else item.spec.get(direction)


def _specs_differ(other: Item, item: Item, direction: str) -> bool:
    """True when the specs differ, or when either item has none (then only the answers themselves can tell)."""
    a, b = _spec(other, direction), _spec(item, direction)
    return a is None or b is None or a != b
