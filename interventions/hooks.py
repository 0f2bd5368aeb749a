"""Read or rewrite a decoder layer's activations through the adapter contract, with plain torch hooks.

One site vocabulary for patching, probes and their CLIs: *hook points* named as TransformerLens names them,
``blocks.L.hook_KIND`` (:class:`HookPoint`). ``KIND`` is ``resid_pre`` (the residual stream entering layer ``L``;
at layer 0 the embeddings), ``attn_out`` / ``mlp_out`` (the output of the contract's ``attn`` / ``mlp``
component, what each adds to the stream) or ``resid_post`` (the stream leaving layer ``L``). The residual stream
entering layer ``L + 1`` is the one leaving ``L``: :func:`residual_stream` names it once, so patching grids and
probe layers use the same names. Hooks work in any forward pass the module runs: teacher-forced passes, and
every step of KV-cached decoding (where the tensors hold only the new tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from gapeval.models.base import Intervenable


@dataclass(frozen=True)
class Kind:
    """Where a hook point's tensor lives in one decoder layer: the input or the output of the layer itself
    (``component`` None) or of a contract component (``Intervenable.components``)."""

    component: str | None
    reads_input: bool


# Hook kinds in forward order inside one layer (patches are applied in this order).
KINDS: dict[str, Kind] = {
    "resid_pre": Kind(None, True),
    "attn_out": Kind("attn", False),
    "mlp_out": Kind("mlp", False),
    "resid_post": Kind(None, False),
}
SITES = tuple(KINDS)
Rewrite = Callable[[torch.Tensor], torch.Tensor | None]
_NAME = re.compile(r"blocks\.(\d+)\.hook_(\w+)")


class HookPoint(NamedTuple):
    """``(layer, kind)``; its :attr:`name` is the TransformerLens name, ``blocks.3.hook_resid_post``."""

    layer: int
    kind: str

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.kind}"

    def __str__(self) -> str:
        return self.name


def layers(model: Intervenable) -> torch.nn.ModuleList:
    return model.module.get_submodule(model.layers_path)


def n_layers(model: Intervenable) -> int:
    return len(layers(model))


def valid_names(model: Intervenable) -> str:
    """The hook points of ``model`` in one line, for error messages."""
    last = n_layers(model) - 1
    kinds = "|".join(f"hook_{k}" for k in KINDS)
    return f"blocks.L.{{{kinds}}} for L in 0..{last} (e.g. blocks.{last}.hook_resid_post)"


def hook_point(model: Intervenable, layer: int, kind: str) -> HookPoint:
    """A checked :class:`HookPoint`; the ValueError lists this model's valid names."""
    if kind not in KINDS or not 0 <= int(layer) < n_layers(model):
        raise ValueError(
            f"no hook point blocks.{layer}.hook_{kind} in this model; valid: {valid_names(model)}"
        )
    return HookPoint(int(layer), kind)


def parse_hook_point(model: Intervenable, name: str) -> HookPoint:
    """``"blocks.3.hook_resid_post"`` → ``HookPoint(3, "resid_post")`` (ValueError naming the valid ones)."""
    match = _NAME.fullmatch(name.strip())
    if match is None:
        raise ValueError(
            f"hook point {name!r}: expected a name like blocks.0.hook_resid_pre; valid: {valid_names(model)}"
        )
    return hook_point(model, int(match[1]), match[2])


def hook_points(model: Intervenable, kinds: Sequence[str] = tuple(KINDS)) -> list[HookPoint]:
    """Every hook point of ``kinds`` in forward order."""
    return [HookPoint(layer, k) for layer in range(n_layers(model)) for k in KINDS if k in kinds]


def residual_stream(model: Intervenable) -> list[HookPoint]:
    """The residual stream once per depth: entering every layer (the first is the embeddings), then leaving
    the last: ``n_layers + 1`` points (what the ``resid`` grid's rows and the probes' layers are)."""
    last = n_layers(model) - 1
    return [HookPoint(i, "resid_pre") for i in range(last + 1)] + [HookPoint(last, "resid_post")]


