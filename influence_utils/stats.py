"""Uncertainty for the numbers the book reports: bootstrap intervals, binomial intervals, tests.

Every estimate comes back as an :class:`Interval` (a point estimate with a two-sided confidence
interval), so prose and plots can show it the same way (``f"{iv:.3f}"``, ``iv.excludes(0)``).

* **Correlations** (:func:`bootstrap_correlation`, :func:`bootstrap_correlations`,
  :func:`bootstrap_correlation_difference` for two estimators against the same truth): Pearson or
  Spearman with a percentile-bootstrap interval. The resampling unit matters. For paired samples
  it is the pair (``unit="pairs"``). For a score matrix ``[rows, cols]`` (e.g. rows = test
  queries, columns = removed training examples) the cells are not independent: ``unit="rows"``
  resamples whole rows, ``unit="cols"`` whole columns, and ``unit="both"`` rows and columns
  independently (the two-way bootstrap), which accounts for both sources of variation.
  :func:`bootstrap_correlations` uses the same resampled indices for every pair (common random
  numbers), so intervals of a curve over, say, the horizon T are comparable point to point.
* **Means** (:func:`bootstrap_mean`, :func:`bootstrap_mean_difference`).
* **Proportions** (:func:`wilson_interval`, :func:`wilson`): the Wilson score interval.
* **Tests of paired outcomes** (:func:`sign_test`, :func:`mcnemar_exact`) with Holm's step-down
  correction for several comparisons (:func:`holm`); :func:`~influence_utils.correction.compare`
  runs them over the methods of a correction study.

All routines accept numpy arrays, torch tensors or sequences, compute in float64, and are
deterministic given ``seed`` (``numpy.random.default_rng``). Exact tests use ``scipy.stats``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Interval",
    "McNemar",
    "UNITS",
    "METHODS",
    "bootstrap_correlation",
    "bootstrap_correlations",
    "bootstrap_correlation_difference",
    "bootstrap_mean",
    "bootstrap_mean_difference",
    "wilson_interval",
    "wilson",
    "sign_test",
    "mcnemar_exact",
    "holm",
]

#: Resampling units understood by :func:`bootstrap_correlation`.
UNITS = ("pairs", "rows", "cols", "both")
#: Correlation measures understood by :func:`bootstrap_correlation`.
METHODS = ("pearson", "spearman")

#: The axes of the data each unit resamples (``"pairs"``: of the flattened pairs).
_AXES = {"pairs": (0,), "rows": (0,), "cols": (1,), "both": (0, 1)}
_MIN_BOOT = 100
_CHUNK_ELEMENTS = 1 << 20  # resampled values per array and chunk (8 MiB in float64)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        estimate: the statistic on the full data.
        low: lower end of the interval.
        high: upper end of the interval.
        confidence: two-sided level of the interval, in (0, 1).
        n: number of resampling units (bootstrap) or of trials (binomial); 0 when unknown.
    """

    estimate: float
    low: float
    high: float
    confidence: float = 0.95
    n: int = 0

    def __str__(self) -> str:
        return format(self, ".2f")

    def __format__(self, spec: str) -> str:
        """``f"{iv:.3f}"`` applies the spec to all three numbers; an empty spec gives ``str(iv)`` (``.2f``)."""
        spec = spec or ".2f"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside ``[low, high]``."""
        return bool(value < self.low or value > self.high)

    def above(self, other: Interval) -> bool:
        """Whether this interval lies entirely above ``other`` (``self.low > other.high``)."""
        return bool(self.low > other.high)

    def below(self, other: Interval) -> bool:
        """Whether this interval lies entirely below ``other`` (``self.high < other.low``)."""
        return bool(self.high < other.low)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two methods' boolean outcomes on the same units.

    Attributes:
        n: number of units.
        both: units where both methods succeed.
        only_a: units where only method a succeeds.
        only_b: units where only method b succeeds.
        neither: units where both fail.
        pvalue: two-sided exact binomial p-value of ``only_a`` among the ``only_a + only_b``
            discordant units with p = 0.5; 1.0 when there are no discordant units.
    """

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int
    pvalue: float

    @property
    def table(self) -> np.ndarray:
        """The 2x2 table ``[[both, only_a], [only_b, neither]]`` (rows: a succeeds / fails)."""
        return np.array([[self.both, self.only_a], [self.only_b, self.neither]])


