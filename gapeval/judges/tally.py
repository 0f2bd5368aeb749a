"""Named counts in a free-form reply: "1 apple and three oranges" → {"apple": 1, "orange": 3}.

The public release's counting items give their reference as ``{"objects": [...], "number": [...]}`` and its
rubric is strict: every requested object at exactly its count, other objects allowed. Object names are open
(apples, basketballs, tennis balls), so this reader matches any name with its plural forms instead of the synth
world's fixed vocabulary; the last number stated for an object counts, as for the synth counting judge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"no": 0, "none": 0, "a": 1, "an": 1, "single": 1}
_NUM = r"\d+|" + "|".join(sorted(NUMBERS, key=len, reverse=True))
IRREGULAR = {
    "person": "people", "child": "children", "man": "men", "woman": "women", "mouse": "mice",
    "goose": "geese", "foot": "feet", "tooth": "teeth", "knife": "knives", "leaf": "leaves",
    "wolf": "wolves", "ox": "oxen",
}  # fmt: skip


def singular(noun: str) -> str:
    """A best guess at the singular of a lower-case English noun (the reference may name either form)."""
    for one, many in IRREGULAR.items():
        if noun == many or noun.endswith(" " + many):
            return noun[: len(noun) - len(many)] + one
    if noun.endswith("ies") and len(noun) > 4:
        return noun[:-3] + "y"
    if re.search(r"(s|x|z|ch|sh)es$", noun):
        return noun[:-2]
    if noun.endswith("s") and not noun.endswith("ss"):
        return noun[:-1]
    return noun


def noun_pattern(name: str) -> str:
    """A regex for ``name`` in singular or plural, its words separated by spaces or hyphens."""
    one = singular(" ".join(name.lower().split()))
    head, _, last = one.rpartition(" ")
    forms = {last, last + "s", last + "es", IRREGULAR.get(last, last)}
    if re.search(r"[^aeiou]y$", last):
        forms.add(last[:-1] + "ies")
    words = [re.escape(w) for w in head.split()] + ["(?:" + "|".join(map(re.escape, sorted(forms))) + ")"]
    return r"\b" + r"[\s-]+".join(words) + r"\b"


def stated_counts(text: str, names: list[str]) -> dict[str, int | None]:
    """The last number stated for each name: "<number> [up to two words] <name>" or "<name>: <number>"."""
    lowered = text.lower()
    out: dict[str, int | None] = {}
    for name in names:
        noun = noun_pattern(name)
        before = re.compile(rf"\b(?P<n>{_NUM})\s+(?:(?!(?:{_NUM})\b)[a-z-]+\s+){{0,2}}?{noun}")
        after = re.compile(rf"{noun}\s*[:=]\s*(?P<n>{_NUM})\b")
        found = [(m.start(), m["n"]) for pattern in (before, after) for m in pattern.finditer(lowered)]
        out[name] = _to_int(max(found)[1]) if found else None
    return out


def _to_int(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


def check_tally(text: str, expected: Mapping[str, int]) -> tuple[bool, str]:
    """Each expected object at exactly its count (other objects allowed); the reason lists what was read."""
    found = stated_counts(text, list(expected))
    ok = all(found[name] == n for name, n in expected.items())
    shown = ", ".join(f"{name}={'missing' if found[name] is None else found[name]}" for name in expected)
    wanted = ", ".join(f"{n} {name}" for name, n in expected.items())
    return ok, f"counts {shown}; expected {wanted}"
