"""Deterministic training, counterfactual runs and Newton's method."""

import pytest
import torch

import influence_utils as iu
from influence_utils.runs import batch_order
from influence_utils.training import removal_weights


def test_batch_order_is_seeded_and_covers_each_epoch():
    a = batch_order(10, steps=5, batch_size=4, seed=3)
    assert a.shape == (5, 4)
    assert torch.equal(a, batch_order(10, steps=5, batch_size=4, seed=3))
    assert not torch.equal(a, batch_order(10, steps=5, batch_size=4, seed=4))
    assert sorted(a.flatten()[:10].tolist()) == list(range(10))  # first epoch: a permutation
    assert batch_order(10, steps=5, batch_size=None) is None and batch_order(10, 5, 10) is None


def test_full_batch_training_is_gradient_descent(logreg):
    obj, _, train, _ = logreg
    theta0 = torch.zeros(obj.p, dtype=torch.float64)
    traj = iu.train(obj, theta0, train, steps=5, lr=0.7)
    t = theta0
    for _ in range(5):
        t = t - 0.7 * obj.grad(t, train)
    torch.testing.assert_close(traj.final, t)
    assert traj.steps == [0, 5] and traj.losses.shape == (5,)
    assert traj.losses[0] > traj.losses[-1]
    assert torch.equal(traj.final, iu.train(obj, theta0, train, steps=5, lr=0.7).final)


def test_perturbation_equals_upweighting(logreg):
    """ε·ℓ(z_j) added to (1/n)Σℓ is weight 1 + nε on example j (full batch)."""
    obj, theta, (X, y), _ = logreg
    n, eps, j = X.shape[0], 0.01, 11
    kw = dict(steps=20, lr=0.5)
    pert = iu.train(obj, theta, (X, y), perturbation=((X[j : j + 1], y[j : j + 1]), eps), **kw)
    w = torch.ones(n, dtype=torch.float64)
    w[j] = 1 + n * eps
    torch.testing.assert_close(pert.final, iu.train(obj, theta, (X, y), weights=w, **kw).final)


def test_retrain_without_vectorised_equals_loop(mlp):
    obj, theta, train, _ = mlp
    init = obj.theta()
    removals = [3, [5, 6, 7], []]
    kw = dict(steps=12, lr=0.3, batch_size=16, seed=2)
    got = iu.retrain_without(obj, init, train, removals, chunk=2, **kw)
    W = removal_weights(train[1].shape[0], removals)
    for k in range(len(removals)):
        torch.testing.assert_close(got[k], iu.train(obj, init, train, weights=W[k], **kw).final)
    torch.testing.assert_close(got[2], iu.train(obj, init, train, **kw).final)  # nothing removed


def test_retrain_without_newton_is_the_exact_optimum(logreg):
    obj, theta, train, _ = logreg
    got = iu.retrain_without(obj, theta, train, [0, [1, 2]], method="newton")
    W = removal_weights(train[1].shape[0], [0, [1, 2]])
    for k in range(2):
        torch.testing.assert_close(got[k], iu.minimize_newton(obj, theta, train, weights=W[k]))
        assert obj.grad(got[k], train, W[k]).norm() < 1e-9
    assert not torch.allclose(got[0], theta)


def test_paired_runs_share_batches_and_differ_only_by_eps(mlp):
    obj, theta, train, _ = mlp
    z = (train[0][:1], train[1][:1])
    kw = dict(steps=10, lr=0.2, batch_size=8, seed=5, record_every=5)
    base, same = iu.paired_runs(obj, theta, train, z, 0.0, **kw)
    assert all(torch.equal(a, b) for a, b in zip(base.thetas, same.thetas))
    base, pert = iu.paired_runs(obj, theta, train, z, 1e-3, **kw)
    assert torch.equal(base.batch_indices, pert.batch_indices)
    assert torch.equal(base.thetas[0], pert.thetas[0]) and not torch.equal(base.final, pert.final)
    gap = [float((a - b).norm()) for a, b in zip(base.thetas, pert.thetas)]
    assert gap[0] == 0 < gap[1] < gap[2]


def test_training_errors(linreg, logreg):
    obj, theta, train, _ = linreg
    with pytest.raises(FloatingPointError, match="lower lr"):
        iu.train(obj, theta, train, steps=2000, lr=50.0)
    with pytest.raises(TypeError, match="tensor data"):
        iu.train(obj, theta, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train)), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="steps and lr"):
        iu.retrain_without(obj, theta, train, [0])
    with pytest.raises(IndexError, match="out of range"):
        iu.retrain_without(obj, theta, train, [1000], steps=1, lr=0.1)
    obj, theta, train, _ = logreg
    with pytest.raises(RuntimeError, match="Newton did not converge"):
        iu.minimize_newton(obj, torch.zeros_like(theta), train, max_iter=1, tol=1e-14)


def test_loss_changes_layout(logreg):
    obj, theta, train, test = logreg
    thetas = iu.retrain_without(obj, theta, train, [0, 1, 2], method="newton")
    got = iu.loss_changes(obj, thetas, theta, test)
    assert got.shape == (test[1].shape[0], 3)
    for k in range(3):
        torch.testing.assert_close(got[:, k], obj.per_example_losses(thetas[k], test) - obj.per_example_losses(theta, test))


# ---------------------------------------------------------------------------- the proximal option


