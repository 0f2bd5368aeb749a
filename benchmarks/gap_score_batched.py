"""The reference Gap Score for a file of 40 models with 1–6 rows each: a model-by-model loop (as the release's
script runs) vs one batched fit, and the whole ``gapeval score`` command.

Prints the wall times, the speed-up, whether the results agree (largest per-row difference; the batched fit is
meant to be bit-identical) and the wall time of ``gapeval score FILE`` including start-up. Usage:

    python benchmarks/gap_score_batched.py [--models 40] [--min-rows 1] [--max-rows 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gapeval.score import gap_score_reference, gap_scores_reference_batched


def random_models(n: int, min_rows: int, max_rows: int, seed: int) -> dict[str, list[list[float]]]:
    """Joint rows [p11, p10, p01, p00] drawn from a Dirichlet, row counts uniform in [min_rows, max_rows]."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_rows, max_rows + 1, size=n)
    return {f"model{i}": rng.dirichlet(np.full(4, 1.5), size=int(r)).tolist() for i, r in enumerate(sizes)}


def command_wall_time(models: dict[str, list[list[float]]]) -> float:
    """Seconds for ``python -m gapeval score FILE``, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.json"
        path.write_text(json.dumps(models))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gapeval", "score", str(path)], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--min-rows", type=int, default=1)
    parser.add_argument("--max-rows", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = random_models(args.models, args.min_rows, args.max_rows, args.seed)

    start = time.perf_counter()
    looped = {name: gap_score_reference(rows) for name, rows in models.items()}
    t_loop = time.perf_counter() - start
    start = time.perf_counter()
    batched = gap_scores_reference_batched(models)
    t_batch = time.perf_counter() - start
    t_command = command_wall_time(models)

    diff = max(np.abs(np.subtract(looped[n].gaps, batched[n].gaps)).max() for n in models)
    identical = all(looped[n].gaps == batched[n].gaps for n in models)
    print(f"{args.models} models x {args.min_rows}-{args.max_rows} rows, 2000 AdamW steps each")
    print(f"model-by-model loop: {t_loop:8.2f} s  ({t_loop / args.models:.2f} s per model)")
    print(f"batched (one fit):   {t_batch:8.2f} s")
    print(f"speed-up:            {t_loop / t_batch:8.1f}x")
    print(f"gapeval score FILE:  {t_command:8.2f} s wall, start-up included")
    verdict = "bit-identical" if identical else "agree" if diff <= 1e-5 else "DISAGREE"
    print(f"largest |gap difference|: {diff:.3g} ({verdict})")


if __name__ == "__main__":
    main()
