"""Uncertainty for xling's metrics: a percentile bootstrap over aligned groups, and Fisher-z
intervals for correlations (SPEC §3, "Intervals").

Every group-averaged metric (A(L, l), gap_pct, the gap against the reference, the similarity
family, improvement_pct, retention) is a function of per-group terms. Resampling the aligned
groups with replacement is the same as drawing, for each of `n_boot` resamples, a vector of
multinomial counts w[g] (how often group g was drawn; Σ w = n_groups) and recomputing the
metric with each group's terms weighted by w[g]. `bootstrap` does exactly that: the caller's
`statistic` receives the whole [n_boot, n_groups] weight matrix and returns one value (or one
vector of values) per resample, so a metric written as weighted sums is vectorised over all
resamples at once. The interval is the (α/2, 1 − α/2) percentiles of the resampled values.

    lo, hi = bootstrap(lambda w: (w @ num) / (w @ den), n_groups=len(num))

Resamples where the metric is undefined (a zero denominator) are left out of the percentiles.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


def check_boot_args(n_boot: int, seed: int, level: float = DEFAULT_LEVEL) -> None:
    """One-line errors for unusable bootstrap settings."""
    from xling.warehouse.errors import XlingError

    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise XlingError(f"--n-boot must be a whole number >= 10, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise XlingError(f"--seed must be a whole number >= 0, got {seed!r}")
    if not 0 < level < 1:
        raise XlingError(f"the interval level must be in (0, 1), got {level!r}")


def group_weights(n_groups: int, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED):
    """[n_boot, n_groups] float64 multinomial counts: row b says how often each group was drawn
    in resample b (each row sums to n_groups). Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    if n_groups == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot).astype(
        np.float64
    )


def percentile_interval(
    samples: np.ndarray, level: float = DEFAULT_LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) percentiles of `samples` along axis 0, NaNs (undefined resamples) left out;
    NaN where every resample is undefined."""
    samples = np.asarray(samples, dtype=np.float64)
    alpha = 100 * (1 - level) / 2
    ok = np.isfinite(samples)
    if ok.all():
        lo, hi = np.percentile(samples, [alpha, 100 - alpha], axis=0)
        return lo, hi
    out_lo = np.full(samples.shape[1:], np.nan)
    out_hi = np.full(samples.shape[1:], np.nan)
    flat = samples.reshape(samples.shape[0], -1)
    for j in range(flat.shape[1]):
        col = flat[:, j][np.isfinite(flat[:, j])]
        if col.size:
            out_lo.flat[j], out_hi.flat[j] = np.percentile(col, [alpha, 100 - alpha])
    return out_lo, out_hi


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    n_groups: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of a metric over `n_groups` aligned groups.

    `statistic(weights)` gets the [n_boot, n_groups] resample counts (`group_weights`) and
    returns [n_boot] or [n_boot, ...] values; evaluated on `np.ones((1, n_groups))` it must
    give the metric itself. Returns (lo, hi) with the statistic's trailing shape.
    """
    check_boot_args(n_boot, seed, level)
    samples = np.asarray(statistic(group_weights(n_groups, n_boot, seed)), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return percentile_interval(samples, level)


def weighted_unit_means(
    weights: np.ndarray, group: np.ndarray, unit: np.ndarray, num: np.ndarray, den: np.ndarray
) -> np.ndarray:
    """[n_boot] mean over units u of Σ_g w_g num / Σ_g w_g den (rows (group, unit, num, den)).

    With one unit this is the weighted ratio of sums (A(L, l) in the topk modes); with the
    origin features as units, the mean of per-feature means (origin mode). Units no resampled
    group reaches are left out of the mean; NaN when none is reached.
    """
    order = np.argsort(unit, kind="stable")
    group, unit, num, den = group[order], unit[order], num[order], den[order]
    starts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]]) if unit.size else np.array([])
    w = weights[:, group]
    nums = np.add.reduceat(w * num, starts, axis=1) if unit.size else np.zeros((len(w), 0))
    dens = np.add.reduceat(w * den, starts, axis=1) if unit.size else np.zeros((len(w), 0))
    ratio = np.where(dens > 0, nums / np.where(dens > 0, dens, 1), np.nan)
    if not ratio.shape[1]:
        return np.full(len(w), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample reaching no unit: NaN
        return np.nanmean(ratio, axis=1)


# -- correlations -------------------------------------------------------------------------


def fisher_z_interval(r: float, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Interval of a Pearson r over n points: tanh(atanh r ± z_{1−α/2} / √(n − 3)).

    NaN for n < 4 or an undefined r; |r| = 1 gives the point itself.
    """
    from scipy import stats

    if n < 4 or not math.isfinite(r):
        return math.nan, math.nan
    if abs(r) >= 1:
        return float(r), float(r)
    z = math.atanh(r)
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)
