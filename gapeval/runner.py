"""Evaluate a UMM on a suite in both directions and write a resumable run directory (docs/architecture.md, "Run directories").

Appending an item's line to ``results.jsonl`` (flushed and fsynced, after its image is renamed into place) is
the commit point: a killed run resumes with the items that have no line, a torn last line is dropped, and no
item is ever written twice. Each batch of items is asked in both directions; a model exception fails only that
batch's answers in that direction, recorded as errors. Requests are seeded per item, so results do not depend
on batching or on where a run was interrupted.

Under ``accelerate launch`` each rank evaluates every ``world``-th pending item into ``shards/rank-<r>.jsonl``;
rank 0 then merges all lines in suite order, so the results file equals a single-process run's.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval import distributed
from gapeval.files import append_jsonl as append_records
from gapeval.files import atomic_write, drop_torn_tail, write_json_atomic
from gapeval.items import DIRECTIONS, Item, ItemError
from gapeval.judges.base import Judge, Verdict
from gapeval.manifest import build_manifest, check_or_write
from gapeval.models.base import UMM, Request
from gapeval.report import write_report
from gapeval.rundir import IMAGES, MANIFEST, RESULTS, SHARDS, SUMMARY, holds_error, load_records, read_lines
from gapeval.summary import summarize

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
JUDGE_THREADS = 8  # verdicts judged at once per batch (a VLM judge also enforces its own concurrency limit)


def item_seed(seed: int, item_id: str) -> int:
    """The request seed of an item: fixed by the run seed and the id, whatever the batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()[:4], "big") >> 1


def image_name(item_id: str) -> str:
    """A filesystem-safe PNG name; ids with other characters get a hash suffix so names stay distinct."""
    if _SAFE_ID.fullmatch(item_id) and not item_id.startswith("."):
        return f"{item_id}.png"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", item_id).lstrip(".")[:80]
    return f"{stem}-{hashlib.sha256(item_id.encode()).hexdigest()[:10]}.png"


# --- the results log -------------------------------------------------------------------------------------


def save_image(image: Image.Image, path: Path) -> None:
    """Write a PNG through a temporary name, so a committed line never points at half an image."""
    atomic_write(path, lambda f: image.save(f, format="PNG"))


# --- judging ---------------------------------------------------------------------------------------------


class JudgePlan:
    """The judge for each (item, direction): overrides per direction, else :func:`judges.select.judge_for`."""

    def __init__(self, items: Sequence[Item], overrides: dict[str, Judge] | None):
        from gapeval.judges.select import judge_for, needs_vlm

        unknown = set(overrides or {}) - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"judge_overrides keys must be 'und'/'gen', got {sorted(unknown)}")
        self.overrides = dict(overrides or {})
        wanted = any(needs_vlm(list(items), d) for d in DIRECTIONS if d not in self.overrides)
        self.vlm = _vlm_from_env() if wanted else None
        self._select = judge_for

    def judge(self, item: Item, direction: str) -> Judge:
        return self.overrides.get(direction) or self._select(item, direction, self.vlm)

    def ids(self, items: Sequence[Item]) -> dict[str, list[str]]:
        """The judge ids a run uses per direction (part of the run's identity)."""
        return {d: sorted({self.judge(item, d).id for item in items}) for d in DIRECTIONS}


def _vlm_from_env() -> Judge | None:
    try:
        from gapeval.judges.vlm import VLMJudge
    except ModuleNotFoundError as exc:
        if exc.name != "gapeval.judges.vlm":
            raise
        return None
    return VLMJudge.from_env()


def safe_verdict(judge: Judge, item: Item, answer: str | Image.Image) -> Verdict:
    try:
        return judge.judge(item, answer)
    except Exception as exc:  # a judge failure is an error on this item, never a wrong answer
        return Verdict(correct=None, judge=judge.id, error=f"judge: {type(exc).__name__}: {exc}")


# --- one batch -------------------------------------------------------------------------------------------


