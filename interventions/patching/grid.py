"""Activation patching through the adapter contract: many patches per forward pass, in either direction.

A :class:`Run` is one prompt in one direction, teacher-forced with two answers (row 0: answer *a*, row 1: answer
*b*), with every hook point's activations recorded; its log-prob difference ``ld = log P(a) − log P(b)`` is the
metric's raw value. :func:`patched_ld` writes a source run's activations into a target run: the target's input is
replicated along the batch, two rows (the two answers) per :class:`Patch`, and each replica's hook overwrites only
its own rows and positions, so a whole layers × positions grid costs a few batched forwards instead of one
forward per cell. The same code serves the grid (clean → corrupted prompt, same direction) and transplants (one
direction's run → the other's). Plain torch hooks are the default backend; ``backend="nnsight"`` does the same
writes in an nnsight trace (tests check that both agree).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gapeval.models.base import ForwardPass, Intervenable, Request
from interventions.hooks import (
    KINDS,
    HookPoint,
    forward_order,
    hook_points,
    recording,
    residual_stream,
    rewrites,
)

# A grid is a list of hook points (its rows): the residual stream at every depth, or one component's output in
# every layer. Arrays, plots and the JSON are keyed by these names.
GRIDS: dict[str, Callable[[Intervenable], list[HookPoint]]] = {
    "resid": residual_stream,
    "attn_out": lambda model: hook_points(model, ("attn_out",)),
    "mlp_out": lambda model: hook_points(model, ("mlp_out",)),
}


def grid_points(model: Intervenable, name: str) -> list[HookPoint]:
    """The rows of grid ``name`` (:data:`GRIDS`): ``resid`` enters every layer (row 0 = the embeddings) and
    leaves the last; ``attn_out``/``mlp_out`` are that component's output in every layer."""
    if name not in GRIDS:
        raise ValueError(f"grid must be one of {tuple(GRIDS)}, got {name!r}")
    return GRIDS[name](model)


def all_points(model: Intervenable) -> list[HookPoint]:
    """Every hook point some grid patches, once, in forward order (what a :class:`Run` records)."""
    points = {p for name in GRIDS for p in grid_points(model, name)}
    return sorted(points, key=forward_order)


@dataclass(frozen=True)
class Patch:
    """Write the source's activation at hook point ``point`` and ``source`` positions into the target at
    ``target`` positions (unpadded positions; ``source`` defaults to ``target``). No positions patches nothing."""

    point: HookPoint
    target: tuple[int, ...]
    source: tuple[int, ...] | None = None

    @property
    def source_positions(self) -> tuple[int, ...]:
        return self.target if self.source is None else self.source


@dataclass
class Run:
    """One prompt in one direction, teacher-forced with two answers; activations of every hook point recorded."""

    request: Request
    direction: str
    answers: tuple[Any, Any]  # as forward_inputs takes them again cheaply (gen: token ids)
    inputs: ForwardPass  # two rows: answer a, answer b
    acts: dict[HookPoint, torch.Tensor]  # (2, T, d) per hook point
    logprobs: torch.Tensor  # (2,)

    @property
    def ld(self) -> float:
        return float(self.logprobs[0] - self.logprobs[1])

    @property
    def prompt_length(self) -> int:
        return self.inputs.prompt_length()

    def values(self, key: HookPoint, row: int, positions: Sequence[int]) -> torch.Tensor:
        """(len(positions), d) activations of ``row`` at unpadded ``positions``."""
        return self.acts[key][row, self.inputs.columns(row, positions)]


def _replayable(inputs: ForwardPass, answers: Sequence[Any]) -> tuple[Any, Any]:
    """Answers in the form that is cheap to feed again: gen answers as their token ids (no image encoding)."""
    if inputs.direction == "und":
        return answers[0], answers[1]
    return tuple(inputs.targets[j][inputs.answer_mask[j]].tolist() for j in range(2))  # type: ignore[return-value]


