"""Seconds per edit for every editor on the built-in UMM (training only), and the whole ``gapeval edit`` command.

    python benchmarks/edit_speed.py --variant shared --edits 8 --threads 1
    python benchmarks/edit_speed.py --command --edits 20   # gapeval edit, LoRA, 4 conditions (target: ≤ 2 min)

Batch mode (one edit for all specs) and single mode (one edit per spec), trained through und and through gen,
with the settings ``gapeval edit`` uses (rehearsal / kept keys and key statistics from the retain side of the
realm split).
"""

from __future__ import annotations

import argparse
import time

import torch

from gapeval.models.toy.adapter import ToyAdapter
from gapeval.suites import get_suite
from gapeval.synth.world import World
from interventions.editing import editor_names
from interventions.editing.edit_run import build_editor
from interventions.editing.specs import hold_out, synth_specs


def seconds(editor, model, groups, via: str) -> float:
    start = time.perf_counter()
    for group in groups:
        with editor.apply(model, group, via=via):
            pass
    return time.perf_counter() - start


def command_seconds(edits: int, variant: str, threads: int) -> float:
    """Wall seconds of ``gapeval edit --edits N`` (LoRA, all four conditions, judging included)."""
    import tempfile

    from gapeval.cli import main as gapeval

    spec = "toy" if variant == "shared" else f"toy:{variant}"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        argv = ["edit", "--model", spec, "--edits", str(edits), "--threads", str(threads), "--out", out]
        if gapeval(argv) != 0:
            raise SystemExit("gapeval edit failed")
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="shared")
    p.add_argument("--edits", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--command", action="store_true", help="time the whole gapeval edit command instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.command:
        total = command_seconds(args.edits, args.variant, args.threads)
        print(f"gapeval edit --edits {args.edits} (lora, 4 conditions): {total:.0f} s (target ≤ 120 s)")
        return
    model = ToyAdapter.from_spec(args.variant)
    world, pool = World(0), get_suite("synth").items
    specs = synth_specs(world, "edit", args.edits)
    held = hold_out(world, specs, pool)
    editors = [build_editor(name, held) for name in editor_names()]
    start = time.perf_counter()
    for editor in editors:
        editor.prepare(model)
    print(
        f"once per model (key covariance, the model's own answers to keep): {time.perf_counter() - start:.1f} s"
    )
    print(f"{'editor':9} {'mode':6} {'via':4} {'s/edit':>7}")
    for editor in editors:
        for mode, groups in (("batch", [specs]), ("single", [[s] for s in specs])):
            for via in ("und", "gen"):
                total = seconds(editor, model, groups, via)
                print(f"{editor.name:9} {mode:6} {via:4} {total / len(specs):7.3f}")


if __name__ == "__main__":
    main()