# --------------------------------------------------------------------------- validation
def _array(x: Any, name: str) -> np.ndarray:
    """``x`` (array, tensor or sequence) as a float64 numpy array; non-empty, no NaN."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = np.asarray(x.detach().cpu())
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value")
    if np.isnan(a).any():
        raise ValueError(
            f"{name} contains {int(np.isnan(a).sum())} NaN value(s) of {a.size}; drop or impute them "
            "first (for paired data drop the same entries from both arrays)"
        )
    return a


def _bools(x: Any, name: str) -> np.ndarray:
    """``x`` as a 1-D boolean array; only 0/1 (or True/False) values are accepted."""
    a = _array(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one outcome per unit), got shape {a.shape}")
    other = a[~np.isin(a, (0.0, 1.0))]
    if other.size:
        raise ValueError(f"{name} must hold booleans (or 0/1), got other values such as {other[0]}")
    return a.astype(bool)


def _check_level(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}")


def check_boot(n_boot: int, confidence: float) -> None:
    """Refuse a replicate count below the minimum, saying what to pass instead."""
    if int(n_boot) != n_boot or n_boot < _MIN_BOOT:
        raise ValueError(f"n_boot must be an integer >= {_MIN_BOOT} (2000 is a good default), got {n_boot}")
    _check_level(confidence)


def percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval ``(low, high)`` of bootstrap ``values`` at ``confidence``."""
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# --------------------------------------------------------------------------- correlation
def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a [B, m]`` with the same row of ``b``; NaN where a
    row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", a, b)
    den = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    return np.clip(r, -1.0, 1.0)


def _rowwise_ranks(codes: np.ndarray, k: int) -> np.ndarray:
    """Average ranks (1-based, ties averaged, as ``scipy.stats.rankdata``) within each row of
    ``codes [B, m]``, the dense ranks ``0..k-1`` of the original values.

    Counting instead of sorting: a value of code v gets ``#(codes < v) + (#(codes == v) + 1) / 2``
    in its row, so a chunk costs O(B (m + k)).
    """
    b = codes.shape[0]
    counts = np.bincount((codes + k * np.arange(b)[:, None]).ravel(), minlength=b * k).reshape(b, k)
    below = np.cumsum(counts, axis=1) - counts
    return np.take_along_axis(below + (counts + 1) / 2.0, codes, axis=1)


def _constant_rows(a: np.ndarray) -> np.ndarray:
    return a.max(axis=1) == a.min(axis=1)


def _resample_indices(unit: str, shape: tuple[int, ...], n_boot: int, seed: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Bootstrap indices in chunks: ``(idx,)`` for one axis, ``(rows, cols)`` for ``"both"``.

    Row and column indices come from two independent streams of ``seed``, so the replicates do
    not depend on the chunk size.
    """
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]  # rows, cols
    per_replicate = int(np.prod(shape))
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // per_replicate))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        yield tuple(rngs[axis].integers(0, shape[axis], size=(b, shape[axis])) for axis in _AXES[unit])


def _take(a: np.ndarray, unit: str, idx: tuple[np.ndarray, ...]) -> np.ndarray:
    """The resampled replicates of ``a`` as ``[B, m]`` (each replicate flattened)."""
    if unit in ("pairs", "rows"):
        out = a[idx[0]]  # [B, m] or [B, R, C]
    elif unit == "cols":
        out = a.T[idx[0]]  # [B, C, R]
    else:
        out = a[idx[0][:, :, None], idx[1][:, None, :]]  # [B, R, C]
    return out.reshape(out.shape[0], -1)


def _prepare_pairs(xs: Sequence[Any], ys: Sequence[Any], unit: str, method: str) -> tuple[list, list, tuple, int]:
    """Validated float64 arrays (flattened for ``"pairs"``), their common shape, and n."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of {UNITS}")
    if len(xs) == 0 or len(xs) != len(ys):
        raise ValueError(f"need as many x's as y's, at least one, got {len(xs)} and {len(ys)}")
    ax = [_array(x, f"x[{i}]") for i, x in enumerate(xs)]
    ay = [_array(y, f"y[{i}]") for i, y in enumerate(ys)]
    shape = ax[0].shape
    for i, (x, y) in enumerate(zip(ax, ay)):
        if x.shape != shape or y.shape != shape:
            raise ValueError(
                f"x[{i}] and y[{i}] have shapes {x.shape} and {y.shape}; every x and y must have the "
                f"shape {shape} (paired values in the same positions)"
            )
    if unit == "pairs":
        ax, ay = [x.ravel() for x in ax], [y.ravel() for y in ay]
        shape = ax[0].shape
        if shape[0] < 3:
            raise ValueError(f"a correlation interval needs at least 3 pairs, got {shape[0]}")
    else:
        if len(shape) != 2:
            raise ValueError(
                f"unit={unit!r} resamples the rows and/or columns of a 2-D [rows, cols] array, got shape "
                f"{shape}; use unit='pairs' for paired 1-D samples (units: {UNITS})"
            )
        for axis in _AXES[unit]:
            if shape[axis] < 2:
                raise ValueError(
                    f"unit={unit!r} needs at least 2 {('rows', 'cols')[axis]} to resample, got shape {shape}"
                )
    return ax, ay, shape, min(shape[axis] for axis in _AXES[unit])  # n: the resampled units


