"""Deterministic training, counterfactual runs and Newton's method."""

import pytest
import torch

import influence_utils as iu
from influence_utils.training import batch_order, removal_weights


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
