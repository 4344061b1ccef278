"""Statistics over seeds: the spread every learning and control figure is reported with.

`summarize` gives mean, standard deviation (n - 1), a Student-t 95% confidence interval of the mean,
the worst seed and the CVaR at 0.5 (the mean of the worse half, safe-control-gym's
`worst_case_*_at_0.5`). `paired` does the same for per-seed ratios or differences of two variants
run with the same seeds, which removes the seed-to-seed variation both share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Worse = Literal["higher", "lower"]


def _t975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def cvar(values: Sequence[float], alpha: float = 0.5, worse: Worse = "higher") -> float:
    """Mean of the worst `alpha` fraction of `values` (at least one value)."""
    v = np.sort(np.asarray(values, dtype=float))
    if worse == "higher":
        v = v[::-1]
    k = max(1, math.ceil(alpha * len(v)))
    return float(v[:k].mean())


def summarize(values: Sequence[float], worse: Worse = "higher") -> dict[str, float | int]:
    """n, mean, std, ci95_low, ci95_high, worst, best, cvar50 of per-seed `values` (non-finite ones refused)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("summarize: no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"summarize: non-finite values {v.tolist()}")
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    half = _t975(v.size - 1) * std / math.sqrt(v.size) if v.size > 1 else math.nan
    return {
        "n": int(v.size),
        "mean": mean,
        "std": std,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "worst": float(v.max() if worse == "higher" else v.min()),
        "best": float(v.min() if worse == "higher" else v.max()),
        "cvar50": cvar(v.tolist(), 0.5, worse),
    }


def paired(a: Sequence[float], b: Sequence[float], kind: Literal["ratio", "difference"] = "ratio",
           worse: Worse = "higher") -> dict[str, float | int]:
    """Summary of a_i / b_i (or a_i - b_i) over seeds i: both sequences must come from the same seeds."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired: {x.size} values against {y.size}: the seeds must be the same")
    return summarize((x / y if kind == "ratio" else x - y).tolist(), worse)


def bootstrap_ci(values: Sequence[float], seed: int = 0, resamples: int = 10_000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of `values` (resampled with replacement,
    `resamples` times, from a generator seeded with `seed`: the same values and seed give the same
    interval). One value gives (value, value)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"bootstrap_ci: non-finite values {v.tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
