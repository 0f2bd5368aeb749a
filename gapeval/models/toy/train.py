"""Train the built-in UMM on its world (``gapeval train-toy``): checkpoints along the way, loss per direction.

A run can be resumed after a kill (:func:`resume`, state in :mod:`.resume`) and can log the suite's scores
along the way (``eval_every``, with an evaluator such as :mod:`gapeval.emergence`'s); neither changes the
checkpoints it writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from gapeval.models.toy.architectures import ARCHITECTURES, build_model
from gapeval.models.toy.checkpoint import save_checkpoint
from gapeval.models.toy.codec import ImageCodec
from gapeval.models.toy.data import MixtureSampler, suite_keys, vocabulary_texts
from gapeval.models.toy.losses import Losses, reference_losses
from gapeval.models.toy.model import ToyConfig, ToyUMM
from gapeval.models.toy.packed import make_optimizer, packed_losses
from gapeval.models.toy.resume import (
    RESUME,
    TrainState,
    rng_state_from_json,
    rng_state_to_json,
    run_lock,
    sync_file,
    truncate,
)
from gapeval.models.toy.sequence import Sequence, SequenceBuilder
from gapeval.models.toy.tokenizer import TextTokenizer
from gapeval.synth.world import World

TRAIN_LOG = "train_log.jsonl"
EMERGENCE = "emergence.jsonl"  # what an evaluator appends to (gapeval.emergence)
# Builds, for a run's config and folder, the object whose ``evaluate(step, model, tokenizer, codec)`` is called
# at step 0 and every ``eval_every`` steps. It lives above the model layer (it judges with the runner), so the
# trainer takes it as an argument instead of importing it.
Evaluator = Callable[["TrainConfig", Path], Any]


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
    # Evaluate on the suite every this many steps (and at step 0), appending to emergence.jsonl; 0 = never.
    eval_every: int = 0
    # Items evaluated: the whole default suite (420), or a stratified subset of it (see emergence.eval_items).
    eval_items: int = 420
    # Save the state a killed run resumes from every this many steps (and at every checkpoint).
    resume_every: int = 500
    # How a step is computed: "reference" (the shipped recipe's bytes) or "packed" (the fast path, packed.py:
    # the same loss in another float order, so other bytes: a recipe change).
    engine: str = "reference"
    # --- training conditions (issue 23); the defaults are the shipped recipe ---
    # Taught realms: the default world's 48, a prefix of them, or those plus realms of a stream of their own
    # (World.extended: the default realms, the reserve and the synth suite stay as they are).
    n_realms: int = 48
    # Share of taught realms whose emblem is drawn in training (nested: a larger share adds realms).
    pictured_share: float = 0.5
    # Mixture weight of the cross-modal consistency task (data.realm_consistency; pictured realms only).
    consistency: float = 0.0

    def updated(self, changes: dict[str, Any]) -> TrainConfig:
        """A copy with ``changes`` (TrainConfig fields); an unknown field is a one-line error."""
        known = {f.name for f in fields(self)}
        if unknown := sorted(set(changes) - known):
            raise ValueError(f"unknown training settings {unknown}; known: {', '.join(sorted(known))}")
        return replace(self, **changes)

    @staticmethod
    def read(path: str | Path) -> dict[str, Any]:
        """Training settings from a YAML file: a mapping of TrainConfig fields."""
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of training settings, got {type(data).__name__}")
        return data

    def check(self) -> None:
        """Refuse settings no run can use, before anything is built."""
        problems = [
            (self.variant not in ARCHITECTURES, f"variant must be one of {sorted(ARCHITECTURES)}"),
            (self.engine not in ENGINES, f"engine must be one of {sorted(ENGINES)}"),
            (self.n_realms < 1, "n_realms must be at least 1"),
            (not 0 <= self.pictured_share <= 1, "pictured_share must be in [0, 1]"),
            (self.consistency < 0, "consistency must be 0 (off) or a positive mixture weight"),
            (self.consistency > 0 and self.pictured_share == 0, "the consistency task needs pictured realms"),
            (self.d_model % self.n_heads != 0, "d_model must be a multiple of n_heads"),
            (self.n_layers < 1, "n_layers must be at least 1"),
        ]
        if errors := [text for bad, text in problems if bad]:
            raise ValueError("; ".join(errors))

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
            eval_items=24,
            resume_every=10,
        )


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class Engine:
    """How a step computes its loss (``TrainConfig.engine``), and whether AdamW runs fused."""

    losses: Callable[[ToyUMM, SequenceBuilder, list[Sequence], int], Losses]
    fused_adam: bool


ENGINES = {"reference": Engine(reference_losses, False), "packed": Engine(packed_losses, True)}


def direction_losses(
    model: ToyUMM, builder: SequenceBuilder, examples, groups: int = 1
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean cross-entropy over answer tokens, plus the same split by direction (for the log)."""
    seqs = [builder.example_of(e) for e in examples]
    return model.training_losses(reference_losses, builder, seqs, groups).mean()


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


