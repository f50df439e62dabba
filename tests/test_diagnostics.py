"""iu.diagnose on models whose answers are known: convex logistic regression, an MLP with
negative curvature, and quadratics with known eigenvalues."""

import math

import pytest
import torch
from torch import nn

import influence_utils as iu


def test_logistic_regression_at_its_optimum_passes(logreg):
    obj, theta, train, _ = logreg
    report = iu.diagnose(obj, theta, train)
    assert [c.assumption for c in report] == list(iu.diagnostics.ASSUMPTIONS)
    evals = torch.linalg.eigvalsh(obj.hessian(theta, train))
    conv = report["convexity"]
    assert conv.status == "ok" and conv.value == 0.0
    assert conv.details["lambda_max"] == pytest.approx(float(evals.max()), rel=1e-10)
    assert conv.details["lambda_min"] == pytest.approx(float(evals.min()), rel=1e-10)
    assert report["numeric_stability"].status == "ok"
    assert report["numeric_stability"].value < 1e-10
    assert report["training_trajectory"].status == "ok"  # Newton's optimum: ‖∇L‖ ≈ 1e-12
    div = report["parameter_divergence"]
    assert div.status == "ok" and math.isinf(div.value) and div.details["rate_per_step"] < 0.01
    # the table and the HTML rendering carry every check
    df = report.table()
    assert list(df["status"])[:4] == ["ok"] * 4 and len(df) == 5
    assert "convexity" in report._repr_html_() and "<table>" in report._repr_html_()


def test_logistic_regression_away_from_the_optimum_fails_the_trajectory_check(logreg):
    obj, theta, train, _ = logreg
    report = iu.diagnose(obj, 0.3 * theta, train, checks=["training_trajectory"])
    check = report["training_trajectory"]
    assert check.status == "fail" and check.value > 1
    assert check.details["grad_norm"] == pytest.approx(float(obj.grad(0.3 * theta, train).norm()))
    assert report.status == "fail" and "training trajectory" in report.verdict


def test_second_order_term_matches_reoptimisation(logreg):
    """|ε|‖θ''‖/(2‖θ'‖) is the actual second-order remainder of the re-optimised θ_ε."""
    obj, theta, train, _ = logreg
    n = train[1].shape[0]
    eps = -0.2 / n
    report = iu.diagnose(obj, theta, train, eps=eps, n_probes=1, checks=["first_order"])
    check = report["first_order"]
    j = check.details["examples"][0]
    w = torch.ones(n, dtype=torch.float64)
    w[j] += n * eps  # the objective L + ε ℓ(z_j)
    theta_eps = iu.minimize_newton(obj, theta, train, weights=w)
    g = obj.per_example_grads(theta, (train[0][j : j + 1], train[1][j : j + 1]))[0]
    first = eps * -torch.linalg.solve(obj.hessian(theta, train), g)
    actual_ratio = float((theta_eps - theta - first).norm() / first.norm())
    assert check.value == pytest.approx(actual_ratio, rel=0.05)
    # second order scales with |ε|
    big = iu.diagnose(obj, theta, train, eps=5 * eps, n_probes=1, checks=["first_order"])
    assert big["first_order"].value == pytest.approx(5 * check.value, rel=1e-9)


def test_mlp_with_negative_curvature_is_flagged(mlp):
    obj, theta, train, _ = mlp
    evals = torch.linalg.eigvalsh(obj.hessian(theta, train))
    assert evals.min() < -1e-3 * evals.max()  # the fixture really is non-convex
    report = iu.diagnose(obj, theta, train, checks=["convexity", "numeric_stability", "training_trajectory"])
    conv = report["convexity"]
    assert conv.status in ("warn", "fail")
    assert conv.details["lambda_min"] == pytest.approx(float(evals.min()), rel=1e-8)
    assert "damping" in conv.recommendation
    # CG cannot solve an indefinite system: the stability check says so
    cg = iu.diagnose(obj, theta, train, solver=iu.CGSolver(damping=0.0, max_iter=100),
                     checks=["numeric_stability"])["numeric_stability"]
    assert cg.status == "fail" and cg.value > 1e-2 and cg.details["indefinite"]
    # damping above -λ_min makes it solvable
    damped = iu.diagnose(obj, theta, train, solver=iu.CGSolver(damping=-2 * float(evals.min()), max_iter=150, tol=1e-10),
                         checks=["numeric_stability"])["numeric_stability"]
    assert damped.status == "ok" and damped.value < 1e-6