def _ask(
    call: Callable[[list[Request]], list[Any]], requests: list[Request], kind: type
) -> list[tuple[Any, str | None]]:
    """(answer, error) per request; an exception or a malformed reply fails the whole batch in this direction.

    An adapter may return an exception in place of one answer to fail only that item (e.g. a missing file).
    """
    try:
        answers = list(call(requests))
    except Exception as exc:  # recorded per item: a crash must not lose the rest of the run
        return [(None, f"model: {type(exc).__name__}: {exc}")] * len(requests)
    if len(answers) != len(requests):
        return [(None, f"model: returned {len(answers)} answers for {len(requests)} requests")] * len(
            requests
        )
    return [checked_answer(answer, kind) for answer in answers]


def checked_answer(answer: Any, kind: type) -> tuple[Any, str | None]:
    if isinstance(answer, kind):
        return answer, None
    if isinstance(answer, Exception):
        return None, f"model: {type(answer).__name__}: {answer}"
    return None, f"model: expected {kind.__name__}, got {type(answer).__name__}"


def evaluate_batch(
    model: UMM, batch: Sequence[Item], *, seed: int, judges: JudgePlan, images_dir: Path
) -> list[dict[str, Any]]:
    """Ask, save and judge one batch of items; return their results records (not yet committed).

    Verdicts are computed concurrently (a VLM judge waits on the network; rule judges do not mind), each
    independently of the others, so the records do not depend on the thread schedule.
    """

    def requests(direction: str) -> list[Request]:
        return [Request(i.id, i.prompt(direction), i.image, item_seed(seed, i.id)) for i in batch]

    answers = {
        "und": _ask(model.understand, requests("und"), str),
        "gen": [
            _saved(item, answer, images_dir)
            for item, answer in zip(batch, _ask(model.generate, requests("gen"), Image.Image), strict=True)
        ],
    }

    def judged(key: tuple[str, int]) -> Verdict:
        direction, k = key
        return safe_verdict(judges.judge(batch[k], direction), batch[k], answers[direction][k][0])

    keys = [(d, k) for d in DIRECTIONS for k in range(len(batch)) if answers[d][k][1] is None]
    with ThreadPoolExecutor(max_workers=JUDGE_THREADS) as pool:
        verdicts = dict(zip(keys, pool.map(judged, keys), strict=True))

    def fields(direction: str, k: int) -> dict[str, Any]:
        verdict = verdicts.get((direction, k))
        if verdict is None:
            return {"correct": None, "judge": None, "reason": "", "error": answers[direction][k][1]}
        return {
            "correct": verdict.correct,
            "judge": verdict.judge,
            "reason": verdict.reason,
            "error": verdict.error,
        }

    records = []
    for k, item in enumerate(batch):
        image_path = f"{IMAGES}/{image_name(item.id)}" if answers["gen"][k][1] is None else None
        records.append(
            {
                "id": item.id,
                "category": item.category,
                "subcategory": item.subcategory,
                "und": {"output": answers["und"][k][0], **fields("und", k)},
                "gen": {"image": image_path, **fields("gen", k)},
            }
        )
    return records


def _saved(item: Item, answer: tuple[Any, str | None], images_dir: Path) -> tuple[Any, str | None]:
    """Write an answer image to the run's images/ before judging; an unsaveable image is a model error."""
    image, error = answer
    if error is not None:
        return answer
    try:
        save_image(image, images_dir / image_name(item.id))
    except (OSError, ValueError) as exc:
        return None, f"model: image cannot be saved as PNG: {exc}"
    return answer


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- the run ---------------------------------------------------------------------------------------------