@contextmanager
def capture_hidden(model: Intervenable) -> Iterator[list[torch.Tensor]]:
    """The output of ``hidden_path`` in the block's forward passes (registered last: it sees every patch)."""
    seen: list[torch.Tensor] = []
    target = model.module.get_submodule(model.hidden_path)
    handle = target.register_forward_hook(
        lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        yield seen
    finally:
        handle.remove()


def run(model: Intervenable, request: Request, direction: str, answers: Sequence[Any]) -> Run:
    """Teacher-force ``request`` with both ``answers`` and record every hook point (see :func:`all_points`)."""
    inputs = model.forward_inputs([request, request], direction, list(answers))
    with torch.no_grad(), recording(model, all_points(model)) as seen, capture_hidden(model) as hidden:
        model.module(*inputs.args, **inputs.kwargs)
        logprobs = model.answer_logprobs(inputs, hidden[-1]).sum(-1)
    acts = {key: tensors[-1] for key, tensors in seen.items()}
    return Run(request, direction, _replayable(inputs, answers), inputs, acts, logprobs)


def normalised(ld: Any, clean_ld: float, corrupt_ld: float) -> Any:
    """0 = the corrupted run, 1 = the clean run."""
    return (ld - corrupt_ld) / (clean_ld - corrupt_ld)


@dataclass
class _Writes:
    """Index tensors of one hook point: target rows/columns and the source rows/columns they take."""

    rows: list[int]
    cols: list[int]
    src_rows: list[int]
    src_cols: list[int]


def _plan(target: ForwardPass, source: Run, patches: Sequence[Patch]) -> dict[HookPoint, _Writes]:
    plan: dict[HookPoint, _Writes] = defaultdict(lambda: _Writes([], [], [], []))
    for i, patch in enumerate(patches):
        if len(patch.target) != len(patch.source_positions):
            raise ValueError(
                f"patch {patch}: {len(patch.target)} target vs {len(patch.source_positions)} source"
            )
        for answer in range(2):  # replica row 2i + a answers a; it reads the source row of the same answer
            row = 2 * i + answer
            w = plan[patch.point]
            w.rows += [row] * len(patch.target)
            w.cols += target.columns(row, patch.target)
            w.src_rows += [answer] * len(patch.target)
            w.src_cols += source.inputs.columns(answer, patch.source_positions)
    return dict(sorted(plan.items(), key=lambda kv: forward_order(kv[0])))


def _values(source: Run, key: HookPoint, w: _Writes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = torch.tensor(w.rows, dtype=torch.long), torch.tensor(w.cols, dtype=torch.long)
    return rows, cols, source.acts[key][w.src_rows, w.src_cols]


def _forward_torch(
    model: Intervenable, inputs: ForwardPass, source: Run, plan: dict[HookPoint, _Writes]
) -> torch.Tensor:
    def writer(key: HookPoint, w: _Writes):
        rows, cols, values = _values(source, key, w)

        def fn(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            t[rows, cols] = values.to(t.dtype)
            return t

        return fn

    with rewrites(model, {key: writer(key, w) for key, w in plan.items()}), capture_hidden(model) as hidden:
        model.module(*inputs.args, **inputs.kwargs)
    return hidden[-1]


def _forward_nnsight(
    model: Intervenable, inputs: ForwardPass, source: Run, plan: dict[HookPoint, _Writes]
) -> torch.Tensor:
    """The same writes inside an nnsight trace, module by module in forward order."""
    import nnsight
    from nnsight import NNsight

    traced = NNsight(model.module)
    with traced.trace(*inputs.args, **inputs.kwargs):
        for point, w in plan.items():
            rows, cols, values = _values(source, point, w)
            kind = KINDS[point.kind]
            envoy = traced.get(f"{model.layers_path}.{point.layer}")
            envoy = envoy if kind.component is None else envoy.get(model.components[kind.component])
            if kind.reads_input:
                tensor = envoy.input
            else:
                tensor = envoy.output
                tensor = tensor[0] if isinstance(tensor, tuple) else tensor
            tensor[rows, cols] = values.to(tensor.dtype)
        out = traced.get(model.hidden_path).output
        hidden = nnsight.save(out[0] if isinstance(out, tuple) else out)
    return hidden


def no_op(target: Run, source: Run, patch: Patch) -> bool:
    """Whether ``patch`` would write exactly the values the target already has (e.g. clean and corrupted prompts
    before the span): its result is the target's own, with no forward pass."""
    key = patch.point
    return all(
        torch.equal(target.values(key, j, patch.target), source.values(key, j, patch.source_positions))
        for j in range(2)
    )


def patched_ld(
    model: Intervenable,
    target: Run,
    source: Run,
    patches: Sequence[Patch],
    *,
    max_rows: int = 256,
    backend: str = "torch",
    skip_no_ops: bool = True,
) -> torch.Tensor:
    """(len(patches),) log-prob difference of the target run under each patch, read from the source run.

    Patches run ``max_rows // 2`` to a forward pass (two rows each), which bounds memory; patches that change
    nothing (:func:`no_op`) take the target's own value unless ``skip_no_ops`` is False.
    """
    forward = {"torch": _forward_torch, "nnsight": _forward_nnsight}[backend]
    per_pass = max(1, max_rows // 2)
    out = torch.full((len(patches),), target.ld)
    live = [i for i, p in enumerate(patches) if not (skip_no_ops and no_op(target, source, p))]
    built: dict[int, ForwardPass] = {}
    with torch.no_grad():
        for start in range(0, len(live), per_pass):
            index = live[start : start + per_pass]
            chunk = [patches[i] for i in index]
            if len(chunk) not in built:
                built[len(chunk)] = model.forward_inputs(
                    [target.request] * (2 * len(chunk)), target.direction, list(target.answers) * len(chunk)
                )
            inputs = built[len(chunk)]
            hidden = forward(model, inputs, source, _plan(inputs, source, chunk))
            lp = model.answer_logprobs(inputs, hidden).sum(-1).view(len(chunk), 2).float().cpu()
            out[index] = lp[:, 0] - lp[:, 1]
    return out


def grid_patches(model: Intervenable, name: str, positions: Sequence[int]) -> list[tuple[int, int, Patch]]:
    """(row, column, patch) of every cell of grid ``name`` over ``positions`` (one position a cell)."""
    return [
        (row, col, Patch(point, (pos,)))
        for row, point in enumerate(grid_points(model, name))
        for col, pos in enumerate(positions)
    ]


def grid(
    model: Intervenable,
    clean: Run,
    corrupt: Run,
    *,
    grids: Sequence[str] = tuple(GRIDS),
    positions: Sequence[int] | None = None,
    max_rows: int = 256,
    backend: str = "torch",
) -> dict[str, np.ndarray]:
    """Normalised metric of patching each cell (hook point, position) from ``clean`` into ``corrupt``.

    Returns ``{grid: (rows, len(positions))}`` (rows: :func:`grid_points`); positions default to every prompt position (both prompts
    have the same length by construction, :func:`interventions.patching.pairs.check_pair`). All grids' cells share the
    batched passes.
    """
    if clean.prompt_length != corrupt.prompt_length:
        raise ValueError(f"prompts differ in length: {clean.prompt_length} vs {corrupt.prompt_length}")
    positions = list(range(corrupt.prompt_length)) if positions is None else list(positions)
    cells = [(g, row, col, p) for g in grids for row, col, p in grid_patches(model, g, positions)]
    ld = patched_ld(model, corrupt, clean, [p for *_, p in cells], max_rows=max_rows, backend=backend)
    values = normalised(ld.numpy(), clean.ld, corrupt.ld)
    out = {g: np.full((len(grid_points(model, g)), len(positions)), np.nan) for g in grids}
    for (g, row, col, _), v in zip(cells, values, strict=True):
        out[g][row, col] = v
    return out
