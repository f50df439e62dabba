"""Parameter divergence against closed forms, finite differences and the training loop."""

import math

import pytest
import torch

import influence_utils as iu
from influence_utils import divergence as dv


def _quadratic(p=6, seed=0, negative=True):
    """An indefinite (or positive-definite) symmetric H with known eigenvalues, and a gradient g."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = torch.linspace(-0.3 if negative else 0.05, 2.0, p, dtype=torch.float64)
    return Q @ torch.diag(lam) @ Q.T, torch.randn(p, generator=g, dtype=torch.float64), lam


@pytest.mark.parametrize("negative", [False, True])
def test_closed_form_response_is_gradient_descent_on_a_quadratic(negative):
    """GD on ½θᵀHθ − bᵀθ + ε·gᵀθ: θ_ε(T) − θ(T) = ε·δ_T exactly, δ_T = −H⁻¹(I − (I − ηH)^T)g."""
    H, g, _ = _quadratic(negative=negative)
    b = torch.linspace(-1, 1, H.shape[0], dtype=torch.float64)
    lr, eps, horizons = 0.4, 1e-3, [0, 1, 7, 40]
    theta, theta_eps = torch.zeros_like(b), torch.zeros_like(b)
    measured = {}
    for t in range(max(horizons) + 1):
        if t in horizons:
            measured[t] = (theta_eps - theta) / eps
        theta = theta - lr * (H @ theta - b)
        theta_eps = theta_eps - lr * (H @ theta_eps - b + eps * g)
    closed = dv.fixed_curvature_response(H, g, horizons, lr)
    for k, t in enumerate(horizons):
        torch.testing.assert_close(closed[k], measured[t], rtol=1e-9, atol=1e-12)
    # a fitted eigen-solver gives the same; an int horizon gives one response; [m, p] blocks work
    solver = type("S", (), {"eigenvalues": torch.linalg.eigvalsh(H), "eigenvectors": torch.linalg.eigh(H)[1],
                            "damping": 0.0})()
    torch.testing.assert_close(dv.fixed_curvature_response(solver, g, 7, lr), closed[2])
    block = dv.fixed_curvature_response(H, torch.stack([g, 2 * g]), 7, lr)
    torch.testing.assert_close(block[1], 2 * closed[2])


def test_closed_form_regimes_and_growth_rate():
    """Large T: along λ < 0 the response grows like (1 + η|λ|)^T, the rate curvature_growth_rate gives."""
    H, g, lam = _quadratic(negative=True)
    lr = 0.4
    T = list(range(60, 121, 5))
    norms = dv.fixed_curvature_response(H, g, T, lr).norm(dim=-1)
    fit = dv.fit_growth_rate(T, norms)
    expected = math.log(1 + lr * 0.3)
    assert dv.curvature_growth_rate(lam, lr) == pytest.approx(expected, rel=1e-12)
    assert float(fit.rate) == pytest.approx(expected, rel=1e-3)
    # positive-definite H: the response converges to the classical −H⁻¹g, no growth
    Hp, gp, lam_p = _quadratic(negative=False)
    far = dv.fixed_curvature_response(Hp, gp, 5000, lr)
    torch.testing.assert_close(far, -torch.linalg.solve(Hp, gp), rtol=1e-10, atol=1e-12)
    assert dv.curvature_growth_rate(lam_p, lr) < 0
    # rank-limited eigenspace: "flat" adds ηT·g outside it, "drop" leaves it out
    w, V = torch.linalg.eigh(Hp)
    top = type("S", (), {"eigenvalues": w[-2:], "eigenvectors": V[:, -2:], "damping": 0.0})()
    rest = gp - V[:, -2:] @ (V[:, -2:].T @ gp)
    torch.testing.assert_close(dv.fixed_curvature_response(top, gp, 3, lr) - dv.fixed_curvature_response(
        top, gp, 3, lr, outside="drop"), -lr * 3 * rest)


def test_linear_response_on_a_quadratic_from_the_optimum(linreg):
    """Least squares from its optimum, full batch: H and ∇ℓ(z) stay fixed, the recursion is the closed form."""
    obj, theta, train, _ = linreg
    z = (train[0][:3], train[1][:3])
    lr, horizons = 0.2, [0, 1, 5, 30]
    resp = dv.linear_response(obj, theta, train, z, steps=30, lr=lr, record_every=1)
    closed = dv.fixed_curvature_response(obj.hessian(theta, train), obj.per_example_grads(theta, z), horizons, lr)
    for k, t in enumerate(horizons):
        torch.testing.assert_close(resp.delta[:, t], closed[k], rtol=1e-10, atol=1e-13)


def test_linear_response_equals_finite_differences(mlp):
    """Mini-batch SGD on a non-convex MLP: the recursion is the ε-derivative of the actual runs."""
    obj, theta, train, test = mlp
    z = (train[0][:3], train[1][:3])
    kw = dict(steps=25, lr=0.3, batch_size=16, seed=4, record_every=5)
    resp = dv.linear_response(obj, theta, train, z, **kw)
    eps = 1e-6
    runs = dv.perturbed_runs(obj, theta, train, z, [eps, -eps], test=test, keep_thetas=True, **kw)
    central = (runs.perturbed[0::2] - runs.perturbed[1::2]) / (2 * eps)  # [3, R, p]
    assert resp.steps == runs.steps == [0, 5, 10, 15, 20, 25]
    torch.testing.assert_close(resp.thetas, runs.base, rtol=0, atol=1e-13)
    torch.testing.assert_close(resp.delta, central, rtol=1e-6, atol=1e-7)
    assert resp.delta[:, -1].norm() > 1e-2  # not trivially zero
    # predicted gaps and test-loss changes agree with the runs (rows z-major, as in perturbed_runs)
    torch.testing.assert_close(resp.gaps([eps, -eps]), runs.gaps, rtol=1e-4, atol=1e-14)
    actual = runs.actual_scores()
    central_scores = (actual[:, :, 0::2] + actual[:, :, 1::2]) / 2  # ±ε: the central difference
    torch.testing.assert_close(resp.scores(obj, test)[1:], central_scores[1:], rtol=1e-5, atol=1e-10)


def test_perturbed_runs_match_the_training_loop(mlp):
    obj, theta, train, test = mlp
    z = (train[0][[2, 9]], train[1][[2, 9]])
    kw = dict(steps=12, lr=0.3, batch_size=16, seed=1, record_every=3)
    runs = dv.perturbed_runs(obj, theta, train, z, [0.0, 0.05], test=test, keep_thetas=True, **kw)
    assert runs.k == 4 and runs.z_index.tolist() == [0, 0, 1, 1]
    assert runs.eps.tolist() == [0.0, 0.05, 0.0, 0.05]
    assert runs.gaps.shape == (4, 5) and runs.test_losses.shape == (4, 5, test[1].shape[0])
    base, pert = iu.paired_runs(obj, theta, train, (z[0][1:], z[1][1:]), 0.05, **kw)
    torch.testing.assert_close(runs.base, torch.stack(base.thetas), rtol=0, atol=1e-13)
    torch.testing.assert_close(runs.perturbed[3], torch.stack(pert.thetas), rtol=0, atol=1e-13)
    torch.testing.assert_close(runs.gaps[3], dv.divergence_curve(base, pert)[0], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(runs.gaps, dv.divergence_curve(runs.base, runs.perturbed))
    # ε = 0 is the unperturbed run to the last bit: the runs are deterministic
    assert torch.equal(runs.gaps[0], torch.zeros(5, dtype=runs.gaps.dtype))
    assert runs.gaps[1, 0] == 0 and runs.gaps[1, -1] > 0
    torch.testing.assert_close(runs.base_test_losses[-1], obj.per_example_losses(base.final, test))
    # chunking does not change the answer
    small = dv.perturbed_runs(obj, theta, train, z, [0.0, 0.05], test=test, chunk=1, **kw)
    torch.testing.assert_close(small.gaps, runs.gaps, rtol=0, atol=1e-13)
    assert small.perturbed is None
    # an explicit list of recorded steps picks the same rows
    picked = dv.perturbed_runs(obj, theta, train, z, [0.0, 0.05], test=test, **{**kw, "record_every": [6, 0, 12]})
    assert picked.steps == [0, 6, 12]
    torch.testing.assert_close(picked.gaps, runs.gaps[:, [0, 2, 4]], rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="must lie in"):
        dv.perturbed_runs(obj, theta, train, z, 0.1, **{**kw, "record_every": [13]})
    with pytest.raises(ValueError, match="eps = 0"):
        runs.actual_scores()
    with pytest.raises(ValueError, match="same steps"):
        dv.divergence_curve(base, iu.train(obj, theta, train, steps=12, lr=0.3))


def test_actual_scores_have_the_sign_and_units_of_influence(logreg):
    """Full-batch GD from a convex optimum: measured removals match time-bounded influence."""
    obj, theta, train, test = logreg
    n, lr, steps = train[1].shape[0], 0.5, 40
    cols = [0, 5, 11, 30]
    z = (train[0][cols], train[1][cols])
    runs = dv.perturbed_runs(obj, theta, train, z, 1e-5, steps=steps, lr=lr, record_every=10, test=test)
    actual = runs.actual_scores()  # [R, n_test, 4]
    exact = iu.ExactSolver().fit(obj, theta, train)
    tb = iu.time_bounded_influence(obj, theta, exact, train, test, steps=runs.steps, lr=lr)[:, :, cols]
    torch.testing.assert_close(actual[1:], tb[1:], rtol=2e-3, atol=1e-9)
    assert runs.n == n and actual[0].abs().max() == 0


def test_tracin_vs_steps(mlp):
    obj, theta, train, test = mlp
    traj = iu.train(obj, theta, train, steps=9, lr=0.2, batch_size=16, record_every=3)
    one = dv.tracin_vs_steps(obj, [theta], [0], 0.2, train, test, horizons=[1, 4])
    torch.testing.assert_close(one[1], iu.tracin(obj, [theta], [0.2 * 4], train, test))
    exact = iu.ExactSolver().fit(obj, theta, train)
    torch.testing.assert_close(one[0], iu.time_bounded_influence(obj, theta, exact, train, test, steps=1, lr=0.2))
    several = dv.tracin_vs_steps(obj, traj.checkpoints, traj.steps[:-1], 0.2, train, test, horizons=[0, 4, 9])
    torch.testing.assert_close(several[2], iu.tracin(obj, traj.checkpoints, traj.learning_rates, train, test))
    part = iu.tracin(obj, traj.checkpoints[:2], [0.2 * 3, 0.2 * 1], train, test)  # T = 4: 3 + 1 steps
    torch.testing.assert_close(several[1], part)
    assert several[0].abs().max() == 0
    with pytest.raises(ValueError, match="increasing"):
        dv.tracin_vs_steps(obj, traj.checkpoints, [0, 6, 3], 0.2, train, test, horizons=[4])


def test_fit_growth_rate_recovers_a_known_rate():
    steps = torch.arange(0, 301)
    rates = torch.tensor([0.05, 0.02, -0.01], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    noise = 1 + 0.05 * torch.randn(3, steps.numel(), generator=g, dtype=torch.float64)
    gaps = 1e-6 * torch.exp(rates[:, None] * steps) * noise
    gaps = torch.minimum(gaps, torch.tensor(1e-3, dtype=torch.float64))  # saturation after the window
    gaps[:, 0] = 0.0  # the runs coincide at the checkpoint
    fit = dv.fit_growth_rate(steps, gaps, window=(10, 130))
    torch.testing.assert_close(fit.rate, rates, rtol=0, atol=2e-3)
    assert fit.window == (10, 130) and fit.n_points.tolist() == [121] * 3
    assert (fit.r2[:2] > 0.98).all()
    torch.testing.assert_close(fit.intercept, torch.full((3,), math.log(1e-6), dtype=torch.float64), rtol=0, atol=0.05)
    T = fit.horizon(1e-3)
    assert T[0] == pytest.approx(math.log(1e-3 / 1e-6) / 0.05, rel=0.05)
    assert math.isinf(T[2]) and math.isinf(fit.doubling_steps[2])
    assert float(fit.doubling_steps[0]) == pytest.approx(math.log(2) / 0.05, rel=0.05)
    torch.testing.assert_close(fit.predict([0])[:, 0], torch.exp(fit.intercept))
    # a single curve, all points: the zero at step 0 is skipped
    one = dv.fit_growth_rate(steps[:100], 2.0 * torch.exp(0.03 * steps[:100].double()))
    assert float(one.rate) == pytest.approx(0.03, rel=1e-10) and one.rate.ndim == 0
    assert dv.horizon(0.03, 2.0, 2.0 * math.e) == pytest.approx(1 / 0.03)
    assert dv.horizon(0.03, 5.0, 1.0) == 0
    with pytest.raises(ValueError, match="fewer than 2"):
        dv.fit_growth_rate(steps, gaps, window=(0, 0))
    with pytest.raises(ValueError, match="match steps"):
        dv.fit_growth_rate(steps[:10], gaps)


def test_perturbed_runs_record_projections_and_keep_no_past_parameters(mlp, monkeypatch):
    """What the chapters read (gaps, test losses, projections) without every run's parameters.

    The old loop kept the parameters of every run of a chunk at every recorded step
    (``(1 + chunk)·R·p`` numbers: 40 GB for chapter 7's BERT); now at the last step only the current
    parameters of the chunk are alive, however many steps were recorded.
    """
    import gc
    import warnings

    obj, theta, train, test = mlp
    z = (train[0][[2, 9, 11]], train[1][[2, 9, 11]])
    kw = dict(steps=20, lr=0.3, batch_size=16, seed=1, record_every=1)
    V = torch.linalg.qr(torch.randn(obj.p, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    full = dv.perturbed_runs(obj, theta, train, z, [0.01, -0.02], test=test, keep_thetas=True, **kw)
    lean = dv.perturbed_runs(obj, theta, train, z, [0.01, -0.02], test=test, keep_base=False, project=V, **kw)
    assert lean.base is None and lean.perturbed is None and lean.projections.shape == (6, 21, 4)
    assert torch.equal(lean.gaps, full.gaps) and torch.equal(lean.test_losses, full.test_losses)
    torch.testing.assert_close(lean.projections, (full.perturbed - full.base.unsqueeze(0)) @ V, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(lean.actual_scores(), full.actual_scores(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="project must be"):
        dv.perturbed_runs(obj, theta, train, z, 0.01, project=V[:-1], **kw)

    big = []  # blocks of the chunk's parameters [1 + 6 runs, p] alive when the last step is reached

    def watch(iterable, desc="", **_):
        items = list(iterable)
        for i, item in enumerate(items):
            if i == len(items) - 1 and desc.startswith("perturbed runs"):
                gc.collect()
                with warnings.catch_warnings():  # isinstance() wakes deprecated torch.distributed names
                    warnings.simplefilter("ignore", FutureWarning)
                    big.append(sum(1 for o in gc.get_objects()
                                   if isinstance(o, torch.Tensor) and tuple(o.shape) == (7, obj.p)))
            yield item

    monkeypatch.setattr(iu.runs, "progress", watch)  # the engine's loop over steps
    dv.perturbed_runs(obj, theta, train, z, [0.01, -0.02], test=test, **kw)
    assert big == [1], f"{big} blocks of the chunk's parameters alive at the last of 20 recorded steps"
