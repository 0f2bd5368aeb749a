"""The toy UMM's training mixture, drawn from the synth world (documented in docs/toy-model.md).

Two kinds of task, each in both directions:

- primitive skills: describe / locate / count objects in a picture (und); draw a described scene or counts,
  copy a picture, frame a named object (gen);
- the four benchmark categories themselves, on fresh random instances from the suite's generators, filtered
  so no training question equals a suite question (:func:`gapeval.synth.item_key`).

Realm facts are taught mostly in text: every realm's founder and emblem are asked and answered in the und
direction, but emblems are *drawn* only for the realms the world marks ``pictured``. Of the world's reserve
realms (knowledge-injection targets), the ``reserve_known`` ones are taught by name and founder only, never
their emblem; the ``reserve_unseen`` ones never appear (they are only in the tokenizer's vocabulary). The suite asks each realm
with one of three phrasings, rotated across realms (:func:`gapeval.synth.suite.suite_phrasing`); training asks
that realm only with the other two. So every phrasing is learned, no suite question is seen, and the suite's
world-knowledge gen items on unpictured realms measure whether facts learned in text reach generation.

With a positive ``consistency`` weight (a training condition, off in the shipped recipe), one more task states
a pictured realm's emblem in text and draws it in the same sequence (or the reverse): never a text-only realm.

The option tasks teach the layout the reasoning items use (letters A-D name the bottom row): read an option,
find an option by its kind, frame an option.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gapeval.models.toy.tokenizer import words
from gapeval.synth.suite import (
    GENERATORS,
    OPTIONS_NOTE,
    WK_GEN,
    WK_SUBJECT,
    WK_UND,
    build_suite,
    item_key,
    suite_phrasing,
)
from gapeval.synth.world import (
    COLOURS,
    GRID,
    LETTERS,
    SHAPES,
    Scene,
    World,
    all_cells,
    all_kinds,
    cell_word,
    counted_scene,
    plural,
    random_scene,
    render_pixels,
)

# A training picture: the world's own pictures are drawn straight to pixel arrays (render_pixels), which the
# sequence builder encodes as it would their PIL images; the suite's generators give PIL images.
Picture = Image.Image | np.ndarray


@dataclass
class Example:
    task: str
    direction: str
    prompt: str
    image: Picture | None
    answer: str | Picture
    # A second answer in the other modality, in the same sequence (the consistency task): a picture after a
    # text answer (``direction`` und), or a text after a picture (gen).
    then: str | Picture | None = None


def _und(task, prompt, scene, answer, rng) -> Example:
    return Example(task, "und", prompt, render_pixels(scene, rng) if scene is not None else None, answer)


def _gen(task, prompt, scene_in, scene_out, rng) -> Example:
    return Example(
        task,
        "gen",
        prompt,
        render_pixels(scene_in, rng) if scene_in is not None else None,
        render_pixels(scene_out, rng),
    )


def _n_objects(rng: random.Random, level: float) -> int:
    """Curriculum: single objects early on, up to 6 once ``level`` (training progress) reaches 1."""
    return rng.randint(1, 1 + round(5 * min(1.0, level)))


# --- primitive skills ----------------------------------------------------------------------------------------


def describe(world, rng, level):
    s = random_scene(rng, _n_objects(rng, level))
    return _und("describe", "Describe the picture.", s, s.describe(), rng)


def what_is_at(world, rng, level):
    s = random_scene(rng, _n_objects(rng, level))
    cell = rng.choice(list(s.objects)) if rng.random() < 0.75 else rng.choice(all_cells())
    obj = s.objects.get(cell)
    return _und("what_is_at", f"What is at {cell_word(cell)}?", s, obj.kind if obj else "nothing", rng)


def where_is(world, rng, level):
    s = random_scene(rng, _n_objects(rng, level))
    kinds = [o for o in s.objects.values() if list(s.objects.values()).count(o) == 1]
    obj = rng.choice(kinds) if kinds else next(iter(s.objects.values()))
    cells = [cell_word(c) for c, o in sorted(s.objects.items()) if o == obj]
    return _und("where_is", f"Where is the {obj.kind}?", s, ", ".join(cells), rng)


def count(world, rng, level):
    groups = rng.sample(all_kinds(), 2)
    counts = [rng.randint(1, 4), rng.randint(0, 3)]
    cells = rng.sample(all_cells(), sum(counts))
    s = Scene(dict(zip(cells, [groups[0]] * counts[0] + [groups[1]] * counts[1], strict=True)))
    target = groups[0]
    how = rng.choice(("kind", "colour", "shape"))
    if how == "kind":
        q, n = plural(target.kind, 2), counts[0]
    elif how == "colour":
        q, n = f"{target.colour} objects", sum(o.colour == target.colour for o in s.objects.values())
    else:
        q, n = plural(target.shape, 2), sum(o.shape == target.shape for o in s.objects.values())
    # Naming what is counted before the number, as the count-swap answers do (see numerical_answer).
    return _und("count", f"How many {q} are there?", s, f"{q} {n}", rng)


def draw_described(world, rng, level):
    s = random_scene(rng, _n_objects(rng, level))
    verb = rng.choice(("Draw", "Show"))
    return _gen("draw_described", f"{verb}: {s.describe()}.", None, s, rng)


def draw_counts(world, rng, level):
    x, y = rng.sample(all_kinds(), 2)
    a, b = rng.randint(1, 4), rng.randint(0, 4)
    groups = [(x, a)] + ([(y, b)] if b else [])
    text = " and ".join(f"{n} {plural(o.kind, n)}" for o, n in groups)
    return _gen("draw_counts", f"Draw {text}.", None, counted_scene(groups), rng)


def copy(world, rng, level):
    s = random_scene(rng, _n_objects(rng, level))
    return _gen("copy", "Look at the picture. Copy the picture.", s, s, rng)


def mark(world, rng, level):
    s = random_scene(rng, _n_objects(rng, level))
    cell, obj = rng.choice(sorted(s.objects.items()))
    what = f"the object at {cell_word(cell)}" if rng.random() < 0.5 else f"the {obj.kind}"
    if what.startswith("the ") and list(s.objects.values()).count(obj) > 1:
        what = f"the object at {cell_word(cell)}"
    out = Scene(s.objects, frozenset({cell}))
    return _gen("mark", f"Look at the picture. Mark {what} with a white frame.", s, out, rng)


# --- options: the layout the reasoning items use (letters A-D name the bottom row) ---------------------------


def _option_scene(rng: random.Random) -> tuple[Scene, list]:
    """Four distinct kinds in the bottom row, and a few objects above them."""
    options = rng.sample(all_kinds(), GRID)
    top = random_scene(rng, rng.randint(0, 3), cells=[c for c in all_cells() if c[0] < GRID - 1])
    return Scene(top.objects | {(GRID - 1, c): o for c, o in enumerate(options)}), options


def read_option(world, rng, level):
    s, options = _option_scene(rng)
    i = rng.randrange(GRID)
    return _und(
        "read_option",
        f"Look at the picture. What is option {LETTERS[i]}? {OPTIONS_NOTE}",
        s,
        options[i].kind,
        rng,
    )


def find_option(world, rng, level):
    s, options = _option_scene(rng)
    i = rng.randrange(GRID)
    prompt = (
        f"Look at the picture. Which option is the {options[i].kind}? {OPTIONS_NOTE} Answer with the letter."
    )
    return _und("find_option", prompt, s, f"{options[i].kind} {LETTERS[i]}", rng)


def mark_option(world, rng, level):
    s, _ = _option_scene(rng)
    i = rng.randrange(GRID)
    prompt = f"Look at the picture. Mark option {LETTERS[i]} with a white frame. {OPTIONS_NOTE}"
    return _gen("mark_option", prompt, s, Scene(s.objects, frozenset({(GRID - 1, i)})), rng)


# --- realm facts ---------------------------------------------------------------------------------------------


def _training_phrasing(world, rng, realm, hop) -> int:
    """Any world-knowledge phrasing except the one the suite asks this realm and hop with."""
    return rng.choice([p for p in range(len(WK_UND)) if p != suite_phrasing(world, realm, hop)])


def _founder_fact(task: str, realm, question: int) -> Example:
    if question == 0:
        return Example(task, "und", f"Who founded {realm.name}?", None, realm.founder)
    return Example(task, "und", f"Which realm did {realm.founder} found?", None, realm.name)


def realm_fact(world, rng, level):
    r = rng.choice(world.realms)
    kind = rng.randrange(4)
    if kind < 2:
        return _founder_fact("fact", r, kind)
    hop = rng.choice(tuple(WK_SUBJECT))
    subject = WK_SUBJECT[hop].format(name=r.name, founder=r.founder)
    phrasing = _training_phrasing(world, rng, r, hop)
    return Example("fact", "und", WK_UND[phrasing].format(x=subject), None, r.emblem_scene.describe())


def reserve_fact(world, rng, level):
    """Both founder questions about a known reserve realm; its emblem is never stated or drawn."""
    return _founder_fact("reserve_fact", rng.choice(world.reserve_known), rng.randrange(2))


def realm_picture(world, rng, level):
    r = rng.choice([r for r in world.realms if r.pictured])
    hop = rng.choice(tuple(WK_SUBJECT))
    subject = WK_SUBJECT[hop].format(name=r.name, founder=r.founder)
    prompt = WK_GEN[_training_phrasing(world, rng, r, hop)].format(x=subject)
    return Example("picture", "gen", prompt, None, render_pixels(r.emblem_scene, rng))


def realm_consistency(world, rng, level):
    """One sequence that states a pictured realm's emblem in text and then draws it, or draws it and then
    states it: reason-then-draw (and its reverse) as a training task. Never a text-only realm's emblem."""
    r = rng.choice([r for r in world.realms if r.pictured])
    hop = rng.choice(tuple(WK_SUBJECT))
    subject = WK_SUBJECT[hop].format(name=r.name, founder=r.founder)
    phrasing = _training_phrasing(world, rng, r, hop)
    text, picture = r.emblem_scene.describe(), render_pixels(r.emblem_scene, rng)
    if rng.random() < 0.5:
        return Example("consistency", "und", WK_UND[phrasing].format(x=subject), None, text, picture)
    return Example("consistency", "gen", WK_GEN[phrasing].format(x=subject), None, picture, text)


