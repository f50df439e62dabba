"""Intervals and tests of influence_utils.stats: against textbook formulas, hand values and scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from influence_utils import stats as st


# --------------------------------------------------------------------------- Interval
def test_interval_formatting_and_comparisons():
    iv = st.Interval(0.51234, 0.4, 0.6)
    assert str(iv) == "0.51 [0.40, 0.60]"
    assert f"{iv}" == str(iv)
    assert f"{iv:.3f}" == "0.512 [0.400, 0.600]"
    assert iv.excludes(0.0) and iv.excludes(0.61) and not iv.excludes(0.4) and not iv.excludes(0.5)
    other = st.Interval(0.2, 0.1, 0.35)
    assert iv.above(other) and other.below(iv)
    assert not iv.below(other) and not other.above(iv)
    assert not iv.above(st.Interval(0.3, 0.2, 0.45))  # overlapping: neither above nor below
    assert iv.confidence == 0.95 and iv.n == 0
    with pytest.raises(AttributeError):
        iv.low = 0.0  # frozen


# --------------------------------------------------------------------------- Wilson
def _textbook_wilson(k, n, confidence=0.95):
    z = sps.norm.ppf(1 - (1 - confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_known_values():
    low, high = st.wilson_interval(7, 20)
    assert (low, high) == pytest.approx((0.1812, 0.5671), abs=1e-4)
    assert (low, high) == pytest.approx(_textbook_wilson(7, 20), abs=1e-12)
    low0, high0 = st.wilson_interval(0, 10)
    assert low0 == 0.0 and high0 == pytest.approx(0.2775, abs=1e-4)
    assert st.wilson_interval(10, 10)[1] == 1.0
    iv = st.wilson(7, 20, confidence=0.9)
    assert iv.estimate == 0.35 and iv.n == 20 and iv.confidence == 0.9
    assert (iv.low, iv.high) == pytest.approx(_textbook_wilson(7, 20, 0.9), abs=1e-12)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 7), (7, 20), (33, 50), (50, 50), (3, 1000)])
def test_wilson_agrees_with_scipy(k, n):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert st.wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_arrays_and_errors():
    low, high = st.wilson_interval(np.array([0, 7, 20]), np.array([20, 20, 20]))
    assert low.shape == (3,) and low[0] == 0.0 and high[2] == 1.0
    assert (low[1], high[1]) == pytest.approx(st.wilson_interval(7, 20), abs=1e-15)
    with pytest.raises(ValueError, match="successes <= n"):
        st.wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence"):
        st.wilson_interval(1, 3, confidence=1.0)
    with pytest.raises(ValueError, match="NaN"):
        st.wilson_interval(float("nan"), 3)


# --------------------------------------------------------------------------- exact tests
def test_mcnemar_hand_value_and_symmetry():
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    res = st.mcnemar_exact(a, b)
    assert (res.n, res.both, res.only_a, res.only_b, res.neither) == (20, 5, 10, 2, 3)
    assert res.pvalue == pytest.approx(2 * (66 + 12 + 1) / 4096, abs=1e-15)  # 0.03857
    assert res.pvalue == pytest.approx(0.03857, abs=1e-5)
    np.testing.assert_array_equal(res.table, [[5, 10], [2, 3]])
    swapped = st.mcnemar_exact(b, a)
    assert swapped.pvalue == res.pvalue and (swapped.only_a, swapped.only_b) == (2, 10)
    assert st.mcnemar_exact(a, a).pvalue == 1.0  # no discordant pairs


def test_mcnemar_against_scipy_binomtest():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.random(60) < 0.5, rng.random(60) < 0.35
        res = st.mcnemar_exact(torch.tensor(a), b.astype(int))
        ref = sps.binomtest(res.only_a, res.only_a + res.only_b, 0.5).pvalue
        assert res.pvalue == pytest.approx(ref, abs=1e-15)
        assert res.both + res.only_a + res.only_b + res.neither == 60
    with pytest.raises(ValueError, match="booleans"):
        st.mcnemar_exact([0, 2, 1], [1, 1, 0])
    with pytest.raises(ValueError, match="lengths"):
        st.mcnemar_exact([True, False], [True])


def test_sign_test_against_binomtest():
    rng = np.random.default_rng(4)
    d = np.round(rng.normal(0.3, 1.0, size=40), 0)  # rounding makes zeros, which are dropped
    nonzero = d[d != 0]
    assert nonzero.size < d.size
    ref = sps.binomtest(int((nonzero > 0).sum()), nonzero.size, 0.5).pvalue
    assert st.sign_test(d) == pytest.approx(ref, abs=1e-15)
    assert st.sign_test([1.0] * 6) == pytest.approx(2 / 64, abs=1e-15)
    assert st.sign_test(np.zeros(5)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        st.sign_test([])


def test_holm_hand_values():
    adjusted = st.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)
    np.testing.assert_allclose(st.holm([0.5, 0.6]), [1.0, 1.0])  # clipped at 1
    np.testing.assert_allclose(st.holm([0.02]), [0.02])


def test_holm_monotone_and_not_below_raw():
    p = np.random.default_rng(5).random(30) ** 3
    adjusted = st.holm(p)
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert (adjusted >= p).all() and (adjusted <= 1).all()
    with pytest.raises(ValueError, match="NaN"):
        st.holm([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.holm([0.1, 1.5])


# --------------------------------------------------------------------------- bootstrap
def _bivariate(n, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho * rho) * rng.normal(size=n)


def test_correlation_estimate_is_scipys():
    x, y = _bivariate(200, 0.5, 0)
    y = np.round(y, 1)  # ties for Spearman
    assert st.bootstrap_correlation(x, y).estimate == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-14)
    sp = st.bootstrap_correlation(x, y, method="spearman")
    assert sp.estimate == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-14)
    X, Y = x.reshape(20, 10), y.reshape(20, 10)
    for unit in st.UNITS:
        iv = st.bootstrap_correlation(X, Y, unit=unit, method="spearman", n_boot=200)
        assert iv.estimate == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-14)
        assert iv.n == {"pairs": 200, "rows": 20, "cols": 10, "both": 10}[unit]


def test_correlation_interval_covers_rho():
    x, y = _bivariate(400, 0.6, 1)
    for method in st.METHODS:
        iv = st.bootstrap_correlation(x, y, method=method)
        assert iv.low < iv.estimate < iv.high
        assert 0.05 < iv.width < 0.25
    iv = st.bootstrap_correlation(x, y)
    assert not iv.excludes(0.6) and iv.excludes(0.0) and iv.n == 400 and iv.confidence == 0.95
    assert st.bootstrap_correlation(x, y, confidence=0.5).width < iv.width


@pytest.mark.parametrize("method", st.METHODS)
def test_two_way_bootstrap_matches_a_loop_over_scipy(method):
    """The vectorised replicates equal scipy's correlation of each resampled sub-matrix."""
    rng = np.random.default_rng(2)
    X = np.round(rng.normal(size=(12, 7)), 1)
    Y = np.round(X + rng.normal(size=(12, 7)), 1)
    full = sps.pearsonr if method == "pearson" else sps.spearmanr
    values = []
    for rows, cols in st._resample_indices("both", X.shape, 300, seed=9):
        for r, c in zip(rows, cols):
            xs, ys = X[r][:, c].ravel(), Y[r][:, c].ravel()
            values.append(full(xs, ys).statistic)
    low, high = np.quantile(values, [0.025, 0.975])
    iv = st.bootstrap_correlation(X, Y, method=method, unit="both", n_boot=300, seed=9)
    assert (iv.low, iv.high) == pytest.approx((low, high), abs=1e-12)


