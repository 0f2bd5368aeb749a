"""What a study section leaves on disk, and how a rerun finds it.

A section writes its JSONL records and figures under ``OUT/<section>/`` and, last, ``done.json``: the
:class:`Section` it reports (tables, figures, findings, commands). That file is the section's commit point — a
rerun skips a section that has one and reports it from the file. Expensive units inside a section (a run, an
edit, a spot check) are resumable on their own: through the library's run directories, or through
:func:`unit`, which stores one unit's numbers under a name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gapeval.files import write_json_atomic, write_jsonl_atomic

DONE = "done.json"


@dataclass
class Section:
    """One section of the report. Paths are relative to the study's output folder."""

    name: str
    title: str
    tables: list[dict[str, str]] = field(default_factory=list)  # {"caption", "markdown"}
    figures: list[dict[str, str]] = field(default_factory=list)  # {"caption", "path"}
    paragraphs: list[str] = field(default_factory=list)  # what the numbers show, in words
    findings: list[str] = field(default_factory=list)  # the lines the report's findings list takes
    commands: list[str] = field(default_factory=list)  # standalone commands behind the numbers
    records: list[str] = field(default_factory=list)  # JSONL files underneath
    skipped: list[str] = field(default_factory=list)  # what could not run here, and why
    seconds: float = 0.0  # wall time of the invocation that ran it
    command: str = ""  # that invocation's command line

    def table(self, caption: str, markdown: str) -> None:
        self.tables.append({"caption": caption, "markdown": markdown})

    def figure(self, caption: str, path: Path, root: Path) -> None:
        self.figures.append({"caption": caption, "path": str(path.relative_to(root))})


def _plain(value: Any) -> Any:
    """NumPy arrays and scalars (as library results hold them) as JSON lists and numbers; NaN as null."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return (
            np.where(np.isfinite(value), value, None).tolist() if value.dtype.kind == "f" else value.tolist()
        )
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Through a temporary name, so a reader never sees half a file."""
    write_json_atomic(path, data, indent=1, default=_plain)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """All of a section's records at once (atomically): sections compute them from their units' results."""
    return write_jsonl_atomic(path, rows, default=_plain)


def unit(path: Path, compute: Callable[..., Any], *args: Any) -> Any:
    """The stored result of one unit of work, ``compute(*args)``, computing and storing it first if it has none.

    Always read back from the file, so a fresh and a resumed study see the same values (JSON types)."""
    if not path.exists():
        write_json(path, compute(*args))
    return json.loads(path.read_text(encoding="utf-8"))


def finished(folder: Path) -> Section | None:
    """The section a previous run completed in ``folder``, or None."""
    path = folder / DONE
    if not path.exists():
        return None
    return Section(**json.loads(path.read_text(encoding="utf-8")))


def complete(folder: Path, section: Section) -> Section:
    write_json(folder / DONE, asdict(section))
    return section


def slug(spec: str) -> str:
    """A folder name for a model spec (``toy:decoupled@seed1`` → ``toy-decoupled-seed1``)."""
    keep = "".join(c if c.isalnum() or c in "._-" else "-" for c in spec.strip("/"))
    return "-".join(part for part in keep.split("-") if part)[-80:]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def with_ci(value: float | None, ci: Sequence[float] | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return num(value, digits) + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")
