"""The non-unified pair: two separate toy models of one size, one for each direction, as one module.

The disjoint extreme of the study's question and the paper's single-direction baselines: the ``und`` member
(a ``shared``-variant toy) learns only the word targets of the training mixture and answers in text, the
``gen`` member only the image-code targets and draws. Nothing is shared, so nothing learned by one can reach
the other.

It is served through the same adapter and intervention contract as the toy (:class:`ToyAdapter`): a pass runs
one member, chosen by its direction (``module(batch, direction=...)``), and the contract's paths are
:class:`Switch` modules that run the member of the current pass. ``layers.i``, ``layers.i.self_attn``,
``layers.i.mlp``, ``layers.i.mlp.down_proj``, ``norm`` and ``embed_tokens`` are switches, so a hook or a
trace on them sees whichever member runs; the weights stay each member's own (LoRA targets are the members'
Linear modules, e.g. ``layers.0.self_attn.und.q_proj``), so an edit trained through one direction changes only
that member."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from gapeval.models.toy.losses import Losses
from gapeval.models.toy.model import Batch, ToyConfig, ToyUMM
from gapeval.models.toy.sequence import IGNORE, Sequence, SequenceBuilder

MEMBER_VARIANT = "shared"
DIRECTIONS = ("und", "gen")


class Switch(nn.Module):
    """The same place in both members: calls the member of the current pass. The attributes named in
    ``through`` read through to that member (so code written for one toy model, e.g. the packed training
    path, runs on a switch); no other name does, so tools that probe attributes (peft) see only the switch."""

    def __init__(self, und: nn.Module, gen: nn.Module, state: dict[str, str], through: tuple[str, ...] = ()):
        nn.Module.__init__(self)
        self.und, self.gen = und, gen
        object.__setattr__(self, "state", state)  # shared by every switch of the pair, not a submodule
        object.__setattr__(self, "through", through)

    @property
    def active(self) -> nn.Module:
        return self._modules[self.state["active"]]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.active(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in self.__dict__.get("through", ()):
                return getattr(self._modules[self.state["active"]], name)
            raise


class LinearSwitch(Switch, nn.Linear):
    """A switch between two Linear modules that is itself a Linear (the contract's ``mlp_out`` is one): its
    ``weight`` is the current member's, so a weight edit after a pass writes that member."""

    def __init__(self, und: nn.Linear, gen: nn.Linear, state: dict[str, str]):
        super().__init__(und, gen, state, ("weight", "bias", "in_features", "out_features"))


def _share(und: nn.Module, gen: nn.Module, name: str, switch: Switch | list[Switch]) -> None:
    """Route both members' child ``name`` through ``switch`` (which owns the two children from now on)."""
    for member in (und, gen):
        del member._modules[name]
        object.__setattr__(member, name, switch)


# What code written for one toy model reads through each switch (see Switch).
THROUGH = {
    "layer": ("input_layernorm", "post_attention_layernorm", "layer_index"),
    "self_attn": ("q_proj", "k_proj", "v_proj", "o_proj", "n_heads"),
    "mlp": ("up_proj",),
    "norm": ("weight", "bias", "normalized_shape", "eps"),
    "embed_tokens": ("weight", "num_embeddings", "embedding_dim", "padding_idx"),
}


def _layer_switch(und: nn.Module, gen: nn.Module, state: dict[str, str]) -> Switch:
    layer = Switch(und, gen, state, THROUGH["layer"])
    down = LinearSwitch(und.mlp.down_proj, gen.mlp.down_proj, state)
    _share(und.mlp, gen.mlp, "down_proj", down)
    for name in ("self_attn", "mlp"):
        switch = Switch(getattr(und, name), getattr(gen, name), state, THROUGH[name])
        if name == "mlp":
            switch._modules["down_proj"] = down  # add_module refuses: the switch reads names through
        _share(und, gen, name, switch)
        layer._modules[name] = switch
    return layer


class DirectionView:
    """One direction of the pair as decoding code sees a toy model: calls run that member's pass, and its
    heads (``text_logits``, ``image_logits``, ``cell_memory``) read that member's weights."""

    def __init__(self, pair: PairUMM, direction: str):
        self.pair, self.direction = pair, direction

    def __call__(self, batch: Batch, cache: dict | None = None) -> torch.Tensor:
        return self.pair(batch, cache, direction=self.direction)

    def __getattr__(self, name: str) -> Any:
        self.pair.state["active"] = self.direction  # the tied head reads the embedding through its switch
        return getattr(self.pair.member(self.direction), name)


class PairUMM(nn.Module):
    """Two ``shared``-variant toy models of ``config``'s size: ``und`` answers in text, ``gen`` draws."""

    input_variant = MEMBER_VARIANT

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        member = replace(config, variant=MEMBER_VARIANT)
        self.und, self.gen = ToyUMM(member), ToyUMM(member)
        state = {"active": "und"}
        object.__setattr__(self, "state", state)
        layers = [_layer_switch(u, g, state) for u, g in zip(self.und.layers, self.gen.layers, strict=True)]
        norm = Switch(self.und.norm, self.gen.norm, state, THROUGH["norm"])
        embed = Switch(self.und.embed_tokens, self.gen.embed_tokens, state, THROUGH["embed_tokens"])
        _share(self.und, self.gen, "layers", layers)
        _share(self.und, self.gen, "norm", norm)
        _share(self.und, self.gen, "embed_tokens", embed)
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.embed_tokens = embed  # the contract's embed_path: each member's own word embeddings

    def member(self, direction: str) -> ToyUMM:
        return self.und if direction == "und" else self.gen

    def forward(self, batch: Batch, cache: dict | None = None, direction: str = "und") -> torch.Tensor:
        """Final hidden states of the ``direction`` member (what its heads read)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.state["active"] = direction
        return self.member(direction)(batch, cache)

    def view(self, direction: str) -> DirectionView:
        return DirectionView(self, direction)

    @staticmethod
    def pass_kwargs(direction: str) -> dict[str, Any]:
        return {"direction": direction}

    def set_text_cells(self, cells: list[int]) -> None:
        for direction in DIRECTIONS:
            self.member(direction).set_text_cells(cells)

    def lora_targets(self) -> list[str]:
        """Every member's Linear modules in the decoder layers (each trains only through its direction)."""
        names = [f"self_attn.{d}.{p}_proj" for d in DIRECTIONS for p in "qkvo"]
        names += [f"mlp.{d}.up_proj" for d in DIRECTIONS] + [f"mlp.down_proj.{d}" for d in DIRECTIONS]
        return [f"layers.{i}.{name}" for i in range(len(self.layers)) for name in names]

    def training_losses(
        self, losses: Callable[..., Losses], builder: SequenceBuilder, seqs: list[Sequence], groups: int
    ) -> Losses:
        """Each member's loss on its half of the mixture: ``und`` on word targets, ``gen`` on image codes (a
        consistency sequence gives each member its own part, the other part as context only)."""
        total = None
        for direction in DIRECTIONS:
            own = [s for s in (own_targets(seq, direction, builder.n_text) for seq in seqs) if s is not None]
            if own:
                self.state["active"] = direction
                part = losses(self.member(direction), builder, own, groups)
                total = part if total is None else total + part
        return total


def own_targets(seq: Sequence, direction: str, n_text: int) -> Sequence | None:
    """``seq`` with only ``direction``'s targets (words for und, image codes for gen); None if it has none."""
    keep = [t if t != IGNORE and (t < n_text) == (direction == "und") else IGNORE for t in seq.target]
    if all(t == IGNORE for t in keep):
        return None
    return replace(seq, target=keep)
