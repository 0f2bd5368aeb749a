"""Agreement statistics between the two directions and bootstrap intervals, from joint counts."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def cohen_kappa(n11: int, n10: int, n01: int, n00: int) -> float | None:
    """Cohen's kappa between und and gen correctness; None when it is undefined (chance agreement is 1)."""
    n = n11 + n10 + n01 + n00
    if n == 0:
        return None
    observed = (n11 + n00) / n
    und, gen = (n11 + n10) / n, (n11 + n01) / n
    chance = und * gen + (1 - und) * (1 - gen)
    return None if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def mcnemar_exact(n10: int, n01: int) -> float:
    """Two-sided exact McNemar p-value: is und-only success as likely as gen-only success? 1.0 with no discordant pairs."""
    n = n10 + n01
    return 1.0 if n == 0 else float(binomtest(n10, n, 0.5, alternative="two-sided").pvalue)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval ``[lo, hi]``; None without samples."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        return None
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]
