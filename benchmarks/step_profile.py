"""Where one training step of the toy UMM spends its time, by kind of operation, on one thread.

    python benchmarks/step_profile.py [--engine packed] [--from-step 12000] [--steps 10] [--width 128]

Runs ``--steps`` steps of the shipped recipe (after three untimed ones) under torch's profiler and sums each
operator's own time into kinds: matrix products, GELU, copies, gathers, softmax, layer norms, the optimiser,
the rest. Beside it: the time the step spends building its batch in Python, and how many operator calls a
step makes (top-level, and counting the calls they make). ``--width 8`` keeps the batches and shrinks the
matrix products to almost nothing, which leaves the per-call cost and attention's T × T passes. The profiler
adds its own per-call cost, so the shares are what to read, not the absolute times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import profile

from gapeval.models.toy.train import TrainConfig, _Run

KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "GELU": ("aten::gelu", "aten::gelu_backward"),
    "copies": ("aten::copy_", "aten::cat"),
    "gathers": ("aten::index_select", "aten::index_add_", "aten::scatter_add_", "aten::index"),
    "softmax": ("aten::_softmax", "aten::_softmax_backward_data"),
    "layer norms": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "optimiser": ("aten::_fused_adamw_", "aten::_foreach_norm", "aten::_foreach_mul_"),
}
KIND_OF = {op: kind for kind, ops in KINDS.items() for op in ops}


def batch_seconds(run: _Run, steps: int) -> float:
    """CPU seconds a step spends sampling examples and building their sequences (the sampler's state is kept)."""
    state = run.sampler.rng.getstate()
    start = time.process_time()
    for _ in range(steps):
        examples = [run.sampler.sample(1.0) for _ in range(run.cfg.batch_size)]
        [run.builder.example_of(e) for e in examples]
    run.sampler.rng.setstate(state)
    return (time.process_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default="packed", choices=("packed", "reference"))
    parser.add_argument("--from-step", type=int, default=12000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--width", type=int, default=128, help="d_model (default 128, the shipped width)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(TrainConfig(engine=args.engine, d_model=args.width), Path(tmp))
        for step in range(args.from_step, args.from_step + 3):
            run._step(step)
        first = args.from_step + 3
        building = batch_seconds(run, args.steps)
        with profile() as prof:
            for step in range(first, first + args.steps):
                run._step(step)
    own: dict[str, float] = defaultdict(float)
    for row in prof.key_averages():
        own[KIND_OF.get(row.key, "the rest")] += row.self_cpu_time_total / 1e3 / args.steps
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    outermost = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    total = sum(own.values())
    print(
        f"toy shared, {args.engine} engine, width {args.width}, {args.steps} steps from step {first}, one thread; "
        f"operator time {total:.1f} ms a step (profiled)"
    )
    print()
    print("| kind | ms a step | share |")
    print("|---|---|---|")
    for kind in [*KINDS, "the rest"]:
        print(f"| {kind} | {own[kind]:.1f} | {own[kind] / total:.1%} |")
    print()
    print(f"building the batch in Python (not profiled): {building * 1e3:.1f} ms a step")
    print(
        f"operator calls a step: {len(outermost) / args.steps:.0f} top-level, "
        f"{len(events) / args.steps:.0f} counting nested ones"
    )


if __name__ == "__main__":
    main()
