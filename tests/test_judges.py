"""The rule judges on the synth suite: right answers pass in any honest form, wrong answers fail."""

from __future__ import annotations

import random
from collections import Counter
from statistics import mean

import numpy as np
import pytest
from PIL import Image

from gapeval.items import Item
from gapeval.judges.image import SynthImageJudge
from gapeval.judges.text import TextJudge, find_option
from gapeval.synth.suite import build_suite
from gapeval.synth.world import CELL, NUMBER_WORDS, SIZE, Obj, Scene, all_cells, cell_word, plural, render

TEXT, IMAGE = TextJudge(), SynthImageJudge()
JUDGES = {"und": TEXT, "gen": IMAGE}
SALAD = (
    "the picture shows some maybe and of is there are two three red blue green circle squares cross at "
    "option answer colour row left right a an"
).split()


@pytest.fixture(scope="module")
def suite() -> list[Item]:
    return build_suite(n=420)


def pass_rate(direction: str, pairs: list[tuple[Item, object]]) -> float:
    """Share judged correct; every verdict must be a decision (no error) that names its judge."""
    judge = JUDGES[direction]
    verdicts = [judge.judge(item, answer) for item, answer in pairs]
    assert verdicts
    assert all(v.judge == judge.id and v.error is None and v.correct is not None for v in verdicts)
    return mean(bool(v.correct) for v in verdicts)


def kinds_of(spec: dict) -> Counter[Obj]:
    if spec["type"] == "scene":
        return Counter(Scene.from_json(spec["scene"]).objects.values())
    if spec["type"] == "counts":
        return Counter({Obj(*reversed(k.split())): n for k, n in spec["counts"].items()})
    return Counter(Obj(shape, colour) for shape, colour in spec["objects"])


def scene_for(spec: dict, rng: random.Random) -> Scene:
    """A scene that meets ``spec``, built from the spec alone (kinds placed in random cells where free)."""
    if spec["type"] == "scene":
        return Scene.from_json(spec["scene"])
    kinds = list(kinds_of(spec).elements())
    return Scene(dict(zip(rng.sample(all_cells(), len(kinds)), kinds, strict=True)))


def differs_from_input(item: Item) -> bool:
    """Whether the unchanged input image would fail the gen spec (by construction, not by the judge)."""
    spec, given = item.spec["gen"], Scene.from_json(item.meta["input_scene"])
    if spec["type"] == "scene":
        return Scene.from_json(spec["scene"]) != given
    return kinds_of(spec) != Counter(given.objects.values())


def others(suite: list[Item], item: Item, direction: str, rng: random.Random) -> list[Item]:
    """Two same-category items and one from anywhere whose spec for ``direction`` differs from ``item``'s."""
    differ = [o for o in suite if o.spec[direction] != item.spec[direction]]
    same = [o for o in differ if o.category == item.category]
    return rng.sample(same, min(2, len(same))) + [rng.choice(differ)]


# --- free-form text that a model might give ------------------------------------------------------------------


def say_kind(obj: Obj, n: int, rng: random.Random) -> str:
    number = rng.choice([str(n), NUMBER_WORDS[n]]) if n != 1 else rng.choice(["1", "one", "a"])
    text = f"{number} {plural(obj.kind, n)}"
    return text.title() if rng.random() < 0.2 else text


def say_cell(cell: tuple[int, int], rng: random.Random) -> str:
    r, c = cell
    return rng.choice(
        [f"at {cell_word(cell)}", f"in cell r{r} c{c}", f"(r{r}, c{c})", f"at row {r}, column {c}"]
    )


def paraphrase(spec: dict, rng: random.Random) -> str:
    kind = spec["type"]
    if kind == "option":
        letter = spec["option"]
        decoy = rng.choice(["red circle", "blue square", "green cross"])
        return rng.choice(
            [
                f"The answer is {letter}.",
                f"Option ({letter})",
                f"I'd pick {letter}!",
                f"answer: {letter.lower()}",
                f"A {decoy} is option {letter}.",
                f"Looking at the bottom row, {letter} is correct",
            ]
        )
    if kind == "scene":
        scene = Scene.from_json(spec["scene"])
        parts = [f"a {o.kind} {say_cell(cell, rng)}" for cell, o in scene.objects.items()]
        rng.shuffle(parts)
        listed = rng.choice(["; ", ", ", " and "]).join(parts)
        return rng.choice([f"After the rule the picture shows {listed}.", listed, f"I see {listed}!"])
    parts = [say_kind(obj, n, rng) for obj, n in kinds_of(spec).items()]
    rng.shuffle(parts)
    listed = " and ".join(parts)
    if kind == "counts":
        return rng.choice([f"I think there are {listed}.", f"After the swap: {listed}", listed.upper()])
    where = say_cell(rng.choice(all_cells()), rng) if len(parts) == 1 else ""
    return rng.choice([f"The emblem is {listed} {where}.", f"It shows {listed}", f"{listed}!"])


