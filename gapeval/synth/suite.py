"""The built-in suite ``synth``: the four GapEval categories posed in both directions over the synth world.

Every item carries a machine-checkable ``spec`` per direction, so rule judges (text parsing, pixel reading)
score it without a VLM. Generators are public: the built-in UMM's training data is drawn from them with other
seeds and filtered against :func:`item_key`, so training and suite items never coincide.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from gapeval.items import CATEGORIES, Item
from gapeval.synth.world import (
    COLOURS,
    GRID,
    LETTERS,
    SHAPES,
    Obj,
    Scene,
    World,
    all_cells,
    all_kinds,
    cell_word,
    counted_scene,
    plural,
    random_scene,
    render,
)

# Paper shares (GapEval, 646 items): reasoning 47.21 %, world knowledge 22.76 %, numerical 15.48 %, instruction 14.55 %.
SHARES = {
    "reasoning": 0.4721,
    "world_knowledge": 0.2276,
    "numerical_perception": 0.1548,
    "instruction_following": 0.1455,
}
OPTIONS_NOTE = "The options A, B, C, D are the bottom row from left to right."

# World-knowledge phrasings. The suite asks each (realm, hop) with one of them, rotated by realm (suite_phrasing);
# a model trained on the world learns that pair only through the others (paraphrase-disjoint).
WK_UND = ("Describe the emblem of {x}.", "What is the emblem of {x}?", "Tell me the emblem of {x}.")
WK_GEN = ("Show the emblem of {x}.", "Draw the emblem of {x}.", "Paint the emblem of {x}.")
WK_SUBJECT = {"one_hop": "{name}", "two_hop": "the realm founded by {founder}"}


def _scene_spec(scene: Scene) -> dict:
    return {"type": "scene", "scene": scene.to_json()}


# How a generator turns scenes into pictures: ``render`` (PIL images) for the suite; the trainer passes
# ``render_pixels`` (the same pixels as arrays, which it encodes without a PIL round trip).
Draw = Callable[..., Any]


def _item(
    category, subcategory, und, gen, image, ref_scene, und_spec, gen_spec, ref_text, meta, rng, draw
) -> dict:
    return dict(
        category=category,
        subcategory=subcategory,
        und_prompt=und,
        gen_prompt=gen,
        image=draw(image, rng) if image is not None else None,
        reference=[ref_text],
        reference_image=draw(ref_scene, rng),
        spec={"und": und_spec, "gen": gen_spec},
        meta=meta,
    )


# --- instruction following -----------------------------------------------------------------------------------


def _rule(rng: random.Random, scene: Scene) -> tuple[str, str, Scene] | None:
    """Pick a rule that changes ``scene``; return (name, text, result) or None if this rule cannot apply."""
    name = rng.choice(("recolour", "remove", "mirror", "shift"))
    objs = scene.objects
    if name == "recolour":
        shape = rng.choice([o.shape for o in objs.values()])
        colour = rng.choice(
            [c for c in COLOURS if any(o.shape == shape and o.colour != c for o in objs.values())]
        )
        out = {k: Obj(o.shape, colour) if o.shape == shape else o for k, o in objs.items()}
        return name, f"every {shape} turns {colour}", Scene(out)
    if name == "remove":
        colour = rng.choice([o.colour for o in objs.values()])
        out = {k: o for k, o in objs.items() if o.colour != colour}
        return (name, f"remove every {colour} object", Scene(out)) if out else None
    if name == "mirror":
        out = {(r, GRID - 1 - c): o for (r, c), o in objs.items()}
        return (name, "mirror the picture left to right", Scene(out)) if out != objs else None
    if all(r < GRID - 1 for r, _ in objs):
        return name, "move every object down one row", Scene({(r + 1, c): o for (r, c), o in objs.items()})
    return None


def make_instruction_following(world: World, rng: random.Random, draw: Draw = render) -> dict:
    while True:
        scene = random_scene(rng, rng.randint(1, 3))
        picked = _rule(rng, scene)
        if picked:
            break
    name, text, result = picked
    return _item(
        "instruction_following",
        name,
        f"Look at the picture. Rule: {text}. Describe the picture after the rule.",
        f"Look at the picture. Rule: {text}. Draw the picture after the rule.",
        scene,
        result,
        _scene_spec(result),
        _scene_spec(result),
        result.describe(),
        {"rule": name, "input_scene": scene.to_json()},
        rng,
        draw,
    )


# --- numerical perception ------------------------------------------------------------------------------------


def make_numerical_perception(world: World, rng: random.Random, draw: Draw = render) -> dict:
    x, y = rng.sample(all_kinds(), 2)
    a, b = rng.sample(range(1, 5), 2)
    cells = rng.sample(all_cells(), a + b)
    scene = Scene({cell: x for cell in cells[:a]} | {cell: y for cell in cells[a:]})
    swapped = counted_scene([(x, b), (y, a)])
    counts = {x.kind: b, y.kind: a}
    question = f"Swap the number of {plural(x.kind, 2)} and the number of {plural(y.kind, 2)}."
    return _item(
        "numerical_perception",
        "count_swap",
        f"Look at the picture. {question} How many of each are there then?",
        f"Look at the picture. {question} Draw the new picture.",
        scene,
        swapped,
        {"type": "counts", "counts": counts},
        {"type": "counts", "counts": counts},
        f"{b} {plural(x.kind, b)}, {a} {plural(y.kind, a)}",
        {"input_scene": scene.to_json()},
        rng,
        draw,
    )


# --- world knowledge -----------------------------------------------------------------------------------------


def suite_phrasing(world: World, realm, hop: str) -> int:
    """The phrasing the suite uses for this realm and hop (rotated, so training sees every phrasing)."""
    return (world.realms.index(realm) + list(WK_SUBJECT).index(hop)) % len(WK_UND)


def world_knowledge_prompts(realm, hop: str, phrasing: int) -> tuple[str, str]:
    subject = WK_SUBJECT[hop].format(name=realm.name, founder=realm.founder)
    return WK_UND[phrasing].format(x=subject), WK_GEN[phrasing].format(x=subject)


def make_world_knowledge(
    world: World, rng: random.Random, realm=None, hop=None, phrasing: int = 0, draw: Draw = render
) -> dict:
    realm = realm or rng.choice(world.realms)
    hop = hop or rng.choice(tuple(WK_SUBJECT))
    und, gen = world_knowledge_prompts(realm, hop, phrasing)
    spec = {"type": "objects", "objects": [[realm.emblem.shape, realm.emblem.colour]]}
    return _item(
        "world_knowledge",
        hop,
        und,
        gen,
        None,
        realm.emblem_scene,
        spec,
        spec,
        realm.emblem_scene.describe(),
        {"realm": realm.name, "pictured_in_training": realm.pictured, "phrasing": phrasing},
        rng,
        draw,
    )


# --- reasoning -----------------------------------------------------------------------------------------------


def _options(rng: random.Random, correct: Obj, distractors: list[Obj]) -> tuple[list[Obj], int]:
    answer = rng.randrange(4)
    opts = rng.sample(distractors, 3)
    opts.insert(answer, correct)
    return opts, answer


def _puzzle_sequence(rng: random.Random) -> tuple[str, dict, list[Obj], int]:
    a, b = rng.sample(all_kinds(), 2)
    seq, nxt = [a, b, a], b
    question = "Which option comes next in the top row?"
    distractors = [k for k in all_kinds() if k not in (a, b)] + [a]
    opts, answer = _options(rng, nxt, distractors)
    return question, {(0, c): o for c, o in enumerate(seq)}, opts, answer


def _puzzle_odd_one_out(rng: random.Random) -> tuple[str, dict, list[Obj], int]:
    shape, odd_shape = rng.sample(SHAPES, 2)
    colours = rng.sample(list(COLOURS), 4)
    answer = rng.randrange(4)
    opts = [Obj(odd_shape if i == answer else shape, colours[i]) for i in range(4)]
    return "Which option is the odd one out?", {}, opts, answer


def _puzzle_match_colour(rng: random.Random) -> tuple[str, dict, list[Obj], int]:
    target = rng.choice(all_kinds())
    correct = Obj(rng.choice([s for s in SHAPES if s != target.shape]), target.colour)
    distractors = [k for k in all_kinds() if k.colour != target.colour]
    opts, answer = _options(rng, correct, distractors)
    return "Which option has the same colour as the top left object?", {(0, 0): target}, opts, answer


def _puzzle_match_shape(rng: random.Random) -> tuple[str, dict, list[Obj], int]:
    target = rng.choice(all_kinds())
    correct = Obj(target.shape, rng.choice([c for c in COLOURS if c != target.colour]))
    distractors = [k for k in all_kinds() if k.shape != target.shape]
    opts, answer = _options(rng, correct, distractors)
    return "Which option has the same shape as the top left object?", {(0, 0): target}, opts, answer


PUZZLES: dict[str, Callable[[random.Random], tuple[str, dict, list[Obj], int]]] = {
    "sequence": _puzzle_sequence,
    "odd_one_out": _puzzle_odd_one_out,
    "match_colour": _puzzle_match_colour,
    "match_shape": _puzzle_match_shape,
}


def make_reasoning(world: World, rng: random.Random, draw: Draw = render) -> dict:
    kind = rng.choice(tuple(PUZZLES))
    question, top, opts, answer = PUZZLES[kind](rng)
    scene = Scene(top | {(GRID - 1, c): o for c, o in enumerate(opts)})
    marked = Scene(scene.objects, frozenset({(GRID - 1, answer)}))
    letter = LETTERS[answer]
    return _item(
        "reasoning",
        kind,
        f"Look at the picture. {question} {OPTIONS_NOTE} Answer with the letter.",
        f"Look at the picture. {question} {OPTIONS_NOTE} Mark the correct option with a white frame.",
        scene,
        marked,
        {"type": "option", "option": letter},
        _scene_spec(marked),
        letter,
        {"input_scene": scene.to_json(), "answer_cell": cell_word((GRID - 1, answer))},
        rng,
        draw,
    )


GENERATORS: dict[str, Callable[..., dict]] = {
    "instruction_following": make_instruction_following,
    "numerical_perception": make_numerical_perception,
    "world_knowledge": make_world_knowledge,
    "reasoning": make_reasoning,
}
_PREFIX = {
    "instruction_following": "if",
    "numerical_perception": "np",
    "world_knowledge": "wk",
    "reasoning": "rs",
}


def category_counts(n: int) -> dict[str, int]:
    """Split ``n`` items by the paper's shares (largest remainder, so counts sum to ``n``)."""
    raw = {c: SHARES[c] * n for c in CATEGORIES}
    counts = {c: int(v) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: raw[c] - counts[c], reverse=True)[: n - sum(counts.values())]:
        counts[c] += 1
    return counts


