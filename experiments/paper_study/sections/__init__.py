"""The study's sections, by name, in report order: a registry of ``"module:function"`` targets.

A section is one function ``(Context) -> Section`` in a module of its own. Adding one is a new module and one
line here (or a :func:`register_section` call from a plug-in), and it is then a ``gapeval study --sections``
choice. Targets are strings so building the command line's parser imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gapeval.targets import resolve

SECTIONS: dict[str, str] = {
    "gap": "experiments.paper_study.sections.gap_table:gap_section",
    "edit": "experiments.paper_study.sections.knowledge_edits:edit_section",
    "bridge": "experiments.paper_study.sections.reason_then_draw:bridge_section",
    "emergence": "experiments.paper_study.sections.emergence_curves:emergence_section",
    "mechanism": "experiments.paper_study.sections.mechanism:mechanism_section",
    "sharing": "experiments.paper_study.sections.sharing:sharing_section",
}


def register_section(name: str, target: str | Callable[..., Any]) -> None:
    """Add (or replace) section ``name``; ``target`` is ``"module:function"`` or the function itself.
    New sections run after the built-in ones."""
    SECTIONS[name] = target  # type: ignore[assignment]


def section_names() -> tuple[str, ...]:
    return tuple(SECTIONS)


def section_function(name: str) -> Callable[..., Any]:
    """The function of section ``name`` (its module imported only now, when the section runs)."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}; expected one of {', '.join(SECTIONS)}")
    return resolve(SECTIONS[name])
