"""Reason-then-draw: a UMM wrapper whose generation first asks the wrapped model in text, then asks it to draw
its own text answer.

Why: when generation fails on a fact that understanding states, either the generation path lacks the fact, or
it has the skill to draw the answer but the question never reaches it. Drawing the model's own words separates
the two — if the bridged picture is right where the plain one is wrong, the knowledge and the drawing skill are
both there and only the route between them is missing (the UniKE study's reasoning-augmented generation).

The wrapper needs each generation request's *question* (the item's und prompt): it gets them as a map from
item id to und prompt (:meth:`ReasonThenDraw.for_items`), since a request carries only its own direction's
prompt. The drawing prompt comes from a template with three placeholders, filled by plain substitution (no
format specs or attribute access, so a template from a config file cannot reach into Python objects):

- ``{answer}``: the model's own text answer, stripped of surrounding space and trailing full stops;
- ``{prompt}``: the original generation prompt; ``{question}``: the und prompt.

Templates: :data:`DESCRIBED_SCENE` for the built-in toy UMM, whose training teaches it to draw a scene from its
description ("Draw: red circle at r0c1." — ``gapeval/models/toy/data.py``, task ``draw_described``);
:data:`DEFAULT_TEMPLATE` for other models, which keeps the generation instruction and adds the answer as a hint
("Generate a photo of this activity. (Answer: Ssireum)"). A template is a setting of the study, never chosen
from the adapter's type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from gapeval.items import Item
from gapeval.models.base import UMM, Request

DESCRIBED_SCENE = "Draw: {answer}."
DEFAULT_TEMPLATE = "{prompt} (Answer: {answer})"
PLACEHOLDERS = ("answer", "prompt", "question")
_FIELD = re.compile(r"\{([^{}]*)\}")


def check_template(template: str) -> None:
    """Refuse a template without ``{answer}`` or with a placeholder other than :data:`PLACEHOLDERS`."""
    names = set(_FIELD.findall(template))
    if unknown := names - set(PLACEHOLDERS):
        raise ValueError(
            f"template {template!r}: unknown placeholders {sorted(unknown)}; known {PLACEHOLDERS}"
        )
    if "answer" not in names:
        raise ValueError(f"template {template!r} must contain {{answer}} (the model's own text answer)")


def fill(template: str, **values: str) -> str:
    """``template`` with each known placeholder replaced, in one pass (values are never re-scanned)."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class ReasonThenDraw:
    """``understand`` is the wrapped model's; ``generate`` asks in text, then draws the answer.

    Both steps keep each request's input image and seed. ``transcript`` holds, per item id asked so far (a
    caller may split its items over several ``generate`` calls; a later call for an item replaces it), the
    question, the text answer and the drawing prompt (what a study records). A request
    whose item has no question, or whose text step failed, gets an Exception in place of its image, as the
    adapter contract allows.
    """

    def __init__(self, model: UMM, questions: Mapping[str, str], template: str = DEFAULT_TEMPLATE):
        check_template(template)
        self.model, self.questions, self.template = model, dict(questions), template
        self.name = f"{model.name}+reason-then-draw"
        self.transcript: dict[str, dict[str, Any]] = {}

    @classmethod
    def for_items(cls, model: UMM, items: Sequence[Item], template: str = DEFAULT_TEMPLATE) -> ReasonThenDraw:
        """The wrapper for requests about ``items`` (their ids map to their und prompts)."""
        return cls(model, {item.id: item.und_prompt for item in items}, template)

    def config(self) -> dict[str, Any]:
        return {"wrapped": self.model.name, "wrapped_config": self.model.config(), "template": self.template}

    def understand(self, requests: Sequence[Request]) -> list[str]:
        return self.model.understand(requests)

    def generate(self, requests: Sequence[Request]) -> list[Image.Image | Exception]:
        out: list[Image.Image | Exception] = [
            KeyError(f"reason-then-draw: no question for item {r.item_id!r}") for r in requests
        ]
        asked = [k for k, r in enumerate(requests) if r.item_id in self.questions]
        texts = self.model.understand(
            [
                Request(r.item_id, self.questions[r.item_id], r.image, r.seed)
                for r in (requests[k] for k in asked)
            ]
        )
        drawn = []
        for k, text in zip(asked, texts, strict=True):
            request = requests[k]
            if isinstance(text, Exception):
                out[k] = RuntimeError(f"reason step failed: {text}")
                self.transcript.pop(request.item_id, None)
                continue
            question = self.questions[request.item_id]
            answer = text.strip().rstrip(".").strip()
            prompt = fill(self.template, answer=answer, prompt=request.prompt, question=question)
            self.transcript[request.item_id] = {"question": question, "answer": text, "prompt": prompt}
            drawn.append((k, Request(request.item_id, prompt, request.image, request.seed)))
        images = self.model.generate([r for _, r in drawn]) if drawn else []
        for (k, _), image in zip(drawn, images, strict=True):
            out[k] = image
        return out
