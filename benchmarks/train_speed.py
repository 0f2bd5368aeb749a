"""Training speed of the toy UMM: today's trainer against the fast path, over a whole run, on one thread.

    python benchmarks/train_speed.py [--strata 8] [--steps 60] [--variant shared]

Three trainers run the shipped recipe (``TrainConfig()``: batch 32, d 128, 4 layers, 24 000 steps) on the same
batches, interleaved in blocks so a busy machine slows all three alike:

- ``today``: the trainer as shipped before the fast path (reference engine, per-cell patch canonicalisation);
- ``reference``: the default recipe now (the same bytes as today; patches canonicalised all at once, and
  image codes remembered by cell);
- ``packed``: the fast path (``--engine packed``: packed tokens, fused q/k/v, written-out attention, fused
  AdamW, the last layer only where a loss or the pointer reads it).

A run's steps are not alike: for the first 30 % the curriculum draws shorter examples. So the schedule is cut
into ``--strata`` equal parts and each trainer times ``--steps`` steps from the middle of every part; a part
stands for all its steps, so the summed times estimate a whole run's, and the ratio of the sums is the run's
speed-up. 60 steps a part (~17 minutes on a slow core) keep a run's parts within ~2 % of each other on a
shared host, where 20 let them scatter by up to 11 %; the whole-run ratio still moves between runs with the
host's load (1.48-1.52x in one afternoon). The script prints it per part and for the run: process CPU time
(the run's own core, whatever else the machine runs) and wall time; the FLOPs of a step as torch's flop
counter counts them (matrix products: on the real tokens, the packed count, and what each trainer computes
including padding; the mean of every part's first step), and the fraction of one core's peak FLOP/s each reaches; the peak is a timed 2048² matrix product
in fp32 (and in bf16, for comparison). Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from flops import peak_flops
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from gapeval.models.toy import data, sequence
from gapeval.models.toy.codec import CELL, GRID, N_TOKENS, ImageCodec, _interior_shift
from gapeval.models.toy.train import TrainConfig, _Run
from gapeval.synth.world import render_pixels, to_grid_array


def per_cell_patches(image) -> np.ndarray:
    """Today's patch canonicalisation: one cell at a time (same bytes as ``codec.cell_patches``)."""
    arr = to_grid_array(image)
    patches = [
        _interior_shift(arr[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL])
        for r in range(GRID)
        for c in range(GRID)
    ]
    return np.stack(patches).reshape(N_TOKENS, -1).astype(np.float32) / 255.0


def todays_encode(self: ImageCodec, image) -> list[int]:
    """Today's image encoding: every cell canonicalised and measured against the codebook, every time."""
    return self.encode_patches(per_cell_patches(image)).tolist()


def todays_render(scene, rng=None) -> Image.Image:
    """Today's training pictures: PIL images (read back into arrays when encoded)."""
    return Image.fromarray(render_pixels(scene, rng), "RGB")


@contextmanager
def todays_batches():
    """Build sequences as today's trainer did (PIL pictures, per-cell canonicalisation, no remembered codes)
    while inside."""
    now = sequence.cell_patches, ImageCodec.encode, data.render_pixels
    sequence.cell_patches, ImageCodec.encode, data.render_pixels = (
        per_cell_patches,
        todays_encode,
        todays_render,
    )
    try:
        yield
    finally:
        sequence.cell_patches, ImageCodec.encode, data.render_pixels = now


@contextmanager
def nothing():
    yield


def step_flops(run: _Run, step: int) -> float:
    """Matrix-product FLOPs of one training step (forward and backward), as torch's flop counter counts them."""
    counter = FlopCounterMode(display=False)
    state = run.sampler.rng.getstate()
    with counter:
        run._step(step)
    run.sampler.rng.setstate(state)  # the timed steps draw the same batches as the other trainers
    return counter.get_total_flops()


class Trainer:
    """One trainer: its run, how it builds batches, and the time it has spent."""

    def __init__(self, name: str, engine: str, context: Callable, variant: str, out: Path):
        self.name, self.context = name, context
        self.run = _Run(TrainConfig(variant=variant, engine=engine), out / name)
        self.cpu = self.wall = 0.0
        self.steps = 0

    def steps_from(self, first: int, n: int) -> None:
        with self.context():
            cpu, wall = time.process_time(), time.perf_counter()
            for step in range(first, first + n):
                self.run._step(step)
            self.cpu += time.process_time() - cpu
            self.wall += time.perf_counter() - wall
        self.steps += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strata", type=int, default=8, help="parts of the schedule timed (default 8)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per part and trainer (default 60)")
    parser.add_argument("--block", type=int, default=5, help="steps per turn when interleaving (default 5)")
    parser.add_argument("--variant", default="shared", choices=("shared", "decoupled"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    total = TrainConfig().steps
    starts = [round((k + 0.5) * total / args.strata) for k in range(args.strata)]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = [
            Trainer("today", "reference", todays_batches, args.variant, Path(tmp)),
            Trainer("reference", "reference", nothing, args.variant, Path(tmp)),
            Trainer("packed", "packed", nothing, args.variant, Path(tmp)),
        ]
        useful = sum(step_flops(trainers[2].run, s) for s in starts) / len(starts)
        counted = {t.name: sum(step_flops(t.run, s) for s in starts) / len(starts) for t in trainers}
        for t in trainers:  # warm-up: allocator, first-call paths
            t.steps_from(starts[0], 2)
        parts = []
        for first in starts:
            for t in trainers:
                t.cpu = t.wall = 0.0
                t.steps = 0
            for block in range(first, first + args.steps, args.block):
                for t in trainers:
                    t.steps_from(block, min(args.block, first + args.steps - block))
            parts.append({t.name: (t.cpu / t.steps, t.wall / t.steps) for t in trainers})
    peak32, peak16 = (peak_flops(dtype, n=2048, repeats=3) for dtype in (torch.float32, torch.bfloat16))
    names = [t.name for t in trainers]
    run = {n: tuple(sum(p[n][i] for p in parts) / len(parts) for i in (0, 1)) for n in names}
    print(
        f"toy {args.variant}, shipped recipe, {args.steps} steps from the middle of each of {args.strata} parts "
        f"of the {total}-step schedule, one thread"
    )
    print(f"one core's peak (2048² matmul): fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s")
    print(f"FLOPs of a step on its real tokens (packed count, mean over the parts): {useful / 1e9:.2f} GFLOP")
    print()
    print(
        "| part (steps from) | curriculum | "
        + " | ".join(f"{n} CPU s/step" for n in names)
        + " | packed vs today |"
    )
    print("|---|---|" + "---|" * len(names) + "---|")
    for first, p in zip(starts, parts, strict=True):
        level = min(1.0, first / (0.3 * total))
        cells = " | ".join(f"{p[n][0]:.4f}" for n in names)
        print(f"| {first} | {level:.2f} | {cells} | {p['today'][0] / p['packed'][0]:.2f}x |")
    print()
    print(
        "| trainer (whole run) | CPU s/step | wall s/step | speed-up (CPU / wall) vs today | GFLOP computed | "
        "useful GFLOP/s | of fp32 peak |"
    )
    print("|---|---|---|---|---|---|---|")
    today = run["today"]
    for n in names:
        cpu, wall = run[n]
        print(
            f"| {n} | {cpu:.4f} | {wall:.4f} | {today[0] / cpu:.2f}x / {today[1] / wall:.2f}x | "
            f"{counted[n] / 1e9:.2f} | {useful / cpu / 1e9:.1f} | {useful / cpu / peak32:.0%} |"
        )


if __name__ == "__main__":
    main()
