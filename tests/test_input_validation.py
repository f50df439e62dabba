"""Bad input that used to give a silently wrong answer now gives a clear error (or a distinct cache entry)."""

import math

import pytest
import torch
from torch import nn

import influence_utils as iu
from influence_utils import checkpoints as C
from influence_utils.batching import iter_chunks


def _logreg(n=20, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(d, 2).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-2)
    return obj, obj.theta(), (x, y)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True])
def test_objective_refuses_a_chunk_size_that_is_not_a_positive_integer(bad):
    obj, _, _ = _logreg()
    with pytest.raises(ValueError, match="chunk_size"):
        obj.chunk_size = bad
    with pytest.raises(ValueError, match="chunk_size"):
        iu.Objective(nn.Linear(3, 2), iu.per_example_cross_entropy, chunk_size=bad)


def test_negative_chunk_size_is_refused_where_data_is_chunked():
    _, _, data = _logreg()
    with pytest.raises(ValueError, match="chunk_size"):
        list(iter_chunks(data, -5))
    assert len(list(iter_chunks(data, 0))) == 1  # 0 (or None): the data whole, as before


@pytest.mark.parametrize("lr", [math.nan, math.inf, -0.1, 0.0])
def test_non_finite_or_non_positive_step_sizes_are_refused(lr):
    obj, theta, data = _logreg()
    solver = iu.ExactSolver().fit(obj, theta, data)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        iu.time_bounded_influence(obj, theta, solver, data, data, steps=3, lr=lr)
    with pytest.raises(ValueError, match="learning rates must be finite"):
        iu.tracin(obj, [theta], [lr], data, data)


def _tiny_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    return iu.data.Dataset(name="tiny", train=(x[:4], y[:4]), test=(x[4:], y[4:]), class_names=("a", "b"),
                           description="six random 8x8 images")


def test_fingerprint_covers_every_value_of_every_tensor():
    ds = _tiny_dataset()
    a = nn.Linear(200, 2)
    b = nn.Linear(200, 2)
    b.load_state_dict(a.state_dict())
    assert C._fingerprint(ds, a) == C._fingerprint(ds, b)
    with torch.no_grad():
        b.weight[1, 150] += 1e-3  # beyond the first 64 values of the tensor
    assert C._fingerprint(ds, a) != C._fingerprint(ds, b)


def test_cache_key_carries_the_code_version():
    ds = _tiny_dataset()
    key = C._cache_key(iu.config.TopLayerTask(), ds, nn.Linear(2, 2))
    assert key["code"] == {"version": iu.__version__, "schema": C.CACHE_SCHEMA}


def test_squared_error_with_one_output_and_flat_targets_is_per_example():
    # nn.Linear(d, 1) gives [n, 1]; regression targets are usually [n]. Broadcasting them would
    # compare every output with every target ([n, n]); the loss must be per example instead.
    g = torch.Generator().manual_seed(0)
    n, d, wd = 30, 4, 1e-2
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    obj = iu.Objective(model, iu.per_example_squared_error, weight_decay=wd)
    theta = obj.theta()
    residual = x @ theta - y
    assert torch.allclose(obj.loss(theta, (x, y)), 0.5 * residual.pow(2).mean() + 0.5 * wd * theta.pow(2).sum())
    # linear least squares: H = XᵀX / n + wd I exactly, and ∇ℓ_i = (x_iᵀθ − y_i) x_i
    assert torch.allclose(obj.hessian(theta, (x, y)), x.T @ x / n + wd * torch.eye(d, dtype=torch.float64))
    assert torch.allclose(obj.per_example_grads(theta, (x, y)), residual[:, None] * x)
    # the same with [n, 1] targets and [n] outputs
    assert torch.allclose(iu.per_example_squared_error(y[:, None], y + 1), torch.full((n,), 0.5, dtype=torch.float64))


def test_squared_error_refuses_other_shape_mismatches():
    with pytest.raises(ValueError, match=r"outputs \(5, 2\) and targets \(5,\).*reshape"):
        iu.per_example_squared_error(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(ValueError, match="same shape"):
        iu.per_example_squared_error(torch.zeros(5, 1), torch.zeros(4))


def _with_nan_example(k=3):
    obj, theta, (x, y) = _logreg(n=20)
    x = x.clone()
    x[k, 1] = math.nan
    return obj, theta, (x, y)


@pytest.mark.parametrize("make", [
    lambda: iu.ExactSolver(damping=0.01),
    lambda: iu.CGSolver(damping=0.01, max_iter=20),
    lambda: iu.ArnoldiSolver(rank=3, iterations=6),
    lambda: iu.LissaSolver(damping=0.01, scale=10.0, depth=20),
])
def test_a_nan_in_the_data_is_named_not_turned_into_nan_scores(make):
    obj, theta, train = _with_nan_example(k=3)
    with pytest.raises(FloatingPointError, match=r"inputs has non-finite values in 1 examples \(first: example 3\)"):
        solver = make().fit(obj, theta, train)
        solver.solve(torch.ones(obj.p, dtype=torch.float64))


def test_non_finite_theta_and_overflowing_losses_are_named():
    obj, theta, train = _logreg()
    bad = theta.clone()
    bad[2] = math.inf
    with pytest.raises(FloatingPointError, match=r"theta has 1 non-finite entries \(first at index 2\)"):
        iu.ExactSolver().fit(obj, bad, train)
    x, y = train
    x = x.clone()
    x[5] = 1e308  # finite inputs whose logits overflow: 3 x 1e308 is inf
    ones = torch.ones_like(theta)
    with pytest.raises(FloatingPointError, match=r"per-example losses: 1 examples .*example 5"):
        iu.ArnoldiSolver(rank=3, iterations=6).fit(obj, ones, (x, y))


def _loader(x, y, **kw):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(x, y), batch_size=8, **kw)