def test_mlp_spectrum_by_arnoldi_matches_exact(mlp):
    obj, theta, train, _ = mlp
    evals = torch.linalg.eigvalsh(obj.hessian(theta, train))
    report = iu.diagnose(obj, theta, train, exact_max=0, rank=10, iterations=obj.p, checks=["convexity"])
    conv = report["convexity"]
    assert conv.details["method"].startswith("Arnoldi")
    assert conv.details["lambda_max"] == pytest.approx(float(evals.max()), rel=1e-6)
    assert conv.details["lambda_min"] == pytest.approx(float(evals.min()), rel=1e-6)


def test_lissa_condition_on_a_quadratic(linreg):
    """Least squares has a constant Hessian with known λ_max; LiSSA's condition follows it."""
    obj, theta, train, _ = linreg
    lam_max = float(torch.linalg.eigvalsh(obj.hessian(theta, train)).max())
    d = 0.2 * lam_max  # damping keeps the Neumann series short (a few hundred steps)
    good = iu.diagnose(obj, theta, train, solver=iu.LissaSolver(damping=d, scale=1.5 * lam_max, depth=200),
                       checks=["numeric_stability"])["numeric_stability"]
    assert good.details["lissa_min_scale"] == pytest.approx(lam_max + d, rel=1e-10)
    assert good.details["lissa_condition_met"] and good.status == "ok"
    bad = iu.diagnose(obj, theta, train, solver=iu.LissaSolver(damping=d, scale=0.4 * lam_max, depth=100),
                      checks=["numeric_stability"])["numeric_stability"]
    assert not bad.details["lissa_condition_met"] and bad.status == "fail"
    assert "scale" in bad.details["error"]


class _Saddle(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w


def _saddle_loss(out, y):
    # ℓ = ½ y·out²: y = +1 examples curve up, y = −1 examples curve down
    return 0.5 * y * out**2 + 0.1 * out


def test_divergence_rate_and_horizon_on_a_known_saddle():
    """H = (1/n) Xᵀ diag(y) X + wd·I with one negative eigenvalue λ⁻: full-batch runs that differ
    by ε·ℓ(z) separate like (1 + η|λ⁻|)^t, so the rate is log(1 + η|λ⁻|)."""
    g = torch.Generator().manual_seed(0)
    n, d = 40, 3
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    X[:, 2] *= 0.3
    y = torch.ones(n, dtype=torch.float64)
    y[X[:, 2].abs().argsort(descending=True)[:20]] = -1.0
    model = _Saddle(d)
    obj = iu.Objective(model, _saddle_loss, weight_decay=0.0)
    data = (X, y)
    theta = obj.theta()
    evals = torch.linalg.eigvalsh(obj.hessian(theta, data))
    assert evals.min() < 0 < evals.max()
    lr = 0.5 / float(evals.abs().max())
    report = iu.diagnose(obj, theta, data, lr=lr, steps=120, checks=["convexity", "parameter_divergence"])
    div = report["parameter_divergence"]
    expected = math.log(1 + lr * float(-evals.min()))
    assert div.details["curvature_rate"] == pytest.approx(expected, rel=1e-10)
    assert div.details["rate_per_step"] == pytest.approx(expected, rel=0.1)
    assert div.value == pytest.approx(math.log(n) / div.details["rate_per_step"], rel=1e-12)
    assert div.status in ("warn", "fail")


def test_bad_input_gets_clear_errors(logreg):
    obj, theta, train, _ = logreg
    with pytest.raises(ValueError, match="unknown checks"):
        iu.diagnose(obj, theta, train, checks=["convex"])
    with pytest.raises(ValueError, match="eps"):
        iu.diagnose(obj, theta, train, eps=0.0)
