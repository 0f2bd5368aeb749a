"""Which process this is when a run is scaled out with ``accelerate launch`` (or ``torchrun``).

    accelerate launch --num_processes 4 -m gapeval run --model janus:PATH --suite synth --out runs/X
    accelerate launch --multi_gpu --num_processes 2 -m gapeval run ...   # CPU-only machine (gloo)
    torchrun --nproc_per_node 2 -m gapeval run ...                        # the same without accelerate

The runner only needs a rank, a world size and a barrier: each rank evaluates its share of the items into its
own shard file and rank 0 merges them in suite order, so no results travel through collectives. On a machine
without CUDA the process group uses gloo (accelerate needs ``cpu=True`` for that); with CUDA, accelerate pins
each process to GPU ``LOCAL_RANK`` so adapters that ask for ``"cuda"`` land on their own device. A model too
large for one GPU runs in a single process with ``--model-arg device_map=auto`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

# Ranks wait at a barrier while the slowest one finishes its shard; real models can take hours per shard.
BARRIER_TIMEOUT = timedelta(hours=12)


def _no_barrier() -> None:
    """A single process has nobody to wait for."""


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = field(default=_no_barrier, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """How many processes the launcher started (1 when run plainly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def current() -> Processes:
    """This process's place in the launch; initialises the process group on first use under a launcher."""
    if launched_world_size() <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
    return Processes(rank=state.process_index, world=state.num_processes, barrier=state.wait_for_everyone)