def forward_order(point: tuple[int, str]) -> tuple[int, int]:
    """Sort key of hook points in the order a forward pass reaches them."""
    return point[0], list(KINDS).index(point[1])


def site_module(model: Intervenable, layer: int, site: str) -> torch.nn.Module:
    """The module whose input or output (:data:`KINDS`) is hook point ``(layer, site)``."""
    kind = KINDS.get(site)
    if kind is None:
        raise ValueError(f"hook kind must be one of {tuple(KINDS)}, got {site!r}")
    block = layers(model)[layer]
    return block if kind.component is None else block.get_submodule(model.components[kind.component])


def first_tensor(value: Any) -> torch.Tensor:
    """A module's output tensor: itself, or the first element of a tuple (e.g. an attention block's)."""
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, tensor: torch.Tensor) -> Any:
    return (tensor, *value[1:]) if isinstance(value, tuple) else tensor


@contextmanager
def rewrite(model: Intervenable, layer: int, site: str, fn: Rewrite) -> Iterator[None]:
    """Inside the block, ``fn(tensor)`` (B, T, d) sees hook point ``(layer, site)``'s tensor in every forward
    pass and may return a replacement (or None to leave it); on exit the hook is gone."""
    module = site_module(model, layer, site)
    if KINDS[site].reads_input:

        def pre(_m: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(_m: torch.nn.Module, _args: tuple, out: Any) -> Any:
            new = fn(first_tensor(out))
            return None if new is None else _replace_first(out, new)

        handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def rewrites(model: Intervenable, plan: dict[tuple[int, str], Rewrite]) -> Iterator[None]:
    """Several :func:`rewrite` hooks at once, keyed by hook point (or a ``(layer, kind)`` tuple)."""
    with ExitStack() as stack:
        for (layer, site), fn in plan.items():
            stack.enter_context(rewrite(model, layer, site, fn))
        yield


@contextmanager
def recording(model: Intervenable, sites: list[tuple[int, str]]) -> Iterator[dict[tuple[int, str], list]]:
    """Collect each hook point's tensor of every forward pass in the block: ``{point: [tensor, ...]}``."""
    seen: dict[tuple[int, str], list] = {key: [] for key in sites}

    def keep(key: tuple[int, str]) -> Rewrite:
        def fn(t: torch.Tensor) -> None:
            seen[key].append(t.detach())

        return fn

    with rewrites(model, {key: keep(key) for key in sites}):
        yield seen


def decoding_rewrite(
    model: Intervenable,
    direction: str | None,
    from_end: Sequence[int] | None,
    edit: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: bool = False,
) -> Rewrite:
    """A :data:`Rewrite` for ``understand``/``generate``: ``edit`` replaces the selected slice of the tensor.

    The contract's decoding layout in one place: a pass of several columns is a prompt pass over left-padded
    prompts, so prompt positions counted from the end (``from_end``: -1 = last prompt token; None = every
    column) are the same columns in every row whatever the padding; a one-column pass is a decoding step, edited
    (whole) only when ``steps``. Only the rows holding requests (``prompt_rows`` of ``direction``) are edited —
    not, e.g., Janus's unconditional copies for guidance; ``direction`` None edits every row (a teacher-forced
    pass, whose columns are counted from the end of the whole sequence).
    """

    def fn(t: torch.Tensor) -> torch.Tensor | None:
        step = t.shape[1] == 1
        if step and not steps:
            return None
        cols = slice(None) if from_end is None or step else [t.shape[1] + r for r in from_end]
        rows = slice(None) if direction is None else model.prompt_rows(t.shape[0], direction)
        t = t.clone()
        t[rows, cols] = edit(t[rows, cols])
        return t

    return fn
