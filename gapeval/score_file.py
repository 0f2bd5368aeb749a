"""``gapeval score FILE``: the release's scoring script as a drop-in, JSON rows in and ``_gapres.json`` out."""

from __future__ import annotations

import json
from pathlib import Path

from gapeval.score import gap_scores_reference_batched


def score_file(path: str | Path) -> Path:
    """Drop-in for the release's script: score ``{model: [[p11, p10, p01, p00], ...]}`` from a JSON file.

    Writes ``<stem>_gapres.json`` beside it as ``{"results": {model: {"gaps": [...], "gap_mean": x}}}`` with
    gaps rounded to 6 decimals and gap_mean the rounded mean of the rounded gaps, as the release does; all
    models are fitted together. Returns the output path.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read a JSON object of joint rows: {err}") from err
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"{path}: expected a non-empty JSON object mapping model names to rows")
    try:
        results = gap_scores_reference_batched(payload)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    out = {}
    for name, res in results.items():
        gaps = [round(g, 6) for g in res.gaps]
        out[name] = {"gaps": gaps, "gap_mean": round(sum(gaps) / len(gaps), 6)}
    out_path = path.with_name(f"{path.stem}_gapres.json")
    out_path.write_text(json.dumps({"results": out}, ensure_ascii=False, indent=2))
    return out_path