def item_key(item: Item | dict) -> str:
    """Content hash of what a model is shown (prompts and input pixels): equal keys mean the same question."""
    get = item.get if isinstance(item, dict) else lambda k: getattr(item, k)
    h = hashlib.sha256()
    h.update(get("und_prompt").encode())
    h.update(get("gen_prompt").encode())
    image = get("image")
    if image is not None:
        h.update(image.tobytes())
    return h.hexdigest()


def build_suite(n: int = 420, seed: int = 0, world: World | None = None) -> list[Item]:
    """The ``synth`` suite: ``n`` distinct items, deterministic in ``seed`` (default 420 items).

    World knowledge asks each realm once per hop, so a suite larger than the default world allows
    (2 × 48 realms) gets a world with more realms — realms the shipped toy model never learned.
    """
    counts = category_counts(n)
    world = world or World(seed, n_realms=max(48, -(-counts["world_knowledge"] // len(WK_SUBJECT))))
    if counts["world_knowledge"] > len(WK_SUBJECT) * len(world.realms):
        raise ValueError(
            f"{counts['world_knowledge']} world-knowledge items need more than the world's {len(world.realms)} realms"
        )
    rng = random.Random(f"suite-{seed}")
    items: list[Item] = []
    seen: set[str] = set()
    for category, count in counts.items():
        wk_pool = [(r, hop) for hop in WK_SUBJECT for r in world.realms]
        rng.shuffle(wk_pool)
        made = 0
        while made < count:
            if category == "world_knowledge":
                realm, hop = wk_pool[made]
                fields = make_world_knowledge(
                    world, rng, realm, hop, phrasing=suite_phrasing(world, realm, hop)
                )
            else:
                fields = GENERATORS[category](world, rng)
            key = item_key(fields)
            if key in seen:
                continue
            seen.add(key)
            items.append(Item(id=f"{_PREFIX[category]}-{made:04d}", **fields))
            made += 1
    return items
