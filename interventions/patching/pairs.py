"""Clean/corrupted prompt pairs for activation patching: two items that differ in one span of equal length.

A pair is symmetric token replacement (realm A → realm B): both prompts have the same tokens except the span, in
every direction, so positions line up one to one and a clean activation can be written into the corrupted run
at the same position. Pairs come from the synth world (:func:`synth_pairs`) or from a JSONL file naming items of
a suite in the toolkit format (:func:`load_pairs`), so any model and any entity can be patched.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gapeval.files import numbered_jsonl
from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, Intervenable, Request
from gapeval.synth.world import World


@dataclass(frozen=True)
class Pair:
    """``clean`` and ``corrupt`` ask the same question about different entities, written ``spans``."""

    id: str
    clean: Item
    corrupt: Item
    spans: tuple[str, str]

    def request(self, role: str, direction: str) -> Request:
        """The prompt of ``role`` ("clean" or "corrupt") in ``direction`` (one seed: patching is greedy)."""
        item = self.clean if role == "clean" else self.corrupt
        return Request(item.id, item.prompt(direction), item.image)

    def answers(self, direction: str) -> tuple[Any, Any]:
        """(clean answer, corrupt answer): the reference text for und, the reference image for gen."""
        if direction == "und":
            return self.clean.reference[0], self.corrupt.reference[0]
        return self.clean.reference_image, self.corrupt.reference_image


def prompt_length(model: Intervenable, request: Request, direction: str) -> int:
    """Number of prompt positions the decoder layers see for ``request`` in ``direction``."""
    return model.forward_inputs([request], direction).prompt_length()


def check_pair(model: Intervenable, pair: Pair, directions: Sequence[str] = DIRECTIONS) -> None:
    """Raise ValueError unless, in every direction, the spans sit at the same positions and the prompts have the
    same length (the model's tokens, not the characters: names differ in token count under BPE)."""
    for direction in directions:
        clean, corrupt = pair.request("clean", direction), pair.request("corrupt", direction)
        spans = [
            model.span_positions(r, s, direction) for r, s in zip((clean, corrupt), pair.spans, strict=True)
        ]
        if spans[0] != spans[1]:
            raise ValueError(f"pair {pair.id}: {direction} spans at positions {spans[0]} vs {spans[1]}")
        lengths = [prompt_length(model, r, direction) for r in (clean, corrupt)]
        if lengths[0] != lengths[1]:
            raise ValueError(f"pair {pair.id}: {direction} prompts of {lengths[0]} vs {lengths[1]} tokens")


def synth_pairs(
    model: Intervenable,
    n: int,
    *,
    seed: int = 0,
    hop: str = "one_hop",
    phrasing: int = 0,
    pictured: bool | None = True,
    world_seed: int = 0,
    world: World | None = None,
) -> list[Pair]:
    """``n`` world-knowledge pairs of taught realms with different emblems, checked with :func:`check_pair`.

    ``pictured`` keeps realms whose emblem training showed as a picture (True: both directions know the answer
    in the shipped toy), never showed (False), or all (None). The span is the realm's name (``one_hop``) or its
    founder's (``two_hop``). Candidates whose spans tokenise to different lengths are skipped. ``world`` is the
    model's world when it was trained on another than the default ``World(world_seed)`` (e.g. more realms).
    """
    from gapeval.synth.suite import make_world_knowledge

    world = world or World(world_seed)
    realms = [r for r in world.realms if pictured is None or r.pictured == pictured]
    candidates = [(a, b) for a in realms for b in realms if a.emblem != b.emblem]
    random.Random(f"patch-pairs-{seed}").shuffle(candidates)

    def item(realm) -> Item:
        fields = make_world_knowledge(world, random.Random(f"wk-{realm.name}"), realm, hop, phrasing)
        return Item(id=f"wk-{realm.name}-{hop}-{phrasing}", **fields)

    def span(realm) -> str:
        return realm.name if hop == "one_hop" else realm.founder

    pairs: list[Pair] = []
    for a, b in candidates:
        if len(pairs) == n:
            break
        pair = Pair(f"{a.name}->{b.name}", item(a), item(b), (span(a), span(b)))
        try:
            check_pair(model, pair)
        except ValueError:
            continue
        pairs.append(pair)
    if len(pairs) < n:
        raise ValueError(f"only {len(pairs)} of {n} realm pairs have equal-length spans for this model")
    return pairs


def load_pairs(path: str | Path, items: Sequence[Item], model: Intervenable | None = None) -> list[Pair]:
    """Pairs from JSONL lines ``{"id", "clean", "corrupt", "clean_span", "corrupt_span"}`` whose ``clean`` and
    ``corrupt`` are ids of ``items`` (a suite in the toolkit format, :func:`gapeval.io.load_items`) with a reference
    text and image (the teacher-forced answers). With ``model``, each pair must also pass :func:`check_pair`.
    Every error is a ValueError that names the file and line."""
    by_id = {it.id: it for it in items}
    pairs = []
    for number, record in numbered_jsonl(path, objects_only=False):
        where = f"{path}:{number}"
        try:
            pair = _pair(record, by_id)
            if model is not None:
                check_pair(model, pair)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        pairs.append(pair)
    return pairs


def _pair(record: Any, by_id: dict[str, Item]) -> Pair:
    fields = ("clean", "corrupt", "clean_span", "corrupt_span")
    if not isinstance(record, dict) or any(not isinstance(record.get(f), str) for f in fields):
        raise ValueError(f"expected an object with an id and string fields {', '.join(fields)}")
    if not isinstance(record.get("id"), str | int):
        raise ValueError("expected an id (a string or a number)")
    missing = [record[r] for r in ("clean", "corrupt") if record[r] not in by_id]
    if missing:
        raise ValueError(f"unknown item id(s) {missing}")
    clean, corrupt = by_id[record["clean"]], by_id[record["corrupt"]]
    for item in (clean, corrupt):
        if not item.reference or item.reference_image is None:
            raise ValueError(f"item {item.id} needs a reference text and a reference image (the answers)")
    return Pair(str(record["id"]), clean, corrupt, (record["clean_span"], record["corrupt_span"]))
