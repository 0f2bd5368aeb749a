"""The core's matrix-product throughput, the yardstick the benchmarks state their FLOP/s against."""

from __future__ import annotations

import time

import torch


def peak_flops(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of one n × n matrix product on the current torch threads (best of ``repeats``, after a warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
