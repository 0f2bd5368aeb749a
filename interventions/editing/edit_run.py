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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gapeval.files import append_jsonl, drop_torn_tail, read_jsonl, write_json_atomic, write_jsonl_atomic
from gapeval.items import Item
from gapeval.manifest import build_manifest, check_or_write
from gapeval.models.base import Intervenable, Request
from gapeval.runner import JudgePlan
from interventions.editing.editor import Editor
from interventions.editing.metrics import BASELINE, edit_effects, propagation_cases, summarize_edits
from interventions.editing.specs import EditSpec, HeldOut
from interventions.judged import judged

CONDITIONS = (BASELINE, "und", "gen", "both")
RECORDS, TRAINING, SUMMARY, MANIFEST = "records.jsonl", "training.jsonl", "summary.json", "manifest.json"
MODES = ("batch", "single")


def build_editor(method: str, held: HeldOut, *, seed: int = 0, **options: Any) -> Editor:
    """The editor ``gapeval edit --method METHOD`` builds, from the registry (:data:`interventions.editing.EDITORS`).

    The experiment supplies the fields it owns, where the editor has them: ``seed``, ``retain`` (the unedited
    model's answers to synth items about retain-side realms, to rehearse) and ``corpus`` (retain-side items of
    the suite, e.g. locate's key statistics) — both from ``held``'s retain side, never the locality side.
    ``options`` (``--editor-arg``) set the other fields, checked against them."""
    from interventions.editing import editor_class

    cls = editor_class(method)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    supplied = {"seed": seed, "corpus": held.corpus, "retain": held.retain}
    options = editor_options(method, options)
    return cls(**{k: v for k, v in supplied.items() if k in names}, **options)


def editor_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``--editor-arg`` options checked against editor ``method``'s fields (names, types) and its declared
    ``RANGES``: one line naming the option and the allowed range, before any model is loaded."""
    from gapeval.options import check_options
    from interventions.editing import editor_class
    from interventions.editing.ranges import check_ranges

    cls = editor_class(method)
    reserved = {"seed", "retain", "corpus", "name"}
    options = check_options(cls, options, f"--method {method}", "--editor-arg", reserved=reserved)
    check_ranges(options, getattr(cls, "RANGES", {}), f"--method {method}: --editor-arg {{}}")
    return options


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


def _renamed(item: Item | None, subject: str, name: str | None) -> Item | None:
    """``item`` about realm ``name`` instead of ``subject`` (the control of a subject-nonspecific shift)."""
    if item is None or name is None or subject not in item.und_prompt or subject not in item.gen_prompt:
        return None
    return dataclasses.replace(
        item,
        id=f"{item.id}/control",
        und_prompt=item.und_prompt.replace(subject, name),
        gen_prompt=item.gen_prompt.replace(subject, name),
    )


def _margins(
    model: Intervenable, pairs: Sequence[tuple[Item | None, Item | None]], direction: str
) -> list[tuple[float | None, float | None]]:
    """Teacher-forced (log P(new), log P(old)) per (item referenced to the new value, to the old one); None
    where an item is missing (no old value for an inject; no control prompt)."""
    out: list[list[float | None]] = [[None, None] for _ in pairs]
    for side in (0, 1):
        asked = [(k, p[side]) for k, p in enumerate(pairs) if p[side] is not None]
        if asked:
            values = _logprobs(
                model, [i for _, i in asked], [_answer(i, direction) for _, i in asked], direction
            )
            for (k, _), v in zip(asked, values, strict=True):
                out[k][side] = v
    return [(a, b) for a, b in out]


def evaluate(
    model: Intervenable,
    specs: Sequence[EditSpec],
    locality: Sequence[Item],
    condition: str,
    *,
    seed: int = 0,
    controls: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Records of one condition: every spec's target and generality items and the locality items, both
    directions, judged against the new value (and the old one), with target log-probabilities — also asked
    about a control realm (``controls``, unedited realms named in the subject's place) so a shift that is not
    about the edited subject can be netted out."""
    asked: list[tuple[str, str, Item, Item | None]] = []  # (edit, role, item, same prompts referenced to old)
    control: dict[int, tuple[Item | None, Item | None]] = {}
    for n, spec in enumerate(specs):
        name = controls[n % len(controls)] if controls else None
        for role in ("target", "generality"):
            olds = spec.items(role, spec.old) if spec.old else [None] * len(spec.items(role))
            for item, old in zip(spec.items(role), olds, strict=True):
                if role == "target":
                    control[len(asked)] = (
                        _renamed(item, spec.subject, name),
                        _renamed(old, spec.subject, name),
                    )
                asked.append((spec.id, role, item, old))
    unit = specs[0].id if len(specs) == 1 else "all"
    asked += [(unit, "locality", item, None) for item in locality]
    items = [a[2] for a in asked]
    verdicts = judged(model, items, seed=seed, keep_images=True)
    plan = JudgePlan([a[3] for a in asked if a[3] is not None] or items, None)
    group = {spec.id: spec.group for spec in specs}
    records = []
    for direction in ("und", "gen"):
        targets = list(control)
        lp = dict(
            zip(
                targets,
                _margins(model, [(asked[k][2], asked[k][3]) for k in targets], direction),
                strict=True,
            )
        )
        ctl = dict(zip(targets, _margins(model, [control[k] for k in targets], direction), strict=True))
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
                    "control_logp_new": ctl[k][0] if k in ctl else None,
                    "control_logp_old": ctl[k][1] if k in ctl else None,
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
    units: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for record in read_jsonl(path):
        key = (record["condition"], record["unit"])
        units.setdefault(key, []).append(record)
        if "unit_size" in record:
            sizes[key] = record["unit_size"]
    done = {key for key, kept in units.items() if sizes.get(key) == len(kept)}
    if len(done) < len(units):
        write_jsonl_atomic(path, (r for key in units if key in done for r in units[key]))
    return done