class _Run:
    """One training run: everything built from the config, and the loop's state between steps."""

    def __init__(self, cfg: TrainConfig, out: Path, evaluator: Evaluator | None = None):
        self.cfg, self.out = cfg, out
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        cfg.check()
        self.engine = ENGINES[cfg.engine]
        world = World.extended(cfg.world_seed, cfg.n_realms, cfg.pictured_share)
        self.tokenizer = TextTokenizer.build(vocabulary_texts(world))
        self.codec = ImageCodec.fit(k=cfg.codebook_size, n_images=cfg.codec_images, seed=cfg.seed)
        model_cfg = ToyConfig(
            variant=cfg.variant,
            n_text=len(self.tokenizer),
            n_codes=self.codec.size,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            cell_bias=cfg.cell_bias,
            cell_output=cfg.cell_output,
            cell_pointer=cfg.cell_pointer,
        )
        self.model = build_model(model_cfg)
        self.model.set_text_cells(self.tokenizer.cell_ids())
        self.builder = SequenceBuilder(self.tokenizer, self.codec, self.model.input_variant)
        self.sampler = MixtureSampler(world, cfg.seed, suite_keys(cfg.world_seed), cfg.consistency)
        val_sampler = MixtureSampler(world, cfg.seed + 10_000, suite_keys(cfg.world_seed), cfg.consistency)
        self.val = [val_sampler.sample(1.0) for _ in range(256)]
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
        self.opt = make_optimizer(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            cfg.lr,
            self.engine.fused_adam,
        )
        if cfg.eval_every and evaluator is None:
            raise ValueError(
                "eval_every needs an evaluator: train with gapeval.emergence.train / resume "
                "(what `gapeval train-toy` does), or pass evaluator="
            )
        self.emergence = evaluator(cfg, out) if cfg.eval_every and evaluator else None
        self.step, self.elapsed, self.window = 0, 0.0, {"und": [], "gen": []}

    def fingerprint(self) -> str:
        """What the run's data depends on besides the config: a resumed run must rebuild the same."""
        h = hashlib.sha256(json.dumps(self.tokenizer.vocab).encode())
        h.update(self.codec.codebook.tobytes())
        return h.hexdigest()

    def save_state(self) -> None:
        logs = {
            name: sync_file(self.out / name) for name in (TRAIN_LOG, EMERGENCE) if (self.out / name).exists()
        }
        info = {
            "config": asdict(self.cfg),
            "fingerprint": self.fingerprint(),
            "rng_sampler": rng_state_to_json(self.sampler.rng.getstate()),
            "window": self.window,
            "elapsed_s": self.elapsed,
            "logs": logs,
        }
        TrainState.capture(self.step, self.model, self.opt, info).save(self.out)

    def load_state(self, state: TrainState) -> None:
        if state.info["fingerprint"] != self.fingerprint():
            raise ValueError(
                f"{self.out / RESUME}: the saved run was trained on another vocabulary or codec "
                "(a different version of the world or of the toy code); it cannot be resumed"
            )
        state.restore(self.model, self.opt)
        self.sampler.rng.setstate(rng_state_from_json(state.info["rng_sampler"]))
        self.step, self.elapsed, self.window = state.step, state.info["elapsed_s"], state.info["window"]
        for name, length in state.info["logs"].items():
            truncate(self.out / name, length)

    def run(self, progress: bool) -> Path:
        cfg = self.cfg
        save_steps = {max(1, round(f * cfg.steps)) for f in cfg.save_at}
        if self.emergence and self.step == 0:
            self.emergence.evaluate(0, self.model, self.tokenizer, self.codec)
        start = time.time() - self.elapsed
        bar = tqdm(
            range(self.step, cfg.steps),
            initial=self.step,
            total=cfg.steps,
            desc=f"train-toy {cfg.variant}",
            disable=not progress,
            mininterval=2,
        )
        for step in bar:
            self._step(step)
            done = self.step = step + 1
            self.elapsed = time.time() - start
            if done % cfg.log_every == 0 or done == cfg.steps:
                row = {"step": done, "lr": round(lr_at(step, cfg), 6), "elapsed_s": round(self.elapsed, 1)}
                row |= {f"loss_{k}": round(sum(v) / len(v), 4) for k, v in self.window.items() if v}
                self.window = {"und": [], "gen": []}
                with (self.out / TRAIN_LOG).open("a") as f:
                    f.write(json.dumps(row) + "\n")
                bar.set_postfix(und=row.get("loss_und"), gen=row.get("loss_gen"))
            if done in save_steps:
                meta = {
                    "step": done,
                    "train": asdict(cfg),
                    "val_loss": _eval_losses(self.model, self.builder, self.val),
                    "elapsed_s": round(self.elapsed, 1),
                }
                save_checkpoint(self.out / f"step-{done:06d}", self.model, self.tokenizer, self.codec, meta)
            if self.emergence and (done % cfg.eval_every == 0 or done == cfg.steps):
                self.emergence.evaluate(done, self.model, self.tokenizer, self.codec)
            if done % cfg.resume_every == 0 or done in save_steps:
                self.save_state()
        return self.out / f"step-{cfg.steps:06d}"

    def _step(self, step: int) -> None:
        cfg = self.cfg
        level = min(1.0, step / (0.3 * cfg.steps))
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        examples = [self.sampler.sample(level) for _ in range(cfg.batch_size)]
        seqs = [self.builder.example_of(e) for e in examples]
        loss, parts = self.model.training_losses(self.engine.losses, self.builder, seqs, cfg.groups).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        for k, v in parts.items():
            if not math.isnan(v):
                self.window[k].append(v)


