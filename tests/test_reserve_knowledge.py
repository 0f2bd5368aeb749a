"""The reserve-realm check: items about the right realms, and founder answers scored by the word asked for."""

from __future__ import annotations

from experiments.reserve_knowledge import founder_accuracy, reserve_items
from gapeval.synth.world import World


def test_reserve_items_ask_every_hop_and_phrasing_of_one_kind():
    world = World(0)
    items = reserve_items(world, "unseen")
    names = {r.name for r in world.reserve_unseen}
    assert len(items) == 6 * len(names) and {it.meta["realm"] for it in items} == names
    assert all(it.category == "world_knowledge" and not it.meta["pictured_in_training"] for it in items)


def test_founder_accuracy_reads_the_asked_word():
    world = World(0)
    facts = {f"Who founded {r.name}?": r.founder for r in world.reserve_known}
    facts |= {f"Which realm did {r.founder} found?": r.name for r in world.reserve_known}

    class Knows:
        def __init__(self, wrong: int = 0):
            self.wrong = wrong

        def understand(self, requests):
            return [
                ("nobody" if k < self.wrong else f"it was {facts[r.prompt]}.") for k, r in enumerate(requests)
            ]

    assert founder_accuracy(Knows(), world) == 1.0
    assert founder_accuracy(Knows(wrong=len(facts) // 2), world) == 0.5