def correlation_replicates(
    xs: Sequence[Any], ys: Sequence[Any], method: str, unit: str, n_boot: int, seed: int
) -> tuple[list[float], np.ndarray, int, tuple]:
    """Full-data correlations and their bootstrap replicates ``[len(xs), n_boot]`` (NaN where a
    replicate has a constant x or y), all pairs resampled with the same indices."""
    ax, ay, shape, n = _prepare_pairs(xs, ys, unit, method)
    from scipy.stats import pearsonr, spearmanr

    full = pearsonr if method == "pearson" else spearmanr
    estimates = []
    for i, (x, y) in enumerate(zip(ax, ay)):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            raise ValueError(f"x[{i}] or y[{i}] is constant; a correlation is undefined")
        estimates.append(float(full(x.ravel(), y.ravel()).statistic))
    if method == "spearman":  # resample the dense ranks 0..k-1; each replicate is ranked by counting
        ax, ay = [[np.unique(a, return_inverse=True)[1].reshape(shape) for a in arrays] for arrays in (ax, ay)]
        kx, ky = [int(c.max()) + 1 for c in ax], [int(c.max()) + 1 for c in ay]

    boot = [[] for _ in ax]
    for idx in _resample_indices(unit, shape, int(n_boot), seed):
        for i, (x, y) in enumerate(zip(ax, ay)):
            xb, yb = _take(x, unit, idx), _take(y, unit, idx)
            degenerate = _constant_rows(xb) | _constant_rows(yb)
            if method == "spearman":
                xb, yb = _rowwise_ranks(xb, kx[i]), _rowwise_ranks(yb, ky[i])
            r = _rowwise_pearson(xb, yb)
            r[degenerate] = np.nan
            boot[i].append(r)
    return estimates, np.stack([np.concatenate(b) for b in boot]), n, shape


def _percentile_of_defined(values: np.ndarray, n_boot: int, confidence: float, what: str, unit: str,
                           shape: tuple) -> tuple[float, float]:
    """:func:`percentile` of the replicates where the correlation is defined (not NaN)."""
    kept = values[~np.isnan(values)]
    dropped = int(n_boot) - kept.size
    if dropped > n_boot / 2:
        raise ValueError(
            f"{dropped} of {n_boot} bootstrap replicates of {what} have a constant x or y (the "
            f"correlation is undefined); there are too few distinct values for unit={unit!r} "
            f"with shape {shape}; use more data or a different unit"
        )
    return percentile(kept, confidence)


