"""Capture of hidden states (every layer, both directions) through nnsight vs plain torch hooks, on the toy.

Both read the same forward passes and pool the same positions; prints both wall times (best of ``--repeats``),
their ratio and the largest difference between the two captures. Usage:

    python benchmarks/probe_capture.py [--model shared|decoupled] [--prompts 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from gapeval.models.base import DIRECTIONS
from gapeval.models.toy import load_toy
from gapeval.synth.world import World
from interventions.hooks import recording, residual_stream
from probes.capture import capture, load_states, pooling, position_columns
from probes.dataset import ProbeSet, world_knowledge_set

POSITIONS = ("last", "entity")


def hook_capture(model, probe_set: ProbeSet, batch_size: int) -> dict[tuple[str, str], torch.Tensor]:
    """The same states read with ``interventions.hooks.recording``: {(direction, position): (N, L + 1, d)}."""
    sites = residual_stream(model)
    out: dict[tuple[str, str], list[torch.Tensor]] = {(d, p): [] for d in DIRECTIONS for p in POSITIONS}
    for direction in DIRECTIONS:
        requests = probe_set.requests[direction]
        for start in range(0, len(requests), batch_size):
            reqs, spans = requests[start : start + batch_size], probe_set.spans[start : start + batch_size]
            fp = model.forward_inputs(reqs, direction)
            with torch.no_grad(), recording(model, sites) as seen:
                model.module(*fp.args, **fp.kwargs)
            stream = torch.stack([seen[s][0] for s in sites], dim=1)  # (B, L + 1, T, d)
            for p in POSITIONS:
                w = pooling(position_columns(model, fp, reqs, spans, p), stream.shape[2])
                out[(direction, p)].append(torch.einsum("bt,bltd->bld", w, stream))
    return {key: torch.cat(parts) for key, parts in out.items()}


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shared")
    parser.add_argument("--prompts", type=int, default=500, help="prompts per direction (rows cycle)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_toy(variant=args.model)
    full = world_knowledge_set(World(0))
    probe_set = full.subset([i % len(full) for i in range(args.prompts)])
    with tempfile.TemporaryDirectory() as tmp:
        traced, folder = best_of(
            args.repeats,
            lambda: capture(model, probe_set, tmp, POSITIONS, batch_size=args.batch_size, progress=False),
        )
        nn_states = {(d, p): load_states(folder, d, p) for d in DIRECTIONS for p in POSITIONS}
    hooked, hook_states = best_of(args.repeats, lambda: hook_capture(model, probe_set, args.batch_size))
    diff = max(float((nn_states[k] - hook_states[k]).abs().max()) for k in nn_states)
    shape = tuple(nn_states[("und", "last")].shape)
    print(
        f"toy-{args.model}: {args.prompts} prompts x 2 directions, positions {POSITIONS}, states {shape} each"
    )
    print(f"nnsight capture (written to safetensors): {traced:.2f} s")
    print(f"hook capture (in memory):                 {hooked:.2f} s")
    print(f"nnsight / hooks: {traced / hooked:.2f}x; largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
