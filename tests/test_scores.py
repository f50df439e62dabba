"""Influence scores against leave-one-out retraining, unrolled gradient descent and each other."""

import pytest
import torch
from torch.func import grad, jvp

import influence_utils as iu


def test_influence_matches_naive_formula(logreg):
    obj, theta, train, test = logreg
    s = iu.influence(obj, theta, iu.ExactSolver().fit(obj, theta, train), train=train, test=test)
    n = train[1].shape[0]
    H = obj.hessian(theta, train)
    G_tr, G_te = obj.per_example_grads(theta, train), obj.per_example_grads(theta, test)
    assert s.shape == (test[1].shape[0], n)  # query dimension first
    torch.testing.assert_close(s, G_te @ torch.linalg.solve(H, G_tr.T) / n)


def test_influence_predicts_exact_leave_one_out(logreg):
    """Sign and scale: scores[i, j] ≈ loss(test_i; θ without train_j) − loss(test_i; θ)."""
    obj, theta, train, test = logreg
    n = train[1].shape[0]
    s = iu.influence(obj, theta, iu.ExactSolver().fit(obj, theta, train), train=train, test=test)
    loo = iu.retrain_without(obj, theta, train, list(range(n)), method="newton")
    base = obj.per_example_losses(theta, test)
    actual = torch.stack([obj.per_example_losses(t, test) for t in loo], dim=1) - base[:, None]
    assert iu.pearson(s, actual) > 0.99
    assert iu.spearman(s, actual) > 0.99
    # not just correlated: the same scale, and the same sign where the effect is clear
    big = actual.abs() > actual.abs().quantile(0.5)
    assert (torch.sign(s[big]) == torch.sign(actual[big])).float().mean() > 0.99
    # least-squares slope of actual on predicted: 1 up to the second-order term, which with only
    # n = 80 examples (ε = 1/80) makes the actual effects somewhat larger than predicted
    slope = (s * actual).sum() / (s * s).sum()
    assert 0.9 < slope < 1.25


def test_solvers_give_the_same_scores(logreg):
    obj, theta, train, test = logreg
    exact = iu.influence(obj, theta, iu.ExactSolver(damping=1e-3).fit(obj, theta, train), train=train, test=test)
    for solver in [
        iu.CGSolver(damping=1e-3, tol=1e-12),
        iu.ArnoldiSolver(rank=obj.p, iterations=obj.p, damping=1e-3),
    ]:
        got = iu.influence(obj, theta, solver.fit(obj, theta, train), train=train, test=test)
        torch.testing.assert_close(got, exact, rtol=1e-7, atol=1e-12)
    # chunked training gradients and an explicit n give the same answer
    chunked = iu.influence(obj, theta, iu.ExactSolver(damping=1e-3).fit(obj, theta, train),
                           train=train, test=test, chunk_size=7, n=2 * train[1].shape[0])
    torch.testing.assert_close(chunked, exact / 2)


def test_self_influence_is_the_diagonal(logreg):
    obj, theta, train, _ = logreg
    solver = iu.ExactSolver().fit(obj, theta, train)
    full = iu.influence(obj, theta, solver, train=train, test=train)
    si = iu.self_influence(obj, theta, solver, train, chunk_size=9)
    torch.testing.assert_close(si, torch.diagonal(full))
    assert (si > 0).all()  # positive-definite H: removing an example raises its own loss


def _unrolled_test_loss_derivative(obj, theta, train, test, j, steps, lr):
    """d/dε of test losses after `steps` GD steps on L + ε ℓ(z_j) from θ, by forward-mode AD
    through the actual optimisation loop (no formula involved)."""
    X, y = train
    zj = (X[j : j + 1], y[j : j + 1])

    def run(eps):
        t = theta
        for _ in range(steps):
            t = t - lr * grad(lambda u: obj.loss(u, train) + eps * obj.loss_fn(obj.forward(u, zj[0]), zj[1]).sum())(t)
        return obj.loss_fn(obj.forward(t, test[0]), test[1])

    _, d = jvp(run, (torch.zeros((), dtype=theta.dtype),), (torch.ones((), dtype=theta.dtype),))
    return d


@pytest.mark.parametrize("steps", [1, 3, 25])
def test_time_bounded_influence_is_exact_on_a_quadratic(linreg, steps):
    obj, theta, train, test = linreg
    n, lr = train[1].shape[0], 0.1
    solver = iu.ExactSolver().fit(obj, theta, train)
    tb = iu.time_bounded_influence(obj, theta, solver, train, test, steps=steps, lr=lr)
    for j in (0, 7, 31):
        # removal is ε = −1/n, so the predicted change is −(1/n) · d(test loss)/dε
        expected = -_unrolled_test_loss_derivative(obj, theta, train, test, j, steps, lr) / n
        torch.testing.assert_close(tb[:, j], expected, rtol=1e-10, atol=1e-14)


def test_time_bounded_influence_limits(logreg):
    obj, theta, train, test = logreg
    exact = iu.ExactSolver().fit(obj, theta, train)
    classical = iu.influence(obj, theta, exact, train=train, test=test)
    many = iu.time_bounded_influence(obj, theta, exact, train, test, steps=[1, 10, 200_000], lr=0.5)
    assert many.shape == (3,) + classical.shape
    torch.testing.assert_close(many[2], classical, rtol=1e-8, atol=1e-12)  # T → ∞: classical IF
    torch.testing.assert_close(many[0], iu.tracin(obj, [theta], [0.5], train, test))  # T = 1: TracIn
    # the response grows monotonically towards the classical one along positive curvature
    assert many[0].abs().sum() < many[1].abs().sum() < many[2].abs().sum()


