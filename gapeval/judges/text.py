"""Rule-based judging of text answers: parse a free-form reply and check it against the item's spec.

Models answer in prose ("I think there are 3 red circles."), so the judge reads what a reply *states* — kinds
with their numbers and cells, or an option letter — instead of matching strings. Items without a spec fall
back to normalised matching against ``item.reference``. A reply that cannot be read is a wrong answer; only a
missing or malformed spec (the judge cannot decide) gives ``correct=None`` with an error.

The spec reader and the comparisons below are shared with the pixel judge (:mod:`gapeval.judges.image`), so
text and images are held to the same rule.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gapeval.items import Item, ItemError
from gapeval.judges.base import Verdict
from gapeval.judges.tally import check_tally
from gapeval.synth.world import COLOURS, GRID, LETTERS, NUMBER_WORDS, SHAPES, Cell, Obj, Scene, cell_word

SPEC_TYPES = ("scene", "counts", "objects", "option", "tally")

# --- specs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A validated ``item.spec[direction]``; only the field named by ``type`` is meaningful."""

    type: str
    scene: Scene = field(default_factory=Scene)
    counts: dict[Obj, int] = field(default_factory=dict)
    objects: Counter[Obj] = field(default_factory=Counter)
    option: str = ""
    tally: dict[str, int] = field(default_factory=dict)


def read_spec(item: Item, direction: str) -> Spec:
    """Validate and decode one direction's spec; ItemError names the item and the offending field."""
    where = f"spec.{direction}"

    def fail(message: str, sub: str = "") -> ItemError:
        return ItemError(message, item=item.id, field=where + sub)

    raw = (item.spec or {}).get(direction)
    if not isinstance(raw, dict):
        raise fail(f"no machine-checkable {direction} spec (got {raw!r})")
    kind = raw.get("type")
    if kind not in SPEC_TYPES:
        raise fail(f"unknown spec type {kind!r}; expected one of {', '.join(SPEC_TYPES)}", ".type")
    body = raw.get(kind)
    sub = f".{kind}"
    try:
        if kind == "scene":
            return Spec(kind, scene=_decode_scene(body))
        if kind == "counts":
            if not isinstance(body, dict) or not body:
                raise ValueError("expected a non-empty mapping of 'colour shape' to a count")
            counts = {_decode_kind(k): _decode_count(v) for k, v in body.items()}
            return Spec(kind, counts=counts)
        if kind == "objects":
            if not isinstance(body, list):
                raise ValueError("expected a list of [shape, colour]")
            return Spec(kind, objects=Counter(_decode_obj(*pair) for pair in body))
        if kind == "tally":
            if not isinstance(body, dict) or not body:
                raise ValueError("expected a non-empty mapping of object name to a count")
            if not all(isinstance(name, str) and name.strip() for name in body):
                raise ValueError("object names must be non-empty strings")
            return Spec(kind, tally={name: _decode_count(n) for name, n in body.items()})
        if body not in tuple(LETTERS):
            raise ValueError(f"expected one of {', '.join(LETTERS)}")
        return Spec(kind, option=body)
    except (ValueError, TypeError) as exc:
        raise fail(f"malformed {kind} spec {body!r}: {exc}", sub) from None


def _decode_obj(shape: Any, colour: Any) -> Obj:
    if shape not in SHAPES or colour not in COLOURS:
        raise ValueError(f"unknown shape/colour {shape!r}/{colour!r}")
    return Obj(shape, colour)


def _decode_kind(kind: Any) -> Obj:
    parts = kind.split() if isinstance(kind, str) else []
    if len(parts) != 2:
        raise ValueError(f"kind {kind!r} is not 'colour shape'")
    return _decode_obj(parts[1], parts[0])


def _decode_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"count {value!r} is not a non-negative integer")
    return value


def _decode_cell(r: Any, c: Any) -> Cell:
    if not all(isinstance(v, int) and 0 <= v < GRID for v in (r, c)):
        raise ValueError(f"cell ({r!r}, {c!r}) is outside the {GRID}x{GRID} grid")
    return r, c


def _decode_scene(body: Any) -> Scene:
    if not isinstance(body, dict):
        raise ValueError("expected {'objects': [...], 'marks': [...]}")
    objects: dict[Cell, Obj] = {}
    for r, c, shape, colour in body.get("objects", []):
        objects[_decode_cell(r, c)] = _decode_obj(shape, colour)
    marks = frozenset(_decode_cell(r, c) for r, c in body.get("marks", []))
    return Scene(objects, marks)


