"""Would a fused GELU speed up the fast path's MLP? A measured answer to an estimate in docs/toy-model.md.

    python benchmarks/fused_gelu.py [--rows 1500] [--repeats 200]

The fast path spends a few per cent of a step in torch's exact-erf GELU and its gradient. torch's backward
computes erf and exp again from the saved input; a kernel that computes the slope (``cdf + x * pdf``) once in
the forward pass, beside the output, leaves the backward a single multiplication. This script builds such a
kernel (C++, ``torch.utils.cpp_extension.load_inline``, with torch's own vectorised erf and exp; needs a C++
compiler and takes a minute or more to build) and times, on one thread and on the MLP's shape in a training
step (``--rows`` packed tokens × 4·d_model), the forward and backward of each, interleaved. It also prints the
largest difference from torch's results: the kernel was not made byte-identical, so the number says how far a
recipe built on it would drift per call. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import load_inline

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/cpu/vec/vec.h>
#include <cmath>

using Vec = at::vec::Vectorized<float>;

// GELU (exact erf) and its slope d gelu / dx, in one pass over x.
std::vector<at::Tensor> gelu_and_slope(const at::Tensor& x) {
  TORCH_CHECK(x.is_contiguous() && x.scalar_type() == at::kFloat, "gelu_and_slope: contiguous float32 only");
  auto y = at::empty_like(x);
  auto s = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  float* ps = s.data_ptr<float>();
  const int64_t n = x.numel();
  const float alpha = float(M_SQRT1_2), beta = float(M_2_SQRTPI * M_SQRT1_2 * 0.5);
  const Vec va(alpha), vb(beta), one(1.f), half(0.5f), minus_half(-0.5f);
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    const Vec v = Vec::loadu(px + i);
    const Vec cdf = half * (one + (v * va).erf());
    (v * cdf).store(py + i);
    (cdf + v * (vb * (v * v * minus_half).exp())).store(ps + i);
  }
  for (; i < n; ++i) {
    const float v = px[i];
    const float cdf = 0.5f * (1.f + std::erf(v * alpha));
    py[i] = v * cdf;
    ps[i] = cdf + v * (beta * std::exp(v * v * -0.5f));
  }
  return {y, s};
}
"""


def build():
    """The extension, compiled for the instruction set torch's own kernels use on this CPU."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = {
        "AVX2": ["-mavx2", "-mfma"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    }
    if capability not in flags:
        raise SystemExit(f"no build flags for torch's CPU capability {capability!r}")
    cflags = ["-O2", *flags[capability], f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"]
    return load_inline(
        "fused_gelu_bench",
        cpp_sources=SOURCE,
        functions=["gelu_and_slope"],
        extra_cflags=cflags,
        build_directory=tempfile.mkdtemp(),
    )


def cpu_ms(fn, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1500, help="packed tokens (default 1500, a step's MLP)")
    parser.add_argument("--width", type=int, default=512, help="MLP hidden width (default 512 = 4 x d_model)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    started = time.perf_counter()
    ext = build()
    print(f"built in {time.perf_counter() - started:.0f} s for {torch.backends.cpu.get_cpu_capability()}")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.width, generator=gen) * 2
    dy = torch.randn(args.rows, args.width, generator=gen)
    y, slope = ext.gelu_and_slope(x)
    print(
        f"largest difference from torch: forward {(y - F.gelu(x)).abs().max().item():.1e}, "
        f"backward {(dy * slope - torch.ops.aten.gelu_backward(dy, x)).abs().max().item():.1e}"
    )
    ops = {
        "torch forward (gelu)": lambda: F.gelu(x),
        "torch backward (gelu_backward: erf, exp again)": lambda: torch.ops.aten.gelu_backward(dy, x),
        "fused forward (gelu and slope)": lambda: ext.gelu_and_slope(x),
        "fused backward (dy * slope)": lambda: dy * slope,
    }
    times = {name: [] for name in ops}
    for _ in range(args.rounds):
        for name, fn in ops.items():
            fn()
            times[name].append(cpu_ms(fn, args.repeats))
    print(
        f"\n({args.rows}, {args.width}) float32, one thread, CPU ms per call (median of {args.rounds} rounds)"
    )
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    for name, ms in median.items():
        print(f"| {name} | {ms:.3f} |")
    names = list(median)
    torch_total, fused_total = median[names[0]] + median[names[1]], median[names[2]] + median[names[3]]
    print(f"| torch, forward + backward | {torch_total:.3f} |")
    print(f"| fused, forward + backward | {fused_total:.3f} |")
    print(f"fused vs torch: {torch_total / fused_total:.2f}x")


if __name__ == "__main__":
    main()
