"""Writing and reading the toolkit's files safely: the one place that knows how.

Every file a command writes whole goes through :func:`atomic_write` (a temporary name in the same folder,
flushed and fsynced, then renamed over the target), so a reader or a resumed run never sees half a file.
Append-only logs go through :func:`append_jsonl` (fsynced: a line that is there is committed) and are read
by :func:`read_jsonl`, whose errors name the file and the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: str | bytes | Callable[[Any], None]) -> Path:
    """Write ``data`` (text, bytes, or a function that writes into a binary file object) to ``path`` through
    a temporary name, fsync it, then rename it into place. The folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, data: Any, *, indent: int = 2, default: Any = None) -> Path:
    """JSON through :func:`atomic_write` (``default`` converts values json cannot, e.g. numpy scalars)."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=default) + "\n"
    return atomic_write(path, text)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]], *, default: Any = None) -> Path:
    """A whole JSONL file at once, through :func:`atomic_write`."""
    lines = (json.dumps(r, ensure_ascii=False, default=default) + "\n" for r in rows)
    return atomic_write(path, "".join(lines))


def append_jsonl(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Append one JSON line per record and fsync: after this returns the records are committed."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def drop_torn_tail(path: str | Path) -> None:
    """Truncate an unterminated last line (a write cut short by a kill) before appending after it."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())


class JsonlError(ValueError):
    """A line of a JSONL file that is not a JSON object; the message names the file and the line."""


def read_jsonl(
    path: str | Path,
    *,
    missing_ok: bool = False,
    torn_tail_ok: bool = False,
    error: ErrorFactory | None = None,
) -> list[dict[str, Any]]:
    """Every record of a JSONL file, in order; blank lines are skipped.

    A line that is not a JSON object raises :class:`JsonlError` naming ``path:line`` (or what ``error``
    makes of the path, the line number and the problem). ``torn_tail_ok`` ignores an unterminated last line
    (an append cut short by a kill), which resumable logs may hold; ``missing_ok`` reads a missing file as
    empty.
    """
    rows = numbered_jsonl(path, missing_ok=missing_ok, torn_tail_ok=torn_tail_ok, error=error)
    return [record for _, record in rows]


ErrorFactory = Callable[[Path, int, str], Exception]


def _jsonl_error(path: Path, number: int, problem: str) -> Exception:
    return JsonlError(f"{path}:{number}: {problem}")


def numbered_jsonl(
    path: str | Path,
    *,
    missing_ok: bool = False,
    torn_tail_ok: bool = False,
    error: ErrorFactory | None = None,
    objects_only: bool = True,
) -> list[tuple[int, Any]]:
    """As :func:`read_jsonl`, with each record's 1-based line number, for readers whose later checks point
    into the file. ``objects_only=False`` leaves the check that a line is an object to the caller."""
    path, error = Path(path), error or _jsonl_error
    if missing_ok and not path.exists():
        return []
    data = path.read_bytes()
    if torn_tail_ok:
        data = data[: data.rfind(b"\n") + 1]
    rows = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").split("\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise error(path, number, f"not a JSON line ({err.msg})") from None
        if objects_only and not isinstance(record, dict):
            raise error(path, number, f"expected a JSON object, got {type(record).__name__}")
        rows.append((number, record))
    return rows
