"""Scale-out: sharded runs merge into exactly the single-process results, also after a kill."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gapeval.distributed import Processes
from gapeval.models.oracle import OracleAdapter
from gapeval.rundir import RESULTS, SHARDS
from gapeval.runner import run
from gapeval.synth.suite import build_suite

REPO = Path(__file__).resolve().parents[1]
ORACLE = {"und_error": 0.2, "gen_error": 0.4, "correlation": 0.3}


@pytest.fixture(scope="module")
def small():
    return build_suite(40, seed=1)


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    return run(
        OracleAdapter(small, **ORACLE), small, out, suite_id="s", batch_size=4, progress=False, bootstrap=5
    )


def _threads(small, out, world, model_factory=lambda items: OracleAdapter(items, **ORACLE)):
    """``world`` ranks as threads sharing a real barrier: the same file protocol as separate processes."""
    barrier = threading.Barrier(world, timeout=60)
    errors = []

    def rank(r):
        try:
            procs = Processes(rank=r, world=world, barrier=barrier.wait)
            run(
                model_factory(small),
                small,
                out,
                suite_id="s",
                batch_size=4,
                progress=False,
                bootstrap=5,
                processes=procs,
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_run_merges_to_single_process_results(small, reference, tmp_path, world):
    out = tmp_path / "run"
    assert _threads(small, out, world) == []
    assert (out / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()
    assert not (out / SHARDS).exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        p.name for p in (reference / "images").iterdir()
    )


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so the runner does not record it as a model error."""


def test_killed_sharded_run_resumes_with_other_world_size(small, reference, tmp_path):
    calls = {"n": 0}

    class DiesAfterThreeBatches(OracleAdapter):
        def understand(self, requests):
            calls["n"] += 1
            if calls["n"] > 3:
                raise Killed
            return super().understand(requests)

    out = tmp_path / "run"
    with pytest.raises(Killed):
        run(
            DiesAfterThreeBatches(small, **ORACLE),
            small,
            out,
            suite_id="s",
            batch_size=4,
            progress=False,
            processes=Processes(0, 2),
        )
    shard = out / SHARDS / "rank-0.jsonl"
    assert shard.read_bytes().count(b"\n") == 12
    with open(shard, "ab") as f:
        f.write(b'{"id": "torn')  # a write cut short
    assert _threads(small, out, 3) == []
    assert (out / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()
    (out / "summary.json").unlink()
    run(
        OracleAdapter(small, **ORACLE), small, out, suite_id="s", batch_size=4, progress=False, bootstrap=5
    )  # nothing pending
    assert (out / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes that each import torch and accelerate: ~19 s; run with GAPEVAL_SLOW=1
def test_accelerate_launch_two_cpu_processes(reference, tmp_path):
    out = tmp_path / "launched"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "gapeval", "run", "--model", "oracle"]
    launch += [
        "--suite",
        "synth:n=40,seed=1",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--no-progress",
        "--bootstrap",
        "20",
    ]
    launch += [f"--model-arg={k}={v}" for k, v in ORACLE.items()]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / RESULTS).read_bytes() == (reference / RESULTS).read_bytes()
    assert '"processes": 2' in (out / "manifest.json").read_text()
    assert (out / "summary.json").exists() and not (out / SHARDS).exists()
