"""ε sweeps, group removals and the second-order remainder, against closed forms and retraining."""

import math

import pytest
import torch

import influence_utils as iu
from influence_utils.perturbation import (
    epsilon_sweep,
    group_removal,
    group_scores,
    linearity_break,
    linearized_removal,
    loglog_slope,
    random_groups,
    similar_groups,
    upweight_weights,
    weighted_runs,
)
from influence_utils.training import removal_weights


def test_upweight_weights_remove_and_duplicate():
    w = upweight_weights(5, [1, 3], [-1 / 5, 0.0, 2 / 5])
    assert torch.equal(w[0], torch.tensor([1.0, 0, 1, 0, 1], dtype=torch.float64))  # removal
    assert torch.equal(w[1], torch.ones(5, dtype=torch.float64))
    assert torch.equal(w[2], torch.tensor([1.0, 3, 1, 3, 1], dtype=torch.float64))  # two more copies
    with pytest.raises(ValueError, match="repeats"):
        upweight_weights(5, [1, 1], [0.1])
    with pytest.raises(IndexError):
        upweight_weights(5, [7], [0.1])


def test_weighted_runs_equal_training_with_those_weights(mlp):
    obj, _, train, _ = mlp
    init = obj.theta()
    n = train[1].shape[0]
    W = torch.cat([upweight_weights(n, 4, [3 / n]), removal_weights(n, [[1, 2]])])
    kw = dict(steps=9, lr=0.3, batch_size=16, seed=1)
    got = weighted_runs(obj, init, train, W, chunk=1, **kw)
    for k in range(2):
        torch.testing.assert_close(got[k], iu.train(obj, init, train, weights=W[k], **kw).final)
    torch.testing.assert_close(got[1], iu.retrain_without(obj, init, train, [[1, 2]], **kw)[0])
    # full batch: continuing each run from its own state is the same as running longer
    full = dict(lr=0.3)
    first = weighted_runs(obj, init, train, W, steps=4, **full)
    torch.testing.assert_close(weighted_runs(obj, first, train, W, steps=5, **full),
                               weighted_runs(obj, init, train, W, steps=9, **full))
    with pytest.raises(ValueError, match="one per row"):
        weighted_runs(obj, first[:1], train, W, steps=1, **full)


def test_least_squares_optimum_follows_sherman_morrison(linreg):
    """Removing curvature with the example: Δθ = −ε r H⁻¹x̃ / (1 + ε x̃ᵀH⁻¹x̃), not linear in ε."""
    obj, theta, (X, y), (Xt, yt) = linreg
    n, j = X.shape[0], 7
    eps = torch.tensor([-1 / n, 0.5 / n, 3 / n, 30 / n], dtype=torch.float64)
    H = obj.hessian(theta, (X, y))
    scores = iu.influence(obj, theta, iu.ExactSolver().fit(obj, theta, (X, y)), (X, y), (Xt, yt))
    sweep = epsilon_sweep(obj, theta, (X, y), (Xt, yt), j, eps, scores[:, j], method="newton")
    xj, xt = torch.cat([X[j], torch.ones(1, dtype=torch.float64)]), torch.cat([Xt, torch.ones(len(yt), 1, dtype=torch.float64)], 1)
    r, Hx = xj @ theta - y[j], torch.linalg.solve(H, xj)
    for k, e in enumerate(eps):
        dtheta = -e * r * Hx / (1 + e * (xj @ Hx))
        expected = 0.5 * (xt @ (theta + dtheta) - yt) ** 2 - 0.5 * (xt @ theta - yt) ** 2
        torch.testing.assert_close(sweep.actual[k], expected, rtol=1e-8, atol=1e-12)
    # the first-order line is the ε → 0 tangent: −nε·score = ε ∇ℓ_testᵀ dθ/dε
    torch.testing.assert_close(sweep.predicted[0], xt.matmul(-eps[0] * r * Hx) * (xt @ theta - yt))
    assert (sweep.relative_error[1:].diff() > 0).all()  # the gap grows with ε