# --- comparisons (shared with the pixel judge) ---------------------------------------------------------------


def describe_cells(objects: dict[Cell, Obj]) -> str:
    return ", ".join(f"{o.kind}@{cell_word(cell)}" for cell, o in sorted(objects.items())) or "nothing"


def describe_counts(counts: dict[Obj, int]) -> str:
    return ", ".join(f"{n} {o.kind}" for o, n in sorted(counts.items())) or "nothing"


def compare_cells(found: dict[Cell, Obj], expected: dict[Cell, Obj]) -> tuple[bool, str]:
    return found == expected, f"objects {describe_cells(found)}; expected {describe_cells(expected)}"


def compare_counts(found: dict[Obj, int | None], expected: dict[Obj, int]) -> tuple[bool, str]:
    """Each expected kind at exactly its count; other kinds are allowed (the paper's counting rule)."""
    ok = all(found.get(kind) == n for kind, n in expected.items())
    shown = ", ".join(f"{kind.kind}={found.get(kind, 'missing')}" for kind in sorted(expected))
    return ok, f"counts {shown}; expected {describe_counts(expected)}"


def compare_multiset(found: Counter[Obj], expected: Counter[Obj]) -> tuple[bool, str]:
    """Same kinds, same numbers, positions ignored."""
    found, expected = +found, +expected
    return found == expected, f"objects {describe_counts(found)}; expected {describe_counts(expected)}"


# --- reading replies -----------------------------------------------------------------------------------------

_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"ten": 10, "no": 0, "a": 1, "an": 1, "single": 1}
_NUM = r"\d+|" + "|".join(sorted(_NUMBERS, key=len, reverse=True))


def _pos(tag: str) -> str:
    return rf"\br(?:ow)?\s*(?P<{tag}r>\d+)\s*[,;/]?\s*c(?:ol(?:umn)?)?\s*(?P<{tag}c>\d+)\b"


_MENTION = re.compile(
    rf"(?:(?P<lead>{_pos('l')})\s*[:=\-]\s*)?"
    rf"(?:\b(?P<num>{_NUM})\s+)?"
    rf"\b(?P<colour>{'|'.join(COLOURS)})\s+(?P<shape>{'|'.join(SHAPES)})(?:es|s)?\b"
    rf"(?:\s*,?\s*(?:(?:at|in|on)\s+(?:the\s+)?(?:cell|position|location)?\s*|\(\s*|@\s*|:\s*)"
    rf"(?P<trail>{_pos('t')})\s*\)?"
    rf"|\s*[:=]\s*(?P<after>{_NUM})\b)?"
)
_EMPTY = re.compile(r"\b(nothing|empty|blank|none|no objects?)\b")
_OPTION_WORD = re.compile(
    r"\b(?:option|choice|answer(?:\s+is)?)\s*[:\-]?\s*\(?\s*([a-d])\s*\)?(?![\w-])", re.I
)
_OPTION_LETTER = re.compile(r"(?<![\w-])\(?([A-D])\)?(?![\w-])")
# "A" before a lowercase word is an article unless that word is one a letter is followed by ("A is correct").
_ARTICLE_AFTER = re.compile(
    r"\s+(?!(?:is|was|would|should|seems|looks|fits|matches|completes|because|since|as|and|or|but|then)\b)[a-z]"
)
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class Mention:
    """One kind named in a reply: the number before it ("3", "three", "a") and the cell next to it, if any."""

    obj: Obj
    number: int | None
    cell: Cell | None


def find_mentions(text: str) -> list[Mention]:
    """Every "<number>? <colour> <shape> <at rXcY>?" in reading order (case-insensitive, plurals allowed)."""
    out = []
    for m in _MENTION.finditer(text.lower()):
        number = m["num"] or m["after"]
        tag = "t" if m["trail"] else "l" if m["lead"] else None
        cell = (int(m[f"{tag}r"]), int(m[f"{tag}c"])) if tag else None
        out.append(Mention(Obj(m["shape"], m["colour"]), _to_int(number), cell))
    return out


def _to_int(word: str | None) -> int | None:
    if word is None:
        return None
    return int(word) if word.isdigit() else _NUMBERS[word]


_BARE_LETTER = re.compile(r"\s*\(?([a-dA-D])[).:]?\s*")


