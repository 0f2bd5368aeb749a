"""Batched activation patching vs a loop of single-patch forwards, on the same cells (prints the ratio).

The full layers × positions × {resid, attn, mlp} grid of one clean/corrupted pair, in both directions: batched
(many patched replicas per forward, ``--max-rows`` rows a pass, cells that would write what the corrupted run
already has skipped) against one forward per cell (two rows: the two answers), and batching alone (no cell
skipped). All go through :func:`interventions.patching.grid.patched_ld`; the results must agree.

    python benchmarks/patching_batched.py --model toy --pairs 3 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gapeval.models.base import DIRECTIONS
from gapeval.models.registry import load_model
from interventions.patching.grid import GRIDS, grid_patches, patched_ld, run
from interventions.patching.pairs import synth_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--max-rows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, [])
    pairs = synth_pairs(model, args.pairs, seed=args.seed)
    totals = {"full grid (runs + batched)": 0.0, "batched": 0.0, "batched, no skipping": 0.0, "loop": 0.0}
    cells = 0
    for pair in pairs:
        for d in DIRECTIONS:
            start = time.perf_counter()
            clean, corrupt = (
                run(model, pair.request(r, d), d, pair.answers(d)) for r in ("clean", "corrupt")
            )
            positions = range(corrupt.prompt_length)
            patches = [p for c in GRIDS for *_, p in grid_patches(model, c, positions)]
            middle = time.perf_counter()
            batched = patched_ld(model, corrupt, clean, patches, max_rows=args.max_rows)
            end = time.perf_counter()
            every = patched_ld(model, corrupt, clean, patches, max_rows=args.max_rows, skip_no_ops=False)
            middle2 = time.perf_counter()
            loop = patched_ld(model, corrupt, clean, patches, max_rows=2, skip_no_ops=False)
            totals["loop"] += time.perf_counter() - middle2
            totals["batched, no skipping"] += middle2 - end
            totals["batched"] += end - middle
            totals["full grid (runs + batched)"] += end - start
            assert torch.equal(every, batched) or np.allclose(every, batched, atol=1e-4)
            cells += len(patches)
            worst = float((batched - loop).abs().max() / abs(clean.ld - corrupt.ld))
            assert np.isclose(worst, 0, atol=1e-4), f"batched and loop differ by {worst} (normalised)"
    n = len(pairs)
    print(
        f"{args.model}: {n} pairs × 2 directions, {cells // (2 * n)} cells per direction, {args.threads} thread(s)"
    )
    for name, seconds in totals.items():
        print(f"  {name:28s} {seconds / n:7.3f} s per pair (both directions)")
    print(
        f"  batched vs loop: {totals['loop'] / totals['batched']:.1f}x (same values); batching alone (no cell "
        f"skipped): {totals['loop'] / totals['batched, no skipping']:.1f}x"
    )


if __name__ == "__main__":
    main()
