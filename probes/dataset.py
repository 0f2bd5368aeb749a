"""The prompts probes read: every realm's world-knowledge question, in both directions, with attribute labels.

Row ``i`` is the same (realm, hop, phrasing) in both directions, so a probe trained on und-prompt states can be
tested on gen-prompt states of the same rows. The entity span is the name the prompt mentions: the realm for a
one-hop question, its founder for a two-hop one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gapeval.items import Item
from gapeval.models.base import DIRECTIONS, Request
from gapeval.synth.suite import WK_SUBJECT, WK_UND, make_world_knowledge
from gapeval.synth.world import Realm, World, cell_word
from probes.names import ATTRIBUTES


def attribute_value(realm: Realm, attribute: str) -> str:
    """The label of ``realm`` for ``attribute`` (its emblem's colour, shape or cell, or the realm itself)."""
    values = {
        "colour": realm.emblem.colour,
        "shape": realm.emblem.shape,
        "cell": cell_word(realm.emblem_cell),
        "entity": realm.name,
    }
    if attribute not in values:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    return values[attribute]


def entity_span(realm: Realm, hop: str) -> str:
    """The name a world-knowledge prompt of ``hop`` mentions for ``realm``."""
    return realm.name if hop == "one_hop" else realm.founder


@dataclass
class ProbeSet:
    """Prompts in both directions (same rows), their entity spans, teacher-forcing answers and row facts."""

    requests: dict[str, list[Request]]
    spans: list[str]
    answers: dict[str, list[Any]]  # und: reference text; gen: reference image
    rows: list[dict[str, Any]]  # realm, hop, phrasing and every attribute's value

    def __len__(self) -> int:
        return len(self.spans)

    def subset(self, rows: Sequence[int]) -> ProbeSet:
        """The given rows only, in that order (a quick look, or tests)."""
        pick = list(rows)
        return ProbeSet(
            {d: [r[i] for i in pick] for d, r in self.requests.items()},
            [self.spans[i] for i in pick],
            {d: [a[i] for i in pick] for d, a in self.answers.items()},
            [self.rows[i] for i in pick],
        )

    def labels(self, attribute: str) -> tuple[np.ndarray, list[str]]:
        """Integer labels per row and the class names they index."""
        values = [row[attribute] for row in self.rows]
        classes = sorted(set(values))
        return np.array([classes.index(v) for v in values]), classes

    def entities(self) -> np.ndarray:
        """Integer realm id per row: the unit grouped splits keep apart (and that carries one label)."""
        names = sorted({row["realm"] for row in self.rows})
        return np.array([names.index(row["realm"]) for row in self.rows])

    def templates(self) -> np.ndarray:
        """Integer (hop, phrasing) id per row: the split unit when the entity itself is the label."""
        keys = sorted({(row["hop"], row["phrasing"]) for row in self.rows})
        return np.array([keys.index((row["hop"], row["phrasing"])) for row in self.rows])

    def groups(self, attribute: str) -> np.ndarray:
        """Split groups: entities, so no realm sits in train and test — except for ``entity``, whose classes
        are the realms (held-out realms would be unseen classes): there held-out prompt templates."""
        return np.unique([split_key(attribute, row) for row in self.rows], return_inverse=True)[1]

    def group_keys(self, attribute: str) -> list[str]:
        """The split group of each row by name (:func:`split_key`), in the order of :meth:`groups`' ids."""
        return sorted({split_key(attribute, row) for row in self.rows})

    def permutation_units(self, attribute: str) -> tuple[np.ndarray, np.ndarray]:
        """(units, blocks) a permutation test shuffles labels over: each realm carries one label of a realm fact,
        so realms swap labels; ``entity`` labels are the realms themselves (a relabelling of realms would change
        nothing), so there each template's rows are shuffled among themselves."""
        if attribute == "entity":
            return np.arange(len(self.rows)), self.templates()
        return self.entities(), np.zeros(len(self.rows), dtype=int)


def world_knowledge_set(world: World, seed: int = 0) -> ProbeSet:
    """Every realm × hop × phrasing of the world-knowledge questions (48 × 2 × 3 = 288 rows for World(0))."""
    rng = random.Random(f"probe-set-{seed}")
    requests: dict[str, list[Request]] = {d: [] for d in DIRECTIONS}
    answers: dict[str, list[Any]] = {d: [] for d in DIRECTIONS}
    spans, rows = [], []
    for realm in world.realms:
        for hop in WK_SUBJECT:
            for phrasing in range(len(WK_UND)):
                fields = make_world_knowledge(world, rng, realm, hop, phrasing)
                row_id = f"{realm.name}-{hop}-{phrasing}"
                requests["und"].append(Request(row_id, fields["und_prompt"]))
                requests["gen"].append(Request(row_id, fields["gen_prompt"]))
                answers["und"].append(fields["reference"][0])
                answers["gen"].append(fields["reference_image"])
                spans.append(entity_span(realm, hop))
                facts = {a: attribute_value(realm, a) for a in ATTRIBUTES}
                rows.append({"realm": realm.name, "hop": hop, "phrasing": phrasing, **facts})
    return ProbeSet(requests, spans, answers, rows)


def split_key(attribute: str, row: dict[str, Any]) -> str:
    """The split group of a row (``realm``, ``hop``, ``phrasing``): its realm, or its template for ``entity``."""
    return f"{row['hop']}/{row['phrasing']}" if attribute == "entity" else row["realm"]


def item_row(item: Item) -> dict[str, Any]:
    """A synth world-knowledge item as the row fields :func:`split_key` reads."""
    return {"realm": item.meta["realm"], "hop": item.subcategory, "phrasing": item.meta["phrasing"]}


def item_span(world: World, item: Item) -> str:
    """The entity span of a synth world-knowledge item (its realm and hop are in ``meta``/``subcategory``)."""
    return entity_span(world.realm(item.meta["realm"]), item.subcategory)


def world_knowledge_items(items: Sequence[Item]) -> list[Item]:
    return [it for it in items if it.category == "world_knowledge"]
