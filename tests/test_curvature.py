"""Spectrum summaries, the spectrum plot and damped copies of eigen-solvers."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import influence_utils as iu
from influence_utils.curvature import plot_spectrum, spectrum_summary, with_damping


def test_summary_of_a_known_spectrum():
    ev = torch.tensor([1.0, -0.5, 3.0, 1e-9, -0.5], dtype=torch.float64)
    s = spectrum_summary(ev)
    assert (s.p, s.n_negative, s.n_near_zero) == (5, 2, 1)
    assert s.negative_mass == pytest.approx(1.0 / (5.0 + 1e-9))
    assert s.tol == pytest.approx(3e-6)
    assert (s.smallest, s.largest, s.min_damping) == (-0.5, 3.0, 0.5)
    assert s.condition_number == pytest.approx(3e9)
    assert "2 negative" in str(s) and s.as_dict()["n_near_zero"] == 1


def test_summary_of_a_psd_spectrum_with_an_exact_zero():
    s = spectrum_summary(torch.tensor([2.0, 0.5, 0.0]))
    assert s.n_negative == 0 and s.negative_mass == 0.0 and s.min_damping == 0.0
    assert s.n_near_zero == 1 and math.isinf(s.condition_number)
    # a looser rtol moves the small eigenvalue into the near-zero count
    assert spectrum_summary(torch.tensor([2.0, 0.5, 1e-3]), rtol=1e-2).n_near_zero == 1


def test_min_damping_is_the_convexity_threshold_of_a_real_hessian(mlp, logreg):
    obj, theta, train, _ = mlp
    H = obj.hessian(theta, train)
    s = spectrum_summary(iu.ExactSolver().fit(obj, theta, train).eigenvalues)
    assert s.n_negative > 0 and s.smallest < 0 < s.largest  # a trained tanh MLP is not convex
    eye = torch.eye(obj.p, dtype=H.dtype)
    assert torch.linalg.eigvalsh(H + (s.min_damping * 1.01) * eye).min() > 0
    assert torch.linalg.eigvalsh(H + (s.min_damping * 0.99) * eye).min() < 0
    obj, theta, train, _ = logreg
    s = spectrum_summary(torch.linalg.eigvalsh(obj.hessian(theta, train)))
    assert s.n_negative == 0 and s.min_damping == 0 and s.smallest >= obj.weight_decay * (1 - 1e-9)


def test_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        spectrum_summary(torch.eye(3))
    with pytest.raises(ValueError, match="1-D"):
        spectrum_summary(torch.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        spectrum_summary(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="rtol"):
        spectrum_summary(torch.tensor([1.0]), rtol=-1)


def test_with_damping_equals_a_freshly_damped_solver(mlp):
    obj, theta, train, _ = mlp
    solver = iu.ExactSolver().fit(obj, theta, train)
    v = torch.randn(3, obj.p, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = 0.05
    damped = with_damping(solver, lam)
    assert damped.damping == lam and solver.damping == 0.0  # the original is untouched
    assert damped.eigenvectors is solver.eigenvectors  # no refit, no copy
    H = obj.hessian(theta, train)
    expected = torch.linalg.solve(H + lam * torch.eye(obj.p, dtype=H.dtype), v.T).T
    torch.testing.assert_close(damped.solve(v), expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(damped.solve(v), iu.ExactSolver(damping=lam).fit(obj, theta, train).solve(v))


def test_with_damping_rejects_solvers_without_eigenpairs(mlp):
    obj, theta, train, _ = mlp
    with pytest.raises(TypeError, match="eigenpairs"):
        with_damping(iu.CGSolver().fit(obj, theta, train), 0.1)
    with pytest.raises(ValueError, match="damping"):
        with_damping(iu.ExactSolver().fit(obj, theta, train), -1.0)


def test_plot_spectrum_draws_the_sorted_eigenvalues_on_a_symlog_axis():
    ev = torch.tensor([0.1, -0.01, 2.0, 0.0], dtype=torch.float64)
    fig = plot_spectrum(ev, label="toy")
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog"
    y = ax.lines[0].get_ydata()
    assert list(y) == [2.0, 0.1, 0.0, -0.01]
    assert ax.get_legend().get_texts()[0].get_text() == "toy"
    matplotlib.pyplot.close(fig)