def read_records(out: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(out) / RECORDS, missing_ok=True)


def _spec_hash(
    specs: Sequence[EditSpec],
    locality: Sequence[Item],
    controls: Sequence[str] = (),
    suite: Sequence[Item] = (),
) -> str:
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
    if controls or suite:  # runs made before controls and the suite's gap keep their hash
        h.update(json.dumps([list(controls), [i.id for i in suite]]).encode())
    return h.hexdigest()


def suite_records(
    model: Intervenable, suite: Sequence[Item], condition: str, seed: int
) -> list[dict[str, Any]]:
    """Verdicts on the whole suite (role ``suite``): the Gap Score before and after an edit."""
    return [
        {
            "condition": condition,
            "edit": "suite",
            "group": "",
            "role": "suite",
            "item": v["id"],
            "category": v["category"],
            "direction": d,
            "correct": v[d]["correct"],
        }
        for v in judged(model, suite, seed=seed)
        for d in ("und", "gen")
    ]


def summarize_run(records: Sequence[dict[str, Any]], conditions: Sequence[str]) -> dict[str, Any]:
    """What summary.json holds: per-condition metrics, the propagation decisions (one entry per trained
    direction) and each condition's joint outcomes and suite Gap Score."""
    return {
        "conditions": summarize_edits(records, conditions),
        "propagation": propagation_cases(records, conditions),
        "effects": edit_effects(records, conditions),
    }


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
    controls: Sequence[str] = (),
    suite: Sequence[Item] = (),
) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; return the summary (also written to summary.json).

    ``controls``: unedited realms named in the subject's place for the net log-probability shift; ``suite``:
    items asked under every batch-mode condition for the Gap Score before and after the edit."""
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
        suite_hash=_spec_hash(specs, locality, controls, suite),
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
        asked = suite if unit == "all" else ()
        if condition == BASELINE:
            records = evaluate(model, group, locality, condition, seed=seed, controls=controls)
            records += suite_records(model, asked, condition, seed)
        else:
            with editor.apply(model, group, via=condition) as edit:
                records = evaluate(model, group, locality, condition, seed=seed, controls=controls)
                records += suite_records(model, asked, condition, seed)
                if save_edits:
                    (out / "edits").mkdir(exist_ok=True)
                    edit.save(out / "edits" / f"{condition}-{unit}{edit.suffix}")
            append_jsonl(out / TRAINING, [{"condition": condition, "unit": unit, **edit.stats}])
        records = [{**r, "unit": unit} for r in records]
        records[-1]["unit_size"] = len(records)
        append_jsonl(out / RECORDS, records)
    summary = summarize_run(read_records(out), conditions)
    write_json_atomic(out / SUMMARY, summary)
    return summary
