"""Train the built-in UMM on its world (``gapeval train-toy``): checkpoints along the way, loss per direction."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gapeval.models.toy.checkpoint import save_checkpoint
from gapeval.models.toy.codec import ImageCodec
from gapeval.models.toy.data import MixtureSampler, suite_keys, vocabulary_texts
from gapeval.models.toy.model import ToyConfig, ToyUMM
from gapeval.models.toy.sequence import IGNORE, SequenceBuilder
from gapeval.models.toy.tokenizer import TextTokenizer
from gapeval.synth.world import World


@dataclass
class TrainConfig:
    variant: str = "shared"
    steps: int = 24000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 300
    weight_decay: float = 0.01
    seed: int = 0
    world_seed: int = 0
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    cell_bias: bool = True
    cell_output: bool = True
    cell_pointer: bool = True
    codebook_size: int = 64
    codec_images: int = 600
    threads: int = 1  # one core per variant: both variants train side by side on a 2-core machine
    # Fractions of training at which to keep a checkpoint (the emergence study reads these).
    save_at: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5, 0.75, 1.0])
    log_every: int = 100
    # Length-sorted sub-batches per step (same loss, less padding); see direction_losses.
    groups: int = 4

    @classmethod
    def quick(cls, variant: str = "shared") -> TrainConfig:
        """A few seconds of training: for tests of the machinery, not for accuracy."""
        return cls(
            variant=variant,
            steps=30,
            batch_size=8,
            d_model=32,
            n_layers=2,
            n_heads=2,
            warmup=5,
            save_at=[0.5, 1.0],
            log_every=10,
            codec_images=200,
            threads=1,
        )


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def direction_losses(
    model: ToyUMM, builder: SequenceBuilder, examples, groups: int = 1
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean cross-entropy over answer tokens, plus the same split by direction (for the log).

    Sequences are sorted by length and run as ``groups`` padded sub-batches: the loss is the same token mean,
    with less padding to compute (padding is ~45 % of a random batch of 32 from the mixture).
    """
    seqs = [builder.example(e.prompt, e.image, e.direction, e.answer) for e in examples]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    size = -(-len(order) // groups)
    total, count = torch.zeros(()), 0
    sums = {"und": [0.0, 0], "gen": [0.0, 0]}
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        batch, target = builder.collate([seqs[i] for i in rows])
        h = model(batch)
        memory = model.cell_memory(batch, h)
        valid = target != IGNORE
        where = valid.nonzero()[:, 0]  # logits only where there is a target: the row of each answer token
        logits = model.joint_logits(h[valid], memory[where] if memory is not None else None)
        per_token = F.cross_entropy(logits, target[valid], reduction="none")
        total, count = total + per_token.sum(), count + len(per_token)
        is_gen = torch.tensor([examples[i].direction == "gen" for i in rows], dtype=torch.bool)[where]
        for name, sel in (("und", ~is_gen), ("gen", is_gen)):
            sums[name][0] += float(per_token[sel].detach().sum())
            sums[name][1] += int(sel.sum())
    parts = {k: s / n if n else float("nan") for k, (s, n) in sums.items()}
    return total / count, parts


def _eval_losses(model, builder, examples) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        sums = {"und": [], "gen": []}
        for i in range(0, len(examples), 64):
            _, parts = direction_losses(model, builder, examples[i : i + 64])
            for k, v in parts.items():
                if not math.isnan(v):
                    sums[k].append(v)
    model.train()
    return {k: round(sum(v) / len(v), 6) for k, v in sums.items() if v}


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Train one variant; write ``out_dir/step-XXXXXX/`` checkpoints and ``out_dir/train_log.jsonl``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    world = World(cfg.world_seed)
    tokenizer = TextTokenizer.build(vocabulary_texts(world))
    codec = ImageCodec.fit(k=cfg.codebook_size, n_images=cfg.codec_images, seed=cfg.seed)
    model_cfg = ToyConfig(
        variant=cfg.variant,
        n_text=len(tokenizer),
        n_codes=codec.size,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        cell_bias=cfg.cell_bias,
        cell_output=cfg.cell_output,
        cell_pointer=cfg.cell_pointer,
    )
    model = ToyUMM(model_cfg)
    model.set_text_cells(tokenizer.cell_ids())
    builder = SequenceBuilder(tokenizer, codec, cfg.variant)
    sampler = MixtureSampler(world, cfg.seed, suite_keys(cfg.world_seed))
    val_sampler = MixtureSampler(world, cfg.seed + 10_000, suite_keys(cfg.world_seed))
    val = [val_sampler.sample(1.0) for _ in range(256)]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    save_steps = {max(1, round(f * cfg.steps)) for f in cfg.save_at}
    log_path = out / "train_log.jsonl"
    log_path.write_text("")
    start, window = time.time(), {"und": [], "gen": []}
    bar = tqdm(range(cfg.steps), desc=f"train-toy {cfg.variant}", disable=not progress, mininterval=2)
    for step in bar:
        level = min(1.0, step / (0.3 * cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        examples = [sampler.sample(level) for _ in range(cfg.batch_size)]
        loss, parts = direction_losses(model, builder, examples, cfg.groups)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for k, v in parts.items():
            if not math.isnan(v):
                window[k].append(v)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            row = {"step": done, "lr": round(lr_at(step, cfg), 6), "elapsed_s": round(time.time() - start, 1)}
            row |= {f"loss_{k}": round(sum(v) / len(v), 4) for k, v in window.items() if v}
            window = {"und": [], "gen": []}
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(und=row.get("loss_und"), gen=row.get("loss_gen"))
        if done in save_steps:
            meta = {
                "step": done,
                "train": asdict(cfg),
                "val_loss": _eval_losses(model, builder, val),
                "elapsed_s": round(time.time() - start, 1),
            }
            save_checkpoint(out / f"step-{done:06d}", model, tokenizer, codec, meta)
    return out / f"step-{cfg.steps:06d}"
