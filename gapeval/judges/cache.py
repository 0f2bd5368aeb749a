"""A persistent verdict cache, so judging the same inputs twice costs nothing.

Keys are sha256 digests of everything that can change a verdict (judge model, rubric, the full request);
values are small JSON records. sqlite gives atomic writes and lets several processes (sharded runs) share
one file. Callers must never put secrets into keys or values: the file is meant to be shared and archived.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

CACHE_FILE = "vlm-judge.sqlite3"


def default_cache_dir() -> Path:
    """``$GAPEVAL_JUDGE_CACHE``, else ``$XDG_CACHE_HOME/gapeval/judge``, else ``~/.cache/gapeval/judge``."""
    if explicit := os.environ.get("GAPEVAL_JUDGE_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gapeval" / "judge"


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` (sorted keys, no whitespace), so equal inputs give equal keys."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class VerdictCache:
    """JSON records keyed by :func:`cache_key`, stored in ``<directory>/vlm-judge.sqlite3``. Thread-safe."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.path = Path(directory) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        record = json.dumps(value, sort_keys=True, ensure_ascii=False)
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO verdicts (key, value) VALUES (?, ?)", (key, record))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"VerdictCache({str(self.path)!r})"
