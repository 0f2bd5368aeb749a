"""How a request becomes a token sequence for the toy UMM — one layout for training, decoding and probing.

Layout: ``<bos> [<img> 16 cells </img>] prompt words <und>|<gen> answer``. A text answer ends with ``<eos>``;
an image answer is exactly 16 codes in row-major cell order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from gapeval.models.toy.codec import N_TOKENS, ImageCodec, cell_patches
from gapeval.models.toy.model import Batch
from gapeval.models.toy.tokenizer import TextTokenizer

IGNORE = -100


@dataclass
class Sequence:
    ids: list[int] = field(default_factory=list)
    cell: list[int] = field(default_factory=list)
    next_cell: list[int] = field(default_factory=list)
    patch: list[bool] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    patches: np.ndarray | None = None
    prompt_start: int = 0  # index of the first prompt word (after any image block)

    def push(self, token: int, cell: int = 0, next_cell: int = 0, patch: bool = False, target: int = IGNORE):
        self.ids.append(token)
        self.cell.append(cell)
        self.next_cell.append(next_cell)
        self.patch.append(patch)
        self.target.append(target)

    def push_many(
        self,
        tokens: list[int],
        cells: list[int],
        next_cells: list[int] | None = None,
        patch: bool = False,
        targets: list[int] | None = None,
    ):
        """:meth:`push` of several tokens at once (one call per block: building batches is per-token Python)."""
        n = len(tokens)
        self.ids.extend(tokens)
        self.cell.extend(cells)
        self.next_cell.extend([0] * n if next_cells is None else next_cells)
        self.patch.extend([patch] * n)
        self.target.extend([IGNORE] * n if targets is None else targets)

    def __len__(self) -> int:
        return len(self.ids)


IMAGE_CELLS = list(range(1, N_TOKENS + 1))  # the cell (1 + index) of each token of an image block
NEXT_CELLS = IMAGE_CELLS[1:] + [0]  # which cell each generated code is followed by (none after the last)


class SequenceBuilder:
    """Turns (prompt, image, direction[, answer]) into :class:`Sequence` and batches into :class:`Batch`."""

    def __init__(self, tokenizer: TextTokenizer, codec: ImageCodec, variant: str):
        self.tok, self.codec, self.variant = tokenizer, codec, variant
        self.n_text = len(tokenizer)

    def prompt(self, prompt: str, image: Image.Image | None, direction: str) -> Sequence:
        tok = self.tok
        seq = Sequence()
        seq.push(tok.bos_id)
        if image is not None:
            seq.push(tok.img_id)
            if self.variant == "shared":
                seq.push_many([self.n_text + code for code in self.codec.encode(image)], IMAGE_CELLS)
            else:
                seq.patches = cell_patches(image)
                seq.push_many([tok.pad_id] * N_TOKENS, IMAGE_CELLS, patch=True)
            seq.push(tok.img_end_id)
        seq.prompt_start = len(seq)
        words = tok.encode(prompt)
        seq.push_many(words, self._cells_of(words))
        seq.push(tok.und_id if direction == "und" else tok.gen_id, next_cell=1 if direction == "gen" else 0)
        return seq

    def _cells_of(self, tokens: list[int]) -> list[int]:
        """1 + the cell each word names (0: none)."""
        cells = [self.tok.cell_of(t) for t in tokens]
        return [0 if cell is None else cell + 1 for cell in cells]

    def add_text_answer(self, seq: Sequence, answer_ids: list[int]) -> Sequence:
        answer_ids = list(answer_ids)
        targets = answer_ids + [self.tok.eos_id]
        seq.target[-1] = targets[0]
        seq.push_many(answer_ids, self._cells_of(answer_ids), targets=targets[1:])
        return seq

    def add_image_answer(self, seq: Sequence, codes: list[int]) -> Sequence:
        tokens = [self.n_text + code for code in codes]
        if len(tokens) != N_TOKENS:
            raise ValueError(f"an image answer is {N_TOKENS} codes, got {len(tokens)}")
        seq.target[-1] = tokens[0]
        seq.push_many(tokens, IMAGE_CELLS, next_cells=NEXT_CELLS, targets=tokens[1:] + [IGNORE])
        return seq

    def example(self, prompt: str, image: Image.Image | None, direction: str, answer, then=None) -> Sequence:
        """A training/scoring sequence; ``answer`` is text (und) or a PIL image (gen).

        ``then`` continues it in the other modality (the consistency task): ``... <und> text <eos> <gen> 16
        codes`` or ``... <gen> 16 codes <und> text <eos>``; the second direction token is given, not predicted.
        """
        seq = self._answer(self.prompt(prompt, image, direction), direction, answer)
        if then is None:
            return seq
        second = "gen" if direction == "und" else "und"
        if direction == "und":
            seq.push(self.tok.eos_id)
        seq.push(
            self.tok.gen_id if second == "gen" else self.tok.und_id, next_cell=1 if second == "gen" else 0
        )
        return self._answer(seq, second, then)

    def example_of(self, ex) -> Sequence:
        """The sequence of a training example (:class:`gapeval.models.toy.data.Example`)."""
        return self.example(ex.prompt, ex.image, ex.direction, ex.answer, ex.then)

    def _answer(self, seq: Sequence, direction: str, answer) -> Sequence:
        if direction == "und":
            return self.add_text_answer(seq, self.tok.encode(answer))
        return self.add_image_answer(seq, self.codec.encode(answer))

    @staticmethod
    def collate(seqs: list[Sequence], device: str | torch.device = "cpu") -> tuple[Batch, torch.Tensor]:
        """Left-pad into a :class:`Batch` and a target tensor (IGNORE where no loss)."""
        width = max(len(s) for s in seqs)

        def pad(name: str, value) -> torch.Tensor:
            rows = [[value] * (width - len(s)) + getattr(s, name) for s in seqs]
            return torch.tensor(rows, device=device)

        patch_mask = pad("patch", False)
        patches = [s.patches for s in seqs if s.patches is not None]
        batch = Batch(
            ids=pad("ids", 0),
            cell=pad("cell", 0),
            next_cell=pad("next_cell", 0),
            attn=torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device),
            patch_mask=patch_mask if patches else None,
            patches=torch.from_numpy(np.concatenate(patches)).to(device) if patches else None,
        )
        return batch, pad("target", IGNORE)
