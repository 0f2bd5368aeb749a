"""Read or rewrite a decoder layer's activations through the adapter contract, with plain torch hooks.

A *site* names where in layer ``L`` a tensor lives: ``"resid_pre"`` (the residual stream entering the layer; at
layer 0 that is the embeddings), ``"resid_post"`` (leaving it), or a component of the contract
(``"attn"``, ``"mlp"``, ``"mlp_out"``: that module's output). Hooks work in any forward pass the module runs:
teacher-forced passes, and every step of KV-cached decoding (where the tensors hold only the new tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from gapeval.models.base import Intervenable

SITES = ("resid_pre", "resid_post", "attn", "mlp", "mlp_out")
Rewrite = Callable[[torch.Tensor], torch.Tensor | None]


def layers(model: Intervenable) -> torch.nn.ModuleList:
    return model.module.get_submodule(model.layers_path)


def site_module(model: Intervenable, layer: int, site: str) -> torch.nn.Module:
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    block = layers(model)[layer]
    return block if site in ("resid_pre", "resid_post") else block.get_submodule(model.components[site])


def first_tensor(value: Any) -> torch.Tensor:
    """A module's output tensor: itself, or the first element of a tuple (e.g. an attention block's)."""
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, tensor: torch.Tensor) -> Any:
    return (tensor, *value[1:]) if isinstance(value, tuple) else tensor


@contextmanager
def rewrite(model: Intervenable, layer: int, site: str, fn: Rewrite) -> Iterator[None]:
    """Inside the block, ``fn(tensor)`` (B, T, d) sees the site's tensor in every forward pass and may return a
    replacement (or None to leave it); on exit the hook is gone."""
    module = site_module(model, layer, site)
    if site == "resid_pre":

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
    """Several :func:`rewrite` hooks at once, keyed by (layer, site)."""
    with ExitStack() as stack:
        for (layer, site), fn in plan.items():
            stack.enter_context(rewrite(model, layer, site, fn))
        yield


@contextmanager
def recording(model: Intervenable, sites: list[tuple[int, str]]) -> Iterator[dict[tuple[int, str], list]]:
    """Collect each site's tensor of every forward pass in the block: ``{(layer, site): [tensor, ...]}``."""
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