def test_newton_runs_with_more_than_256_parameters_reach_the_weighted_least_squares_optimum():
    """p = 301 > 256 (the Hessian is built from two blocks of HVPs; chapter 6's full profile has 785).

    Weighted ridge regression has the closed form θ_w = (X̃ᵀWX̃/n + λI)⁻¹ X̃ᵀWy/n (X̃ with a column
    of ones for the bias), for every row of weights, from one start or one start per run.
    """
    from conftest import Linear1

    g = torch.Generator().manual_seed(11)
    n, d, wd = 60, 300, 1e-2
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X[:, :5].sum(1) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    obj = iu.Objective(Linear1(d).double(), iu.per_example_squared_error, weight_decay=wd)
    assert obj.p == d + 1 > 256
    W = upweight_weights(n, [3, 8], [0.0, -1 / n, 2 / n, 30 / n])
    Xb = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)
    closed = torch.stack([torch.linalg.solve(Xb.T @ (w[:, None] * Xb) / n + wd * torch.eye(d + 1, dtype=torch.float64),
                                             Xb.T @ (w * y) / n) for w in W])
    start = obj.theta().detach()
    got = weighted_runs(obj, start, (X, y), W, method="newton", newton_iterations=3, chunk=3)
    torch.testing.assert_close(got, closed, rtol=1e-9, atol=1e-10)
    again = weighted_runs(obj, start.expand(len(W), -1), (X, y), W, method="newton", newton_iterations=3)
    torch.testing.assert_close(again, closed, rtol=1e-9, atol=1e-10)


def test_one_step_response_is_exactly_linear_in_the_parameters(linreg):
    """After one gradient step θ₁ = θ₀ − η∇L − ηε∇ℓ(z): linear in ε, so on least squares the whole
    remainder is the test loss's own curvature, ½(ηε x̃ₜᵀ∇ℓ(z))²."""
    obj, theta, (X, y), (Xt, yt) = linreg
    n, j, lr = X.shape[0], 3, 0.2
    theta0 = theta + 0.3  # not an optimum: the unperturbed step moves too
    lin = linearized_removal(obj, theta0, (X, y), (Xt, yt), [j], steps=1, lr=lr)[:, 0]
    theta1 = iu.train(obj, theta0, (X, y), steps=1, lr=lr).final
    g_test = obj.per_example_grads(theta1, (Xt, yt))  # the test loss is read after the step
    gz = obj.per_example_grads(theta0, (X[j : j + 1], y[j : j + 1]))[0]
    torch.testing.assert_close(lin, lr * g_test @ gz / n)
    eps = torch.tensor([-1 / n, 5 / n, 50 / n], dtype=torch.float64)
    sweep = epsilon_sweep(obj, theta0, (X, y), (Xt, yt), j, eps, lin, steps=1, lr=lr)
    xt = torch.cat([Xt, torch.ones(len(yt), 1, dtype=torch.float64)], 1)
    expected = 0.5 * (lr * eps[:, None] * (xt @ gz)[None, :]) ** 2
    torch.testing.assert_close(sweep.second_order, expected, rtol=1e-7, atol=1e-14)


def test_logistic_second_order_term_scales_as_eps_squared(logreg):
    obj, theta, train, test = logreg
    n, j = train[1].shape[0], 5
    scores = iu.influence(obj, theta, iu.ExactSolver().fit(obj, theta, train), train, test)
    eps = torch.logspace(-3, 0, 7, dtype=torch.float64) / n
    for sign in (1.0, -1.0):
        sweep = epsilon_sweep(obj, theta, train, test, j, sign * eps, scores[:, j], method="newton", tol=1e-10)
        slope = loglog_slope(sweep.eps, sweep.second_order.norm(dim=1))
        assert abs(slope - 2) < 0.05, slope
        rel = loglog_slope(sweep.eps, sweep.relative_error)
        assert abs(rel - 1) < 0.05, rel  # relative error linear in ε


