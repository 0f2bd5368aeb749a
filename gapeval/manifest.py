"""The run manifest: what a run directory was made with, so a resumed run never mixes configurations.

Identity fields (model name and config, suite content hash and size, seed, edit id, judges) must match for a
run directory to be resumed; provenance fields (package versions, python, batch size, process count) are
recorded but may change between sessions, since they do not change which answers are being scored.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from gapeval.files import write_json_atomic

IDENTITY = ("model", "suite", "seed", "edit", "judges")
PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "numpy": "numpy",
    "gapeval": "gapeval-toolkit",
}


class RunMismatchError(ValueError):
    """The run directory holds a different run; resuming into it would mix results."""


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name, distribution in PACKAGES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def build_manifest(
    *,
    model_name: str,
    model_config: dict[str, Any],
    suite_id: str,
    suite_hash: str,
    n_items: int,
    seed: int,
    edit: str | None,
    judges: dict[str, str | None],
    run: dict[str, Any],
) -> dict[str, Any]:
    """A JSON-normalised manifest (a round trip turns tuples into lists, so comparisons are like for like)."""
    manifest = {
        "format": 1,
        "model": {"name": model_name, "config": model_config},
        "suite": {"id": suite_id, "hash": suite_hash, "n_items": n_items},
        "seed": seed,
        "edit": edit,
        "judges": judges,
        "run": run,
        "versions": package_versions(),
    }
    return json.loads(json.dumps(manifest))


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields that define a run. The suite's id is a label: its content hash identifies it."""
    ident = {key: manifest.get(key) for key in IDENTITY}
    ident["suite"] = {k: v for k, v in (manifest.get("suite") or {}).items() if k != "id"}
    return ident


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunMismatchError(f"{path}: not a valid manifest ({exc})") from None


def check_or_write(path: Path, manifest: dict[str, Any], *, write: bool = True) -> None:
    """Refuse a run directory made with another identity; write the manifest when absent (and ``write``)."""
    if path.exists():
        existing = identity(read_manifest(path))
        wanted = identity(manifest)
        differing = [key for key in wanted if existing.get(key) != wanted[key]]
        if differing:
            details = "; ".join(
                f"{key}: existing {existing.get(key)!r} vs requested {wanted[key]!r}" for key in differing
            )
            raise RunMismatchError(
                f"{path.parent} holds a different run ({details}). Use a new --out directory rather than mixing runs."
            )
        return
    if write:
        write_json_atomic(path, manifest)