def run(
    model: UMM,
    items: Sequence[Item],
    out_dir: str | Path,
    *,
    suite_id: str,
    batch_size: int = 16,
    seed: int = 0,
    judge_overrides: dict[str, Judge] | None = None,
    progress: bool = True,
    edit: str | None = None,
    processes: distributed.Processes | None = None,
    bootstrap: int = 1000,
) -> Path:
    """Evaluate ``model`` on ``items`` into ``out_dir`` (created, or resumed); return the run directory.

    ``judge_overrides`` maps a direction to the judge for all its items; ``edit`` names the knowledge edit or
    adapter applied to the model, if any. ``processes`` defaults to the launcher's (see gapeval.distributed).
    ``bootstrap`` is the number of resamples behind the summary's confidence intervals.
    """
    from gapeval.io import suite_hash

    items = list(items)
    if not items:
        raise ValueError("the suite has no items")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    _check_unique(items)
    procs = processes or distributed.current()
    out = Path(out_dir)
    judges = JudgePlan(items, judge_overrides)
    manifest = build_manifest(
        model_name=model.name,
        model_config=model.config(),
        suite_id=suite_id,
        suite_hash=suite_hash(items),
        n_items=len(items),
        seed=seed,
        edit=edit,
        judges=judges.ids(items),
        run={"batch_size": batch_size, "processes": procs.world},
    )
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    check_or_write(out / MANIFEST, manifest, write=procs.is_main)

    known = {item.id for item in items}
    committed = _committed(out, known)
    done = {i for i, line in committed.items() if not holds_error(json.loads(line))}
    if len(done) == len(items) and (out / SUMMARY).exists() and not (out / SHARDS).exists():
        _say(f"{out}: run already complete ({len(items)} items); nothing to do.", procs)
        return out
    procs.barrier()  # every rank has read the same state before any rank appends to it

    pending = [item for item in items if item.id not in done]
    mine = pending[procs.rank :: procs.world]
    if committed and pending:
        retried = f", retrying {len(committed) - len(done)} with errors" if len(committed) > len(done) else ""
        _say(f"{out}: resuming, {len(done)} of {len(items)} items already done{retried}.", procs)
    log = out / RESULTS
    if procs.world > 1:
        (out / SHARDS).mkdir(exist_ok=True)
        log = out / SHARDS / f"rank-{procs.rank}.jsonl"
    drop_torn_tail(log)
    from tqdm import tqdm

    with tqdm(
        total=len(mine), desc=f"{model.name}", unit="item", disable=not progress or not procs.is_main
    ) as bar:
        for batch in _batches(mine, batch_size):
            append_records(
                log, evaluate_batch(model, batch, seed=seed, judges=judges, images_dir=out / IMAGES)
            )
            bar.update(len(batch))
    procs.barrier()
    if procs.is_main:
        merge(out, items)
        finish(out, model, seed=seed, bootstrap=bootstrap)
    procs.barrier()
    return out


def _check_unique(items: Sequence[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ItemError("duplicate id in the suite", item=item.id, field="id")
        seen.add(item.id)


def _say(message: str, procs: distributed.Processes) -> None:
    if procs.is_main:
        print(message, file=sys.stderr)


def _shard_files(out: Path) -> list[Path]:
    return sorted((out / SHARDS).glob("rank-*.jsonl")) if (out / SHARDS).exists() else []


def _committed(out: Path, known: set[str]) -> dict[str, str]:
    """Committed lines from the results file and any shards left by a scaled-out run."""
    lines: dict[str, str] = {}
    for path in [out / RESULTS, *_shard_files(out)]:
        read_lines(path, known, lines)
    return lines


def merge(out: Path, items: Sequence[Item]) -> None:
    """Rewrite the results in suite order from the results file and shards, then drop the shards.

    A no-op for a single-process run, whose file is already in suite order.
    """
    lines = _committed(out, {item.id for item in items})
    ordered = [lines[item.id] + "\n" for item in items if item.id in lines]
    shards = _shard_files(out)
    results = out / RESULTS
    if not shards and results.exists() and results.read_text(encoding="utf-8") == "".join(ordered):
        return
    atomic_write(out / RESULTS, "".join(ordered))
    for shard in shards:
        shard.unlink()
    if (out / SHARDS).exists():
        (out / SHARDS).rmdir()


def finish(out: Path, model: UMM, *, seed: int = 0, bootstrap: int = 1000) -> None:
    """Write summary.json (scores plus the adapter's notes) and the report."""
    summary = summarize(load_records(out), bootstrap=bootstrap, seed=seed)
    notes = getattr(model, "notes", None)
    summary["model_notes"] = notes() if callable(notes) else {}
    write_json_atomic(out / SUMMARY, summary)
    write_report(out)
