"""Tests for influence_utils.fading (the divergence study of chapter 7) and the growth-model fit."""

import math

import pytest
import torch

import influence_utils as iu
from influence_utils.divergence import fit_growth_models
from influence_utils.fading import log_steps


def _mlp_problem():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    xt = torch.randn(20, 4, generator=g, dtype=torch.float64)
    yt = (xt[:, 0] + 0.5 * xt[:, 1] > 0).long()
    model = iu.models.MLP(4, hidden=(8,), n_classes=2).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    theta = iu.train(obj, obj.theta(), (x, y), steps=200, lr=0.5).final
    return obj, theta, (x, y), (xt, yt)


def test_log_steps_grid():
    assert log_steps(1) == [0, 1]
    grid = log_steps(200, 12)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 200
    assert all(b > a for a, b in zip(grid[:-1], grid[1:]))
    ratios = [b / a for a, b in zip(grid[3:-1], grid[4:])]  # log-spaced away from the integers near 1
    assert max(ratios) / min(ratios) < 1.6
    with pytest.raises(ValueError, match="horizon"):
        log_steps(0)
    with pytest.raises(ValueError, match="points"):
        log_steps(10, 1)


def test_fading_study_full_batch_mlp():
    """Full batch: the controls coincide with the run; at T = 1 the first-order estimators are right."""
    obj, theta, train, test = _mlp_problem()
    st = iu.fading_study(obj, theta, train, test, name="mlp", n_z=6, n_queries=12, horizon=16, record_points=5,
                         lr=0.2, batch_size=None, rank=10, iterations=20, hessian_examples=40, control_seeds=2,
                         n_boot=200)
    assert st.steps == log_steps(16, 5) and st.gaps.shape == (6, len(st.steps))
    assert (st.gaps[:, 0] == 0).all() and (st.gaps[:, 1:] > 0).all()
    assert st.control_gaps.shape == (2, len(st.steps))
    torch.testing.assert_close(st.control_gaps, torch.zeros_like(st.control_gaps))  # no batch order at all
    assert st.hessian_examples == 40 and st.epochs == 16
    assert st.eta_lambda_max == pytest.approx(0.2 * float(st.eigenvalues.max()))
    for est in iu.fading.ESTIMATORS[1:]:
        r = st.correlation(est, T=1)
        assert r.estimate > 0.99 and r.low <= r.estimate <= r.high
    curve = st.curve("time-bounded IF")
    assert list(curve.columns) == ["T", "estimate", "low", "high"] and (curve["T"] > 0).all()
    assert (curve.low <= curve.estimate + 1e-12).all() and (curve.estimate <= curve.high + 1e-12).all()
    assert isinstance(st.fades(), bool)
    assert set(st.control_table.seed) == {0, 1}
    assert st.growth_models.shape in ("power law", "exponential", "undecided")


def test_fading_study_rejects_bad_panels():
    obj, theta, train, test = _mlp_problem()
    kw = dict(horizon=4, lr=0.2, batch_size=None, rank=4, iterations=8)
    with pytest.raises(ValueError, match="n_z"):
        iu.fading_study(obj, theta, train, test, n_z=1, n_queries=5, **kw)
    with pytest.raises(ValueError, match="n_queries"):
        iu.fading_study(obj, theta, train, test, n_z=3, n_queries=21, **kw)
    with pytest.raises(ValueError, match="control_seeds"):
        iu.fading_study(obj, theta, train, test, n_z=3, n_queries=5, control_seeds=0, **kw)
    with pytest.raises(ValueError, match="horizon"):
        iu.fading_study(obj, theta, train, test, n_z=3, n_queries=5, **{**kw, "horizon": 0})