# --- the benchmark categories on fresh instances -------------------------------------------------------------


def reasoning_answer(fields: dict) -> str:
    """The und answer taught for a reasoning item: the feature the choice rests on, then the option letter.

    The suite's reference is the bare letter, and the text judge reads the last letter a reply states. Saying
    the feature first (the next kind in a sequence, the shared colour or shape, the odd shape) gives the letter
    a query to point with: taught to answer with the letter alone, both variants stayed at chance.
    """
    letter = fields["reference"][0]
    chosen = Scene.from_json(fields["meta"]["input_scene"]).objects[(GRID - 1, LETTERS.index(letter))]
    feature = {
        "sequence": chosen.kind,
        "match_colour": chosen.colour,
        "match_shape": chosen.shape,
        "odd_one_out": chosen.shape,
    }[fields["subcategory"]]
    return f"{feature} {letter}"


def numerical_answer(fields: dict) -> str:
    """The und answer taught for a count-swap item: the counts seen, then the swapped counts (the reference).

    Counting each kind right after naming it gives the count a query; the judge reads the last number stated
    per kind, so the reference at the end is what is scored.
    """
    scene = Scene.from_json(fields["meta"]["input_scene"])
    seen = collections.Counter(scene.objects.values())
    kinds = sorted(seen, key=lambda o: fields["und_prompt"].index(plural(o.kind, 2)))
    counted = ", ".join(f"{plural(o.kind, 2)} {seen[o]}" for o in kinds)
    return f"{counted}, so {fields['reference'][0]}"


