"""Word-level tokenizer for the synth world's language (lower-cased words and punctuation).

Two kinds of word name a grid cell, and share that cell's embedding in the model: cell words ``r0c0``..``r3c3``
and the option letters ``A``..``D`` (capitalised, so they stay apart from the article "a"), which the world
defines as the bottom row from left to right.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from gapeval.synth.world import GRID, LETTERS

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>", "<img>", "</img>", "<und>", "<gen>")
_WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
CELL_WORD = re.compile(r"^r(\d)c(\d)$")
OPTION_CELLS = {letter: (GRID - 1) * GRID + i for i, letter in enumerate(LETTERS)}


def words(text: str) -> list[str]:
    return [w if w in OPTION_CELLS else w.lower() for w in _WORD.findall(text)]


def _cell(word: str) -> int | None:
    if m := CELL_WORD.match(word):
        return int(m.group(1)) * GRID + int(m.group(2))
    return OPTION_CELLS.get(word)


class TextTokenizer:
    def __init__(self, vocab: list[str]):
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("vocabulary must start with the special tokens " + ", ".join(SPECIALS))
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(4)
        self.img_id, self.img_end_id, self.und_id, self.gen_id = range(4, 8)
        self._cells = [_cell(w) for w in vocab]

    @classmethod
    def build(cls, texts: Iterable[str]) -> TextTokenizer:
        seen = sorted({w for t in texts for w in words(t)})
        return cls(list(SPECIALS) + seen)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        out = ""
        for i in ids:
            w = self.vocab[i]
            if w in SPECIALS:
                continue
            out += w if (not out or not w[0].isalnum()) else " " + w
        return out

    def cell_of(self, token_id: int) -> int | None:
        """Grid index of a cell word such as ``r1c2`` or ``C`` (its embedding is shared with that image cell)."""
        return self._cells[token_id]

    def cell_ids(self) -> list[int]:
        """Per token: 1 + the cell it names, 0 for other words (the model's cell-embedding index)."""
        return [0 if c is None else c + 1 for c in self._cells]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"vocab": self.vocab}, indent=0))

    @classmethod
    def load(cls, path: Path) -> TextTokenizer:
        return cls(json.loads(Path(path).read_text())["vocab"])
