"""Every solver against torch.linalg.solve; Arnoldi eigenpairs against eigh; failure modes."""

import re
import warnings

import pytest
import torch

import influence_utils as iu


@pytest.fixture(scope="module")
def rhs(logreg):
    obj, theta, train, test = logreg
    return obj.per_example_grads(theta, test)  # [k, p] realistic right-hand sides


def _reference(obj, theta, train, V, damping=0.0):
    H = obj.hessian(theta, train) + damping * torch.eye(obj.p, dtype=torch.float64)
    return torch.linalg.solve(H, V.T).T


@pytest.mark.parametrize("damping", [0.0, 1e-2])
def test_exact_solver(logreg, rhs, damping):
    obj, theta, train, _ = logreg
    s = iu.ExactSolver(damping=damping).fit(obj, theta, train)
    torch.testing.assert_close(s.solve(rhs), _reference(obj, theta, train, rhs, damping))
    torch.testing.assert_close(s.solve(rhs[0]), _reference(obj, theta, train, rhs[:1], damping)[0])
    ev = torch.linalg.eigvalsh(obj.hessian(theta, train))
    torch.testing.assert_close(s.eigenvalues, ev.flip(0))
    assert s.eigenvectors.shape == (obj.p, obj.p)


def test_cg_solver(logreg, rhs):
    obj, theta, train, _ = logreg
    s = iu.CGSolver(damping=1e-3, max_iter=50, tol=1e-12).fit(obj, theta, train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = s.solve(rhs)
    torch.testing.assert_close(x, _reference(obj, theta, train, rhs, 1e-3), rtol=1e-9, atol=1e-9)
    assert s.converged and s.residuals.shape[1] == rhs.shape[0]
    assert s.residuals[-1].max() <= 1e-12 and s.residuals[0].min() == pytest.approx(1.0)


def test_cg_reports_non_convergence_and_negative_curvature(logreg, mlp, rhs):
    obj, theta, train, _ = logreg
    s = iu.CGSolver(damping=0.0, max_iter=2, tol=1e-14).fit(obj, theta, train)
    with pytest.warns(iu.ConvergenceWarning, match="did not converge in 2 iterations"):
        s.solve(rhs)
    assert not s.converged
    obj, theta, train, test = mlp
    s = iu.CGSolver(damping=0.0, max_iter=200).fit(obj, theta, train)
    with pytest.warns(iu.ConvergenceWarning, match="non-positive curvature"):
        s.solve(obj.per_example_grads(theta, test))


def test_lissa_solver(logreg, rhs):
    obj, theta, train, _ = logreg
    rhs = rhs[:4]
    lam_max = float(torch.linalg.eigvalsh(obj.hessian(theta, train)).max())
    s = iu.LissaSolver(damping=1e-3, scale=1.5 * lam_max, depth=800).fit(obj, theta, train)
    x = s.solve(rhs)
    ref = _reference(obj, theta, train, rhs, 1e-3)
    assert ((x - ref).norm() / ref.norm()) < 1e-6
    assert s.hvp_count == 800 * rhs.shape[0]
    # stochastic mini-batches: looser, but still close
    s = iu.LissaSolver(damping=1e-3, scale=1.5 * lam_max, depth=400, repeats=2, batch_size=40, seed=1)
    x = s.fit(obj, theta, train).solve(rhs)
    assert ((x - ref).norm() / ref.norm()) < 0.2


def test_lissa_raises_on_divergence_naming_scale_and_damping(logreg, mlp, rhs):
    obj, theta, train, _ = logreg
    lam_max = float(torch.linalg.eigvalsh(obj.hessian(theta, train)).max())
    s = iu.LissaSolver(damping=0.0, scale=0.3 * lam_max, depth=500).fit(obj, theta, train)
    with pytest.raises(iu.LissaDivergenceError, match="scale=.*damping="):
        s.solve(rhs)
    # negative curvature with no damping diverges too, even with a large scale
    obj, theta, train, test = mlp
    lam = torch.linalg.eigvalsh(obj.hessian(theta, train))
    assert lam.min() < 0
    s = iu.LissaSolver(damping=0.0, scale=2 * float(lam.max()), depth=5000).fit(obj, theta, train)
    with pytest.raises(iu.LissaDivergenceError, match="damping above minus the most negative"):
        s.solve(torch.linalg.eigh(obj.hessian(theta, train)).eigenvectors[:, 0])


def test_arnoldi_eigenpairs_match_eigh(mlp):
    obj, theta, train, _ = mlp
    H = obj.hessian(theta, train)
    evals, evecs = torch.linalg.eigh(H)
    s = iu.ArnoldiSolver(rank=5, iterations=60, positive_only=False, seed=0).fit(obj, theta, train)
    top = evals[evals.abs().argsort(descending=True)[:5]].sort(descending=True).values
    torch.testing.assert_close(s.eigenvalues, top, rtol=1e-8, atol=1e-10)
    # eigenvectors up to sign: H u = λ u
    torch.testing.assert_close(H @ s.eigenvectors, s.eigenvectors * s.eigenvalues, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s.eigenvectors.T @ s.eigenvectors, torch.eye(5, dtype=torch.float64), atol=1e-10, rtol=0)


def test_arnoldi_positive_only_keeps_top_positive(mlp):
    obj, theta, train, _ = mlp
    evals = torch.linalg.eigvalsh(obj.hessian(theta, train))
    s = iu.ArnoldiSolver(rank=4, iterations=obj.p, seed=1).fit(obj, theta, train)
    torch.testing.assert_close(s.eigenvalues, evals.flip(0)[:4])
    assert (s.eigenvalues > 0).all()
    assert s.hvp_count <= obj.p


def test_abif_full_rank_equals_exact(logreg, rhs):
    obj, theta, train, _ = logreg
    s = iu.ArnoldiSolver(rank=obj.p, iterations=obj.p, damping=1e-3).fit(obj, theta, train)
    torch.testing.assert_close(s.solve(rhs), _reference(obj, theta, train, rhs, 1e-3), rtol=1e-8, atol=1e-10)


def test_arnoldi_without_positive_eigenvalue_raises(logreg):
    obj, theta, train, _ = logreg
    neg = iu.Objective(obj.model, lambda out, y: -iu.per_example_cross_entropy(out, y))
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        iu.ArnoldiSolver(rank=2, iterations=6).fit(neg, theta, train)


def test_solver_input_validation(logreg):
    obj, theta, train, _ = logreg
    with pytest.raises(RuntimeError, match="not fitted"):
        iu.CGSolver().solve(torch.zeros(obj.p, dtype=torch.float64))
    s = iu.ExactSolver().fit(obj, theta, train)
    with pytest.raises(ValueError, match=r"v must have shape \[6\]"):
        s.solve(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="damping"):
        iu.ExactSolver(damping=-1.0)
    with pytest.raises(ValueError, match="iterations"):
        iu.ArnoldiSolver(rank=10, iterations=5)
    # a singular Hessian (no weight decay, a duplicated feature) asks for damping
    X, y = train
    Xd = torch.cat([X, X[:, :1]], 1)
    model = type(obj.model)(Xd.shape[1]).double()
    sing = iu.Objective(model, iu.per_example_cross_entropy)
    with pytest.raises(ValueError, match="singular.*increase damping"):
        iu.ExactSolver().fit(sing, sing.theta(), (Xd, y)).solve(torch.ones(sing.p, dtype=torch.float64))


def test_lissa_repeats_draw_independent_streams(logreg):
    """Repeat r of seed s used to draw from seed s + r, so seeds 0 and 1 shared all but one
    stream; now no (seed, repeat) pair shares its mini-batches with another."""
    obj, theta, train, _ = logreg
    X = train[0]

    class Recording(iu.Objective):
        def hvp(self, theta, data, v, **kw):
            rows = (data[0][:, None, :] == X[None]).all(-1).float().argmax(1)  # batch -> example indices
            batches.append(tuple(rows.tolist()))
            return iu.Objective.hvp(self, theta, data, v, **kw)

    rec = Recording.__new__(Recording)
    rec.__dict__.update(obj.__dict__)
    depth, repeats = 2, 3
    streams = {}
    for seed in (0, 1):
        batches = []
        s = iu.LissaSolver(damping=1e-2, scale=10.0, depth=depth, repeats=repeats, batch_size=10, seed=seed)
        s.fit(rec, theta, train).solve(torch.ones(obj.p, dtype=torch.float64))
        assert len(batches) == depth * repeats
        streams[seed] = [tuple(batches[r * depth:(r + 1) * depth]) for r in range(repeats)]
    assert len(set(streams[0]) | set(streams[1])) == 2 * repeats
    # the first repeat keeps the seed's own stream (results with repeats=1 are unchanged)
    first = torch.randint(train[1].shape[0], (10,), generator=torch.Generator().manual_seed(1))
    assert streams[1][0][0] == tuple(first.tolist())


def _lissa_error(solver, H, damping, v):
    exact = torch.linalg.solve(H + damping * torch.eye(H.shape[0], dtype=H.dtype), v.T).T
    return float(((solver.solve(v) - exact).norm(dim=1) / exact.norm(dim=1)).max())


def test_lissa_warns_when_stopped_before_converging_and_its_advice_converges(logreg, rhs):
    obj, theta, train, _ = logreg
    H = obj.hessian(theta, train)
    lam_max, damping = float(torch.linalg.eigvalsh(H).max()), 1e-3
    depth, errors = 20, []
    for _ in range(5):  # follow the warning's advice until it stops warning
        solver = iu.LissaSolver(damping=damping, scale=30 * lam_max, depth=depth).fit(obj, theta, train)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", iu.ConvergenceWarning)
            errors.append(_lissa_error(solver, H, damping, rhs))
        if not caught:
            break
        message = str(caught[0].message)
        estimated = int(re.search(r"an estimated (\d+)%", message).group(1)) / 100
        assert errors[-1] > solver.tol / 2 and abs(estimated - errors[-1]) < 0.25 * errors[-1] + 0.01
        depth = int(re.search(r"A depth of at least ([\d,]+)", message).group(1).replace(",", ""))
    assert errors[0] > 0.5 and len(errors) > 1  # the first run was far off and warned
    assert not caught and errors[-1] < 2 * solver.tol  # the advice converged, without a warning


def test_lissa_does_not_warn_when_converged_or_stochastic(logreg, rhs):
    obj, theta, train, _ = logreg
    lam_max = float(torch.linalg.eigvalsh(obj.hessian(theta, train)).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error", iu.ConvergenceWarning)
        iu.LissaSolver(damping=1e-3, scale=1.1 * lam_max, depth=500).fit(obj, theta, train).solve(rhs)
        # stochastic HVPs: the series' terms are noise, so no estimate is made
        iu.LissaSolver(damping=1e-3, scale=30 * lam_max, depth=5, batch_size=10).fit(obj, theta, train).solve(rhs)
    with pytest.raises(ValueError, match="tol is a relative error"):
        iu.LissaSolver(tol=0)
