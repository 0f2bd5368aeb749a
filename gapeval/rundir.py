"""The files of a run directory (docs/architecture.md, "Run directories") and their readers.

The runner writes these files and the report reads them; both import the names and readers from here. A file
that cannot be read is an error naming the file and the line, never a traceback from deep inside json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gapeval.items import DIRECTIONS
from gapeval.judges.select import UnconfiguredJudge

MANIFEST, RESULTS, SUMMARY, IMAGES, SHARDS = (
    "manifest.json",
    "results.jsonl",
    "summary.json",
    "images",
    "shards",
)


class ResultsError(ValueError):
    """A run file that cannot belong to this run (corrupt line, unknown item, unreadable summary)."""


def _parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}, line {number}: not a results record ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise ResultsError(f"{path}, line {number}: not a results record (no string 'id')")
    return record


def holds_error(record: dict[str, Any]) -> bool:
    """True when a direction of the record failed (model or judge): an error is not a verdict, so a resumed
    run asks again. A missing judge is the exception: the judges are part of the run's identity, so asking
    again could not give a verdict."""
    return any(
        isinstance(part := record.get(direction), dict)
        and part.get("error") is not None
        and part.get("judge") != UnconfiguredJudge.id
        for direction in DIRECTIONS
    )


def read_lines(path: Path, known: set[str], lines: dict[str, str] | None = None) -> dict[str, str]:
    """Committed lines of a results file by item id, added to ``lines``; an unterminated last line is ignored.

    The first line of an item wins, unless it holds an error: then a later line (a retry) replaces it.
    """
    lines = {} if lines is None else lines
    if not path.exists():
        return lines
    for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        item_id = _parse_line(path, number, raw)["id"]
        if item_id not in known:
            raise ResultsError(f"{path}, line {number}: item {item_id!r} is not in this suite")
        if item_id not in lines or holds_error(json.loads(lines[item_id])):
            lines[item_id] = raw.decode("utf-8")
    return lines


def load_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The committed records of a run directory, in file order; a corrupt line is an error naming it."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    *lines, tail = path.read_bytes().split(b"\n")
    records = [_parse_line(path, n, raw) for n, raw in enumerate(lines, start=1)]
    if tail.strip():  # an unterminated last line: a record written by hand, or a write still under way
        try:
            records.append(_parse_line(path, len(lines) + 1, tail))
        except ResultsError:
            pass  # torn by a kill: not committed, the runner drops it on resume
    return records


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's summary.json, or None when the run has not written one."""
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("overall"), dict):
        raise ResultsError(f"{path}: not a run summary (no 'overall' object)")
    return summary
