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
from gapeval.synth.suite import WK_GEN, WK_UND

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

    def question(self, request: Request) -> str | None:
        """The und prompt a generation request asks (by item id), or None when unknown."""
        return self.questions.get(request.item_id)

    def generate(self, requests: Sequence[Request]) -> list[Image.Image | Exception]:
        out: list[Image.Image | Exception] = [
            KeyError(f"reason-then-draw: no question for item {r.item_id!r}") for r in requests
        ]
        questions = [self.question(r) for r in requests]
        asked = [k for k, q in enumerate(questions) if q is not None]
        texts = self.model.understand(
            [Request(requests[k].item_id, questions[k], requests[k].image, requests[k].seed) for k in asked]
        )
        drawn = []
        for k, text in zip(asked, texts, strict=True):
            request = requests[k]
            if isinstance(text, Exception):
                out[k] = RuntimeError(f"reason step failed: {text}")
                self.transcript.pop(request.item_id, None)
                continue
            question = questions[k]
            answer = text.strip().rstrip(".").strip()
            prompt = fill(self.template, answer=answer, prompt=request.prompt, question=question)
            self.transcript[request.item_id] = {"question": question, "answer": text, "prompt": prompt}
            drawn.append((k, Request(request.item_id, prompt, request.image, request.seed)))
        images = self.model.generate([r for _, r in drawn]) if drawn else []
        for (k, _), image in zip(drawn, images, strict=True):
            out[k] = image
        return out


# --- ``bridge:SPEC``: the wrapper as a model of its own -----------------------------------------------------

# The drawing prompt per wrapped family (the study's config.yaml says the same): what each model was taught.
TEMPLATES = {"toy": DESCRIBED_SCENE}
_SYNTH_PAIRS = [
    (re.compile("^" + re.escape(gen).replace(re.escape("{x}"), "(.+)") + "$"), und)
    for und, gen in zip(WK_UND, WK_GEN, strict=True)
]


def synth_question(prompt: str) -> str | None:
    """The und twin of a synth world-knowledge generation prompt ("Draw the emblem of X." → "What is the
    emblem of X?"), whatever realm it names — so items no suite holds (an edit spec's) can be bridged."""
    for pattern, und in _SYNTH_PAIRS:
        if match := pattern.match(prompt):
            return und.format(x=match.group(1))
    return None


class BridgedModel(ReasonThenDraw):
    """Reason-then-draw as a model spec (``bridge:SPEC``): it shares knowledge between directions by
    construction (gen draws the model's own und answer), the positive control of a propagation test.

    The intervention contract (weights, teacher-forced passes, spans) is the wrapped model's, so an editor
    edits the wrapped weights: Train-on-Und changes the answer the bridge draws; Train-on-Gen trains the
    wrapped model's direct drawing path, which bridged generation never takes (it draws a described scene).
    Teacher-forced gen log-probabilities are that direct path's. Questions come from the items it was built
    with (by id) and, for synth world-knowledge prompts, from the prompt itself (:func:`synth_question`)."""

    def question(self, request: Request) -> str | None:
        return super().question(request) or synth_question(request.prompt)

    def __getattr__(self, name: str) -> Any:
        if name == "model" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)


def load_bridge(items: Sequence[Item], rest: str, template: str | None = None, **kwargs: Any) -> BridgedModel:
    """``bridge:SPEC``: reason-then-draw around the model ``SPEC`` names (``--model-arg`` keys other than
    ``template`` go to it); the template defaults to :data:`TEMPLATES` of SPEC's family, else the default."""
    from gapeval.models.registry import load_model

    model = load_model(rest, items, **kwargs)
    template = template or TEMPLATES.get(rest.partition(":")[0], DEFAULT_TEMPLATE)
    return BridgedModel(model, {item.id: item.und_prompt for item in items}, template)
