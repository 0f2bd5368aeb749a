"""Hidden states of every decoder layer at named positions, for many prompts in both directions, on disk.

One nnsight trace per batch reads the embeddings (the input of the first decoder layer) and every layer's
output (the residual stream after it) and pools each at the named positions inside the trace, so only
(B, positions, d) per layer leaves the model. Each batch is written as its own safetensors shard before the
next runs, so the whole capture never sits in memory. Captured layer ``k`` is the residual stream at hook point
``interventions.hooks.residual_stream(model)[k]``: the embeddings entering layer 0 (``blocks.0.hook_resid_pre``),
the stream entering each later layer, and the stream leaving the last (``blocks.L.hook_resid_post``); layers are
named by those hook points everywhere (``capture.json``, ``probe.json``).

Positions (``POSITIONS``): ``last`` — the last prompt token (it predicts the first answer token); ``entity`` —
the mean over the entity span's tokens; ``entity_last`` — the span's last token; ``answer`` — the mean over
the teacher-forced answer's predicting positions (the reference text for und, the reference image for gen).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nnsight
import torch
from nnsight import NNsight
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from gapeval.models.base import DIRECTIONS, ForwardPass, Intervenable, Request
from interventions.hooks import first_tensor, residual_stream
from probes.dataset import ProbeSet
from probes.names import POSITIONS

INDEX = "capture.json"
ROWS = "rows.json"


def layer_names(model: Intervenable) -> list[str]:
    """The captured layers' names: hook points of the residual stream."""
    return [p.name for p in residual_stream(model)]


def check_positions(positions: Sequence[str]) -> None:
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown or not positions:
        raise ValueError(f"positions must be among {POSITIONS}, got {list(positions)}")


def position_columns(
    model: Intervenable, fp: ForwardPass, requests: Sequence[Request], spans: Sequence[str], position: str
) -> list[list[int]]:
    """Per row, the padded columns of ``fp`` that ``position`` averages over."""
    if position == "last":
        return [[int(c)] for c in fp.prompt_end]
    if position == "answer":
        if not bool(fp.answer_mask.any(1).all()):
            raise ValueError("position 'answer' needs a forward pass with answers")
        return [fp.answer_positions[b][fp.answer_mask[b]].tolist() for b in range(len(fp))]
    columns = [
        fp.columns(b, model.span_positions(r, s, fp.direction))
        for b, (r, s) in enumerate(zip(requests, spans, strict=True))
    ]
    return columns if position == "entity" else [c[-1:] for c in columns]


def pooling(columns: list[list[int]], width: int) -> torch.Tensor:
    """(B, T) weights averaging each row's ``columns``."""
    weights = torch.zeros(len(columns), width)
    for b, cols in enumerate(columns):
        weights[b, cols] = 1.0 / len(cols)
    return weights


def _envoy(traced: Any, path: str) -> Any:
    node = traced
    for name in path.split("."):
        node = getattr(node, name)
    return node


def capture_batch(
    traced: Any, model: Intervenable, fp: ForwardPass, columns: Sequence[list[list[int]]]
) -> torch.Tensor:
    """(B, P, L + 1, d) float32 states of one forward pass, averaged over each position's ``columns`` (one
    list per position, one list of columns per row), every layer in the same pass."""
    saved = []
    with torch.no_grad(), traced.trace(*fp.args, **fp.kwargs) as tracer:
        layers = _envoy(traced, model.layers_path)
        hidden = layers[0].input  # modules are read in forward order: the first layer's input comes first
        weights = torch.stack([pooling(c, hidden.shape[1]) for c in columns])
        w = weights.to(device=hidden.device, dtype=hidden.dtype)
        saved.append(nnsight.save(torch.einsum("pbt,btd->bpd", w, hidden)))
        for layer in layers:
            saved.append(nnsight.save(torch.einsum("pbt,btd->bpd", w, first_tensor(layer.output))))
        tracer.stop()  # the heads after the last layer are not needed
    return torch.stack([s.float().cpu() for s in saved], dim=2)


def capture(
    model: Intervenable,
    probe_set: ProbeSet,
    out: str | Path,
    positions: Sequence[str] = ("last",),
    directions: Sequence[str] = DIRECTIONS,
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Write ``out/{direction}-{k}.safetensors`` (one tensor per position, (b, L + 1, d)), ``capture.json``
    (layout) and ``rows.json`` (labels and metadata of every row); returns ``out``."""
    check_positions(positions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    traced = NNsight(model.module)
    shards: dict[str, list[str]] = {}
    for direction in directions:
        requests = probe_set.requests[direction]
        answers = probe_set.answers[direction] if "answer" in positions else None
        shards[direction] = []
        starts = range(0, len(requests), batch_size)
        for k, start in enumerate(tqdm(starts, desc=f"capture {direction}", disable=not progress)):
            stop = start + batch_size
            reqs = requests[start:stop]
            fp = model.forward_inputs(reqs, direction, None if answers is None else answers[start:stop])
            spans = probe_set.spans[start:stop]
            columns = [position_columns(model, fp, reqs, spans, p) for p in positions]
            states = capture_batch(traced, model, fp, columns)
            name = f"{direction}-{k:05d}.safetensors"
            save_file({p: states[:, i].contiguous() for i, p in enumerate(positions)}, out / name)
            shards[direction].append(name)
    index = {
        "model": getattr(model, "name", type(model).__name__),
        "layers": layer_names(model),
        "positions": list(positions),
        "directions": list(directions),
        "rows": len(probe_set),
        "shards": shards,
    }
    (out / INDEX).write_text(json.dumps(index, indent=1))
    (out / ROWS).write_text(json.dumps(probe_set.rows, indent=1))
    return out


def load_states(out: str | Path, direction: str, position: str) -> torch.Tensor:
    """(N, L + 1, d) states of every row captured in ``direction`` at ``position``."""
    out = Path(out)
    index = json.loads((out / INDEX).read_text())
    if position not in index["positions"] or direction not in index["shards"]:
        raise KeyError(f"{out}: no {direction!r} states at {position!r} (have {index['positions']})")
    return torch.cat([load_file(out / name)[position] for name in index["shards"][direction]])