def seconds_per_step(cfg: TrainConfig, steps: int = 20, warmup: int = 3) -> float:
    """CPU seconds one training step of ``cfg`` takes here (after ``warmup`` steps), for budgeting runs."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(replace(cfg, eval_every=0), Path(tmp))
        for step in range(warmup):
            run._step(step)
        start = time.process_time()
        for step in range(warmup, warmup + steps):
            run._step(step)
        return (time.process_time() - start) / steps


def train(
    cfg: TrainConfig, out_dir: str | Path, progress: bool = True, evaluator: Evaluator | None = None
) -> Path:
    """Train one variant from scratch; write ``out_dir/step-XXXXXX/`` checkpoints, ``out_dir/train_log.jsonl``
    (and, with ``cfg.eval_every``, what ``evaluator`` logs), and the state :func:`resume` continues from."""
    cfg.check()
    out = Path(out_dir)
    with run_lock(out):
        # another run's state must never be resumed into this one
        shutil.rmtree(out / RESUME, ignore_errors=True)
        for name in (TRAIN_LOG, EMERGENCE):
            (out / name).unlink(missing_ok=True)
        (out / TRAIN_LOG).touch()
        return _Run(cfg, out, evaluator).run(progress)


def resume(out_dir: str | Path, progress: bool = True, evaluator: Evaluator | None = None) -> Path:
    """Continue the run in ``out_dir`` from its last saved state, with its saved config.

    The result (checkpoints, train log except ``elapsed_s``, emergence log except ``eval_s``) is the same as
    if the run had never stopped; a finished run is left as it is.
    """
    out = Path(out_dir)
    with run_lock(out):
        state = TrainState.load(out)
        run = _Run(TrainConfig(**state.info["config"]), out, evaluator)
        run.load_state(state)
        return run.run(progress)
