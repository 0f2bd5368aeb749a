"""A tiny unified multimodal model written with plain torch: the stand-in for a research repository's code.

It knows nothing of GapEval. Like BAGEL, OmniGen2 or Show-o it is not a ``transformers`` model: its own
config, its own byte tokenizer, its own image codec and its own decoder with a KV cache. The adapter next to it
(``tiny_umm_adapter.py``) is all it takes to run the benchmark, editing, patching and probing on it.

One sequence holds text bytes and image codes. A 4 × 4 grid of cells, each one of 27 colours, is an image's 16
codes; understanding reads an input image's codes before the prompt, generation writes 16 codes after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

BYTES = 256
BOS, EOS, UND, GEN, IMG = range(
    BYTES, BYTES + 5
)  # start, end of answer, answer in text / image, image follows
TEXT_VOCAB = BYTES + 5


@dataclass(frozen=True)
class TinyConfig:
    """Everything that shapes the model; with ``seed`` it determines the weights."""

    layers: int = 2
    width: int = 32
    heads: int = 4
    mlp: int = 64
    grid: int = 4  # an image is grid × grid codes
    levels: int = 3  # per colour channel: levels³ codes
    cell_pixels: int = 10  # a generated image is grid · cell_pixels pixels square
    max_positions: int = 1024
    seed: int = 0

    @property
    def codes(self) -> int:
        return self.levels**3

    @property
    def vocab(self) -> int:
        return TEXT_VOCAB + self.codes


def encode_text(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode_text(ids: list[int]) -> str:
    return bytes(i for i in ids if i < BYTES).decode("utf-8", errors="replace")


class Codec:
    """Images ↔ codes: each grid cell's mean colour, rounded to ``levels`` values per channel."""

    def __init__(self, config: TinyConfig) -> None:
        self.grid, self.levels, self.cell = config.grid, config.levels, config.cell_pixels

    def encode(self, image: Image.Image) -> list[int]:
        cells = np.asarray(image.convert("RGB").resize((self.grid, self.grid), Image.Resampling.BOX), float)
        rgb = np.rint(cells / 255 * (self.levels - 1)).astype(int).reshape(-1, 3)
        return [int(r * self.levels**2 + g * self.levels + b) for r, g, b in rgb]

    def decode(self, codes: list[int]) -> Image.Image:
        levels = np.array(
            [[c // self.levels**2, c // self.levels % self.levels, c % self.levels] for c in codes]
        )
        cells = (levels * 255 // (self.levels - 1)).astype(np.uint8).reshape(self.grid, self.grid, 3)
        size = self.grid * self.cell
        return Image.fromarray(cells, mode="RGB").resize((size, size), Image.Resampling.NEAREST)


KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer, keys and values of the columns seen so far


class Attention(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(config.width, config.width) for _ in range(4)
        )

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, cache: KVCache | None, index: int
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            proj(x).view(b, t, self.heads, -1).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if cache is not None:
            if index < len(cache):
                k, v = torch.cat([cache[index][0], k], 2), torch.cat([cache[index][1], v], 2)
                cache[index] = (k, v)
            else:
                cache.append((k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        # A masked score is the dtype's minimum, not -inf: a padding row with nothing to attend to stays finite.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, -1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.width, config.mlp)
        self.down_proj = nn.Linear(config.mlp, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.gelu(self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm decoder layer; its output is the residual stream after it."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.attn_norm, self.mlp_norm = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.self_attn, self.mlp = Attention(config), MLP(config)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, cache: KVCache | None = None, index: int = 0
    ) -> torch.Tensor:
        x = x + self.self_attn(self.attn_norm(x), allowed, cache, index)
        return x + self.mlp(self.mlp_norm(x))


class TinyDecoder(nn.Module):
    """Embeddings for text and image codes, decoder layers, a final norm, and one head per modality."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)
        self.positions = nn.Embedding(config.max_positions, config.width)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.text_head = nn.Linear(config.width, TEXT_VOCAB)
        self.image_head = nn.Linear(config.width, config.codes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (B, T, d) of the new columns ``ids`` (B, T).

        ``mask`` (B, S) marks real columns among all ``S`` seen so far (the cache's and the new ones); rows are
        left-padded, and positions count real columns only, so a row reads the same padded or alone.
        """
        t, s = ids.shape[1], mask.shape[1]
        if s > self.config.max_positions:
            raise ValueError(f"sequence of {s} columns; this model holds {self.config.max_positions}")
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, s - t :]
        causal = torch.ones(t, s, dtype=torch.bool, device=ids.device).tril(s - t)
        allowed = (causal[None] & mask.bool()[:, None, :])[:, None]  # (B, 1, T, S)
        x = self.embed(ids) + self.positions(positions)
        for index, layer in enumerate(self.layers):
            x = layer(x, allowed, cache, index)
        return self.norm(x)


def random_model(config: TinyConfig) -> TinyDecoder:
    """Weights drawn from ``config.seed``, without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TinyDecoder(config)