def test_train_proximal_is_gradient_descent_on_the_proximal_objective(mlp):
    """(λ/2)‖θ − θ0‖², minus ∇L(θ0)ᵀ(θ − θ0) with bregman, added to every full-batch step."""
    obj, theta0, train, _ = mlp
    lam, lr, steps = 0.3, 0.4, 6
    g0 = obj.grad(theta0, train)
    for bregman in (False, True):
        t = theta0
        for _ in range(steps):
            t = t - lr * (obj.grad(t, train) + lam * (t - theta0) - (g0 if bregman else 0))
        got = iu.train(obj, theta0, train, steps=steps, lr=lr, proximal=lam, bregman=bregman).final
        torch.testing.assert_close(got, t)
    # with bregman, nothing removed: θ0 is a stationary point and training does not move
    still = iu.train(obj, theta0, train, steps=steps, lr=lr, proximal=lam, bregman=True).final
    torch.testing.assert_close(still, theta0, rtol=0, atol=1e-12)


def test_proximal_response_of_a_quadratic_is_the_closed_form(linreg):
    """L_w quadratic: argmin L_w(θ) + (λ/2)‖θ − θ0‖² = θ0 − (H_w + λI)⁻¹ ∇L_w(θ0)."""
    obj, theta, (X, y), _ = linreg
    theta0 = theta + 0.3  # a checkpoint that is not the optimum
    lam, removals = 0.2, [4, [0, 9]]
    W = removal_weights(X.shape[0], removals)
    eye = torch.eye(obj.p, dtype=torch.float64)
    H_full = obj.hessian(theta0, (X, y))
    for bregman in (False, True):
        expected = []
        for w in W:
            H_w = obj.hessian(theta0, (X, y), weights=w)
            g = obj.grad(theta0, (X, y), w) - (obj.grad(theta0, (X, y)) if bregman else 0)
            expected.append(theta0 - torch.linalg.solve(H_w + lam * eye, g))
        expected = torch.stack(expected)
        kw = dict(proximal=lam, bregman=bregman)
        each = iu.retrain_without(obj, theta0, (X, y), removals, method="newton", **kw)
        start = iu.retrain_without(obj, theta0, (X, y), removals, method="newton", newton_hessian="start",
                                   newton_iterations=60, tol=1e-13, **kw)
        gd = iu.retrain_without(obj, theta0, (X, y), removals, steps=400, lr=0.5, **kw)
        torch.testing.assert_close(each, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(start, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gd, expected, rtol=1e-9, atol=1e-11)
    # with bregman the response to removing j is (H_w + λI)⁻¹ ∇ℓ(z_j)/n, no drift of the checkpoint
    H_w = obj.hessian(theta0, (X, y), weights=W[0])
    g_j = obj.per_example_grads(theta0, (X[4:5], y[4:5]))[0]
    torch.testing.assert_close(start[0] - theta0, torch.linalg.solve(H_w + lam * eye, g_j) / X.shape[0])
    assert not torch.allclose(H_w, H_full)  # the removed example's own curvature counts


def test_damped_influence_is_the_first_order_proximal_response(mlp):
    """A non-convex MLP: for small ε the proximal response is −ε (H + λI)⁻¹ ∇ℓ(z)."""
    obj, theta0, train, test = mlp
    s = iu.curvature.spectrum_summary(iu.ExactSolver().fit(obj, theta0, train).eigenvalues)
    assert s.n_negative > 0
    lam = s.min_damping + 0.1  # the proximal objective is convex at θ0
    solver = iu.ExactSolver(damping=lam).fit(obj, theta0, train)
    z = (train[0][7:8], train[1][7:8])
    eps = 1e-5
    run = iu.train(obj, theta0, train, steps=600, lr=0.5, perturbation=(z, eps), proximal=lam, bregman=True)
    predicted = -solver.solve(obj.per_example_grads(theta0, z)[0])
    torch.testing.assert_close((run.final - theta0) / eps, predicted, rtol=1e-3, atol=1e-6)
    # removals (ε = −1/n): the exact stationary points against the damped influence scores
    removals = list(range(12))
    thetas = iu.retrain_without(obj, theta0, train, removals, method="newton", proximal=lam, bregman=True,
                                newton_hessian="start", newton_iterations=40, tol=1e-13)
    actual = iu.loss_changes(obj, thetas, theta0, test)
    scores = iu.influence(obj, theta0, solver, train=train, test=test)[:, removals]
    assert iu.pearson(scores, actual) > 0.99 and iu.spearman(scores, actual) > 0.99
    each = iu.retrain_without(obj, theta0, train, removals[:3], method="newton", proximal=lam, bregman=True)
    torch.testing.assert_close(each, thetas[:3], rtol=1e-8, atol=1e-10)


def test_proximal_gd_vectorised_equals_loop(mlp):
    obj, theta0, train, _ = mlp
    kw = dict(steps=8, lr=0.3, batch_size=16, seed=1, proximal=0.2, bregman=True)
    removals = [2, [3, 4]]
    got = iu.retrain_without(obj, theta0, train, removals, **kw)
    W = removal_weights(train[1].shape[0], removals)
    for k in range(len(removals)):
        torch.testing.assert_close(got[k], iu.train(obj, theta0, train, weights=W[k], **kw).final)


def test_proximal_errors(mlp):
    obj, theta0, train, _ = mlp
    with pytest.raises(ValueError, match="proximal must be"):
        iu.train(obj, theta0, train, steps=1, lr=0.1, proximal=-1.0)
    with pytest.raises(ValueError, match="newton_hessian"):
        iu.retrain_without(obj, theta0, train, [0], method="newton", newton_hessian="fixed")
    # below the convexity threshold the chord iteration cannot settle: a clear error, not garbage
    with pytest.raises(RuntimeError, match="Newton did not reach"):
        iu.retrain_without(obj, theta0, train, [0, 1], method="newton", proximal=0.0, bregman=True,
                           newton_hessian="start", newton_iterations=5, tol=1e-12)
