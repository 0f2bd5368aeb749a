"""Verdicts that the GapEval release's own judge already wrote, recorded instead of judging again.

The release's judging script writes ``new_res.json`` beside each model's answers in ``data_<id>/<model>/``::

    {"text_eval": {"status": "ok", "raw_response": "...", "parsed": {"reason": "...", "judge_result": true}},
     "image_eval": [{"status": "ok", "generated_image": ".../0.png", "parsed": {"judge_result": 1}}]}

Reading those verdicts reproduces the published numbers without an API key, costs nothing and cannot drift
from them. Each entry's ``status`` is ``ok``, ``error`` or ``skipped``; the verdict is ``parsed["score"]``,
else ``parsed["judge_result"]``, else ``parsed["judeg_result"]`` (the first that is not null; the misspelling
is the script's own). The release counts anything but true, 1, "1", "true" or "yes" as wrong; here only the
matching spellings of false (false, 0, "0", "false", "no") are wrong, and any other value is an error, so a
reply the judge garbled is never silently counted as a wrong answer. Every problem (no file, unreadable file,
an ``error`` or ``skipped`` status, no parsed reply, an unknown value) is an error on that item and direction
alone: the runner retries it on the next import, and :func:`verdict_counts` tells the causes apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval.items import DIRECTIONS, Item
from gapeval.judges.base import Verdict

RESULT_FILE = "new_res.json"
JUDGE_ID = f"release:{RESULT_FILE}"
# Which verdict counts when the release judged several images of one item: the first image by name (the one
# the run directory shows), or the item is right when any / all of its images are.
IMAGE_VERDICTS = ("first", "any", "all")
VERDICT_KEYS = ("score", "judge_result", "judeg_result")
CORRECT_WORDS = ("1", "true", "yes")
WRONG_WORDS = ("0", "false", "no")
# Why a direction has no verdict; an error message starts with "release <kind>:" so runs can be counted later.
ERROR_KINDS = ("missing", "unreadable", "error", "skipped", "unparsed", "malformed")
VERDICTS, NO_ANSWER, OTHER = "verdicts", "no answer", "other"
_ORDER = (VERDICTS, *ERROR_KINDS, NO_ANSWER, OTHER)
_KIND = re.compile(r"release (\w+):")
_PATH_SEPARATORS = re.compile(r"[\\/]")


class VerdictProblem(ValueError):
    """No usable verdict: ``kind`` is one of ERROR_KINDS, ``field`` the place in new_res.json."""

    def __init__(self, kind: str, field: str, message: str):
        super().__init__(message)
        self.kind, self.field, self.message = kind, field, message

    def describe(self, path: Path, item_id: str) -> str:
        return f"release {self.kind}: {self.message} (file={path}, item={item_id}, field={self.field})"


def parse_verdict(value: Any, field: str = "parsed") -> bool:
    """True/False for the spellings the release's judge uses; any other value is a ``malformed`` problem."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in (*CORRECT_WORDS, *WRONG_WORDS):
        return value.strip().lower() in CORRECT_WORDS
    raise VerdictProblem(
        "malformed", field, f"{json.dumps(value)[:80]} is not a verdict (true/false, 1/0, 'yes'/'no')"
    )


def entry_verdict(entry: Any, field: str) -> tuple[bool, str]:
    """(correct, the judge's reason) of one ``text_eval`` or ``image_eval`` entry."""
    if not isinstance(entry, dict):
        raise VerdictProblem("malformed", field, f"expected an object, got {type(entry).__name__}")
    status = entry.get("status")
    if status == "error":
        raise VerdictProblem("error", f"{field}.status", f"the release's judge failed: {entry.get('error')}")
    if status == "skipped":
        raise VerdictProblem("skipped", f"{field}.status", f"the release skipped it: {entry.get('reason')}")
    if status != "ok":
        raise VerdictProblem("malformed", f"{field}.status", f"expected ok, error or skipped, got {status!r}")
    parsed = entry.get("parsed")
    if parsed is None:
        raise VerdictProblem("unparsed", f"{field}.parsed", "missing or null: the judge's reply was not JSON")
    if not isinstance(parsed, dict):
        raise VerdictProblem(
            "malformed", f"{field}.parsed", f"expected an object, got {type(parsed).__name__}"
        )
    key = next((k for k in VERDICT_KEYS if parsed.get(k) is not None), None)
    if key is None:
        raise VerdictProblem("malformed", f"{field}.parsed", f"none of {', '.join(VERDICT_KEYS)} is set")
    reason = parsed.get("reason")
    return parse_verdict(parsed[key], f"{field}.parsed.{key}"), reason if isinstance(reason, str) else ""