def bootstrap_correlations(
    xs: Sequence[Any],
    ys: Sequence[Any],
    *,
    method: str = "pearson",
    unit: str = "pairs",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[Interval]:
    """Bootstrap intervals for several correlations, all with the same resampled indices.

    Common random numbers: replicate b resamples the same pairs (rows, columns) for every
    ``(xs[i], ys[i])``, so differences between the intervals come from the data, not from the
    draw. All arrays must have the same shape. See :func:`bootstrap_correlation` for the
    arguments.

    Returns:
        One :class:`Interval` per pair, in the order given.
    """
    check_boot(n_boot, confidence)
    estimates, boot, n, shape = correlation_replicates(xs, ys, method, unit, n_boot, seed)
    out = []
    for i, est in enumerate(estimates):
        low, high = _percentile_of_defined(boot[i], n_boot, confidence, f"pair {i}", unit, shape)
        out.append(Interval(est, low, high, float(confidence), int(n)))
    return out


def bootstrap_correlation_difference(
    a: Any,
    b: Any,
    truth: Any,
    *,
    truth_b: Any = None,
    method: str = "pearson",
    unit: str = "pairs",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Paired comparison of two estimators: ``corr(a, truth) - corr(b, truth)`` with an interval.

    Both correlations are recomputed on the same resampled units in every replicate, so the
    interval is that of the paired difference (narrower than comparing two separate intervals
    when the estimators err on the same units). The difference is decided, at the given level,
    when the interval excludes 0: ``bootstrap_correlation_difference(a, b, y).low > 0`` means
    ``a`` predicts ``y`` better than ``b``.

    Args:
        a: predictions of the first estimator, ``[n]`` or ``[rows, cols]`` (as in
            :func:`bootstrap_correlation`).
        b: predictions of the second estimator, same shape.
        truth: the measured values both are compared with, same shape.
        truth_b: if given, ``b`` is compared with these instead: the interval of
            ``corr(a, truth) - corr(b, truth_b)``, still on the same resampled units (e.g. one
            estimator against two horizons' measured effects, on the same queries and examples).
        method, unit, n_boot, confidence, seed: as in :func:`bootstrap_correlation`.

    Returns:
        :class:`Interval` of the difference; ``estimate`` is the difference on the full data.
        Replicates where either correlation is undefined are dropped.

    Raises:
        ValueError: as :func:`bootstrap_correlation`.
    """
    check_boot(n_boot, confidence)
    other = truth if truth_b is None else truth_b
    estimates, boot, n, shape = correlation_replicates([a, b], [truth, other], method, unit, n_boot, seed)
    low, high = _percentile_of_defined(boot[0] - boot[1], n_boot, confidence, "the difference", unit, shape)
    return Interval(estimates[0] - estimates[1], low, high, float(confidence), int(n))


def bootstrap_correlation(
    x: Any,
    y: Any,
    *,
    method: str = "pearson",
    unit: str = "pairs",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Correlation of ``x`` and ``y`` with a percentile-bootstrap confidence interval.

    Args:
        x: values, ``[n]`` paired samples, or a ``[rows, cols]`` matrix (e.g. rows = test queries,
            columns = removed training examples). Array, tensor or sequence; no NaN.
        y: values of the same shape, paired with ``x`` position by position.
        method: ``"pearson"`` or ``"spearman"`` (ranks with ties averaged, per replicate).
        unit: what is resampled with replacement. ``"pairs"``: the (x, y) pairs (arrays are
            flattened). For 2-D arrays: ``"rows"`` (whole rows), ``"cols"`` (whole columns), or
            ``"both"`` (rows and columns independently; the replicate is the sub-matrix
            ``x[r][:, c]`` against ``y[r][:, c]``, flattened).
        n_boot: number of bootstrap replicates, >= 100.
        confidence: two-sided level, in (0, 1).
        seed: seed of ``numpy.random.default_rng``; the result is deterministic given it.

    Returns:
        :class:`Interval` with the correlation on the full data as ``estimate`` (as
        ``scipy.stats.pearsonr`` / ``spearmanr``) and the percentile interval of the replicates.
        ``n`` is the number of resampled units: pairs, rows, columns, or for ``"both"`` the
        smaller of rows and columns. Replicates with a constant x or y are dropped.

    Raises:
        ValueError: for an unknown method or unit, a 2-D unit on 1-D data, mismatched shapes,
            empty or NaN input, a constant input, ``n_boot < 100``, a confidence outside (0, 1),
            or when more than half the replicates are degenerate.
    """
    return bootstrap_correlations(
        [x], [y], method=method, unit=unit, n_boot=n_boot, confidence=confidence, seed=seed
    )[0]


# --------------------------------------------------------------------------- means
def _vector(x: Any, name: str) -> np.ndarray:
    a = _array(x, name)
    if a.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one value per unit), got shape {a.shape}; pass .ravel() to treat "
            "every entry as a unit, or average within the units first"
        )
    return a


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    m = x.size
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // m))
    parts = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, m, size=(min(chunk, n_boot - start), m))
        parts.append(x[idx].mean(axis=1))
    return np.concatenate(parts)