def test_two_way_bootstrap_is_wider_when_columns_vary():
    """Columns with their own slope: resampling rows only misses the column variation."""
    rng = np.random.default_rng(7)
    rows, cols = 80, 10
    a = rng.normal(size=(rows, 1))
    slope = rng.normal(0.5, 0.6, size=(1, cols))
    X = a + 0.5 * rng.normal(size=(rows, cols))
    Y = slope * a + 0.5 * rng.normal(size=(rows, cols))
    by_rows = st.bootstrap_correlation(X, Y, unit="rows")
    both = st.bootstrap_correlation(X, Y, unit="both")
    assert both.estimate == by_rows.estimate
    assert both.width > 1.5 * by_rows.width


def test_bootstrap_is_fast():
    import time

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 16))
    Y = X + rng.normal(size=(100, 16))
    st.bootstrap_correlation(X[:5, :5], Y[:5, :5], unit="both", n_boot=100)  # imports
    start = time.perf_counter()
    st.bootstrap_correlation(X, Y, unit="both", n_boot=2000)
    assert time.perf_counter() - start < 0.5


def test_bootstrap_deterministic_and_accepts_tensors():
    x, y = _bivariate(50, 0.3, 2)
    a = st.bootstrap_correlation(x, y, seed=3)
    assert st.bootstrap_correlation(torch.tensor(x), torch.tensor(y), seed=3) == a
    assert st.bootstrap_correlation(x.tolist(), y.tolist(), seed=4) != a


