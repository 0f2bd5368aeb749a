"""The sharing sweep's configuration: a YAML file (``sweep.yaml`` beside this module by default) with a ``quick``
and a ``full`` profile, read with ``yaml.safe_load``.

A profile names the training settings every sweep model shares (``train``), the training seeds, the conditions
(each the TrainConfig fields that differ from ``train``: one factor at a time), the default-size reference
models (shipped checkpoints, measured but not trained) and the measurement sizes. Kept as plain data so the
resolved profile can be written into the sweep's folder and a rerun can tell whether it is the same sweep.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SWEEP = Path(__file__).with_name("sweep.yaml")
# A condition's own measurement sizes (e.g. more edits where more realms allow them): ``measure: {edits: 48}``
# beside its training settings.
MEASURE = "measure"
# The condition it differs from by one factor (``versus: realms-24``): their direct transfer is compared.
VERSUS = "versus"
# What each trained model is measured with (see measure.py); a profile must size every one.
MEASURE_KEYS = (
    "edits",
    "inject",
    "lora_max_steps",
    "probe_realms",
    "shuffles",
    "patch_pairs",
    "gap_items",
    "bootstrap",
)


@dataclass(frozen=True)
class SweepModel:
    """One trained model of the sweep: a condition at a training seed, or a shipped reference."""

    name: str  # folder name: CONDITION-seedS, or the reference's spec slug
    condition: str  # the condition's name, or "reference"
    seed: int
    train: dict[str, Any] | None  # TrainConfig fields (None for a reference)
    spec: str | None = None  # a reference's model spec (toy, toy:decoupled@seed1, ...)
    # the profile's measurement sizes with the condition's overrides
    measure: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepConfig:
    path: str
    profile: str  # "quick" or "full"
    train: dict[str, Any]
    seeds: list[int]
    conditions: dict[str, dict[str, Any]]
    references: list[str]
    measure: dict[str, Any]
    baseline: str  # the condition every other one is compared with (the disjoint extreme)

    def models(self) -> list[SweepModel]:
        """Every trained model (conditions in file order, each at every seed), then the references."""
        trained = [
            SweepModel(
                f"{name}-seed{seed}",
                name,
                seed,
                {**self.train, **_training(changes), "seed": seed},
                measure={**self.measure, **changes.get(MEASURE, {})},
            )
            for name, changes in self.conditions.items()
            for seed in self.seeds
        ]
        return trained + [
            SweepModel(_slug(s), "reference", _seed_of(s), None, s, dict(self.measure))
            for s in self.references
        ]

    def versus(self) -> dict[str, str]:
        """Condition → the condition it differs from by one factor (where the file names one)."""
        return {name: str(c[VERSUS]) for name, c in self.conditions.items() if VERSUS in c}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _training(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if k not in (MEASURE, VERSUS)}


def _slug(spec: str) -> str:
    return "ref-" + "".join(c if c.isalnum() else "-" for c in spec)


def _seed_of(spec: str) -> int:
    _, _, at = spec.partition("@seed")
    return int(at) if at.isdigit() else 0


def load_sweep(path: str | Path | None = None, *, quick: bool = False) -> SweepConfig:
    """Read and check the YAML; a missing key or a training setting TrainConfig does not know is an error
    naming the file and the key, before anything trains."""
    import yaml

    from experiments.paper_study.config import require
    from gapeval.models.registry import check_spec
    from gapeval.models.toy.train import TrainConfig

    path = Path(path or DEFAULT_SWEEP)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile = "quick" if quick else "full"

    def need(mapping: Any, key: str, where: str) -> Any:
        return require(mapping, key, where, path)

    prof = need(data, profile, "")
    measure = need(prof, "measure", f"{profile}.")
    for key in MEASURE_KEYS:
        need(measure, key, f"{profile}.measure.")
    config = SweepConfig(
        path=str(path),
        profile=profile,
        train=dict(need(prof, "train", f"{profile}.") or {}),
        seeds=[int(s) for s in need(prof, "seeds", f"{profile}.")],
        conditions={str(k): dict(v or {}) for k, v in need(prof, "conditions", f"{profile}.").items()},
        references=[str(s) for s in prof.get("references", [])],
        measure=dict(measure),
        baseline=str(need(prof, "baseline", f"{profile}.")),
    )
    if config.baseline not in config.conditions:
        raise ValueError(f"{path}: {profile}.baseline {config.baseline!r} is not one of its conditions")
    for name, changes in config.conditions.items():
        if unknown := sorted(set(changes.get(MEASURE, {})) - set(MEASURE_KEYS)):
            raise ValueError(f"{path}: {profile}.conditions.{name}.measure: unknown sizes {unknown}")
    for name, other in config.versus().items():
        if other not in config.conditions or other == name:
            raise ValueError(
                f"{path}: {profile}.conditions.{name}.versus: {other!r} is not another condition"
            )
    for spec in config.references:
        try:
            check_spec(spec)
        except ValueError as e:
            raise ValueError(f"{path}: {profile}.references: {e}") from None
    for model in config.models():
        if model.train is not None:
            try:
                TrainConfig().updated(model.train).check()
            except ValueError as e:
                raise ValueError(f"{path}: {profile}.conditions.{model.condition}: {e}") from None
    return config