def bootstrap_mean(x: Any, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``x`` with a percentile-bootstrap confidence interval.

    Args:
        x: ``[n]`` values, one per independent unit (array, tensor or sequence; no NaN).
        n_boot: number of bootstrap replicates, >= 100.
        confidence: two-sided level, in (0, 1).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        :class:`Interval` with the sample mean, the percentile interval and ``n = len(x)``.
    """
    check_boot(n_boot, confidence)
    a = _vector(x, "x")
    means = _boot_means(a, int(n_boot), np.random.default_rng(seed))
    low, high = percentile(means, confidence)
    return Interval(float(a.mean()), low, high, float(confidence), int(a.size))


def bootstrap_mean_difference(
    a: Any,
    b: Any,
    *,
    paired: bool = True,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean difference ``mean(a) - mean(b)`` with a percentile-bootstrap confidence interval.

    Args:
        a: ``[n]`` values of the first method or condition.
        b: ``[n]`` values of the second (``[m]`` when not paired).
        paired: whether ``a[i]`` and ``b[i]`` come from the same unit (the units are resampled,
            i.e. the mean of ``a - b``); otherwise ``a`` and ``b`` are resampled independently.
        n_boot, confidence, seed: as in :func:`bootstrap_mean`.

    Returns:
        :class:`Interval` of the difference; ``n`` is the number of units (``len(a) + len(b)``
        when not paired).
    """
    check_boot(n_boot, confidence)
    va, vb = _vector(a, "a"), _vector(b, "b")
    if paired:
        if va.shape != vb.shape:
            raise ValueError(
                f"paired samples need the same length, got {va.size} and {vb.size}; pass paired=False "
                "for independent samples"
            )
        return bootstrap_mean(va - vb, n_boot=n_boot, confidence=confidence, seed=seed)
    rng = np.random.default_rng(seed)
    diffs = _boot_means(va, int(n_boot), rng) - _boot_means(vb, int(n_boot), rng)
    low, high = percentile(diffs, confidence)
    return Interval(float(va.mean() - vb.mean()), low, high, float(confidence), int(va.size + vb.size))


# --------------------------------------------------------------------------- proportions
def wilson_interval(successes: Any, n: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    ``(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z`` the two-sided normal
    quantile. Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n
    successes and small n. The ends are exactly 0 at 0 successes and exactly 1 at n.

    Args:
        successes: number of successes (a number or an array).
        n: number of trials, > 0 (same shape).
        confidence: two-sided level, in (0, 1).

    Returns:
        ``(low, high)``, floats or arrays like the inputs.
    """
    from scipy.stats import norm

    _check_level(confidence)
    s, m = _array(successes, "successes"), _array(n, "n")
    if (m <= 0).any() or (s < 0).any() or (s > m).any():
        raise ValueError("need 0 <= successes <= n and n > 0")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = s / m
    denom = 1 + z * z / m
    centre = (p + z * z / (2 * m)) / denom
    half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    low, high = np.where(s == 0, 0.0, low), np.where(s == m, 1.0, high)  # exact ends, no rounding
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Proportion ``successes / n`` with its Wilson score interval (:func:`wilson_interval`).

    Returns:
        :class:`Interval` with ``estimate = successes / n`` and ``n`` trials.
    """
    if int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n must be whole numbers, got {successes} and {n}")
    low, high = wilson_interval(int(successes), int(n), confidence)
    return Interval(successes / n, low, high, float(confidence), int(n))


# --------------------------------------------------------------------------- tests
def sign_test(diff: Any) -> float:
    """Two-sided exact sign test: are positive and negative differences equally likely?

    Args:
        diff: ``[n]`` paired differences (e.g. ``a - b`` per unit); zeros are dropped.

    Returns:
        The p-value of ``scipy.stats.binomtest`` of the number of positive signs among the
        non-zero ones with p = 0.5; 1.0 when every difference is zero.
    """
    from scipy.stats import binomtest

    d = _array(diff, "diff").ravel()
    k, m = int((d > 0).sum()), int((d != 0).sum())
    if m == 0:
        return 1.0
    return float(binomtest(k, m, 0.5).pvalue)


def mcnemar_exact(a: Any, b: Any) -> McNemar:
    """Exact McNemar test of two methods' boolean outcomes on the same units.

    Args:
        a: ``[n]`` outcomes of method a (booleans or 0/1), e.g. "the correction flipped the
            prediction" per test example.
        b: ``[n]`` outcomes of method b on the same units, in the same order.

    Returns:
        :class:`McNemar` with the 2x2 counts and the two-sided exact binomial p-value of the
        discordant units (``only_a`` of ``only_a + only_b``, p = 0.5; 1.0 without discordant
        units). Symmetric in a and b.
    """
    from scipy.stats import binomtest

    va, vb = _bools(a, "a"), _bools(b, "b")
    if va.shape != vb.shape:
        raise ValueError(
            f"a and b must hold one outcome per unit for the same units, got lengths {va.size} and {vb.size}"
        )
    both, only_a = int((va & vb).sum()), int((va & ~vb).sum())
    only_b, neither = int((~va & vb).sum()), int((~va & ~vb).sum())
    discordant = only_a + only_b
    p = float(binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0
    return McNemar(int(va.size), both, only_a, only_b, neither, min(p, 1.0))


def holm(pvalues: Any) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values.

    With the m p-values sorted ascending, ``p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎)``.
    Rejecting where ``p̃ < α`` controls the family-wise error rate at α for any dependence.

    Args:
        pvalues: p-values in [0, 1] (any shape; no NaN).

    Returns:
        Adjusted p-values, float64, in the input's order and shape; never below the raw ones,
        monotone in them, at most 1.
    """
    p = _array(pvalues, "pvalues")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got values in [{p.min()}, {p.max()}]")
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    scaled = (m - np.arange(m)) * flat[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out.reshape(p.shape)
