"""Is the fast path (``--engine packed``) the reference recipe up to float order? Two checks, one command each.

    python -m experiments.fast_path_check agreement [--checkpoint DIR] [--seed 0]
    python -m experiments.fast_path_check compare --pair REF_RUN FAST_RUN [--pair ...] [--reference RUN ...]

``agreement`` puts both engines on the same weights and batches: the loss and every parameter's gradient,
each also against the float64 gradient both approximate (batches of 32 at two curriculum levels), the loss of
single sequences of every task, and fused against per-tensor AdamW fed the same gradients for 50 steps of the
schedule. Two float orders of one loss differ by about their own distance from float64; a real difference in
what is computed would show as a gap far larger than that.

``compare`` reads training runs' logs (``train_log.jsonl``, ``emergence.jsonl``): a pair is the two engines
trained from one seed (the same batches, the same initial weights), so their difference is the engine's effect
plus the chaos a float-order change sets off; unpaired reference runs give the seed spread. It prints both
directions' suite accuracy and the windowed understanding loss at every step all runs logged, the paired
differences, and a one-sided sign test on them at the last step every pair reached (few pairs: it can only
ever be suggestive, which it says).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence as Seq
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "gapeval" / "checkpoints" / "toy-shared" / "step-003000"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_step(rows: Seq[dict]) -> dict[int, dict]:
    return {int(r["step"]): r for r in rows}


def common_steps(runs: Seq[dict[int, dict]], every: int) -> list[int]:
    """Steps (multiples of ``every``) that every run logged."""
    steps = set.intersection(*(set(r) for r in runs)) if runs else set()
    return sorted(s for s in steps if s % every == 0)


def sign_test(differences: Seq[float]) -> tuple[int, int, float]:
    """(positive, non-zero, one-sided exact p of at least that many positive under a fair coin)."""
    signs = [d for d in differences if d != 0]
    k, n = sum(d > 0 for d in signs), len(signs)
    p = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n if n else 1.0
    return k, n, p


# --- agreement -----------------------------------------------------------------------------------------------


def _relative(a, b) -> float:
    return float((a.double() - b.double()).norm() / max(float(b.double().norm()), 1e-30))


def agreement(checkpoint: Path, seed: int, per_task: int) -> None:
    import torch

    from gapeval.models.toy.checkpoint import load_checkpoint
    from gapeval.models.toy.data import MixtureSampler, suite_keys
    from gapeval.models.toy.packed import make_optimizer, packed_losses
    from gapeval.models.toy.sequence import SequenceBuilder
    from gapeval.models.toy.train import TrainConfig, lr_at, reference_losses
    from gapeval.synth.world import World

    torch.set_num_threads(1)
    model, tokenizer, codec, meta = load_checkpoint(checkpoint)
    model.train()
    cfg = TrainConfig(**meta["train"])
    world = World.extended(cfg.world_seed, cfg.n_realms, cfg.pictured_share)
    builder = SequenceBuilder(tokenizer, codec, model.input_variant)
    sampler = MixtureSampler(world, seed + 20_000, suite_keys(cfg.world_seed), cfg.consistency)
    params = [p for p in model.parameters()]

    def run(losses, groups, seqs):
        loss, _ = model.training_losses(losses, builder, seqs, groups).mean()
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    def worst(grads, against) -> str:
        gap, name = max(
            (_relative(g, a), n)
            for (n, _), a, g in zip(model.named_parameters(), against, grads, strict=True)
            if a is not None
        )
        return f"{gap:.1e} ({name})"

    print(f"checkpoint {checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint}")
    print(
        "| batch | loss reference | loss packed | loss rel. diff | worst parameter's gradient rel. diff: packed vs "
        "reference | reference vs float64 | packed vs float64 | packed vs reference, both in float64 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for level in (0.42, 1.0):
        seqs = [builder.example_of(sampler.sample(level)) for _ in range(cfg.batch_size)]
        model.double()  # the same weights exactly; the gradient both float32 engines approximate
        _, truth = run(reference_losses, cfg.groups, seqs)
        _, fast64 = run(packed_losses, cfg.groups, seqs)
        model.float()
        ref, ref_g = run(reference_losses, cfg.groups, seqs)
        fast, fast_g = run(packed_losses, cfg.groups, seqs)
        print(
            f"| {cfg.batch_size} sequences, curriculum {level} | {float(ref):.6f} | {float(fast):.6f} | "
            f"{abs(float(fast - ref)) / float(ref):.1e} | {worst(fast_g, ref_g)} | {worst(ref_g, truth)} | "
            f"{worst(fast_g, truth)} | {worst(fast64, truth)} |"
        )
    worst_single: dict[str, float] = {}
    counts: dict[str, int] = {}
    while min(counts.get(name, 0) for name, *_ in sampler.mixture) < per_task:
        example = sampler.sample(1.0)
        if counts.get(example.task, 0) >= per_task:
            continue
        counts[example.task] = counts.get(example.task, 0) + 1
        with torch.no_grad():
            (ref, _), (fast, _) = (
                model.training_losses(losses, builder, [builder.example_of(example)], 1).mean()
                for losses in (reference_losses, packed_losses)
            )
        diff = abs(float(fast - ref)) / max(float(ref), 1e-12)
        worst_single[example.task] = max(worst_single.get(example.task, 0.0), diff)
    print()
    print(f"single sequences, {per_task} of every task: worst loss rel. diff per task")
    print(", ".join(f"{t} {d:.1e}" for t, d in sorted(worst_single.items())))

    # AdamW: the two implementations, fed the same gradients, for 50 steps of the schedule from step 3000.
    copies = [{n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()} for _ in range(2)]
    optimizers = []
    for weights, fused in zip(copies, (False, True), strict=True):
        decay = [p for n, p in weights.items() if p.dim() >= 2 and "embed" not in n]
        rest = [p for n, p in weights.items() if not (p.dim() >= 2 and "embed" not in n)]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        optimizers.append(make_optimizer(groups, cfg.lr, fused))
    gen = torch.Generator().manual_seed(seed)
    for step in range(3000, 3050):
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
        grads = {n: torch.randn(p.shape, generator=gen) * 1e-3 for n, p in copies[0].items()}
        for weights, opt in zip(copies, optimizers, strict=True):
            for n, p in weights.items():
                p.grad = grads[n].clone()
            opt.step()
    gap = max(float((copies[0][n] - copies[1][n]).detach().abs().max()) for n in copies[0])
    print()
    print(
        f"AdamW, 50 steps of the schedule (lr from step 3000), the same gradients: fused vs per-tensor max |Δw| {gap:.1e}"
    )


# --- compare -------------------------------------------------------------------------------------------------


def compare(pairs: Seq[tuple[Path, Path]], references: Seq[Path], every: int) -> None:
    runs = [p for pair in pairs for p in pair] + list(references)
    emergence = {r: by_step(read_jsonl(r / "emergence.jsonl")) for r in runs}
    losses = {r: by_step(read_jsonl(r / "train_log.jsonl")) for r in runs}
    steps = common_steps([emergence[r] for r in runs], every)
    names = [r.name for r in runs]
    print(
        "suite accuracy und / gen (whole suite, greedy), and the windowed und training loss, at steps every run logged"
    )
    print()
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(runs))
    for s in steps:
        cells = []
        for r in runs:
            e, t = emergence[r][s], losses[r].get(s, {})
            cells.append(
                f"{e['und_acc']:.3f} / {e['gen_acc']:.3f} (loss {t.get('loss_und', float('nan')):.3f})"
            )
        print(f"| {s} | " + " | ".join(cells) + " |")
    if steps:
        print()
        print(f"per category at step {steps[-1]}, und / gen:")
        print()
        print("| category | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(runs))
        for category in emergence[runs[0]][steps[-1]].get("categories", {}):
            cells = [emergence[r][steps[-1]]["categories"][category] for r in runs]
            print(
                f"| {category} | "
                + " | ".join(f"{c['und_acc']:.2f} / {c['gen_acc']:.2f}" for c in cells)
                + " |"
            )
    if not pairs:
        return
    last = common_steps([emergence[p] for pair in pairs for p in pair], every)
    if not last:
        print("\nno step that every pair logged")
        return
    s = last[-1]
    print()
    print(f"paired differences (fast − reference) at step {s}, the last step every pair logged:")
    for key in ("und_acc", "gen_acc"):
        diffs = [emergence[f][s][key] - emergence[r][s][key] for r, f in pairs]
        k, n, p = sign_test(diffs)
        shown = ", ".join(f"{d:+.3f}" for d in diffs)
        print(f"- {key}: {shown}; {k} of {n} positive, one-sided sign test p = {p:.3g}")
    print(
        f"(with {len(pairs)} pair(s) the smallest possible p is {0.5 ** len(pairs):.3g}: suggestive at most)"
    )
    print()
    print("along training (every common step after 0; the steps of one run are not independent, so no test):")
    for r, f in pairs:
        shared = [t for t in common_steps([emergence[r], emergence[f]], every) if t > 0]
        diffs = [emergence[f][t]["und_acc"] - emergence[r][t]["und_acc"] for t in shared]
        above = sum(d > 0 for d in diffs)
        print(
            f"- {f.name} − {r.name}: und higher at {above} of {len(diffs)} steps, "
            f"mean difference {sum(diffs) / max(len(diffs), 1):+.3f} (steps {shared[0] if shared else '-'}–"
            f"{shared[-1] if shared else '-'})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="check", required=True)
    a = sub.add_parser("agreement", help="both engines on one checkpoint's weights and batches")
    a.add_argument(
        "--checkpoint",
        type=Path,
        default=CHECKPOINT,
        help="a toy checkpoint (default: shipped shared, step 3000)",
    )
    a.add_argument(
        "--seed", type=int, default=0, help="draws the batches and the AdamW gradients (default 0)"
    )
    a.add_argument("--per-task", type=int, default=20, help="single sequences per task (default 20)")
    c = sub.add_parser("compare", help="training runs' logs at matched steps")
    c.add_argument("--pair", nargs=2, type=Path, action="append", default=[], metavar=("REF_RUN", "FAST_RUN"))
    c.add_argument("--reference", nargs="+", type=Path, default=[], metavar="RUN", help="unpaired runs")
    c.add_argument("--every", type=int, default=1500, help="compare at multiples of this step (default 1500)")
    args = parser.parse_args(argv)
    if args.check == "agreement":
        agreement(args.checkpoint, args.seed, args.per_task)
    else:
        if not args.pair and not args.reference:
            parser.error("compare needs --pair or --reference")
        compare([tuple(p) for p in args.pair], args.reference, args.every)


if __name__ == "__main__":
    main()
