"""Knowledge editing: edit specs, editors behind one :class:`~interventions.editing.editor.Editor` interface,
the experiment that trains an edit through one direction and judges both, its metrics, report and command.

Editors are a registry of ``name → "module:Class"`` (:data:`EDITORS`), read by ``gapeval edit --method`` and
the study. A class is imported only when it is built, so the command line's parser never loads torch.
Adding an editor is one module with an :class:`Editor` dataclass and one line here (or a
:func:`register_editor` call from a plug-in).
"""

from __future__ import annotations

from typing import Any

from gapeval.targets import resolve

EDITORS: dict[str, Any] = {
    "lora": "interventions.editing.lora:LoraEditor",
    "locate": "interventions.editing.locate:LocateEditor",
    "embedding": "interventions.editing.embedding:EmbeddingEditor",
}


def register_editor(name: str, target: str | type) -> None:
    """Add (or replace) editor ``name``: ``"module:Class"`` or the class itself (an ``Editor`` dataclass)."""
    EDITORS[name] = target


def editor_names() -> tuple[str, ...]:
    return tuple(EDITORS)


def editor_class(name: str) -> type:
    """The class registered as ``name`` (imported now)."""
    if name not in EDITORS:
        raise ValueError(f"unknown editor {name!r}; expected one of {', '.join(EDITORS)}")
    return resolve(EDITORS[name])
