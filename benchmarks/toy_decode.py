"""Batched KV-cache decoding of the built-in UMM vs a naive one-item, no-cache loop, on the same synth items.

Prints both wall times, the speed-up, whether outputs agree, and the batched decoder's achieved FLOP/s as a
fraction of this CPU's fp32 matmul peak (measured here with torch). Usage:

    python benchmarks/toy_decode.py [--model shared|decoupled|PATH] [--items 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from flops import peak_flops

from gapeval.models.base import Request
from gapeval.models.toy import load_toy
from gapeval.synth import build_suite


def decode_flops(adapter, requests: list[Request], direction: str, outputs) -> float:
    """Matmul FLOPs the cached decoder performs: projections + MLP + attention + output head, per token."""
    cfg = adapter.module.config
    d, layers = cfg.d_model, cfg.n_layers
    head = cfg.n_text if direction == "und" else cfg.n_codes
    total = 0.0
    for req, out in zip(requests, outputs, strict=True):
        prompt = len(adapter.builder.prompt(req.prompt, req.image, direction))
        new = len(adapter.tokenizer.encode(out)) + 1 if direction == "und" else 16
        for pos in range(prompt + new - 1):
            total += layers * (2 * 12 * d * d + 4 * d * (pos + 1))  # qkvo (4d²) + MLP (8d²); QKᵀ and AV
        total += new * 2 * d * head
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="shared")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = load_toy(args.model, batch_size=args.items)
    items = build_suite()[:: max(1, 420 // args.items)][: args.items]
    print(
        f"model {adapter.name} ({adapter.checkpoint}), {len(items)} items x 2 directions, {args.threads} threads"
    )
    torch.set_num_threads(args.threads)
    peak = peak_flops(torch.float32)
    print(f"fp32 matmul peak here: {peak / 1e9:.1f} GFLOP/s")
    for direction in ("und", "gen"):
        reqs = [Request(it.id, it.prompt(direction), it.image) for it in items]
        decode = adapter.understand if direction == "und" else adapter.generate
        decode(reqs[:2])  # warm-up
        t = time.perf_counter()
        batched = decode(reqs)
        t_batched = time.perf_counter() - t
        t = time.perf_counter()
        naive = [adapter.reference_decode(r, direction) for r in reqs]
        t_naive = time.perf_counter() - t
        same = all(
            (a == b) if direction == "und" else a.tobytes() == b.tobytes()
            for a, b in zip(batched, naive, strict=True)
        )
        flops = decode_flops(adapter, reqs, direction, batched)
        print(
            f"{direction}: naive {t_naive:.2f} s, batched+KV {t_batched:.3f} s, speed-up {t_naive / t_batched:.1f}x, "
            f"outputs identical: {same}, achieved {flops / t_batched / 1e9:.2f} GFLOP/s "
            f"= {flops / t_batched / peak:.1%} of peak"
        )


if __name__ == "__main__":
    main()
