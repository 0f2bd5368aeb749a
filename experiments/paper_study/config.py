"""The study's configuration: ``config.yaml`` beside this module, read with ``yaml.safe_load``, one size profile
(``quick`` or ``full``) picked, the command line's models and seed applied.

Kept as plain data (dicts of the YAML) so the resolved configuration can be written into the study's
``study.json`` as it ran, and a rerun can tell whether it is the same study.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
# The sections config.yaml must size; a plug-in section (registered in code) may have no entry.
BUILT_IN = ("gap", "edit", "bridge", "emergence", "mechanism", "sharing")


@dataclass
class StudyConfig:
    models: list[str]
    seed: int
    threads: int
    suite: str
    profile: str  # "quick" or "full"
    sizes: dict[str, dict[str, Any]]  # per section, from the profile
    templates: dict[str, str]
    oracles: list[dict[str, float]]
    published: dict[str, Any]

    def template(self, spec: str) -> str:
        """The reason-then-draw template for a model spec: the longest matching prefix, else ``default``."""
        keys = sorted((k for k in self.templates if k != "default" and spec.startswith(k)), key=len)
        return self.templates[keys[-1]] if keys else self.templates["default"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def require(mapping: Any, key: str, where: str, path: Path) -> Any:
    """``mapping[key]``, or an error naming the YAML file and the key's full name (``where`` is its prefix)."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{path}: missing key {where}{key}")
    return mapping[key]


def load_config(
    path: str | Path | None = None,
    *,
    quick: bool = False,
    models: list[str] | None = None,
    seed: int | None = None,
) -> StudyConfig:
    """Read the YAML and resolve it; a missing key is an error naming the file and the key."""
    import yaml

    path = Path(path or DEFAULT_CONFIG)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile = "quick" if quick else "full"

    def need(mapping: Any, key: str, where: str) -> Any:
        return require(mapping, key, where, path)

    sizes = need(need(data, "sizes", ""), profile, "sizes.")
    for section in BUILT_IN:
        need(sizes, section, f"sizes.{profile}.")
    templates = need(data, "templates", "")
    need(templates, "default", "templates.")
    return StudyConfig(
        models=list(models or need(data, "models", "")),
        seed=int(need(data, "seed", "") if seed is None else seed),
        threads=int(need(data, "threads", "")),
        suite=str(need(data, "suite", "")),
        profile=profile,
        sizes=sizes,
        templates=templates,
        oracles=list(need(data, "oracles", "")),
        published=need(data, "published", ""),
    )