# --- right answers pass --------------------------------------------------------------------------------------


def test_reference_answers_pass(suite):
    assert pass_rate("und", [(it, it.reference[0]) for it in suite]) >= 0.995
    assert pass_rate("gen", [(it, it.reference_image) for it in suite]) >= 0.995


def test_jittered_rerenders_pass(suite):
    rng = random.Random(1)
    pairs = [(it, render(scene_for(it.spec["gen"], rng), random.Random(k))) for k, it in enumerate(suite)]
    assert pass_rate("gen", pairs) >= 0.995


@pytest.mark.parametrize(
    "side, method",
    [(400, Image.Resampling.NEAREST), (384, Image.Resampling.BILINEAR), (256, Image.Resampling.BICUBIC)],
)
def test_upscaled_references_pass(suite, side, method):
    """A real UMM draws at hundreds of pixels, often smoothly resized; the judge reads the world's grid."""
    pairs = [(it, it.reference_image.resize((side, side), method)) for it in suite]
    assert pass_rate("gen", pairs) >= 0.995


def test_free_form_paraphrases_pass(suite):
    rng = random.Random(2)
    assert pass_rate("und", [(it, paraphrase(it.spec["und"], rng)) for it in suite]) >= 0.995


# --- wrong answers fail --------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["und", "gen"])
def test_other_items_references_fail(suite, direction):
    rng = random.Random(3)
    pairs = [
        (it, o.reference[0] if direction == "und" else o.reference_image)
        for it in suite
        for o in others(suite, it, direction, rng)
    ]
    assert len(pairs) >= 3 * len(suite) - 5
    assert pass_rate(direction, pairs) <= 0.01


def test_blank_noise_and_unchanged_input_images_fail(suite):
    noise = np.random.default_rng(4)
    pairs: list[tuple[Item, object]] = []
    for k, it in enumerate(suite):
        side = SIZE * (1 + 9 * (k % 2))
        pairs.append((it, Image.new("RGB", (SIZE, SIZE), "black")))
        pairs.append((it, Image.new("RGB", (side, side), "white")))
        pairs.append((it, Image.fromarray(noise.integers(0, 256, (side, side, 3), dtype=np.uint8))))
        if it.image is not None and differs_from_input(it):
            pairs.append((it, it.image))
    assert sum(answer is it.image for it, answer in pairs) >= 300
    assert pass_rate("gen", pairs) <= 0.01


def test_empty_and_word_salad_text_fails(suite):
    rng = random.Random(5)
    pairs = [(it, "") for it in suite] + [
        (it, " ".join(rng.choices(SALAD, k=rng.randint(4, 14)))) for it in suite for _ in range(2)
    ]
    assert pass_rate("und", pairs) <= 0.01


# --- the reading rules, one at a time ------------------------------------------------------------------------


def synth_item(und: dict, gen: dict | None = None, reference: list[str] | None = None) -> Item:
    spec = {"und": und} | ({"gen": gen} if gen is not None else {})
    return Item("t-1", "reasoning", "", "q?", "draw", reference=reference or [], spec=spec)


@pytest.mark.parametrize(
    "reply, option",
    [
        ("The answer is B.", "B"),
        ("Option (C)", "C"),
        ("option d", "D"),
        ("A red circle is option C", "C"),
        ("The answer is A because it repeats.", "A"),
        ("A.", "A"),
        ("Looking at the bottom row, A is correct", "A"),
        ("I first thought B, but the answer is C!", "C"),
        ("the answer is a red circle", None),
        ("I don't know", None),
        ("", None),
    ],
)
def test_option_is_the_last_one_stated(reply, option):
    assert find_option(reply) == option


COUNTS = {"type": "counts", "counts": {"red circle": 3, "purple cross": 1}}


@pytest.mark.parametrize(
    "reply, correct",
    [
        ("There are 3 red circles and one purple cross.", True),
        ("THREE RED CIRCLES, 1 PURPLE CROSS", True),
        ("red circles: 3, purple crosses: 1, and 2 green squares", True),  # unrelated kinds are allowed
        ("Before: 1 red circle and 3 purple crosses. After: 3 red circles and a purple cross.", True),
        ("3 red circles", False),  # a kind missing
        ("3 red circles and 2 purple crosses", False),
        ("three red circles and purple crosses", False),  # no number for a kind
    ],
)
def test_counts_replies(reply, correct):
    assert TEXT.judge(synth_item(COUNTS), reply).correct is correct


SCENE = {
    "type": "scene",
    "scene": {"objects": [[0, 1, "circle", "red"], [2, 3, "square", "blue"]], "marks": []},
}


