"""Activation patching through the adapter contract: many patches per forward pass, in either direction.

A :class:`Run` is one prompt in one direction, teacher-forced with two answers (row 0: answer *a*, row 1: answer
*b*), with every site's activations recorded; its log-prob difference ``ld = log P(a) − log P(b)`` is the
metric's raw value. :func:`patched_ld` writes a source run's activations into a target run: the target's input is
replicated along the batch, two rows (the two answers) per :class:`Patch`, and each replica's hook overwrites only
its own rows and positions, so a whole layers × positions grid costs a few batched forwards instead of one
forward per cell. The same code serves the grid (clean → corrupted prompt, same direction) and transplants (one
direction's run → the other's). Plain torch hooks are the default backend; ``backend="nnsight"`` does the same
writes in an nnsight trace (tests check that both agree).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gapeval.models.base import ForwardPass, Intervenable, Request
from interventions.hooks import layers, recording, rewrites

COMPONENTS = ("resid", "attn", "mlp")
SITE_ORDER = {"resid_pre": 0, "attn": 1, "mlp": 2, "resid_post": 3}  # forward order inside one layer


def n_layers(model: Intervenable) -> int:
    return len(layers(model))


def grid_rows(model: Intervenable, component: str) -> int:
    """Rows of a component's grid: the residual stream entering every layer and leaving the last; else one a layer."""
    return n_layers(model) + (component == "resid")


def site_of(model: Intervenable, component: str, row: int) -> tuple[int, str]:
    """(layer, site) of a grid row: ``resid`` row ``i`` enters layer ``i`` (row 0 = embeddings), the last row
    leaves the last layer; ``attn``/``mlp`` row ``i`` is that module's output in layer ``i``."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    if not 0 <= row < grid_rows(model, component):
        raise ValueError(
            f"{component} rows are 0..{grid_rows(model, component) - 1} in this model, got {row}"
        )
    if component != "resid":
        return row, component
    last = n_layers(model)
    return (row, "resid_pre") if row < last else (last - 1, "resid_post")


def all_sites(model: Intervenable) -> list[tuple[int, str]]:
    return [site_of(model, c, row) for c in COMPONENTS for row in range(grid_rows(model, c))]


@dataclass(frozen=True)
class Patch:
    """Write the source's ``site`` activation at ``source`` positions into the target at ``target`` positions
    (unpadded positions; ``source`` defaults to ``target``). No positions patches nothing."""

    layer: int
    site: str
    target: tuple[int, ...]
    source: tuple[int, ...] | None = None

    @property
    def source_positions(self) -> tuple[int, ...]:
        return self.target if self.source is None else self.source


@dataclass
class Run:
    """One prompt in one direction, teacher-forced with two answers; activations of every site recorded."""

    request: Request
    direction: str
    answers: tuple[Any, Any]  # as forward_inputs takes them again cheaply (gen: token ids)
    inputs: ForwardPass  # two rows: answer a, answer b
    acts: dict[tuple[int, str], torch.Tensor]  # (2, T, d) per site
    logprobs: torch.Tensor  # (2,)

    @property
    def ld(self) -> float:
        return float(self.logprobs[0] - self.logprobs[1])

    @property
    def prompt_length(self) -> int:
        return self.inputs.prompt_length()

    def values(self, key: tuple[int, str], row: int, positions: Sequence[int]) -> torch.Tensor:
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
    """Teacher-force ``request`` with both ``answers`` and record every site (see :func:`all_sites`)."""
    inputs = model.forward_inputs([request, request], direction, list(answers))
    with torch.no_grad(), recording(model, all_sites(model)) as seen, capture_hidden(model) as hidden:
        model.module(*inputs.args, **inputs.kwargs)
        logprobs = model.answer_logprobs(inputs, hidden[-1]).sum(-1)
    acts = {key: tensors[-1] for key, tensors in seen.items()}
    return Run(request, direction, _replayable(inputs, answers), inputs, acts, logprobs)


def normalised(ld: Any, clean_ld: float, corrupt_ld: float) -> Any:
    """0 = the corrupted run, 1 = the clean run."""
    return (ld - corrupt_ld) / (clean_ld - corrupt_ld)


@dataclass
class _Writes:
    """Index tensors of one (layer, site): target rows/columns and the source rows/columns they take."""

    rows: list[int]
    cols: list[int]
    src_rows: list[int]
    src_cols: list[int]


def _plan(target: ForwardPass, source: Run, patches: Sequence[Patch]) -> dict[tuple[int, str], _Writes]:
    plan: dict[tuple[int, str], _Writes] = defaultdict(lambda: _Writes([], [], [], []))
    for i, patch in enumerate(patches):
        if len(patch.target) != len(patch.source_positions):
            raise ValueError(
                f"patch {patch}: {len(patch.target)} target vs {len(patch.source_positions)} source"
            )
        for answer in range(2):  # replica row 2i + a answers a; it reads the source row of the same answer
            row = 2 * i + answer
            w = plan[(patch.layer, patch.site)]
            w.rows += [row] * len(patch.target)
            w.cols += target.columns(row, patch.target)
            w.src_rows += [answer] * len(patch.target)
            w.src_cols += source.inputs.columns(answer, patch.source_positions)
    return dict(sorted(plan.items(), key=lambda kv: (kv[0][0], SITE_ORDER[kv[0][1]])))


def _values(source: Run, key: tuple[int, str], w: _Writes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = torch.tensor(w.rows, dtype=torch.long), torch.tensor(w.cols, dtype=torch.long)
    return rows, cols, source.acts[key][w.src_rows, w.src_cols]


def _forward_torch(
    model: Intervenable, inputs: ForwardPass, source: Run, plan: dict[tuple[int, str], _Writes]
) -> torch.Tensor:
    def writer(key: tuple[int, str], w: _Writes):
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
    model: Intervenable, inputs: ForwardPass, source: Run, plan: dict[tuple[int, str], _Writes]
) -> torch.Tensor:
    """The same writes inside an nnsight trace, module by module in forward order."""
    import nnsight
    from nnsight import NNsight

    traced = NNsight(model.module)
    with traced.trace(*inputs.args, **inputs.kwargs):
        for (layer, site), w in plan.items():
            rows, cols, values = _values(source, (layer, site), w)
            block = traced.get(f"{model.layers_path}.{layer}")
            if site == "resid_pre":
                tensor = block.input
            else:
                envoy = block if site == "resid_post" else block.get(model.components[site])
                tensor = envoy.output
                tensor = tensor[0] if isinstance(tensor, tuple) else tensor
            tensor[rows, cols] = values.to(tensor.dtype)
        out = traced.get(model.hidden_path).output
        hidden = nnsight.save(out[0] if isinstance(out, tuple) else out)
    return hidden


def no_op(target: Run, source: Run, patch: Patch) -> bool:
    """Whether ``patch`` would write exactly the values the target already has (e.g. clean and corrupted prompts
    before the span): its result is the target's own, with no forward pass."""
    key = (patch.layer, patch.site)
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


