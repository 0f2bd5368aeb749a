"""Patching as an inference-time edit: clean activations written during full decoding, outputs judged.

While the model decodes the corrupted prompt, hooks write the clean run's activations at chosen layers and prompt
positions. Decoders run the whole prompt in one pass and then one token at a time (KV cache; the contract's
decoding convention), so the hooks (:func:`interventions.hooks.decoding_rewrite`) write only in the prompt pass,
at columns counted from the prompt's end (right-aligned columns are the same whatever left padding a decoder
uses), and only in the rows that hold the requests (``prompt_rows``: not, e.g., Janus's unconditional copies for
guidance). All requests of one decode hold the same prompt (one pair at a time here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from gapeval.models.base import DIRECTIONS, Intervenable
from interventions.hooks import HookPoint, decoding_rewrite, parse_hook_point, residual_stream, rewrites
from interventions.judged import judged
from interventions.patching.grid import Patch, Run, run
from interventions.patching.pairs import Pair, prompt_length

WHERE = ("span", "end", "prompt")


@dataclass(frozen=True)
class Condition:
    """Patch hook point ``point`` at ``where``: the entity span, the last prompt token, or every prompt
    position. ``point`` None is the unpatched model."""

    point: HookPoint | None = None
    where: str = "span"

    @property
    def name(self) -> str:
        return "none" if self.point is None else f"{self.point.name}:{self.where}"


def parse_condition(model: Intervenable, text: str) -> Condition:
    """``none`` or ``HOOK:WHERE``, e.g. ``blocks.0.hook_resid_pre:span`` (ValueError naming what is valid)."""
    if text == "none":
        return Condition()
    hook, _, where = text.rpartition(":")
    if not hook or where not in WHERE:
        raise ValueError(f"condition {text!r}: expected none or HOOK:WHERE with WHERE one of {WHERE}")
    return Condition(parse_hook_point(model, hook), where)


def default_conditions(model: Intervenable) -> list[Condition]:
    """Unpatched, then the residual stream at the span and at the last prompt token, entering every layer and
    leaving the last."""
    points = residual_stream(model)
    return [Condition()] + [Condition(point, where) for where in ("span", "end") for point in points]


def condition_patches(model: Intervenable, pair: Pair, direction: str, condition: Condition) -> list[Patch]:
    """The patches of ``condition`` on ``pair``'s prompts in ``direction`` (clean and corrupt positions align)."""
    if condition.point is None:
        return []
    request = pair.request("corrupt", direction)
    if condition.where == "span":
        positions = model.span_positions(request, pair.spans[1], direction)
    elif condition.where == "end":
        positions = [prompt_length(model, request, direction) - 1]
    else:
        positions = list(range(prompt_length(model, request, direction)))
    return [Patch(condition.point, tuple(positions))]


@contextmanager
def patched_decoding(
    model: Intervenable, source: Run, patches: Sequence[Patch], length: int, direction: str
) -> Iterator[None]:
    """Inside the block, the prompt pass of decoding a ``length``-token prompt in ``direction`` gets ``source``'s
    activations (its row 0) at the patches' target positions; decoding steps are left (they read the writes
    through the KV cache)."""
    plan: dict[HookPoint, tuple[list[int], list[torch.Tensor]]] = {}
    for patch in patches:
        key = patch.point
        from_end, values = plan.setdefault(key, ([], []))
        from_end += [p - length for p in patch.target]
        values.append(source.values(key, 0, patch.source_positions))

    def writer(values: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: values.to(t.dtype).expand_as(t)

    hooks = {
        key: decoding_rewrite(model, direction, from_end, writer(torch.cat(values)))
        for key, (from_end, values) in plan.items()
    }
    with rewrites(model, hooks):
        yield


def judged_pair(model: Intervenable, pair: Pair, direction: str, seed: int = 0) -> dict[str, Any]:
    """Decode ``pair``'s corrupted prompt in ``direction`` (under whatever hooks are active) and judge the answer
    against the clean item (``new``: it follows the clean entity) and the corrupted one (``old``: it keeps its
    own); ``output`` is the text answer (None for gen)."""
    prompts = {f"{d}_prompt": pair.corrupt.prompt(d) for d in DIRECTIONS}
    # The corrupt item's id: the same sampling seed, so both judges read the same decode.
    new = dataclasses.replace(pair.clean, id=pair.corrupt.id, image=pair.corrupt.image, **prompts)
    judged_new, judged_old = judged(model, [new, pair.corrupt], directions=[direction], seed=seed)
    return {
        "new": judged_new[direction]["correct"],
        "old": judged_old[direction]["correct"],
        "output": judged_old[direction]["output"],
    }


def edit_records(
    model: Intervenable,
    pairs: Sequence[Pair],
    conditions: Sequence[Condition],
    *,
    directions: Sequence[str] = DIRECTIONS,
    seed: int = 0,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """One record per (pair, direction, condition): does the decoded answer now follow the clean entity (``new``)
    or keep the corrupted one (``old``)? See :func:`judged_pair`."""
    records = []
    for pair in pairs:
        for direction in directions:
            source = run(model, pair.request("clean", direction), direction, pair.answers(direction))
            length = prompt_length(model, pair.request("corrupt", direction), direction)
            for condition in conditions:
                patches = condition_patches(model, pair, direction, condition)
                with patched_decoding(model, source, patches, length, direction):
                    verdict = judged_pair(model, pair, direction, seed)
                records.append(
                    {"pair": pair.id, "direction": direction, "condition": condition.name} | verdict
                )
                if progress is not None:
                    progress.update(1)
    return records


def edit_table(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions × directions: share of pairs whose answer follows the clean entity (new) / keeps the old one."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault(r["condition"], {"condition": r["condition"]})
        for key in ("new", "old"):
            row.setdefault(f"{r['direction']}_{key}", []).append(r[key])
    for row in rows.values():
        for key, marks in list(row.items()):
            if isinstance(marks, list):
                judged_marks = [m for m in marks if m is not None]
                row[key] = sum(judged_marks) / len(judged_marks) if judged_marks else None
    return list(rows.values())