def test_linearized_removal_is_time_bounded_influence_at_an_optimum(logreg):
    """From a stationary point with full-batch steps, H and ∇ℓ stay fixed along the unperturbed
    run, so the exact linear response is −H⁻¹(I − (I − ηH)^T)∇ℓ(z)."""
    obj, theta, train, test = logreg
    lr, T = 0.5, 25
    solver = iu.ExactSolver().fit(obj, theta, train)
    tb = iu.time_bounded_influence(obj, theta, solver, train, test, T, lr)
    lin = linearized_removal(obj, theta, train, test, [0, 4, 9], steps=T, lr=lr)
    torch.testing.assert_close(lin, tb[:, [0, 4, 9]], rtol=1e-9, atol=1e-13)


def test_linearized_removal_leaves_a_second_order_remainder(mlp):
    """On a non-convex MLP trained with mini-batches, actual − exact linear response is O(ε²)."""
    obj, theta, train, test = mlp
    n = train[1].shape[0]
    kw = dict(steps=12, lr=0.3, batch_size=20, seed=4)
    lin = linearized_removal(obj, theta, train, test, [2, [3, 8]], **kw)
    eps = torch.logspace(-3, -1, 5, dtype=torch.float64) / n
    sweep = epsilon_sweep(obj, theta, train, test, [3, 8], eps, lin[:, 1], **kw)
    assert abs(loglog_slope(sweep.eps, sweep.second_order.norm(dim=1)) - 2) < 0.1
    assert float(sweep.relative_error[0]) < 1e-3
    # the derivative of a group is the sum of its members' derivatives
    torch.testing.assert_close(lin[:, 1], linearized_removal(obj, theta, train, test, [3, 8], **kw).sum(1))


def test_group_removal_predicts_the_sum_and_measures_retraining(logreg):
    obj, theta, train, test = logreg
    scores = iu.influence(obj, theta, iu.ExactSolver().fit(obj, theta, train), train, test)
    groups = [[0], [1, 2, 3], random_groups(80, 20, 1, seed=3)[0]]
    predicted, actual = group_removal(obj, theta, train, test, groups, scores, method="newton")
    torch.testing.assert_close(predicted[:, 1], scores[:, [1, 2, 3]].sum(1))
    torch.testing.assert_close(group_scores(scores, [[5], [6]]), scores[:, [5, 6]])
    loo = iu.retrain_without(obj, theta, train, groups, method="newton")
    torch.testing.assert_close(actual, iu.loss_changes(obj, loo, theta, test), rtol=1e-7, atol=1e-10)
    err = (actual - predicted).norm(dim=0) / predicted.norm(dim=0)
    assert err[0] < 0.1 and err[2] > err[0]  # one removal is near-linear, a fifth of the data is not


def test_random_and_similar_groups():
    g = random_groups(50, 10, 3, seed=1)
    assert g == random_groups(50, 10, 3, seed=1) and g != random_groups(50, 10, 3, seed=2)
    assert all(len(set(x)) == 10 and 0 <= min(x) and max(x) < 50 for x in g)
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.8, 0.0], [1.0, 0.0]])
    assert similar_groups(features, 3, [0]) == [[0, 4, 5]]  # the anchor and its two nearest
    assert similar_groups(features, 1, [3]) == [[3]]
    assert similar_groups(features, 2, [2]) == [[1, 2]]
    with pytest.raises(ValueError, match="size"):
        similar_groups(features, 9, [0])


def test_loglog_slope_and_linearity_break():
    x = torch.logspace(-4, 0, 9)
    assert loglog_slope(x, 3 * x**2) == pytest.approx(2.0)
    assert loglog_slope(-x, x**0.5) == pytest.approx(0.5)
    assert linearity_break(x, x) == pytest.approx(float(x[x >= 0.1].min()))
    assert linearity_break(x, 0 * x) == math.inf
    with pytest.raises(ValueError):
        loglog_slope([0.0, 0.0], [1.0, 2.0])