def find_option(text: str) -> str | None:
    """The last option stated: a reply that is just a letter ("c", "(B)"), "option c"/"answer is b" in any
    case, or a standalone capital A–D.

    "A"/"a" followed by a lowercase word is an article ("A red circle is option C" → C), unless that word is
    one that follows a letter ("A is correct", "the answer is A because ..."); after "answer is"/"option" only
    the lowercase "a" can be an article.
    """
    bare = _BARE_LETTER.fullmatch(text)
    if bare:
        return bare[1].upper()
    found: list[tuple[int, str]] = []
    for m in _OPTION_WORD.finditer(text):
        letter = m[1]
        if letter == "a" and _ARTICLE_AFTER.match(text, m.end()):
            continue
        found.append((m.start(1), letter.upper()))
    for m in _OPTION_LETTER.finditer(text):
        if m[1] == "A" and _ARTICLE_AFTER.match(text, m.end()):
            continue
        found.append((m.start(1), m[1]))
    return max(found)[1] if found else None


def normalise(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = re.sub(r"[^\w]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


# --- checks per spec type ------------------------------------------------------------------------------------


def _check_scene(text: str, mentions: list[Mention], scene: Scene) -> tuple[bool, str]:
    """Positioned mentions must name exactly the scene's objects (text cannot show marks)."""
    placed = [(m.cell, m.obj) for m in mentions if m.cell is not None]
    found = dict(placed)
    if len(set(placed)) != len(found):
        return False, f"two kinds stated for one cell; expected {describe_cells(scene.objects)}"
    if not scene.objects:
        empty = not found and bool(_EMPTY.search(text.lower()))
        return empty, f"{'an empty' if empty else 'no empty'} scene stated; expected nothing"
    return compare_cells(found, scene.objects)


def _check_counts(mentions: list[Mention], counts: dict[Obj, int]) -> tuple[bool, str]:
    """The last number stated for each kind counts (a reply may recount before its final answer)."""
    found = {m.obj: m.number for m in mentions if m.number is not None}
    return compare_counts(found, counts)


def _check_objects(mentions: list[Mention], objects: Counter[Obj]) -> tuple[bool, str]:
    """Per kind: its distinct cells if any are given, else the largest number stated, else one.

    Repeating a kind ("a red circle ... the red circle") names it once, not twice.
    """
    cells: dict[Obj, set[Cell]] = {}
    numbers: dict[Obj, int] = {}
    for m in mentions:
        if m.cell is not None:
            cells.setdefault(m.obj, set()).add(m.cell)
        numbers[m.obj] = max(numbers.get(m.obj, 0), 1 if m.number is None else m.number)
    found = Counter({kind: len(cells[kind]) if kind in cells else n for kind, n in numbers.items()})
    return compare_multiset(found, objects)


def _check_option(text: str, option: str) -> tuple[bool, str]:
    stated = find_option(text)
    return stated == option, f"option {stated or 'none stated'}; expected {option}"


def _check_references(text: str, references: list[str]) -> tuple[bool, str]:
    reply = normalise(text)
    for ref in filter(None, map(normalise, references)):
        if reply == ref or f" {ref} " in f" {reply} ":
            return True, f"reply contains accepted answer {ref!r}"
    return False, f"reply {reply[:80]!r} matches none of {len(references)} accepted answers"


class TextJudge:
    """Judges understanding (text) answers by the item's ``spec["und"]``, else by its references."""

    id = "text-rule-v1"

    def judge(self, item: Item, answer: Any) -> Verdict:
        if not isinstance(answer, str):
            return Verdict(False, self.id, f"the answer is a {type(answer).__name__}, not text")
        try:
            if item.spec is None or "und" not in item.spec:
                if not any(r.strip() for r in item.reference):
                    raise ItemError(
                        "no spec and no text reference to judge by", item=item.id, field="reference"
                    )
                correct, reason = _check_references(answer, item.reference)
                return Verdict(correct, self.id, reason)
            spec = read_spec(item, "und")
        except ItemError as exc:
            return Verdict(None, self.id, error=str(exc))
        mentions = find_mentions(answer)
        if spec.type == "scene":
            correct, reason = _check_scene(answer, mentions, spec.scene)
        elif spec.type == "counts":
            correct, reason = _check_counts(mentions, spec.counts)
        elif spec.type == "objects":
            correct, reason = _check_objects(mentions, spec.objects)
        elif spec.type == "tally":
            correct, reason = check_tally(answer, spec.tally)
        else:
            correct, reason = _check_option(answer, spec.option)
        return Verdict(correct, self.id, reason)
