"""The built-in UMM: a small decoder-only transformer over text words and image cells.

Two variants share everything but how images enter and leave:

- ``shared`` (Chameleon-like early fusion): input and output images are VQ codes in the same embedding table
  and the same (tied) output head as words.
- ``decoupled`` (Janus-like): understanding sees images through a continuous patch encoder; generation emits
  VQ codes from a separate head and reads its own codes back through a separate embedding table.

Image cells and the cell words ``r0c0``..``r3c3`` share one cell-embedding table, which ties "where" in text to
"where" in pixels; generation positions also get a "next cell" embedding saying which cell comes next. With
``cell_bias``, attention also gets a learned per-head bonus between a position and the image token of the cell
it is about (see :class:`ToyConfig`).
Position and all other tables start small (std 0.02): large position tables swamp image-code identity.
Each decoder layer returns a plain tensor (what nnsight and the intervention code expect); the KV cache is
held outside the layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("shared", "decoupled", "pair")  # pair: two shared-variant models, one per direction (pair.py)


@dataclass
class ToyConfig:
    variant: str = "shared"
    n_text: int = 256
    n_codes: int = 64
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_len: int = 128
    patch_dim: int = 300
    n_cells: int = 16
    # A learned per-head bonus for attending from a position to image tokens of the cell it is about (its own
    # cell, or the cell it is about to draw). Off in configs that predate it.
    cell_bias: bool = False
    # Words that name a cell also carry its cell embedding in the output head (so a location read off an image
    # token can be said as a cell word or option letter). Needs :meth:`ToyUMM.set_text_cells`.
    cell_output: bool = False
    # Cell words can also be said by pointing: their logits get a bilinear score between the current position
    # and each input-image cell (see :meth:`ToyUMM.cell_memory`). Needs :meth:`ToyUMM.set_text_cells`.
    cell_pointer: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")

    def to_dict(self) -> dict:
        return asdict(self)


CELL_BIAS_INIT = 3.0


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: dict | None, layer: int) -> torch.Tensor:
        b, t, d = x.shape
        shape = (b, t, self.n_heads, d // self.n_heads)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if cache is not None:
            if layer in cache:
                k = torch.cat([cache[layer][0], k], dim=2)
                v = torch.cat([cache[layer][1], v], dim=2)
            cache[layer] = (k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.up_proj = nn.Linear(d, 4 * d)
        self.down_proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(d)
        self.self_attn = Attention(d, n_heads)
        self.post_attention_layernorm = nn.LayerNorm(d)
        self.mlp = MLP(d)
        self.layer_index = 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), mask, cache, self.layer_index)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class Batch:
    """Model inputs. ``ids`` index the joint vocabulary (text ids, then ``n_text + code`` for image codes).

    ``cell``/``next_cell`` hold 1 + cell index (0 = none); ``patch_mask`` marks positions fed by ``patches``
    (decoupled variant's continuous image input); ``attn`` is 1 for real tokens, 0 for padding.
    """

    ids: torch.Tensor
    cell: torch.Tensor
    next_cell: torch.Tensor
    attn: torch.Tensor
    patch_mask: torch.Tensor | None = None
    patches: torch.Tensor | None = None


def input_image_tokens(
    ids: torch.Tensor,
    cell: torch.Tensor,
    next_cell: torch.Tensor,
    positions: torch.Tensor,
    patch_mask: torch.Tensor | None,
    n_text: int,
) -> torch.Tensor:
    """Which tokens are input-image cells: image tokens right after ``<bos> <img>``, in cell order, that do not
    say which cell comes next (generated codes do)."""
    is_image = ids >= n_text
    if patch_mask is not None:
        is_image = is_image | patch_mask
    return is_image & (cell > 0) & (cell == positions - 1) & (next_cell == 0)


class ToyUMM(nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = c = config
        n_embed = c.n_text + (c.n_codes if c.variant == "shared" else 0)
        self.embed_tokens = nn.Embedding(n_embed, c.d_model)
        self.embed_positions = nn.Embedding(c.max_len, c.d_model)
        self.embed_cells = nn.Embedding(c.n_cells + 1, c.d_model, padding_idx=0)
        self.embed_next_cell = nn.Embedding(c.n_cells + 1, c.d_model, padding_idx=0)
        if c.variant == "decoupled":
            self.und_encoder = nn.Sequential(
                nn.Linear(c.patch_dim, c.d_model), nn.GELU(), nn.Linear(c.d_model, c.d_model)
            )
            self.gen_embed = nn.Embedding(c.n_codes, c.d_model)
            self.gen_head = nn.Linear(c.d_model, c.n_codes, bias=False)
        self.layers = nn.ModuleList(DecoderLayer(c.d_model, c.n_heads) for _ in range(c.n_layers))
        for i, layer in enumerate(self.layers):
            layer.layer_index = i
        self.norm = nn.LayerNorm(c.d_model)
        self.register_buffer("text_cells", torch.zeros(c.n_text, dtype=torch.long), persistent=False)
        if c.cell_pointer:
            self.pointer_proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.apply(self._init)
        if c.cell_pointer:
            # Zero start: the score is then linear in one matrix, so choosing a cell by its content trains
            # without first having to grow a matching query and key from two small random projections.
            nn.init.zeros_(self.pointer_proj.weight)
        if c.cell_bias:
            # Head 0 of every layer starts out looking at its cell: a learned lookup from a cell word to that
            # cell's image token otherwise sits on a long plateau (the two hops must be learned together).
            self.cell_attn_bias = nn.Parameter(torch.zeros(c.n_layers, c.n_heads))
            with torch.no_grad():
                self.cell_attn_bias[:, 0] = CELL_BIAS_INIT

    # --- what the adapter and the trainer ask every toy architecture (see pair.PairUMM) -------------------------

    @property
    def input_variant(self) -> str:
        """How images enter sequences (:class:`SequenceBuilder`'s variant)."""
        return self.config.variant

    def view(self, direction: str) -> ToyUMM:
        """The model that answers in ``direction``: this one, both ways."""
        return self

    @staticmethod
    def pass_kwargs(direction: str) -> dict:
        """Keyword arguments of a forward pass in ``direction`` (none: both directions run the same model)."""
        return {}

    def lora_targets(self) -> list[str]:
        names = [f"self_attn.{p}_proj" for p in "qkvo"] + ["mlp.up_proj", "mlp.down_proj"]
        return [f"layers.{i}.{name}" for i in range(len(self.layers)) for name in names]

    def training_losses(self, losses, builder, seqs: list, groups: int):
        """The batch's loss as ``losses`` (a training engine) computes it for this model."""
        return losses(self, builder, seqs, groups)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    def embed(self, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        c = self.config
        ids = batch.ids
        if c.variant == "shared":
            x = self.embed_tokens(ids)
        else:
            is_code = ids >= c.n_text
            x = self.embed_tokens(ids.clamp(max=c.n_text - 1))
            if is_code.any():
                x = torch.where(is_code[..., None], self.gen_embed((ids - c.n_text).clamp(min=0)), x)
            if batch.patch_mask is not None and batch.patch_mask.any():
                x = x.masked_scatter(batch.patch_mask[..., None], self.und_encoder(batch.patches))
        x = x + self.embed_cells(batch.cell) + self.embed_next_cell(batch.next_cell)
        return x + self.embed_positions(positions)

    def forward(self, batch: Batch, cache: dict | None = None) -> torch.Tensor:
        """Final hidden states (B, T, d). With ``cache`` the batch continues the cached prefix."""
        attn = batch.attn if not cache else torch.cat([cache["attn"], batch.attn], dim=1)
        positions = (attn.cumsum(1) - 1).clamp(min=0)[:, -batch.ids.shape[1] :]
        t, s = batch.ids.shape[1], attn.shape[1]
        if t == 1:  # one decoding step: the new token sees every real token, itself included
            allowed = attn[:, None, None, :].bool()
        else:
            causal = torch.ones(t, s, dtype=torch.bool, device=attn.device).tril(s - t)
            # A fully padded query row would make softmax NaN; let it see itself (its output is never used).
            own = torch.zeros(t, s, dtype=torch.bool, device=attn.device)
            own[torch.arange(t), torch.arange(s - t, s)] = True
            allowed = ((causal[None] & attn[:, None, :].bool()) | own[None])[:, None]
        masks = self._layer_masks(batch, allowed, cache)
        x = self.embed(batch, positions)
        for layer, mask in zip(self.layers, masks, strict=True):
            x = layer(x, mask, cache)
        h = self.norm(x)
        if cache is not None:
            cache["attn"] = attn
            if self.config.cell_pointer and "memory" not in cache:
                cache["memory"] = self.cell_memory(batch, h)
        return h

    def cell_memory(self, batch: Batch, h: torch.Tensor) -> torch.Tensor | None:
        """Pointer keys of each sequence's input-image cells, (B, n_cells, d); zeros where there is no image.

        ``h`` are the final hidden states of the whole (uncached) ``batch``. Input-image tokens are the image
        tokens right after ``<bos> <img>``, in cell order (the layout of :mod:`sequence`); generated codes come
        after the prompt and say which cell is next, and are not pointed at. In decoding, :meth:`forward` keeps
        the prefill's memory in the cache under ``"memory"``.
        """
        c = self.config
        if not c.cell_pointer:
            return None
        positions = batch.attn.cumsum(1) - 1
        pick = input_image_tokens(
            batch.ids, batch.cell, batch.next_cell, positions, batch.patch_mask, c.n_text
        )
        slot = torch.where(pick, batch.cell, 0)[..., None].expand_as(h)
        memory = torch.zeros(h.shape[0], c.n_cells + 1, h.shape[-1], dtype=h.dtype, device=h.device)
        memory = memory.scatter_add(1, slot, h * pick[..., None])[:, 1:]
        return self.pointer_proj(memory)

    def _layer_masks(self, batch: Batch, allowed: torch.Tensor, cache: dict | None) -> Sequence[torch.Tensor]:
        """One attention mask per layer: boolean, or additive with the cell bias when the config has it."""
        if not self.config.cell_bias:
            return [allowed] * len(self.layers)
        keys = batch.cell if not cache else torch.cat([cache["cell"], batch.cell], dim=1)
        if cache is not None:
            cache["cell"] = keys
        about = torch.where(batch.next_cell > 0, batch.next_cell, batch.cell)
        same = ((about[:, :, None] == keys[:, None, :]) & (about[:, :, None] > 0))[:, None]
        base = torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, float("-inf"))
        # All layers in one broadcast: (L, B, H, T, S).
        return (base + same * self.cell_attn_bias[:, None, :, None, None]).unbind(0)

    @staticmethod
    def join_caches(caches: list[dict]) -> dict:
        """One KV cache holding the rows of several, each left-padded to the longest (as collate pads).

        So a batch can prefill in length-sorted sub-batches (less padding to compute) and decode as one.
        Padded slots have attention mask 0 and no cell, so later steps ignore them.
        """
        width = max(c["attn"].shape[1] for c in caches)

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = width - t.shape[dim]
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        joined = {}
        for key in caches[0]:
            parts = [c[key] for c in caches]
            if isinstance(key, int):  # a layer's (keys, values), each (B, H, S, d_head)
                joined[key] = tuple(torch.cat([pad(p[i], 2) for p in parts]) for i in range(2))
            elif key == "memory":  # (B, n_cells, d): no sequence axis
                joined[key] = torch.cat(parts)
            else:  # per-position rows: "attn", "cell"
                joined[key] = torch.cat([pad(p, 1) for p in parts])
        return joined

    @staticmethod
    def select_rows(cache: dict, rows: torch.Tensor) -> dict:
        """The cache of the given batch rows (a boolean mask or indices), in that order."""
        return {k: v[rows] if torch.is_tensor(v) else tuple(x[rows] for x in v) for k, v in cache.items()}

    def set_text_cells(self, cells: list[int]) -> None:
        """Which cell each word names (1 + cell index, 0 = none): from the tokenizer, not saved with weights."""
        self.text_cells = torch.tensor(cells, dtype=torch.long, device=self.text_cells.device)

    def _text_out(self) -> torch.Tensor:
        out = self.embed_tokens.weight[: self.config.n_text]
        return out + self.embed_cells(self.text_cells) if self.config.cell_output else out

    def text_logits(self, h: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over words for hidden states ``h`` (B, d) or (B, T, d); ``memory`` from :meth:`cell_memory`."""
        logits = h @ self._text_out().T
        if memory is None:
            return logits
        scores = torch.einsum("b...d,bcd->b...c", h, memory)
        # Column 0 stands for "names no cell": words that are not cell words get no pointer score.
        scores = torch.cat([torch.zeros_like(scores[..., :1]), scores], dim=-1)
        return logits + scores.index_select(-1, self.text_cells) * (self.text_cells > 0)

    def image_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.variant == "shared":
            return h @ self.embed_tokens.weight[self.config.n_text :].T
        return self.gen_head(h)

    def joint_logits(self, h: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the model's whole output vocabulary (text, then codes): what training normalises over."""
        return torch.cat([self.text_logits(h, memory), self.image_logits(h)], dim=-1)