def test_bootstrap_correlations_share_indices():
    x, y = _bivariate(60, 0.4, 3)
    x2, y2 = _bivariate(60, 0.8, 4)
    first, second = st.bootstrap_correlations([x, x], [y, y], method="spearman", seed=1)
    assert first == second
    many = st.bootstrap_correlations([x, x2], [y, y2], seed=5)
    assert many == [st.bootstrap_correlation(x, y, seed=5), st.bootstrap_correlation(x2, y2, seed=5)]
    X, Y = x.reshape(6, 10), y.reshape(6, 10)
    assert st.bootstrap_correlations([X, X], [Y, Y], unit="both")[0] == st.bootstrap_correlation(X, Y, unit="both")


def test_bootstrap_correlation_errors():
    x, y = _bivariate(30, 0.5, 5)
    with pytest.raises(ValueError, match="unknown unit 'row'.*'pairs', 'rows', 'cols', 'both'"):
        st.bootstrap_correlation(x, y, unit="row")
    with pytest.raises(ValueError, match=r"2-D.*\(30,\)"):
        st.bootstrap_correlation(x, y, unit="rows")
    with pytest.raises(ValueError, match="unknown method"):
        st.bootstrap_correlation(x, y, method="kendall")
    with pytest.raises(ValueError, match="shape"):
        st.bootstrap_correlation(x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        st.bootstrap_correlation(np.where(np.arange(30) == 3, np.nan, x), y)
    with pytest.raises(ValueError, match="empty"):
        st.bootstrap_correlation([], [])
    with pytest.raises(ValueError, match="n_boot"):
        st.bootstrap_correlation(x, y, n_boot=50)
    with pytest.raises(ValueError, match="confidence"):
        st.bootstrap_correlation(x, y, confidence=95)
    with pytest.raises(ValueError, match="constant"):
        st.bootstrap_correlation(np.ones(30), y)
    # x varies only across rows, y only across columns: 3/4 of the 2x2 replicates are constant
    with pytest.raises(ValueError, match="replicates"):
        st.bootstrap_correlation([[0.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]], unit="both")


def test_bootstrap_mean():
    rng = np.random.default_rng(8)
    x = rng.normal(1.0, 2.0, size=300)
    iv = st.bootstrap_mean(x)
    assert iv.estimate == pytest.approx(x.mean(), abs=1e-14) and iv.n == 300
    normal_width = 2 * sps.norm.ppf(0.975) * x.std(ddof=1) / math.sqrt(x.size)
    assert iv.width == pytest.approx(normal_width, rel=0.15)
    assert st.bootstrap_mean(torch.tensor(x)) == iv
    with pytest.raises(ValueError, match="1-D"):
        st.bootstrap_mean(x.reshape(30, 10))


def test_bootstrap_mean_difference():
    rng = np.random.default_rng(9)
    a = rng.normal(size=100)
    b = a - 0.3 + 0.1 * rng.normal(size=100)  # strongly paired
    paired = st.bootstrap_mean_difference(a, b, seed=2)
    assert paired == st.bootstrap_mean(a - b, seed=2)
    assert paired.excludes(0.0)
    unpaired = st.bootstrap_mean_difference(a, b, paired=False, seed=2)
    assert unpaired.estimate == pytest.approx(paired.estimate, abs=1e-12)
    assert unpaired.width > 5 * paired.width and unpaired.n == 200
    with pytest.raises(ValueError, match="paired=False"):
        st.bootstrap_mean_difference(a, b[:50])
    assert st.bootstrap_mean_difference(a, b[:50], paired=False).n == 150


# --------------------------------------------------------------------------- paired difference
def _loop_difference(a, b, y, idx_rows, idx_cols=None):
    """The paired difference by hand: both correlations on the same resampled pairs."""
    out = []
    for r in range(idx_rows.shape[0]):
        ia = idx_rows[r]
        out.append(sps.pearsonr(a[ia], y[ia]).statistic - sps.pearsonr(b[ia], y[ia]).statistic)
    return np.array(out)


def test_correlation_difference_matches_a_loop_over_resamples():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    a = y + 0.5 * rng.normal(size=40)  # the better estimator
    b = y + 1.5 * rng.normal(size=40)
    iv = st.bootstrap_correlation_difference(a, b, y, n_boot=300, seed=7)
    # the same indices as the library draws them (the first stream of the seed)
    row_rng = np.random.default_rng(np.random.SeedSequence(7).spawn(2)[0])
    idx = row_rng.integers(0, 40, size=(300, 40))
    diffs = _loop_difference(a, b, y, idx)
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert iv.estimate == pytest.approx(sps.pearsonr(a, y).statistic - sps.pearsonr(b, y).statistic, abs=1e-12)
    assert (iv.low, iv.high) == pytest.approx((low, high), abs=1e-10)
    assert iv.low > 0 and iv.n == 40  # decided: a predicts y better
    # antisymmetric, and an estimator against itself differs by exactly 0
    swapped = st.bootstrap_correlation_difference(b, a, y, n_boot=300, seed=7)
    assert (swapped.estimate, swapped.low, swapped.high) == pytest.approx((-iv.estimate, -iv.high, -iv.low), abs=1e-12)
    same = st.bootstrap_correlation_difference(a, a, y, n_boot=300, seed=7)
    assert same.estimate == 0 and same.low == 0 and same.high == 0


def test_paired_difference_is_narrower_than_separate_intervals():
    # Two estimators that share most of their error: separate intervals overlap, the paired
    # difference does not.
    rng = np.random.default_rng(1)
    y = rng.normal(size=60)
    shared = rng.normal(size=60)
    a = y + shared + 0.05 * rng.normal(size=60)
    b = y + shared + 0.6 * rng.normal(size=60)
    ra, rb = st.bootstrap_correlations([a, b], [y, y], seed=2)
    diff = st.bootstrap_correlation_difference(a, b, y, seed=2)
    assert not ra.above(rb)
    assert diff.low > 0
    X = np.stack([a, b, y]).reshape(3, 6, 10)
    both = st.bootstrap_correlation_difference(X[0], X[1], X[2], unit="both", method="spearman", seed=2)
    assert both.n == 6 and both.low <= both.estimate <= both.high
    with pytest.raises(ValueError, match="shape"):
        st.bootstrap_correlation_difference(a, b[:-1], y)


def test_correlation_difference_against_two_truths():
    rng = np.random.default_rng(3)
    t1 = rng.normal(size=(8, 12))
    t2 = t1 + 0.8 * rng.normal(size=(8, 12))  # a later, noisier truth
    pred = t1 + 0.2 * rng.normal(size=(8, 12))
    iv = st.bootstrap_correlation_difference(pred, pred, t1, truth_b=t2, unit="both", n_boot=500, seed=1)
    r1, r2 = st.bootstrap_correlations([pred, pred], [t1, t2], unit="both", n_boot=500, seed=1)
    assert iv.estimate == pytest.approx(r1.estimate - r2.estimate, abs=1e-12)
    assert iv.low > 0  # the prediction matches the first truth better
    # with truth_b equal to truth it is the one-truth comparison
    same = st.bootstrap_correlation_difference(pred, t2, t1, truth_b=t1, unit="both", n_boot=500, seed=1)
    assert same == st.bootstrap_correlation_difference(pred, t2, t1, unit="both", n_boot=500, seed=1)
