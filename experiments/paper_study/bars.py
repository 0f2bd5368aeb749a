"""Grouped bar charts of estimates with their 95 % CIs, as the study's and the sweep's figures draw them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def ci_bars(
    ax: Any,
    groups: Sequence[Mapping[str, Mapping[str, Any]]],
    series: Sequence[tuple[str, str, str]],
    width: float = 0.27,
) -> None:
    """Along x one group per entry of ``groups``; in each, one bar per ``(key, label, colour)`` of ``series``:
    the estimate ``group[key]`` (``{"mean", "ci"}``; a missing mean draws 0) with its CI as the error bar."""
    middle = (len(series) - 1) / 2
    for k, (key, label, colour) in enumerate(series):
        for x, group in enumerate(groups):
            if key not in group:
                continue
            est = group[key]
            mean = est["mean"] or 0.0
            err = [[mean - est["ci"][0]], [est["ci"][1] - mean]] if est.get("ci") else None
            ax.bar(x + (k - middle) * width, mean, width, color=colour, yerr=err, capsize=2,
                   label=label if x == 0 else None)  # fmt: skip
