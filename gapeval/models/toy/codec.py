"""Vector-quantised image codec for the synth world: one token per grid cell.

Plain k-means on raw cell patches clusters by *where* the jittered shape sits rather than *what* it is, so
patches are first canonicalised: the interior's foreground is shifted so its centre of mass lands on the cell
centre (the 1-px border, where answer marks live, stays put). k-means (k-means++ init, seeded) on canonical
patches then gives a pure codebook: every code decodes to one shape×colour×mark class.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

from gapeval.synth.world import CELL, GRID, all_kinds, random_scene, render, to_grid_array

N_TOKENS = GRID * GRID
CODE_MEMORY = 1 << 16  # cells whose code is remembered (see ImageCodec.encode)


def _interior_shift(patch: np.ndarray) -> np.ndarray:
    inner = patch[1:-1, 1:-1]
    fg = inner.max(axis=2) > 70
    if fg.sum() == 0:
        return patch
    ys, xs = np.nonzero(fg)
    centre = (CELL - 2 - 1) / 2
    dy, dx = int(round(centre - ys.mean())), int(round(centre - xs.mean()))
    shifted = np.zeros_like(inner)
    h = CELL - 2
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(h, h - dx)), slice(max(0, dx), min(h, h + dx))
    shifted[dst_y, dst_x] = inner[src_y, src_x]
    out = patch.copy()
    out[1:-1, 1:-1] = shifted
    return out


def _cells(image: Image.Image) -> np.ndarray:
    """(16, CELL, CELL, 3) uint8 cells of a picture, row-major."""
    arr = to_grid_array(image)
    return arr.reshape(GRID, CELL, GRID, CELL, 3).transpose(0, 2, 1, 3, 4).reshape(N_TOKENS, CELL, CELL, 3)


def _canonical(cells: np.ndarray) -> np.ndarray:
    """:func:`_interior_shift` of every cell at once (each cell's own pixels decide its shift)."""
    inner = cells[:, 1:-1, 1:-1]
    fg = inner.max(axis=3) > 70
    n = fg.sum(axis=(1, 2))
    span = np.arange(CELL - 2)
    centre = (CELL - 2 - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        dy = np.where(n > 0, np.round(centre - (fg * span[:, None]).sum(axis=(1, 2)) / n), 0).astype(int)
        dx = np.where(n > 0, np.round(centre - (fg * span[None, :]).sum(axis=(1, 2)) / n), 0).astype(int)
    src_y = span[None, :, None] - dy[:, None, None]
    src_x = span[None, None, :] - dx[:, None, None]
    inside = (src_y >= 0) & (src_y < CELL - 2) & (src_x >= 0) & (src_x < CELL - 2)
    rows = np.arange(len(cells))[:, None, None]
    shifted = inner[rows, src_y.clip(0, CELL - 3), src_x.clip(0, CELL - 3)] * inside[..., None]
    out = cells.copy()
    out[:, 1:-1, 1:-1] = shifted
    return out.reshape(len(cells), -1).astype(np.float32) / 255.0


def cell_patches(image: Image.Image) -> np.ndarray:
    """(16, CELL*CELL*3) float32 canonical patches in [0, 1], row-major cell order.

    All 16 cells at once (the same shifts and bytes as :func:`_interior_shift` per cell, 2x faster): patch
    encoding was the largest part of building a training batch.
    """
    return _canonical(_cells(image))


def _kmeans(x: np.ndarray, k: int, seed: int, iters: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if d2.sum() == 0:
            centres.append(x[rng.integers(len(x))])
            continue
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(torch.from_numpy(x), torch.from_numpy(c)).argmin(1).numpy()
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c


class ImageCodec:
    """``encode(PIL) -> 16 token ids`` and ``decode(tokens) -> PIL``, with a learned codebook."""

    def __init__(self, codebook: np.ndarray):
        self.codebook = np.asarray(codebook, np.float32)
        self._codebook_t = torch.from_numpy(self.codebook)
        # A cell's code depends on its own pixels only, and a world picture has few distinct cells (a kind,
        # its jitter, a frame): codes are remembered by the cell's bytes, which spares the canonicalisation
        # and the distances for nearly every cell of a training batch.
        self._codes: dict[bytes, int] = {}

    @property
    def size(self) -> int:
        return len(self.codebook)

    @classmethod
    def fit(cls, k: int = 64, n_images: int = 600, seed: int = 0) -> ImageCodec:
        """Fit on random world pictures: 0–8 objects, with marks, jittered as the world draws them."""
        rng = random.Random(f"codec-{seed}")
        patches = []
        for _ in range(n_images):
            scene = random_scene(rng, rng.randint(0, 8), kinds=all_kinds())
            cells = list(scene.objects) or [(0, 0)]
            scene.marks = frozenset(rng.sample(cells, rng.randint(0, min(2, len(cells)))))
            patches.append(cell_patches(render(scene, rng)))
        return cls(_kmeans(np.concatenate(patches), k, seed))

    def encode_patches(self, patches: np.ndarray) -> np.ndarray:
        return torch.cdist(torch.from_numpy(patches), self._codebook_t).argmin(-1).numpy()

    def encode(self, image: Image.Image) -> list[int]:
        cells = _cells(image)
        keys = [c.tobytes() for c in cells]
        if not all(k in self._codes for k in keys):
            if len(self._codes) > CODE_MEMORY:
                self._codes.clear()
            self._codes.update(zip(keys, self.encode_patches(_canonical(cells)).tolist(), strict=True))
        return [self._codes[k] for k in keys]

    def decode(self, tokens) -> Image.Image:
        tokens = np.asarray(tokens, np.int64)
        if tokens.shape != (N_TOKENS,) or tokens.min() < 0 or tokens.max() >= self.size:
            raise ValueError(f"expected {N_TOKENS} codes in [0, {self.size}), got {tokens.tolist()}")
        cells = (self.codebook[tokens].reshape(GRID, GRID, CELL, CELL, 3) * 255).round().clip(0, 255)
        arr = cells.astype(np.uint8).transpose(0, 2, 1, 3, 4).reshape(GRID * CELL, GRID * CELL, 3)
        return Image.fromarray(arr, "RGB")

    def save(self, path: Path) -> None:
        save_file({"codebook": self.codebook}, str(path))

    @classmethod
    def load(cls, path: Path) -> ImageCodec:
        return cls(load_file(str(path))["codebook"])