def grid_patches(
    model: Intervenable, component: str, positions: Sequence[int]
) -> list[tuple[int, int, Patch]]:
    """(row, column, patch) of every cell of a component's grid over ``positions`` (one position a cell)."""
    return [
        (row, col, Patch(*site_of(model, component, row), (pos,)))
        for row in range(grid_rows(model, component))
        for col, pos in enumerate(positions)
    ]


def grid(
    model: Intervenable,
    clean: Run,
    corrupt: Run,
    *,
    components: Sequence[str] = COMPONENTS,
    positions: Sequence[int] | None = None,
    max_rows: int = 256,
    backend: str = "torch",
) -> dict[str, np.ndarray]:
    """Normalised metric of patching each (layer, position) cell from ``clean`` into ``corrupt``.

    Returns ``{component: (rows, len(positions))}``; positions default to every prompt position (both prompts
    have the same length by construction, :func:`interventions.patching.pairs.check_pair`). All components' cells share
    the batched passes.
    """
    if clean.prompt_length != corrupt.prompt_length:
        raise ValueError(f"prompts differ in length: {clean.prompt_length} vs {corrupt.prompt_length}")
    positions = list(range(corrupt.prompt_length)) if positions is None else list(positions)
    cells = [(c, row, col, p) for c in components for row, col, p in grid_patches(model, c, positions)]
    ld = patched_ld(model, corrupt, clean, [p for *_, p in cells], max_rows=max_rows, backend=backend)
    values = normalised(ld.numpy(), clean.ld, corrupt.ld)
    out = {c: np.full((grid_rows(model, c), len(positions)), np.nan) for c in components}
    for (c, row, col, _), v in zip(cells, values, strict=True):
        out[c][row, col] = v
    return out
