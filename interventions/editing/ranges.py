"""Allowed ranges of the editing experiment's numeric settings, checked before anything is loaded.

A setting out of range (``--edits -3``, ``--editor-arg max_steps=0``) would otherwise train nothing and write a
table as if it had edited, or fail deep inside with a message that names no option. Editors declare their
ranges in a ``RANGES`` class attribute (``{field: Range}``); the command's own options are in
:data:`interventions.editing.edit_cli.OPTION_RANGES`. No torch here: the command checks before it loads one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval; ``None`` ends are unbounded."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            return False
        return self.hi is None or not (value > self.hi or (self.open_hi and value == self.hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.open_lo or self.lo is None else "["
        right = ")" if self.open_hi or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"


AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, open_lo=True)
PROBABILITY = Range(0, 1, open_lo=True, open_hi=True)


def out_of_range(values: Mapping[str, Any], ranges: Mapping[str, Range], name: str = "{}") -> str | None:
    """The first value (a number, or every number of a list) outside its range, as one line naming the option
    (``name`` formats the key into the option's spelling, e.g. ``"--editor-arg {}"``); None when all fit."""
    for key, allowed in ranges.items():
        value = values.get(key)
        numbers = value if isinstance(value, (list, tuple)) else [value]
        for number in numbers:
            if isinstance(number, (int, float)) and not isinstance(number, bool) and number not in allowed:
                return f"{name.format(key)} must be in {allowed}, got {value!r}"
    return None


def check_ranges(values: Mapping[str, Any], ranges: Mapping[str, Range], name: str = "{}") -> None:
    """Raise ValueError with :func:`out_of_range`'s line when a value is outside its range."""
    if problem := out_of_range(values, ranges, name):
        raise ValueError(problem)