def read_result_file(path: Path) -> dict[str, Any]:
    """The parsed new_res.json of one model folder (json only)."""
    if not path.is_file():
        raise VerdictProblem("missing", RESULT_FILE, f"{RESULT_FILE} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerdictProblem("unreadable", RESULT_FILE, f"not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise VerdictProblem("unreadable", RESULT_FILE, f"expected a JSON object, got {type(data).__name__}")
    return data


def text_verdict(data: Mapping[str, Any]) -> tuple[bool, str]:
    """The understanding verdict: ``text_eval``."""
    if data.get("text_eval") is None:
        raise VerdictProblem("missing", "text_eval", "no text verdict")
    return entry_verdict(data["text_eval"], "text_eval")


def _image_name(entry: Any) -> str | None:
    path = entry.get("generated_image") if isinstance(entry, dict) else None
    return _PATH_SEPARATORS.split(path)[-1] if isinstance(path, str) and path.strip() else None


def image_entries(data: Mapping[str, Any], first_image: str | None, choice: str) -> list[tuple[str, Any]]:
    """(field, entry) of the image verdicts that count: all of them for any/all; for "first", the entry of
    ``first_image`` (the image the run shows), or the first entry when no entry names its image."""
    entries = data.get("image_eval")
    if entries is None or entries == []:
        raise VerdictProblem("missing", "image_eval", "no image verdict")
    if not isinstance(entries, list):
        raise VerdictProblem("malformed", "image_eval", f"expected a list, got {type(entries).__name__}")
    fields = [(f"image_eval[{i}]", entry) for i, entry in enumerate(entries)]
    if choice != "first":
        return fields
    names = [_image_name(entry) for entry in entries]
    if not any(names):
        return fields[:1]
    if first_image in names:
        return [fields[names.index(first_image)]]
    judged = ", ".join(name for name in names if name)
    raise VerdictProblem("missing", "image_eval", f"no verdict for {first_image} (it judged {judged})")


def image_verdict(data: Mapping[str, Any], first_image: str | None, choice: str) -> tuple[bool, str]:
    """The generation verdict under ``choice`` (see IMAGE_VERDICTS); every counted entry must be usable."""
    chosen = image_entries(data, first_image, choice)
    verdicts = [(_image_name(entry) or field, *entry_verdict(entry, field)) for field, entry in chosen]
    combine = all if choice == "all" else any  # one entry for "first"
    correct = combine(right for _, right, _ in verdicts)
    if len(verdicts) == 1:
        return correct, verdicts[0][2]
    return correct, "; ".join(f"{name}: {'right' if right else 'wrong'}" for name, right, _ in verdicts)


class ReleaseVerdictJudge:
    """Stands in for a judge (judges/base.py): reads the verdict from the model folder's new_res.json.

    ``first_image`` names the image the run shows for a folder (the importer's choice), which the "first"
    rule must match.
    """

    def __init__(
        self,
        folders: Mapping[str, Path],
        direction: str,
        image_choice: str = "first",
        first_image: Callable[[Path], str | None] | None = None,
    ):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'und' or 'gen', got {direction!r}")
        if image_choice not in IMAGE_VERDICTS:
            raise ValueError(
                f"unknown image verdict {image_choice!r}; expected one of {', '.join(IMAGE_VERDICTS)}"
            )
        self.folders, self.direction, self.image_choice = folders, direction, image_choice
        self.first_image = first_image or (lambda folder: None)
        self.id = JUDGE_ID if direction == "und" else f"{JUDGE_ID}:{image_choice}"

    def judge(self, item: Item, answer: str | Image.Image) -> Verdict:
        folder = self.folders[item.id]
        path = folder / RESULT_FILE
        try:
            data = read_result_file(path)
            if self.direction == "und":
                correct, reason = text_verdict(data)
            else:
                correct, reason = image_verdict(data, self.first_image(folder), self.image_choice)
        except VerdictProblem as problem:
            return Verdict(correct=None, judge=self.id, error=problem.describe(path, item.id))
        return Verdict(correct=correct, judge=self.id, reason=reason)


def release_judges(
    folders: Mapping[str, Path], image_choice: str, first_image: Callable[[Path], str | None]
) -> dict[str, ReleaseVerdictJudge]:
    """Judge overrides for the runner: both directions from new_res.json (so no VLM judge is set up)."""
    return {d: ReleaseVerdictJudge(folders, d, image_choice, first_image) for d in DIRECTIONS}


def verdict_counts(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per direction: how many verdicts came from new_res.json, and how many are missing by cause
    (ERROR_KINDS; "no answer" when the answer itself could not be read)."""
    counts: dict[str, dict[str, int]] = {d: {} for d in DIRECTIONS}
    for record in records:
        for direction in DIRECTIONS:
            part = record.get(direction)
            cause = _cause(part if isinstance(part, Mapping) else {})
            counts[direction][cause] = counts[direction].get(cause, 0) + 1
    return {d: dict(sorted(c.items(), key=lambda kv: _ORDER.index(kv[0]))) for d, c in counts.items()}


def _cause(part: Mapping[str, Any]) -> str:
    error, judge = part.get("error"), part.get("judge")
    if error is None:
        return VERDICTS if isinstance(judge, str) and judge.startswith(JUDGE_ID) else OTHER
    if judge is None:
        return NO_ANSWER
    match = _KIND.match(error) if isinstance(error, str) else None
    return match.group(1) if match and match.group(1) in ERROR_KINDS else OTHER


def describe_counts(counts: Mapping[str, Mapping[str, int]]) -> str:
    """One line for the end of an import, e.g. ``und: 3 verdicts, 1 missing · gen: 2 verdicts, 2 skipped``."""
    return " · ".join(
        f"{d}: " + ", ".join(f"{n} {cause}" for cause, n in by_cause.items())
        for d, by_cause in counts.items()
    )
