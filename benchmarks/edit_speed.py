"""Seconds per edit for both editors on the built-in UMM (training only; judging is timed by `gapeval edit`).

    python benchmarks/edit_speed.py --variant shared --edits 8 --threads 1

Batch mode (one edit for all specs) and single mode (one edit per spec), trained through und and through gen,
with the settings ``gapeval edit`` uses (rehearsal / preserved keys from the synth world).
"""

from __future__ import annotations

import argparse
import time

import torch

from gapeval.models.toy.adapter import ToyAdapter
from gapeval.suites import get_suite
from gapeval.synth.world import World
from interventions.editing.locate import LocateEditor
from interventions.editing.lora import LoraEditor
from interventions.editing.specs import locality_items, retain_items, synth_specs


def seconds(editor, model, groups, via: str) -> float:
    start = time.perf_counter()
    for group in groups:
        with editor.apply(model, group, via=via):
            pass
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="shared")
    p.add_argument("--edits", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = ToyAdapter.from_spec(args.variant)
    world, pool = World(0), get_suite("synth").items
    specs = synth_specs(world, "edit", args.edits)
    retain = retain_items(world, specs, locality_items(specs, pool), n_world=64, n_other=32)
    lora, locate = LoraEditor(retain=retain), LocateEditor(corpus=pool, retain=retain)
    start = time.perf_counter()
    for editor in (lora, locate):
        editor.prepare(model)
    print(
        f"once per model (key covariance, the model's own answers to keep): {time.perf_counter() - start:.1f} s"
    )
    print(f"{'editor':8} {'mode':6} {'via':4} {'s/edit':>7}")
    for editor in (lora, locate):
        for mode, groups in (("batch", [specs]), ("single", [[s] for s in specs])):
            for via in ("und", "gen"):
                total = seconds(editor, model, groups, via)
                print(f"{editor.name:8} {mode:6} {via:4} {total / len(specs):7.3f}")


if __name__ == "__main__":
    main()