def test_time_bounded_with_rank_limited_arnoldi(logreg):
    obj, theta, train, test = logreg
    arnoldi = iu.ArnoldiSolver(rank=2, iterations=obj.p).fit(obj, theta, train)
    tr = iu.tracin(obj, [theta], [0.3], train, test)
    # "flat" treats directions outside the eigenspace as zero curvature: T = 1 is TracIn exactly
    torch.testing.assert_close(iu.time_bounded_influence(obj, theta, arnoldi, train, test, steps=1, lr=0.3), tr)
    # "drop" keeps only the top-2 eigenspace, as ABIF does
    drop = iu.time_bounded_influence(obj, theta, arnoldi, train, test, steps=10**6, lr=0.3, outside="drop")
    torch.testing.assert_close(drop, iu.influence(obj, theta, arnoldi, train=train, test=test), rtol=1e-8, atol=1e-12)
    with pytest.raises(TypeError, match="needs eigenpairs"):
        iu.time_bounded_influence(obj, theta, iu.CGSolver().fit(obj, theta, train), train, test, steps=1, lr=0.1)


def test_time_bounded_coefficients_regimes():
    lam = torch.tensor([2.0, 1e-12, 0.0, -0.5], dtype=torch.float64)
    c = iu.time_bounded_coefficients(lam, steps=50, lr=0.1)
    assert c[0] == pytest.approx((1 - 0.8**50) / 2.0, rel=1e-12)  # → 1/λ
    assert c[1] == pytest.approx(0.1 * 50, rel=1e-9)  # ≈ ηT (TracIn)
    assert c[2] == pytest.approx(0.1 * 50, rel=1e-12)
    assert c[3] == pytest.approx((1 - 1.05**50) / -0.5, rel=1e-12)  # exponential growth
    assert c[3] > 4 * c[2]  # faster than linear in T


def test_tracin_sums_checkpoints_and_gradient_similarities(mlp):
    obj, theta, train, test = mlp
    traj = iu.train(obj, theta, train, steps=6, lr=0.05, batch_size=16, record_every=2)
    assert traj.steps == [0, 2, 4, 6] and traj.learning_rates == pytest.approx([0.1, 0.1, 0.1])
    total = iu.tracin(obj, traj.checkpoints, traj.learning_rates, train, test)
    parts = sum(0.1 * iu.gradient_dot(obj, t, train, test) for t in traj.checkpoints)
    torch.testing.assert_close(total, parts)
    cos = iu.gradient_cosine(obj, theta, train, test)
    dot = iu.gradient_dot(obj, theta, train, test)
    assert cos.shape == dot.shape == (20, 60)
    assert cos.abs().max() <= 1 + 1e-12
    assert torch.equal(torch.sign(cos), torch.sign(dot))
    with pytest.raises(ValueError, match="one learning rate per checkpoint"):
        iu.tracin(obj, traj.checkpoints, [0.1], train, test)
    stacked = torch.stack(traj.checkpoints)  # [K, p] works like a list of K checkpoints
    torch.testing.assert_close(iu.tracin(obj, stacked, traj.learning_rates, train, test), total)
    with pytest.raises(ValueError, match="one learning rate per checkpoint"):
        iu.tracin(obj, stacked[:0], [], train, test)


def test_low_rank_fast_path_equals_the_solve_path(mlp):
    """A rank-r eigen-solver scores in its r-dimensional basis; same numbers as solving in R^p."""
    obj, theta, train, test = mlp
    solver = iu.ArnoldiSolver(rank=5, iterations=obj.p, damping=1e-2).fit(obj, theta, train)
    assert solver.eigenvectors.shape[1] < obj.p  # the fast path is taken
    n = train[1].shape[0]
    G_tr, G_te = obj.per_example_grads(theta, train), obj.per_example_grads(theta, test)
    slow = solver.solve(G_te) @ G_tr.T / n
    torch.testing.assert_close(iu.influence(obj, theta, solver, train=train, test=test, chunk_size=17), slow)
    torch.testing.assert_close(iu.self_influence(obj, theta, solver, train, chunk_size=17),
                               (solver.solve(G_tr) * G_tr).sum(1) / n)


def test_time_bounded_coefficients_refuse_a_bad_learning_rate_or_horizon():
    """A NaN, zero or negative step size (or a fractional horizon) would give NaN or meaningless
    coefficients without a word: refused, naming the argument."""
    lam = torch.tensor([1.0, -0.5], dtype=torch.float64)
    for lr in (float("nan"), float("inf"), 0.0, -0.1, "fast"):
        with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got"):
            iu.time_bounded_coefficients(lam, 10, lr)
    for steps in (-1, 2.5, True):
        with pytest.raises(ValueError, match="steps must be a non-negative integer"):
            iu.time_bounded_coefficients(lam, steps, 0.1)
    torch.testing.assert_close(iu.time_bounded_coefficients(lam, 0, 0.1), torch.zeros(2, dtype=torch.float64))