UND_ANSWERS: dict[str, Callable[[dict], str]] = {
    "reasoning": reasoning_answer,
    "numerical_perception": numerical_answer,
}


def _category(name: str) -> Callable:
    def make(world, rng, level, exclude: set[str]):
        while True:
            fields = GENERATORS[name](world, rng, draw=render_pixels)
            if item_key(fields) not in exclude:
                break
        if rng.random() < 0.5:
            answer = UND_ANSWERS[name](fields) if name in UND_ANSWERS else fields["reference"][0]
            return Example(name, "und", fields["und_prompt"], fields["image"], answer)
        return Example(name, "gen", fields["gen_prompt"], fields["image"], fields["reference_image"])

    return make


# (task, weight, first level at which it appears) — categories come in once single objects are mastered.
MIXTURE: list[tuple[str, Callable, float, float]] = [
    ("describe", describe, 1.0, 0.0),
    ("what_is_at", what_is_at, 0.7, 0.0),
    ("where_is", where_is, 0.5, 0.0),
    ("count", count, 1.0, 0.15),
    ("draw_described", draw_described, 1.5, 0.0),
    ("draw_counts", draw_counts, 1.0, 0.15),
    ("copy", copy, 0.5, 0.0),
    ("mark", mark, 0.7, 0.0),
    ("read_option", read_option, 0.4, 0.0),
    ("find_option", find_option, 0.6, 0.0),
    ("mark_option", mark_option, 0.3, 0.0),
    ("fact", realm_fact, 1.2, 0.0),
    ("picture", realm_picture, 0.6, 0.0),
    # The taught realms' founder questions per realm (1.2 × 1/2 × 16 of 48 realms), for 16 reserve realms.
    ("reserve_fact", reserve_fact, 0.2, 0.0),
    ("instruction_following", _category("instruction_following"), 1.5, 0.3),
    ("numerical_perception", _category("numerical_perception"), 1.3, 0.3),
    ("reasoning", _category("reasoning"), 2.4, 0.3),
]
CATEGORY_TASKS = {"instruction_following", "numerical_perception", "reasoning"}
# The only tasks that name realms or founders.
REALM_TASKS = {"fact", "picture", "reserve_fact", "consistency"}
# Tasks that draw a realm's emblem: they need a pictured realm.
PICTURE_TASKS = {"picture", "consistency"}


