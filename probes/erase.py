"""Causal erasure: apply an eraser at one captured layer while the model decodes, and judge both directions.

Decoding runs a prompt pass over left-padded prompts, then one token per step (KV-cached), and adapters may
regroup rows into sub-batches (the toy) or add their own (Janus's copies for guidance). Positions are therefore
counted from the prompt's end — the layout :func:`interventions.hooks.decoding_rewrite` handles for patched
decoding too — and items are decoded in groups that share those positions. Erasing *everywhere* (concept
scrubbing) touches every prompt column and every generated token; the ``answer`` position touches the last
prompt token and every generated token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from gapeval.items import Item
from gapeval.models.base import Intervenable, Request
from interventions.hooks import HookPoint, decoding_rewrite, rewrite
from interventions.judged import accuracy, judged
from probes.capture import position_columns
from probes.erasers import Eraser

EVERYWHERE = "all"


@dataclass(frozen=True)
class Where:
    """The tokens an erasure touches: prompt columns counted from the end (-1 = last prompt token; None =
    every column) and whether every generated token too."""

    relative: tuple[int, ...] | None
    decode_steps: bool


def where(model: Intervenable, request: Request, direction: str, position: str, span: str) -> Where:
    """Where ``position`` (a capture position, or ``"all"``) lies in ``request``'s decoding."""
    if position == EVERYWHERE:
        return Where(None, True)
    if position == "answer":
        return Where((-1,), True)
    fp = model.forward_inputs([request], direction)  # one row: no padding, the prompt ends the sequence
    length = fp.prompt_length()
    columns = position_columns(model, fp, [request], [span], position)[0]
    return Where(tuple(c - length for c in columns), False)


@contextmanager
def erasing(
    model: Intervenable, point: HookPoint, eraser: Eraser, at: Where, decoding: str | None = None
) -> Iterator[None]:
    """Inside the block, every forward pass applies ``eraser`` at hook point ``point`` on ``at``'s tokens.

    ``decoding`` names the direction being decoded, so only the rows holding requests are edited
    (``prompt_rows``); None for teacher-forced passes, where every row is a request."""
    fn = decoding_rewrite(model, decoding, at.relative, eraser, steps=at.decode_steps)
    with rewrite(model, *point, fn):
        yield


def erased_records(
    model: Intervenable,
    items: Sequence[Item],
    spans: Sequence[str],
    direction: str,
    point: HookPoint,
    eraser: Eraser | None,
    position: str = EVERYWHERE,
    seed: int = 0,
    batch_size: int = 64,
) -> list[dict]:
    """Judged records of ``items`` (in their order) in ``direction`` with ``eraser`` applied at ``point`` on
    ``position`` (None: no edit)."""
    if eraser is None:
        return judged(model, items, directions=[direction], seed=seed, batch_size=batch_size)
    groups: dict[Where, list[int]] = {}
    for i, (item, span) in enumerate(zip(items, spans, strict=True)):
        at = where(model, Request(item.id, item.prompt(direction), item.image), direction, position, span)
        groups.setdefault(at, []).append(i)
    records: list[dict] = [{} for _ in items]
    for at, rows in groups.items():
        with erasing(model, point, eraser, at, direction):
            group = judged(
                model, [items[i] for i in rows], directions=[direction], seed=seed, batch_size=batch_size
            )
        for i, record in zip(rows, group, strict=True):
            records[i] = record
    return records


def erased_accuracy(
    model: Intervenable,
    items: Sequence[Item],
    spans: Sequence[str],
    direction: str,
    point: HookPoint,
    eraser: Eraser | None,
    position: str = EVERYWHERE,
    seed: int = 0,
    batch_size: int = 64,
) -> float | None:
    """Judged accuracy in ``direction`` with ``eraser`` applied at ``point`` on ``position`` (None: no edit)."""
    records = erased_records(model, items, spans, direction, point, eraser, position, seed, batch_size)
    return accuracy(records, direction)
