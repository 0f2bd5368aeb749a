"""What a model knows about the synth world's reserve realms before any edit (issue: built-in UMM v2).

Reserve realms are knowledge-injection targets: the ``known`` kind is taught by name and founder only, the
``unseen`` kind not at all. Their emblems should be unknown (accuracy near chance in both directions), and the
known kind's founder questions answered. ``python -m experiments.reserve_knowledge --model toy`` prints it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from typing import Any

from gapeval.items import Item
from gapeval.models.base import UMM, Request
from gapeval.synth.suite import WK_SUBJECT, WK_UND, make_world_knowledge
from gapeval.synth.world import COLOURS, SHAPES, World
from interventions.judged import accuracy, judged


def reserve_items(world: World, kind: str) -> list[Item]:
    """World-knowledge items about the reserve realms of ``kind`` (``known``/``unseen``): every hop and phrasing."""
    realms = world.reserve_known if kind == "known" else world.reserve_unseen
    rng = random.Random(f"reserve-{kind}")
    return [
        Item(id=f"reserve-{realm.name}-{hop}-{p}", **make_world_knowledge(world, rng, realm, hop, p))
        for realm in realms
        for hop in WK_SUBJECT
        for p in range(len(WK_UND))
    ]


def _said(text: str, word: str) -> bool:
    return word.lower() in re.findall(r"[a-z0-9]+", text.lower())


def founder_accuracy(model: UMM, world: World) -> float:
    """Both founder questions the training mixture asks about the known reserve realms, exact word match."""
    asked = [(f"Who founded {r.name}?", r.founder) for r in world.reserve_known]
    asked += [(f"Which realm did {r.founder} found?", r.name) for r in world.reserve_known]
    answers = model.understand([Request(f"founder-{k}", q) for k, (q, _) in enumerate(asked)])
    return sum(_said(a, want) for a, (_, want) in zip(answers, asked, strict=True)) / len(asked)


def reserve_knowledge(model: UMM, world: World | None = None, seed: int = 0) -> dict[str, Any]:
    """Judged und and gen accuracy on each kind's emblem questions, the founder accuracy, and the chance level
    of naming an emblem (shape and colour) at random."""
    world = world or World(0)
    out: dict[str, Any] = {"chance": 1 / (len(SHAPES) * len(COLOURS))}
    for kind in ("known", "unseen"):
        records = judged(model, reserve_items(world, kind), seed=seed)
        out[kind] = {"items": len(records), "und": accuracy(records, "und"), "gen": accuracy(records, "gen")}
    out["known"]["founder"] = founder_accuracy(model, world)
    return out


def main(argv: list[str] | None = None) -> None:
    from gapeval.models.registry import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy", help="model spec, as for `gapeval run` (default: toy)")
    parser.add_argument("--seed", type=int, default=0, help="request seed (default: 0)")
    args = parser.parse_args(argv)
    print(json.dumps(reserve_knowledge(load_model(args.model, []), seed=args.seed), indent=1))


if __name__ == "__main__":
    main()