def _noisy_curves(fn, steps, k=12, noise=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(steps, dtype=torch.float64)
    scale = torch.exp(noise * torch.randn(k, 1, generator=g, dtype=torch.float64))
    jitter = torch.exp(noise * torch.randn(k, len(steps), generator=g, dtype=torch.float64))
    return scale * fn(t) * jitter


def test_growth_models_tell_exponential_from_power_law():
    steps = log_steps(300, 14)
    exp_fit = fit_growth_models(steps, _noisy_curves(lambda t: 1e-6 * torch.exp(0.02 * t), steps), n_boot=300)
    assert exp_fit.shape == "exponential"
    assert exp_fit.rate.low < 0.02 < exp_fit.rate.high or abs(exp_fit.rate.estimate - 0.02) < 1e-3
    pow_fit = fit_growth_models(steps, _noisy_curves(lambda t: 1e-6 * t**0.8, steps), n_boot=300)
    assert pow_fit.shape == "power law"
    assert abs(pow_fit.exponent.estimate - 0.8) < 0.02
    assert pow_fit.r2_power.estimate > 0.99 and pow_fit.n_curves == 12
    assert math.isfinite(pow_fit.rate.estimate)


def test_growth_models_errors():
    steps = [0, 1, 2, 4]
    with pytest.raises(ValueError, match="at least 2"):
        fit_growth_models(steps, torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"\[k, R\]"):
        fit_growth_models(steps, torch.ones(3, 5))
    with pytest.raises(ValueError, match="step >= 1"):
        fit_growth_models(steps, torch.ones(3, 4), window=(0, 4))
    with pytest.raises(ValueError, match="fewer than 3"):
        fit_growth_models(steps, torch.ones(3, 4), window=(1, 2))


def test_fading_study_estimator_subset():
    obj, theta, train, test = _mlp_problem()
    kw = dict(n_z=3, n_queries=5, horizon=4, lr=0.2, batch_size=None, rank=4, iterations=8, n_boot=100)
    st = iu.fading_study(obj, theta, train, test, estimators=("TracIn",), **kw)
    assert set(st.predictions) == {"time-bounded IF", "TracIn"} and set(st.table.estimator) == set(st.predictions)
    with pytest.raises(ValueError, match="unknown estimators"):
        iu.fading_study(obj, theta, train, test, estimators=("LiSSA",), **kw)


def test_window_correlations_paired_and_consistent():
    """Window means agree with the per-T correlations; the paired difference decides a clear case."""
    g = torch.Generator().manual_seed(0)
    steps = [0, 1, 2, 4, 8]
    truth = torch.randn(5, 15, 10, generator=g, dtype=torch.float64)
    good = truth + 0.3 * torch.randn(5, 15, 10, generator=g, dtype=torch.float64)
    bad = truth + 3.0 * torch.randn(5, 15, 10, generator=g, dtype=torch.float64)
    fixed = truth[-1] + 0.5 * torch.randn(15, 10, generator=g, dtype=torch.float64)  # one prediction for all T
    preds = {"good": good, "bad": bad, "fixed": fixed}
    wc = iu.fading.window_correlations(preds, truth, steps, (2, 8), n_boot=300, seed=1)
    assert wc.horizons == [2, 4, 8]
    table = iu.fading.correlation_table(preds, truth, steps, n_boot=200, seed=1)
    for name in preds:
        rows = table[(table.estimator == name) & (table["T"] >= 2)]
        assert wc[name].estimate == pytest.approx(float(rows.pearson.mean()), abs=1e-12)
        assert wc[name].low <= wc[name].estimate <= wc[name].high
    assert set(table["T"]) == {1, 2, 4, 8}  # T = 0 left out
    d = wc.difference("good", "bad")
    assert d.low > 0 and d.estimate == pytest.approx(wc["good"].estimate - wc["bad"].estimate)
    assert wc["good"].above(wc["bad"])
    again = iu.fading.window_correlations(preds, truth, steps, (2, 8), n_boot=300, seed=1)
    assert again["bad"].low == wc["bad"].low  # deterministic given the seed
    with pytest.raises(ValueError, match="no recorded step"):
        iu.fading.window_correlations(preds, truth, steps, (100, 200))
    with pytest.raises(ValueError, match="shape"):
        iu.fading.window_correlations({"x": truth[:, :3]}, truth, steps, (1, 8))


def test_correlation_table_methods():
    g = torch.Generator().manual_seed(2)
    truth = torch.randn(3, 8, 6, generator=g, dtype=torch.float64)
    preds = {"a": truth + 0.1 * torch.randn(3, 8, 6, generator=g, dtype=torch.float64)}
    table = iu.fading.correlation_table(preds, truth, [0, 1, 2], n_boot=100, methods=("pearson",))
    assert list(table.columns) == ["estimator", "T", "pearson", "pearson_low", "pearson_high"]
    assert list(table["T"]) == [1, 2] and (table.pearson_low <= table.pearson).all()
    with pytest.raises(ValueError, match="methods"):
        iu.fading.correlation_table(preds, truth, [0, 1, 2], methods=("kendall",))


def test_positive_eigenpairs_flat_outside():
    """Positive eigenpairs only: λ ≤ 0 directions get TracIn's ηT, so T = 1 is still TracIn."""
    class Fitted:
        eigenvalues = torch.tensor([2.0, 0.5, 0.0, -0.3], dtype=torch.float64)
        eigenvectors = torch.eye(4, dtype=torch.float64)
        damping = 0.0

    pos = iu.fading.positive_eigenpairs(Fitted())
    assert pos.eigenvalues.tolist() == [2.0, 0.5] and pos.eigenvectors.shape == (4, 2)
    assert Fitted.eigenvalues.numel() == 4  # the original is unchanged
    g = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    # flat outside: c(T) on λ = 2, 0.5 and ηT on the other two directions
    c = iu.time_bounded_coefficients(pos.eigenvalues, 3, 0.1)
    expected = float(c.sum()) + 2 * 0.1 * 3
    obj_like = (g @ pos.eigenvectors * c) @ (g @ pos.eigenvectors).T + 0.1 * 3 * (g @ g.T - (g @ pos.eigenvectors) @ (g @ pos.eigenvectors).T)
    assert float(obj_like) == pytest.approx(expected)
    negative = Fitted()
    negative.eigenvalues = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="no positive"):
        iu.fading.positive_eigenpairs(negative)
    with pytest.raises(TypeError, match="eigenpairs"):
        iu.fading.positive_eigenpairs(object())