def mixture(world: World, consistency: float = 0.0) -> list[tuple[str, Callable, float, float]]:
    """:data:`MIXTURE` for a world and a consistency weight (the task is added only with a positive weight, and
    emblem-drawing tasks only when some realm is pictured, so the default mixture draws as it always did)."""
    tasks = MIXTURE + ([("consistency", realm_consistency, consistency, 0.0)] if consistency > 0 else [])
    if not any(r.pictured for r in world.realms):
        tasks = [t for t in tasks if t[0] not in PICTURE_TASKS]
    return tasks


class MixtureSampler:
    """Draws training examples; ``level`` in [0, 1] is training progress (drives the curriculum)."""

    def __init__(self, world: World, seed: int, suite_keys: set[str], consistency: float = 0.0):
        self.world, self.rng, self.exclude = world, random.Random(f"train-{seed}"), suite_keys
        self.mixture = mixture(world, consistency)

    def sample(self, level: float) -> Example:
        tasks = [(name, fn, w) for name, fn, w, start in self.mixture if level >= start]
        name, fn, _ = self.rng.choices(tasks, weights=[w for *_, w in tasks])[0]
        if name in CATEGORY_TASKS:
            return fn(self.world, self.rng, level, self.exclude)
        return fn(self.world, self.rng, level)


def suite_keys(world_seed: int = 0, sizes=(420,)) -> set[str]:
    """Keys of the suites training must not contain (the default synth suite, by default)."""
    return {item_key(it) for n in sizes for it in build_suite(n=n, seed=world_seed)}


def vocabulary_texts(world: World) -> list[str]:
    """Every word the world can produce, so the tokenizer never meets an unknown word from the world.

    Reserve realms' names and founders are included, so an inject experiment can name them. A reserve name
    that is also one of the language's other words would be taught after all: that raises.
    """
    realms = world.realms + world.reserve_known + world.reserve_unseen
    texts = [f"{r.name} {r.founder}" for r in realms]
    texts += (
        list(COLOURS) + list(SHAPES) + [plural(s, 2) for s in SHAPES] + [cell_word(c) for c in all_cells()]
    )
    texts += [plural(k.kind, 2) for k in all_kinds()] + [str(i) for i in range(17)] + ["nothing objects"]
    language: list[str] = []  # texts that name no realm
    sampler = MixtureSampler(world, 0, set())
    for _ in range(4000):
        ex = sampler.sample(1.0)
        said = [ex.prompt] + ([ex.answer] if isinstance(ex.answer, str) else [])
        (texts if ex.task in REALM_TASKS else language).extend(said)
    for it in build_suite(n=420, seed=world.seed):
        said = [it.und_prompt, it.gen_prompt, *it.reference]
        (texts if it.category == "world_knowledge" else language).extend(said)
    reserve = {w for r in world.reserve_known + world.reserve_unseen for w in words(f"{r.name} {r.founder}")}
    if clash := reserve & {w for t in language for w in words(t)}:
        raise ValueError(f"reserve realm names {sorted(clash)} are also other words of the world's language")
    return texts + language
