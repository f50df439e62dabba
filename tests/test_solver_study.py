"""The solver study against closed forms: LiSSA's error on a known spectrum, Arnoldi's Ritz values
against eigh, ABIF at full rank against the exact solve, and the bookkeeping of failures."""

import math
import warnings

import matplotlib
import pytest
import torch

import influence_utils as iu
from influence_utils import solver_study as ss

matplotlib.use("Agg")


def _spectrum_problem(seed=0, p=30, negative=True):
    """A symmetric H = V diag(λ) Vᵀ with a known spectrum (one negative eigenvalue if asked)."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.linspace(0.05, 4.0, p, dtype=torch.float64)
    if negative:
        lam[0] = -0.02
    V, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    H = V @ torch.diag(lam) @ V.T
    rhs = torch.randn(3, p, generator=g, dtype=torch.float64)
    return 0.5 * (H + H.T), lam, V, rhs


def _lissa_closed_form(lam, V, rhs, scale, damping, depth):
    """x_depth / scale of the LiSSA recursion, eigenvalue by eigenvalue."""
    a = (lam + damping) / scale
    coef = (1 - (1 - a) ** (depth + 1)) / (lam + damping)
    return ((rhs @ V) * coef) @ V.T


def test_matrix_operator_matches_dense_solve():
    H, lam, V, rhs = _spectrum_problem(negative=False)
    op = ss.MatrixOperator(H)
    assert op.p == 30 and "dense" in repr(op)
    cg = op.fit(iu.CGSolver(damping=0.1, max_iter=200, tol=1e-13))
    ref = torch.linalg.solve(H + 0.1 * torch.eye(30, dtype=torch.float64), rhs.T).T
    torch.testing.assert_close(cg.solve(rhs), ref, rtol=1e-9, atol=1e-10)
    exact = op.fit(iu.ExactSolver())
    torch.testing.assert_close(ss.damped_solve(exact, rhs, 0.1), ref)
    with pytest.raises(ValueError, match="symmetric"):
        ss.MatrixOperator(torch.triu(torch.ones(3, 3, dtype=torch.float64)))


def test_lissa_in_the_eigenbasis_is_the_same_recursion():
    # Running LiSSA on diag(λ) with Vᵀv gives the rotated iterates: same errors, same divergence.
    H, lam, V, rhs = _spectrum_problem()
    dense, diag = ss.MatrixOperator(H), ss.MatrixOperator(lam)
    s1 = dense.fit(iu.LissaSolver(damping=0.05, scale=5.0, depth=100))
    s2 = diag.fit(iu.LissaSolver(damping=0.05, scale=5.0, depth=100))
    torch.testing.assert_close(s1.solve(rhs) @ V, s2.solve(rhs @ V), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(s1.solve(rhs), _lissa_closed_form(lam, V, rhs, 5.0, 0.05, 100), rtol=1e-9, atol=1e-10)
    steps = []
    for op, v in ((dense, rhs), (diag, rhs @ V)):
        with pytest.raises(iu.LissaDivergenceError) as err:
            op.fit(iu.LissaSolver(damping=0.0, scale=1.0, depth=200)).solve(v)
        steps.append(err.value.step)
    assert steps[0] == steps[1] and steps[0] is not None


def test_lissa_record_gives_what_a_shallower_solver_returns():
    H, lam, V, rhs = _spectrum_problem(negative=False)
    op = ss.MatrixOperator(H)
    deep = op.fit(iu.LissaSolver(damping=0.0, scale=5.0, depth=50))
    final = deep.solve(rhs, record=[1, 7, 50])
    assert sorted(deep.recorded) == [1, 7, 50]
    torch.testing.assert_close(deep.recorded[50], final)
    shallow = op.fit(iu.LissaSolver(damping=0.0, scale=5.0, depth=7)).solve(rhs)
    torch.testing.assert_close(deep.recorded[7], shallow)
    one = op.fit(iu.LissaSolver(damping=0.0, scale=5.0, depth=50))
    one.solve(rhs[0], record=[7])
    torch.testing.assert_close(one.recorded[7], shallow[0])
    with pytest.raises(ValueError, match="record depths"):
        deep.solve(rhs, record=[0, 51])
    # on divergence: the error carries the step and the earlier depths stay recorded
    bad = op.fit(iu.LissaSolver(damping=0.0, scale=1.8, depth=100))  # λ_max / scale = 2.2 > 2
    with pytest.raises(iu.LissaDivergenceError, match="scale=1.8 and damping=0") as err:
        bad.solve(rhs, record=[1, 2, 90])
    e = err.value
    assert 2 < e.step < 90 and e.scale == 1.8 and e.damping == 0.0 and e.depth == 100 and e.growth > 1
    assert sorted(bad.recorded) == [1, 2]
    torch.testing.assert_close(bad.recorded[2], _lissa_closed_form(lam, V, rhs, 1.8, 0.0, 2))


def test_lissa_grid_matches_closed_form_and_marks_divergence():
    H, lam, V, rhs = _spectrum_problem()  # λ_min = -0.02, λ_max = 4
    op = ss.MatrixOperator(H)
    exact = op.fit(iu.ExactSolver())
    grid = ss.lissa_error_grid(op, op.theta(), op.data, rhs, exact,
                               scales=[1.0, 3.0, 8.0], dampings=[0.0, 0.1], depths=[5, 50, 400])
    assert len(grid) == 3 * 2 * 3
    assert list(grid.columns) == ["scale", "damping", "depth", "status", "rel_error", "diverged_at", "hvps"]
    ok = grid[grid.status == "ok"]
    for row in ok.itertuples():
        x = _lissa_closed_form(lam, V, rhs, row.scale, row.damping, row.depth)
        ref = ss.damped_solve(exact, rhs, row.damping)
        assert row.rel_error == pytest.approx(float((x - ref).norm() / ref.norm()), rel=1e-8)
    bad = grid[grid.status == "diverged"]
    assert (bad.rel_error == math.inf).all() and bad.diverged_at.notna().all()
    # scale 1 < λ_max / 2 diverges with any damping; scale 3 lies in (λ_max/2, λ_max) and
    # converges with damping above |λ_min|; scale 8 with enough damping converges
    assert set(grid[grid.scale == 1.0].status[grid.depth == 400]) == {"diverged"}
    s3 = grid[(grid.scale == 3.0) & (grid.damping == 0.1)].sort_values("depth")
    assert (s3.status == "ok").all() and s3.rel_error.iloc[-1] < 1e-3
    s8 = grid[(grid.scale == 8.0) & (grid.damping == 0.1)].sort_values("depth")
    assert (s8.status == "ok").all() and s8.rel_error.is_monotonic_decreasing
    assert (grid.hvps == 3 * grid.depth).all()


def test_arnoldi_eigenvalue_errors_converge_to_eigh():
    H, lam, V, rhs = _spectrum_problem()
    op = ss.MatrixOperator(H)
    s = op.fit(iu.ArnoldiSolver(rank=5, iterations=30, seed=0))
    torch.testing.assert_close(s.ritz_values_after(s.iterations_done), s.ritz_values)
    torch.testing.assert_close(s.ritz_values, lam.flip(0)[: s.iterations_done])
    table = ss.arnoldi_eigenvalue_errors(s, lam, iterations=[3, 10, 20, s.iterations_done], k=3)
    assert len(table[table.iterations == 3]) == 3
    final = table[table.iterations == s.iterations_done]
    assert final.rel_error.max() < 1e-9
    top = table[table.position == 1].sort_values("iterations")
    assert top.rel_error.iloc[2] < top.rel_error.iloc[0]
    assert top.exact.iloc[0] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="iterations must lie"):
        s.ritz_values_after(s.iterations_done + 1)


def test_abif_rank_sweep_full_rank_is_exact():
    H, lam, V, rhs = _spectrum_problem(negative=False)
    op = ss.MatrixOperator(H)
    g_train = torch.randn(12, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = op.fit(iu.ExactSolver(damping=0.01))
    reference = ss.scores_from_grads(exact, rhs, g_train, n=12)
    table, scores = ss.abif_rank_sweep(op, op.theta(), op.data, rhs, g_train, ranks=[2, 10, 30],
                                       reference=reference, damping=0.01)
    assert list(table["rank"]) == [2, 10, 30] and list(table.hvps) == [4, 20, 30]
    assert table.set_index("rank").loc[30, "rel_error"] < 1e-9
    assert table.rel_error.is_monotonic_decreasing and (table.seconds > 0).all()
    torch.testing.assert_close(scores[30], reference)


def test_compare_solvers_records_failures_and_agreement():
    H, lam, V, rhs = _spectrum_problem()  # indefinite
    op = ss.MatrixOperator(H)
    g_train = torch.randn(8, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = op.fit(iu.ExactSolver(damping=0.5))
    reference = ss.scores_from_grads(exact, rhs, g_train, n=8)
    solvers = {
        "exact": iu.ExactSolver(damping=0.5),
        "cg undamped": iu.CGSolver(damping=0.0, max_iter=100),
        "lissa bad scale": iu.LissaSolver(damping=0.5, scale=1.0, depth=100),
        "lissa": iu.LissaSolver(damping=0.5, scale=8.0, depth=300),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes
        table, scores = ss.compare_solvers(solvers, op, op.theta(), op.data, rhs, g_train, reference=reference)
    assert table.loc["exact", "rel_error"] < 1e-12 and table.loc["exact", "failure"] == ""
    assert "non-positive curvature" in table.loc["cg undamped", "failure"]
    assert table.loc["lissa bad scale", "failure"].startswith("diverged at step")
    assert "lissa bad scale" not in scores and math.isnan(table.loc["lissa bad scale", "pearson"])
    assert table.loc["lissa", "rel_error"] < 1e-6 and table.loc["lissa", "hvps"] == 300 * 3
    agree = ss.pairwise_agreement({k: scores[k] for k in ("exact", "lissa")})
    assert agree.loc["exact", "exact"] == 1.0 and agree.loc["exact", "lissa"] > 0.999
    assert agree.loc["exact", "lissa"] == agree.loc["lissa", "exact"]
    with pytest.raises(ValueError, match="method"):
        ss.pairwise_agreement(scores, method="kendall")


def test_seconds_format():
    assert ss.format_seconds(0.8123) == "0.81 s" and ss.format_seconds(12.34) == "12.3 s"
    assert ss.format_seconds(180) == "3.0 min" and ss.format_seconds(0.0042) == "4.2 ms"


def test_lissa_error_figure():
    H, lam, V, rhs = _spectrum_problem()
    op = ss.MatrixOperator(lam)
    torch.testing.assert_close(ss.damped_solve(op, rhs @ V, 0.1), ss.damped_solve(op.fit(iu.ExactSolver()), rhs @ V, 0.1))
    grid = ss.lissa_error_grid(op, op.theta(), op.data, rhs @ V, op, scales=[1.0, 8.0], dampings=[0.1],
                               depths=[5, 50])
    fig = ss.lissa_error_figure(grid, 1.0, 0.1, depth=5)
    assert any("LissaDivergenceError" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    with pytest.raises(ValueError, match="no grid rows"):
        ss.lissa_error_figure(grid, 2.0, 0.1)


def test_lissa_catches_slow_divergence_early_and_never_a_converged_series():
    # damping below |λ_min| = 0.02 with a large scale: the negative direction grows by only
    # 1 + 0.01/8 per step; the rising-terms test catches it long before the iterates blow up
    H, lam, V, rhs = _spectrum_problem()
    op = ss.MatrixOperator(H)
    with pytest.raises(iu.LissaDivergenceError, match="terms grew") as err:
        op.fit(iu.LissaSolver(damping=0.01, scale=8.0, depth=20000)).solve(rhs)
    growth_per_step = 1 + (0.02 - 0.01) / 8.0
    # the iterates would need about (t + 1)‖v‖ growth: far beyond the step where it was caught
    assert err.value.step < 3000 and err.value.growth < 10 * err.value.step
    assert growth_per_step ** err.value.step < 100
    # a convergent recursion run deep into the rounding regime never raises
    H, lam, V, rhs = _spectrum_problem(negative=False)
    op = ss.MatrixOperator(H)
    x = op.fit(iu.LissaSolver(damping=0.0, scale=4.1, depth=6000)).solve(rhs)
    torch.testing.assert_close(x, torch.linalg.solve(H, rhs.T).T, rtol=1e-9, atol=1e-10)
    x32 = ss.MatrixOperator(H.float()).fit(iu.LissaSolver(damping=0.0, scale=4.1, depth=3000)).solve(rhs.float())
    assert torch.isfinite(x32).all()


def test_with_damping_shares_the_eigenpairs():
    H, lam, V, rhs = _spectrum_problem()
    op = ss.MatrixOperator(H)
    exact = op.fit(iu.ExactSolver())
    damped = exact.with_damping(0.3)
    assert damped.eigenvectors is exact.eigenvectors and exact.damping == 0.0
    torch.testing.assert_close(damped.solve(rhs), op.fit(iu.ExactSolver(damping=0.3)).solve(rhs))
    arnoldi = op.fit(iu.ArnoldiSolver(rank=30, iterations=30)).with_damping(0.3)
    assert arnoldi.damping == 0.3 and arnoldi.eigenvalues.min() > 0
    with pytest.raises(ValueError, match="damping"):
        exact.with_damping(-1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        iu.ExactSolver().with_damping(0.1)


def test_eigen_scores_all_top_and_masked_directions():
    H, lam, V, _ = _spectrum_problem(negative=False, p=12)
    g = torch.Generator().manual_seed(3)
    g_test = torch.randn(4, 12, generator=g, dtype=torch.float64)
    g_train = torch.randn(7, 12, generator=g, dtype=torch.float64)
    exact = ss.MatrixOperator(H).fit(iu.ExactSolver())
    full = ss.eigen_scores(exact, g_test, g_train, 7, damping=0.3)
    torch.testing.assert_close(full, g_test @ torch.linalg.solve(H + 0.3 * torch.eye(12, dtype=H.dtype), g_train.T) / 7)
    top = ss.eigen_scores(exact, g_test, g_train, 7, damping=0.3, keep=5)
    abif = ss.MatrixOperator(H).fit(iu.ArnoldiSolver(rank=5, iterations=12, damping=0.3))
    torch.testing.assert_close(top, ss.scores_from_grads(abif, g_test, g_train, 7))
    mask = exact.eigenvalues > 2.0
    torch.testing.assert_close(ss.eigen_scores(exact, g_test, g_train, 7, keep=mask),
                               ss.eigen_scores(exact, g_test, g_train, 7, keep=int(mask.sum())))
    with pytest.raises(ValueError, match="boolean mask"):
        ss.eigen_scores(exact, g_test, g_train, 7, keep=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="ExactSolver"):
        ss.eigen_scores(ss.MatrixOperator(H), g_test, g_train, 7)
