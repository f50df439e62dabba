"""Shared small problems with known answers, all in float64."""

import pytest
import torch
from torch import nn

import influence_utils as iu


class Linear1(nn.Module):
    """x -> xᵀw + b, one output per example ([n])."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def _make_binary(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(X @ w)).to(torch.float64)
    return X, y


@pytest.fixture(scope="session")
def logreg():
    """L2-regularised logistic regression at its exact optimum (strictly convex)."""
    torch.manual_seed(0)
    d = 5
    train = _make_binary(80, d, 1)
    test = _make_binary(25, d, 2)
    model = Linear1(d).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-2)
    theta = iu.minimize_newton(obj, obj.theta(), train)
    return obj, theta, train, test


@pytest.fixture(scope="session")
def mlp():
    """A small tanh MLP trained briefly: an indefinite Hessian with a few hundred parameters."""
    torch.manual_seed(0)
    d = 4
    train = _make_binary(60, d, 3)
    test = _make_binary(20, d, 4)
    model = iu.models.MLP(d, hidden=(12,), n_classes=2).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    traj = iu.train(obj, obj.theta(), train, steps=300, lr=0.5)
    return obj, traj.final, train, test


@pytest.fixture(scope="session")
def linreg():
    """Least squares ½(xᵀθ − y)²: a quadratic objective with a constant Hessian."""
    g = torch.Generator().manual_seed(5)
    d, n = 4, 40
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    Xt = torch.randn(10, d, generator=g, dtype=torch.float64)
    yt = Xt @ torch.randn(d, generator=g, dtype=torch.float64)
    model = Linear1(d).double()
    obj = iu.Objective(model, iu.per_example_squared_error, weight_decay=1e-2)
    theta = iu.minimize_newton(obj, obj.theta(), (X, y))
    return obj, theta, (X, y), (Xt, yt)