def test_loaders_that_would_scramble_or_drop_score_columns_are_refused():
    obj, theta, (x, y) = _logreg(n=30)
    solver = iu.ExactSolver(damping=0.01).fit(obj, theta, (x, y))
    exact = iu.influence(obj, theta, solver, train=(x, y), test=(x[:4], y[:4]))
    # a sequential loader is the same data: the same scores, column j = example j
    same = iu.influence(obj, theta, solver, train=_loader(x, y), test=(x[:4], y[:4]))
    assert torch.allclose(same, exact)
    with pytest.raises(ValueError, match="RandomSampler.*shuffle=False"):
        iu.influence(obj, theta, solver, train=_loader(x, y, shuffle=True), test=(x[:4], y[:4]))
    with pytest.raises(ValueError, match="RandomSampler.*shuffle=False"):
        obj.per_example_grads(theta, _loader(x, y, shuffle=True))
    with pytest.raises(ValueError, match="drop_last=True"):
        iu.influence(obj, theta, solver, train=_loader(x, y, drop_last=True), test=(x[:4], y[:4]))
    with pytest.raises(ValueError, match="drop_last=True"):
        iu.ExactSolver().fit(obj, theta, _loader(x, y, drop_last=True))
    # order does not matter for the Hessian: a shuffled loader gives the same curvature
    H = obj.hessian(theta, _loader(x, y, shuffle=True))
    assert torch.allclose(H, obj.hessian(theta, (x, y)))


def test_a_one_shot_generator_is_refused_before_it_is_used_up():
    obj, theta, (x, y) = _logreg(n=30)
    batches = ((x[i:i + 10], y[i:i + 10]) for i in range(0, 30, 10))
    with pytest.raises(TypeError, match=r"one-shot iterator.*DataLoader itself"):
        iu.CGSolver(damping=0.01).fit(obj, theta, batches).solve(torch.ones(obj.p, dtype=torch.float64))
    with pytest.raises(TypeError, match="one-shot iterator"):
        iu.batching.num_examples(iter(_loader(x, y)))
    # the loader itself can be read again and again: the same Hessian as the tensors
    assert torch.allclose(obj.hessian(theta, _loader(x, y)), obj.hessian(theta, (x, y)))


def test_a_solver_fitted_elsewhere_is_refused_naming_both():
    obj, theta, train = _logreg(n=30)
    test = (train[0][:5], train[1][:5])
    for solver in (iu.ExactSolver(damping=0.01), iu.ArnoldiSolver(rank=3, iterations=6),
                   iu.CGSolver(damping=0.01)):
        solver.fit(obj, theta, train)
        iu.influence(obj, theta.clone(), solver, train=train, test=test)  # the same θ (a copy): fine
        moved = theta + 1e-3
        with pytest.raises(ValueError, match=r"fitted at theta \[p = 8, .*\] but is used at theta \[p = 8"):
            iu.influence(obj, moved, solver, train=train, test=test)
    exact = iu.ExactSolver(damping=0.01).fit(obj, theta, train)
    with pytest.raises(ValueError, match="fitted at theta"):
        iu.self_influence(obj, theta + 1e-3, exact, train)
    with pytest.raises(ValueError, match="fitted at theta"):
        iu.time_bounded_influence(obj, theta + 1e-3, exact, train, test, steps=5, lr=0.1)
    # another objective: the weight decay differs
    other = iu.Objective(obj.model, iu.per_example_cross_entropy, weight_decay=0.5)
    with pytest.raises(ValueError, match=r"weight_decay=0.01.*used with .*weight_decay=0.5"):
        iu.influence(other, theta, exact, train=train, test=test)
    # a damping variant shares the fit, and so the check
    with pytest.raises(ValueError, match="fitted at theta"):
        iu.influence(obj, theta + 1e-3, exact.with_damping(0.1), train=train, test=test)
