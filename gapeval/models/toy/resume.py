"""What a killed ``train-toy`` run needs to continue bit for bit: ``OUT/resume/step-XXXXXX/``.

``tensors.safetensors`` holds the fp32 weights, the optimiser's moments and torch's RNG state (a uint8 tensor);
``state.json`` the step, the training config, the optimiser's hyper-parameters, Python RNG states (as lists),
the loss window not yet logged and the byte length of each log file. No pickle anywhere. A state is written
under a temporary name and renamed into place (atomic), and only then are older states removed, so a kill at
any moment leaves one complete state behind. :func:`run_lock` keeps a second process from training the same
folder at the same time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded there
    fcntl = None

import torch
from safetensors.torch import load_file, save_file

RESUME = "resume"
LOCK = ".training.lock"
_PREFIX = "step-"


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` for this training process. A second process training or resuming the same folder would
    write its log lines, checkpoints and states between the first's; it is refused instead. The lock is the
    operating system's (``flock``), so a killed process never leaves it held."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"{out}: another process is training this run; wait for it to finish or stop it first"
                ) from None
        yield


def rng_state_to_json(state: tuple) -> list:
    """``random.Random.getstate()`` as JSON: ``[version, [625 ints], gauss_next]``."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_state_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return version, tuple(internal), gauss


@dataclass
class TrainState:
    """A training run at the end of step ``step``; ``info`` is state.json, ``tensors`` the safetensors file."""

    step: int
    info: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @classmethod
    def capture(
        cls, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, info: dict[str, Any]
    ) -> TrainState:
        """Snapshot the model, the optimiser and the global RNGs; ``info`` adds the loop's own state."""
        tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
        opt_state = opt.state_dict()
        for index, values in opt_state["state"].items():
            tensors |= {f"optim.{index}.{k}": v.detach().clone() for k, v in values.items()}
        tensors["rng.torch"] = torch.get_rng_state()
        info = {
            "step": step,
            **info,
            "optim_groups": opt_state["param_groups"],
            "rng_python": rng_state_to_json(random.getstate()),
        }
        return cls(step, info, tensors)

    def restore(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        """Put the weights, the optimiser and the global RNGs back as they were at :meth:`capture`."""
        model.load_state_dict({k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")})
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self.tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                moments.setdefault(int(index), {})[name] = value
        groups = [g | {"betas": tuple(g["betas"])} for g in self.info["optim_groups"]]
        opt.load_state_dict({"state": moments, "param_groups": groups})
        torch.set_rng_state(self.tensors["rng.torch"])
        random.setstate(rng_state_from_json(self.info["rng_python"]))

    def save(self, out: Path) -> Path:
        """Write ``out/resume/step-XXXXXX/`` atomically, then drop every other state."""
        root = Path(out) / RESUME
        final = root / f"{_PREFIX}{self.step:06d}"
        tmp = root / f".{final.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(self.info))
        for name in ("tensors.safetensors", "state.json"):
            _fsync(tmp / name)
        os.replace(tmp, final)
        _fsync(root)
        for old in root.iterdir():
            if old != final:
                shutil.rmtree(old)
        return final

    @classmethod
    def load(cls, out: str | Path) -> TrainState:
        """The newest complete state of the run in ``out``."""
        root = Path(out) / RESUME
        states = sorted(root.glob(f"{_PREFIX}*")) if root.is_dir() else []
        if not states:
            raise FileNotFoundError(f"{root}: no saved training state to resume from")
        info = json.loads((states[-1] / "state.json").read_text())
        return cls(int(info["step"]), info, load_file(str(states[-1] / "tensors.safetensors")))


def sync_file(path: Path) -> int:
    """Flush ``path`` to disk and return its length (a log's resume point)."""
    _fsync(path)
    return path.stat().st_size


def truncate(path: Path, length: int) -> None:
    """Cut a log back to its length at the saved state (lines written after it are written again)."""
    if not path.exists() or path.stat().st_size < length:
        raise ValueError(f"{path}: missing or shorter than at the saved training state ({length} bytes)")
    with open(path, "r+b") as f:
        f.truncate(length)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
