"""The fast training path (``TrainConfig.engine = "packed"``): the same loss as :func:`train.direction_losses`,
computed with less waste. A recipe change: its float sums run in another order, so its bytes differ.

Where the reference path spends a step (docs/toy-model.md, "Training speed") and what this path does instead:

- every token-wise op (layer norms, projections, MLP) runs once on the batch's real tokens packed into one
  (N, d) matrix, instead of once per padded length-sorted sub-batch: no padding (16 % of the reference's rows),
  four times fewer ops, larger matrix products;
- q, k and v come from one product with the three weights concatenated;
- attention is written out (scores with the mask added in the same product, softmax, values) on right-padded
  sub-batches, where the causal mask alone hides the padding; ``scaled_dot_product_attention`` takes its
  slower path here (the cell bias makes the mask require grad) and checks every row for being fully masked;
  its backward is written out (:class:`_GroupAttention`: autograd's products, in its operand layouts, without
  its stacking and copying of the q, k and v gradients), and rows move between packed and grouped order by a
  gather both ways (:class:`_Regroup`), never a scatter into zeros;
- each answer token's copy of its sequence's pointer memory sums its gradient back with ``index_add_``
  (:class:`_Spread`), not autograd's element-wise scatter;
- AdamW runs fused (see :func:`make_optimizer`).

It reads the model's own parameters, so checkpoints, adapters and resuming are the same for both engines.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
import torch.nn.functional as F

from gapeval.models.toy.losses import Losses, modality_sums
from gapeval.models.toy.model import Batch, ToyUMM, input_image_tokens
from gapeval.models.toy.sequence import IGNORE, Sequence, SequenceBuilder


@dataclass
class Group:
    """One attention sub-batch, right-padded: ``rows`` (B, T) index the packed tokens. Padding repeats token 0:
    the causal mask hides it from every real token (it comes after them), and its outputs are dropped."""

    rows: torch.Tensor
    cell: torch.Tensor
    next_cell: torch.Tensor


@dataclass
class Packed:
    """A batch of sequences as one row of N real tokens, plus how to regroup them for attention."""

    ids: torch.Tensor  # (N,)
    cell: torch.Tensor
    next_cell: torch.Tensor
    positions: torch.Tensor  # position of each token in its own sequence
    seq: torch.Tensor  # which sequence each token belongs to
    target: torch.Tensor
    patch_mask: torch.Tensor | None
    patches: torch.Tensor | None
    groups: list[Group]
    back: torch.Tensor  # (N,) row of each packed token in the groups' padded rows, concatenated
    rows: torch.Tensor  # the groups' padded rows, flattened and concatenated (the inverse of ``back``)
    padded: torch.Tensor  # ``rows`` with padding pointing one past the last token (a zero row in backward)

    @property
    def n_seqs(self) -> int:
        return sum(len(g.rows) for g in self.groups)


def _cat(seqs: Seq[Sequence], name: str, n: int, dtype: type = np.int64) -> torch.Tensor:
    """One field of every sequence, concatenated (``n`` tokens); numpy reads the lists faster than torch."""
    return torch.from_numpy(np.fromiter(chain.from_iterable(getattr(s, name) for s in seqs), dtype, count=n))


def pack(seqs: Seq[Sequence], groups: int) -> Packed:
    """Pack ``seqs`` (any order) and sort them by length into ``groups`` attention sub-batches."""
    lengths = np.array([len(s) for s in seqs])
    starts = np.cumsum(lengths) - lengths
    n = int(lengths.sum())
    order = sorted(range(len(seqs)), key=lambda i: lengths[i])
    size = -(-len(order) // groups)
    parts, back, offset = [], np.zeros(n, dtype=np.int64), 0
    for first in range(0, len(order), size):
        rows = np.array(order[first : first + size])
        width = int(lengths[rows].max())
        # Row r of the group holds sequence rows[r]: column j is its token starts + j, or n (padding).
        column = np.arange(width)
        real = column < lengths[rows][:, None]
        index = np.where(real, starts[rows][:, None] + column, n)
        back[index[real]] = offset + np.flatnonzero(real)
        offset += index.size
        parts.append(torch.from_numpy(index))
    cell, next_cell = _cat(seqs, "cell", n), _cat(seqs, "next_cell", n)
    pad = torch.zeros(1, dtype=torch.long)
    patches = [s.patches for s in seqs if s.patches is not None]
    sub_batches = [
        Group(r.where(r < n, 0), torch.cat([cell, pad])[r], torch.cat([next_cell, pad])[r]) for r in parts
    ]
    return Packed(
        ids=_cat(seqs, "ids", n),
        cell=cell,
        next_cell=next_cell,
        positions=torch.from_numpy(np.arange(n) - np.repeat(starts, lengths)),
        seq=torch.from_numpy(np.repeat(np.arange(len(seqs)), lengths)),
        target=_cat(seqs, "target", n),
        patch_mask=_cat(seqs, "patch", n, bool) if patches else None,
        patches=torch.from_numpy(np.concatenate(patches)) if patches else None,
        groups=sub_batches,
        back=torch.from_numpy(back),
        rows=torch.cat([g.rows.view(-1) for g in sub_batches]),
        padded=torch.cat([r.view(-1) for r in parts]),
    )


class _Regroup(torch.autograd.Function):
    """``x.index_select(0, index)`` where ``index`` reorders rows, each row of ``x`` taken once (padding aside),
    so the gradient is a gather by the inverse order (``inverse``: where each row of ``x`` went; one past the
    end: nowhere, gradient zero) instead of a scatter-add into a zero-filled buffer. The gradient reaching
    padding rows must be zero, which the causal mask and the dropped padded outputs guarantee."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.rows = len(index)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        if int(inverse.max()) == ctx.rows:  # some rows of x went nowhere: they read a zero row
            grad = torch.cat([grad, grad.new_zeros(1, grad.shape[1])])
        return grad.index_select(0, inverse), None, None


