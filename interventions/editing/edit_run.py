"""The editing experiment: train knowledge in through one direction, judge both (``gapeval edit``).

Conditions: ``baseline`` (no edit), ``und`` / ``gen`` / ``both`` (Train-on-Und / -Gen / -Both). Each condition
edits the model (batch mode: all specs in one edit; single mode: one edit per spec, each judged with its own
edit), asks the target, generality and locality items in both directions, and appends one record per (edit,
item, direction) to ``records.jsonl``. A unit (a condition in batch mode, a condition × spec in single mode)
is committed when all its lines are there (its last line carries ``unit_size``), as in ``gapeval run``: a
killed experiment drops a unit cut short and resumes with the units not committed; a directory made with
another model, spec set or editor is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gapeval.items import Item
from gapeval.manifest import build_manifest, check_or_write, write_json_atomic
from gapeval.models.base import Intervenable, Request
from gapeval.runner import JudgePlan, append_records, drop_torn_tail
from interventions.editing.editor import Editor
from interventions.editing.metrics import BASELINE, summarize_edits
from interventions.editing.specs import EditSpec
from interventions.judged import judged

CONDITIONS = (BASELINE, "und", "gen", "both")
RECORDS, TRAINING, SUMMARY, MANIFEST = "records.jsonl", "training.jsonl", "summary.json", "manifest.json"
MODES = ("batch", "single")


def build_editor(
    method: str,
    specs: Sequence[EditSpec],
    locality: Sequence[Item],
    pool: Sequence[Item],
    *,
    seed: int = 0,
    world_seed: int = 0,
    **options: Any,
) -> Editor:
    """The editor ``gapeval edit --method METHOD`` builds, from the registry (:data:`interventions.editing.EDITORS`).

    The experiment supplies the fields it owns, where the editor has them: ``seed``, ``retain`` (the unedited
    model's answers to synth items held apart from the locality items, to rehearse) and ``corpus`` (``pool``,
    e.g. locate's key covariance). ``options`` (``--editor-arg``) set the other fields, checked against them."""
    from gapeval.options import check_options
    from gapeval.synth.world import World
    from interventions.editing import editor_class
    from interventions.editing.specs import retain_items

    cls = editor_class(method)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    supplied = {"seed": seed, "corpus": pool}
    if "retain" in names:
        supplied["retain"] = retain_items(
            World(world_seed), specs, locality, n_world=64, n_other=32, seed=seed
        )
    reserved = {"seed", "retain", "corpus", "name"}
    options = check_options(cls, options, f"--method {method}", "--editor-arg", reserved=reserved)
    return cls(**{k: v for k, v in supplied.items() if k in names}, **options)


def _output(answer: Any) -> str | None:
    """Text as said; a picture as a hash of its pixels (enough to tell whether an answer changed)."""
    if answer is None or isinstance(answer, str):
        return answer
    return hashlib.sha256(answer.tobytes()).hexdigest()[:16]


def _logprobs(
    model: Intervenable, items: Sequence[Item], answers: Sequence[Any], direction: str
) -> list[float]:
    with torch.no_grad():
        return model.logprob(
            [Request(i.id, i.prompt(direction)) for i in items], list(answers), direction
        ).tolist()


def evaluate(
    model: Intervenable, specs: Sequence[EditSpec], locality: Sequence[Item], condition: str, *, seed: int = 0
) -> list[dict[str, Any]]:
    """Records of one condition: every spec's target and generality items and the locality items, both
    directions, judged against the new value (and the old one), with target log-probabilities."""
    asked: list[tuple[str, str, Item, Item | None]] = []  # (edit, role, item, same prompts referenced to old)
    for spec in specs:
        for role in ("target", "generality"):
            olds = spec.items(role, spec.old) if spec.old else [None] * len(spec.items(role))
            asked += [(spec.id, role, item, old) for item, old in zip(spec.items(role), olds, strict=True)]
    unit = specs[0].id if len(specs) == 1 else "all"
    asked += [(unit, "locality", item, None) for item in locality]
    items = [a[2] for a in asked]
    verdicts = judged(model, items, seed=seed, keep_images=True)
    plan = JudgePlan([a[3] for a in asked if a[3] is not None] or items, None)
    group = {spec.id: spec.group for spec in specs}
    records = []
    for direction in ("und", "gen"):
        targets = [(k, a) for k, a in enumerate(asked) if a[1] == "target"]
        new_lp = _logprobs(
            model, [a[2] for _, a in targets], [_answer(a[2], direction) for _, a in targets], direction
        )
        old_lp = [None] * len(targets)
        if all(a[3] is not None for _, a in targets) and targets:
            old_lp = _logprobs(
                model, [a[3] for _, a in targets], [_answer(a[3], direction) for _, a in targets], direction
            )
        lp = {k: (n, o) for (k, _), n, o in zip(targets, new_lp, old_lp, strict=True)}
        for k, (edit, role, item, old) in enumerate(asked):
            verdict = verdicts[k][direction]
            still_old = None
            if old is not None and verdict["output"] is not None:
                still_old = plan.judge(old, direction).judge(old, verdict["output"]).correct
            records.append(
                {
                    "condition": condition,
                    "edit": edit,
                    "group": "" if role == "locality" else group[edit],
                    "role": role,
                    "item": item.id,
                    "direction": direction,
                    "correct": verdict["correct"],
                    "old": still_old,
                    "output": _output(verdict["output"]),
                    "logp_new": lp[k][0] if k in lp else None,
                    "logp_old": lp[k][1] if k in lp else None,
                }
            )
    return records


def _answer(item: Item, direction: str) -> Any:
    return item.reference[0] if direction == "und" else item.reference_image


def _done_units(path: Path) -> set[tuple[str, str]]:
    """(condition, unit) pairs already committed. A unit is committed when all its lines are there (its last
    line says how many it has); lines of a unit cut short by a kill, and a torn last line, are dropped."""
    drop_torn_tail(path)
    if not path.exists():
        return set()
    lines: dict[tuple[str, str], list[str]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err.msg})") from None
        key = (record["condition"], record["unit"])
        lines.setdefault(key, []).append(line)
        if "unit_size" in record:
            sizes[key] = record["unit_size"]
    done = {key for key, kept in lines.items() if sizes.get(key) == len(kept)}
    if len(done) < len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for key in lines if key in done for line in lines[key]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return done