@pytest.mark.parametrize(
    "reply, correct",
    [
        ("Red Circle at r0c1; blue square at r2c3", True),
        ("r2c3: blue square, r0c1: red circle.", True),
        ("a red circle in row 0, column 1 and a blue square (r2, c3)", True),
        ("red circle at r0c1", False),
        ("red circle at r0c1, blue square at r2c3, green cross at r3c3", False),
        ("red circle at r0c1, blue square at r2c3, green cross at r0c1", False),  # two kinds in one cell
        ("a red circle and a blue square", False),  # positions matter for a scene
    ],
)
def test_scene_replies(reply, correct):
    assert TEXT.judge(synth_item(SCENE), reply).correct is correct


def test_empty_scene_must_be_stated():
    item = synth_item({"type": "scene", "scene": {"objects": [], "marks": []}})
    assert TEXT.judge(item, "Nothing is left.").correct is True
    assert TEXT.judge(item, "The picture is empty").correct is True
    assert TEXT.judge(item, "").correct is False
    assert TEXT.judge(item, "nothing but a red circle at r0c0").correct is False


@pytest.mark.parametrize(
    "reply, correct",
    [
        ("The emblem is a red circle. The red circle sits at r1c1.", True),  # a repeated kind counts once
        ("Two red circles", False),
        ("a red circle and a blue square", False),
        ("a blue circle", False),
    ],
)
def test_objects_replies(reply, correct):
    item = synth_item({"type": "objects", "objects": [["circle", "red"]]})
    assert TEXT.judge(item, reply).correct is correct


@pytest.mark.parametrize(
    "reply, correct",
    [
        ("2 tennis balls and five strawberries", True),
        ("Tennis-balls: 2; strawberries = 5; also a bowl", True),  # other objects are allowed
        ("There should be two big tennis balls and 5 ripe strawberries.", True),
        ("Swap 5 tennis balls and 2 strawberries: now 2 tennis balls, 5 strawberries", True),  # last stated
        ("2 tennis balls", False),
        ("2 tennis balls and 4 strawberries", False),
        ("tennis balls and strawberries", False),
    ],
)
def test_tally_replies(reply, correct):
    """Named counts of public counting items: any object name, singular or plural, digits or words."""
    item = Item(
        "t-4", "numerical_perception", "", "How many?", "Draw.",
        spec={"und": {"type": "tally", "tally": {"tennis ball": 2, "strawberries": 5}}},
    )  # fmt: skip
    assert TEXT.judge(item, reply).correct is correct


def test_without_spec_the_references_are_matched():
    item = Item("t-2", "world_knowledge", "", "Who?", "Draw.", reference=["the Eiffel Tower"])
    assert TEXT.judge(item, "It is the Eiffel tower!").correct is True
    assert TEXT.judge(item, "Eiffel Tower").correct is True
    assert TEXT.judge(item, "the Eiffel Towers").correct is False
    assert TEXT.judge(item, "").correct is False


def test_judge_failures_are_errors_naming_item_and_field():
    bad = synth_item({"type": "counts", "counts": {"red blob": 2}}, {"type": "drawing"})
    text, image = TEXT.judge(bad, "2 red blobs"), IMAGE.judge(bad, render(Scene()))
    assert text.correct is None and "t-1" in text.error and "spec.und.counts" in text.error
    assert image.correct is None and "t-1" in image.error and "spec.gen.type" in image.error
    no_gen = IMAGE.judge(synth_item(COUNTS), render(Scene()))
    assert no_gen.correct is None and "spec.gen" in no_gen.error
    tally = Item("t-5", "reasoning", "", "q?", "draw", spec={"und": {"type": "tally", "tally": {"cat": -1}}})
    verdict = TEXT.judge(tally, "-1 cat")
    assert verdict.correct is None and "spec.und.tally" in verdict.error
    nothing = TEXT.judge(Item("t-3", "reasoning", "", "q?", "draw"), "B")
    assert nothing.correct is None and "t-3" in nothing.error and "reference" in nothing.error


def test_bad_model_outputs_are_wrong_answers():
    item = synth_item(SCENE, SCENE)
    for answer in (None, "a red circle", Image.new("RGB", (0, 0))):
        verdict = IMAGE.judge(item, answer)
        assert verdict.correct is False and verdict.error is None and verdict.judge == IMAGE.id
    assert TEXT.judge(item, None).correct is False


def test_unreadable_cells_are_named():
    img = render(Scene.from_json(SCENE["scene"]))
    img.paste(
        (128, 128, 128), (3 * CELL + 3, 1 * CELL + 3, 3 * CELL + 7, 1 * CELL + 7)
    )  # a grey smudge at r1c3
    verdict = IMAGE.judge(synth_item(SCENE, SCENE), img)
    assert verdict.correct is False and "r1c3" in verdict.reason and "r0c1" not in verdict.reason


def test_marks_are_checked():
    marked = {"type": "scene", "scene": SCENE["scene"] | {"marks": [[2, 3]]}}
    item = synth_item(SCENE, marked)
    assert IMAGE.judge(item, render(Scene.from_json(marked["scene"]))).correct is True
    assert IMAGE.judge(item, render(Scene.from_json(SCENE["scene"]))).correct is False