class _Spread(torch.autograd.Function):
    """``x.index_select(0, index)`` where many rows read one row of ``x`` (each token its sequence's pointer
    memory): the gradient sums them with ``index_add_``, one vectorised row at a time, where autograd's
    scatter-add walks an index as large as the gradient (4x slower here; the same sums in the same order)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = len(x)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        # The gradient arrives transposed (the pointer scores' einsum): summed in its own memory order, rows
        # add as whole vectors (4x faster here than through a strided view); each element's sum is the same.
        order = [0, *sorted(range(1, grad.dim()), key=lambda dim: -grad.stride(dim))]
        laid = grad.permute(order).contiguous()
        total = laid.new_zeros(ctx.rows, *laid.shape[1:]).index_add_(0, index, laid)
        back = sorted(range(len(order)), key=order.__getitem__)  # the inverse permutation
        return total.permute(back).contiguous(), None


def _masks(model: ToyUMM, group: Group) -> list[torch.Tensor]:
    """Per layer, the additive mask (B*H, T, T): causal (hiding the right padding too), plus the cell bias."""
    c = model.config
    b, t = group.rows.shape
    causal = torch.zeros(t, t).masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    if not c.cell_bias:
        return [causal.expand(b * c.n_heads, t, t)] * c.n_layers
    about = torch.where(group.next_cell > 0, group.next_cell, group.cell)
    # Made float once: a bool factor would be converted again in every layer's product and its backward.
    same = ((about[:, :, None] == group.cell[:, None, :]) & (about[:, :, None] > 0))[:, None].float()
    # Layer by layer: one (L, B, H, T, T) tensor split per layer would cost a stacking copy in backward.
    bias = model.cell_attn_bias[:, :, None, None]
    return [torch.addcmul(causal, same, bias[i]).reshape(b * c.n_heads, t, t) for i in range(c.n_layers)]


class _GroupAttention(torch.autograd.Function):
    """Causal self-attention of right-padded sub-batches, their rows stacked: ``rows`` (R, 3d) → (R, d).

    The forward is what autograd would record for ``baddbmm`` (scores with the mask), ``softmax`` and ``bmm``;
    the backward runs the same products autograd's formulas run, in the same operand layouts, so the gradients
    are the same bytes. What it leaves out is autograd's bookkeeping between them: each sub-batch's q, k and v
    gradients go straight into their columns of one (R, 3d) buffer, where autograd would stack them, copy the
    stack into row order and concatenate the sub-batches (three full passes over the gradient per layer).
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, heads: int, shapes: list[tuple[int, int]], *masks: torch.Tensor):
        d = rows.shape[1] // 3
        dh = d // heads
        outs, saved = [], []
        for (b, t), part, mask in zip(shapes, rows.split([b * t for b, t in shapes]), masks, strict=True):
            q, k, v = part.view(b, t, 3, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
            q, k, v = (x.reshape(b * heads, t, dh) for x in (q, k, v))
            p = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=dh**-0.5).softmax(-1)
            outs.append(torch.bmm(p, v).view(b, heads, t, dh).transpose(1, 2).reshape(b * t, d))
            saved += [q, k, v, p]
        ctx.save_for_backward(*saved)
        ctx.heads, ctx.shapes = heads, shapes
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        heads, saved = ctx.heads, ctx.saved_tensors
        dh = grad.shape[1] // heads
        scale = dh**-0.5  # the forward's alpha
        grad_rows = grad.new_empty(grad.shape[0], 3 * grad.shape[1])
        grad_masks, start = [], 0
        for i, (b, t) in enumerate(ctx.shapes):
            q, k, v, p = saved[4 * i : 4 * i + 4]
            dout = grad[start : start + b * t].view(b, t, heads, dh).transpose(1, 2).reshape(b * heads, t, dh)
            dp = dout.bmm(v.transpose(1, 2))  # autograd's bmm(p, v) backward
            dv = p.transpose(1, 2).bmm(dout)
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
            into = grad_rows[start : start + b * t].view(b, t, 3, heads, dh).permute(2, 0, 3, 1, 4)
            # autograd's baddbmm(mask, q, k^T) backward (the mask's gradient is ds), its scaling written
            # straight into the q and k columns
            torch.mul(ds.bmm(k).unflatten(0, (b, heads)), scale, out=into[0])
            torch.mul(q.transpose(1, 2).bmm(ds).unflatten(0, (b, heads)).transpose(2, 3), scale, out=into[1])
            into[2].copy_(dv.unflatten(0, (b, heads)))
            grad_masks.append(ds if ctx.needs_input_grad[3 + i] else None)
            start += b * t
        return grad_rows, None, None, *grad_masks


