"""Wall time of a whole ``gapeval probe`` run (imports, capture, probes with the permutation test, the
untrained-model baseline, held-out erasure), run as a user runs it; target ≤ 60 s on the toy.

Prints the command's wall time (best of ``--repeats``) and the stage timings ``probe.json`` records.

    python benchmarks/probe_study.py --model toy --repeats 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--attribute", default="colour")
    parser.add_argument("--position", default="last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    best, stages = float("inf"), {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                sys.executable, "-c", "import sys; from gapeval.cli import main; sys.exit(main())", "probe", "--model", args.model, "--attribute",
                args.attribute, "--position", args.position, "--seed", str(args.seed), "--out", tmp,
            ]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds = time.perf_counter() - start
            if seconds < best:
                best, stages = seconds, json.loads((Path(tmp) / "probe.json").read_text())["timings"]
    print(f"gapeval probe --model {args.model} --attribute {args.attribute} --position {args.position}")
    print(f"  wall (imports included, best of {args.repeats}): {best:.1f} s; target <= 60 s")
    for name, value in stages.items():
        print(f"  {name:12s} {value:6.1f} s")


if __name__ == "__main__":
    main()
