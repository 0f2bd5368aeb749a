"""Word-level tokenizer for the synth world's language (lower-cased words and punctuation)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>", "<img>", "</img>", "<und>", "<gen>")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
CELL_WORD = re.compile(r"^r(\d)c(\d)$")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class TextTokenizer:
    def __init__(self, vocab: list[str]):
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("vocabulary must start with the special tokens " + ", ".join(SPECIALS))
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(4)
        self.img_id, self.img_end_id, self.und_id, self.gen_id = range(4, 8)
        self._cells = [
            int(m.group(1)) * 4 + int(m.group(2)) if (m := CELL_WORD.match(w)) else None for w in vocab
        ]

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
        """Grid index of a cell word such as ``r1c2`` (its embedding is shared with that image cell)."""
        return self._cells[token_id]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"vocab": self.vocab}, indent=0))

    @classmethod
    def load(cls, path: Path) -> TextTokenizer:
        return cls(json.loads(Path(path).read_text())["vocab"])