def _attention(qkv: torch.Tensor, packed: Packed, masks: list[torch.Tensor], heads: int) -> torch.Tensor:
    """Causal self-attention of every sequence; ``qkv`` (N, 3d) packed, result (N, d) packed."""
    rows = _Regroup.apply(qkv, packed.rows, packed.back)  # one gather for every sub-batch
    shapes = [tuple(g.rows.shape) for g in packed.groups]
    return _Regroup.apply(_GroupAttention.apply(rows, heads, shapes, *masks), packed.back, packed.padded)


def hidden_states(model: ToyUMM, packed: Packed, keep: torch.Tensor) -> torch.Tensor:
    """Final hidden states of the packed tokens where ``keep`` (N,) is set: what ``model(batch)`` gives there.

    The last layer's attention output, MLP and norm run only on the kept rows (the answer positions and the
    pointer's image cells: about half of the tokens); every token is still a key and value.
    """
    c = model.config
    batch = Batch(
        ids=packed.ids[None],
        cell=packed.cell[None],
        next_cell=packed.next_cell[None],
        attn=torch.ones_like(packed.ids)[None],
        patch_mask=None if packed.patch_mask is None else packed.patch_mask[None],
        patches=packed.patches,
    )
    x = model.embed(batch, packed.positions[None])[0]
    per_group = [_masks(model, g) for g in packed.groups]
    for i, layer in enumerate(model.layers):
        attn = layer.self_attn
        w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        mixed = _attention(
            F.linear(layer.input_layernorm(x), w), packed, [m[i] for m in per_group], c.n_heads
        )
        if i == c.n_layers - 1:
            rows = keep.nonzero()[:, 0]
            x, mixed = x.index_select(0, rows), mixed.index_select(0, rows)
        x = x + attn.o_proj(mixed)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.norm(x)


def packed_losses(model: ToyUMM, builder: SequenceBuilder, seqs: list[Sequence], groups: int = 4) -> Losses:
    """The answer tokens' cross-entropy, as :func:`train.reference_losses` computes it (up to float order)."""
    c = model.config
    packed = pack(seqs, groups)
    valid = packed.target != IGNORE
    cells = input_image_tokens(
        packed.ids, packed.cell, packed.next_cell, packed.positions, packed.patch_mask, c.n_text
    )
    pick = cells if c.cell_pointer else torch.zeros_like(valid)
    keep = valid | pick
    h = hidden_states(model, packed, keep)
    slot = keep.long().cumsum(0) - 1  # row of each kept token in h
    memory = None
    if c.cell_pointer:
        # Pointer keys per sequence (S, n_cells, d), as ToyUMM.cell_memory computes them per batch row.
        keys = h.new_zeros(packed.n_seqs, c.n_cells + 1, h.shape[-1])
        keys = keys.index_put(
            (packed.seq[pick], packed.cell[pick]), h.index_select(0, slot[pick]), accumulate=True
        )
        memory = _Spread.apply(model.pointer_proj(keys[:, 1:]), packed.seq[valid])
    target = packed.target[valid]
    per_token = F.cross_entropy(
        model.joint_logits(h.index_select(0, slot[valid]), memory), target, reduction="none"
    )
    return Losses(per_token.sum(), len(per_token), modality_sums(per_token, target, c.n_text))


def make_optimizer(groups: list[dict], lr: float, fused: bool) -> torch.optim.Optimizer:
    """AdamW as the recipe sets it; ``fused`` runs one kernel over all parameters (5x faster on CPU)."""
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), fused=fused or None)