def read_records(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / RECORDS
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


def _spec_hash(specs: Sequence[EditSpec], locality: Sequence[Item]) -> str:
    h = hashlib.sha256()
    for spec in specs:
        h.update(
            json.dumps(
                [spec.id, spec.kind, spec.subject, spec.new.text, spec.old and spec.old.text, spec.group]
            ).encode()
        )
        h.update(json.dumps([spec.train, spec.targets, spec.generality]).encode())
        h.update(spec.new.image.tobytes())
    h.update(json.dumps([i.id for i in locality]).encode())
    return h.hexdigest()


def run_edit(
    model: Intervenable,
    specs: Sequence[EditSpec],
    editor: Editor,
    locality: Sequence[Item],
    out: str | Path,
    *,
    mode: str = "batch",
    conditions: Sequence[str] = CONDITIONS,
    seed: int = 0,
    save_edits: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; return the summary (also written to summary.json)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if unknown := set(conditions) - set(CONDITIONS):
        raise ValueError(f"unknown conditions {sorted(unknown)}; expected {CONDITIONS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(
        model_name=model.name,
        model_config=model.config(),
        suite_id="edit-specs",
        suite_hash=_spec_hash(specs, locality),
        n_items=len(specs),
        seed=seed,
        edit={"editor": editor.config(), "mode": mode, "conditions": list(conditions)},
        judges={},
        run={},
    )
    check_or_write(out / MANIFEST, manifest)
    done = _done_units(out / RECORDS)
    units = [(BASELINE, "all", list(specs))] if BASELINE in conditions else []
    for via in [c for c in conditions if c != BASELINE]:
        units += [(via, "all", list(specs))] if mode == "batch" else [(via, s.id, [s]) for s in specs]
    for condition, unit, group in tqdm([u for u in units if u[:2] not in done], desc="edit", unit="unit"):
        if condition == BASELINE:
            records = evaluate(model, group, locality, condition, seed=seed)
        else:
            with editor.apply(model, group, via=condition) as edit:
                records = evaluate(model, group, locality, condition, seed=seed)
                if save_edits:
                    (out / "edits").mkdir(exist_ok=True)
                    edit.save(out / "edits" / f"{condition}-{unit}{edit.suffix}")
            append_records(out / TRAINING, [{"condition": condition, "unit": unit, **edit.stats}])
        records = [{**r, "unit": unit} for r in records]
        records[-1]["unit_size"] = len(records)
        append_records(out / RECORDS, records)
    summary = summarize_edits(read_records(out), conditions)
    write_json_atomic(out / SUMMARY, summary)
    return summary
