"""The reference Gap Score for 40 models: a model-by-model loop (as the release's script runs) vs one batched fit.

Prints both wall times, the speed-up and whether the results agree (largest per-row difference). Usage:

    python benchmarks/gap_score_batched.py [--models 40] [--rows 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gapeval.score import gap_score_reference, gap_scores_reference_batched


def random_models(n: int, rows: int, seed: int) -> dict[str, list[list[float]]]:
    """Joint rows [p11, p10, p01, p00] drawn from a Dirichlet, as a results file would hold them."""
    rng = np.random.default_rng(seed)
    return {f"model{i}": rng.dirichlet(np.full(4, 1.5), size=rows).tolist() for i in range(n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = random_models(args.models, args.rows, args.seed)

    start = time.perf_counter()
    looped = {name: gap_score_reference(rows) for name, rows in models.items()}
    t_loop = time.perf_counter() - start
    start = time.perf_counter()
    batched = gap_scores_reference_batched(models)
    t_batch = time.perf_counter() - start

    diff = max(np.abs(np.subtract(looped[n].gaps, batched[n].gaps)).max() for n in models)
    print(f"{args.models} models x {args.rows} rows, 2000 AdamW steps each")
    print(f"model-by-model loop: {t_loop:8.2f} s  ({t_loop / args.models:.2f} s per model)")
    print(f"batched:             {t_batch:8.2f} s")
    print(f"speed-up:            {t_loop / t_batch:8.1f}x")
    print(f"largest |gap difference|: {diff:.3g} ({'agree' if diff <= 1e-5 else 'DISAGREE'})")


if __name__ == "__main__":
    main()
