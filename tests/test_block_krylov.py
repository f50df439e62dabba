"""Block Arnoldi (``ArnoldiSolver(block_size=b)``) and Krylov restarts on invariant subspaces,
against exact Hessians (eigh) and the single-vector Arnoldi."""

import warnings

import pytest
import torch
from torch import nn

import influence_utils as iu
from conftest import _make_binary
from influence_utils.solvers import FewerEigenpairsWarning

BLOCKS = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def mlp30():
    """A tanh MLP 4-30-2 (p = 182), trained briefly: an indefinite Hessian with an exact eigh."""
    torch.manual_seed(0)
    train = _make_binary(60, 4, 3)
    test = _make_binary(20, 4, 4)
    model = iu.models.MLP(4, hidden=(30,), n_classes=2).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    theta = iu.train(obj, obj.theta(), train, steps=150, lr=0.5, progress_bar=False).final
    H = obj.hessian(theta, train)
    evals, evecs = torch.linalg.eigh(H)
    return obj, theta, train, test, evals.flip(0), evecs.flip(1)


@pytest.fixture(scope="module")
def multi_output():
    """Multi-output least squares: H = (XᵀX/n + wd·I) ⊗ I_q, every eigenvalue repeated q times."""
    g = torch.Generator().manual_seed(0)
    n, d, q = 50, 6, 5
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.randn(n, q, generator=g, dtype=torch.float64)
    Xt = torch.randn(8, d, generator=g, dtype=torch.float64)
    Yt = torch.randn(8, q, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(d, q).double()
    obj = iu.Objective(model, iu.per_example_squared_error, weight_decay=1e-2)
    return obj, obj.theta(), (X, Y), (Xt, Yt)


@pytest.mark.parametrize("b", BLOCKS)
def test_block_ritz_values_match_eigh_and_single_vector(mlp30, b):
    obj, theta, train, _, lam, _ = mlp30
    assert obj.p > 120  # a real Krylov problem: fewer products than parameters
    top = lam[lam.abs().argsort(descending=True)[:20]].sort(descending=True).values
    s = iu.ArnoldiSolver(rank=20, iterations=120, positive_only=False, block_size=b).fit(obj, theta, train)
    single = iu.ArnoldiSolver(rank=20, iterations=120, positive_only=False, block_size=1).fit(obj, theta, train)
    assert ((s.eigenvalues - top) / top).abs().max() <= 1e-6
    assert ((s.eigenvalues - single.eigenvalues) / single.eigenvalues).abs().max() <= 1e-6
    H = obj.hessian(theta, train)
    V = s.eigenvectors
    torch.testing.assert_close(H @ V, V * s.eigenvalues, rtol=0, atol=1e-6 * float(top.abs().max()))
    torch.testing.assert_close(V.T @ V, torch.eye(20, dtype=torch.float64), rtol=0, atol=1e-10)
    assert s.hvp_count == s.iterations_done == 120


@pytest.mark.parametrize("b", (2, 4))
def test_block_influence_matches_ideal_positive_eigenspace(mlp30, b):
    obj, theta, train, test, lam, U = mlp30
    k = 20
    assert (lam[:k] > 0).all()
    n = train[1].shape[0]
    g_tr, g_te = obj.per_example_grads(theta, train), obj.per_example_grads(theta, test)
    ideal = ((g_te @ U[:, :k]) / lam[:k]) @ (g_tr @ U[:, :k]).T / n
    s = iu.ArnoldiSolver(rank=k, iterations=100, block_size=b).fit(obj, theta, train)
    scores = iu.influence(obj, theta, s, train, test)
    assert iu.pearson(scores, ideal) >= 0.999
    # the low-rank scoring path (projection on V) gives the scores of the solve path
    torch.testing.assert_close(scores, s.solve(g_te) @ g_tr.T / n, rtol=1e-8, atol=1e-12)
    assert (s.eigenvalues > 0).all() and s.eigenvalues.numel() == k


def test_one_block_product_per_step(mlp30):
    obj, theta, train, _, _, _ = mlp30
    calls = []
    real = obj.hvp

    class Counting(iu.Objective):
        def hvp(self, theta, data, v, **kw):
            calls.append(v.shape[0] if v.ndim == 2 else 1)
            return real(theta, data, v, **kw)

    counting = Counting.__new__(Counting)
    counting.__dict__.update(obj.__dict__)
    s = iu.ArnoldiSolver(rank=5, iterations=30, block_size=4).fit(counting, theta, train)
    assert calls == [4] * 7 + [2]  # 30 products: 7 blocks of 4 and a last block of 2
    assert s.hvp_count == s.iterations_done == 30
    calls.clear()
    iu.ArnoldiSolver(rank=2, iterations=100).fit(counting, theta, train)  # p = 182
    assert calls == [4] * 25  # the default block is 4 when that leaves 25 block steps ...
    calls.clear()
    iu.ArnoldiSolver(rank=2, iterations=10).fit(counting, theta, train)
    assert calls == [1] * 10  # ... and one vector when fewer products would make a low-degree space


def test_block_ritz_history(mlp30):
    obj, theta, train, _, _, _ = mlp30
    s = iu.ArnoldiSolver(rank=5, iterations=40, block_size=4, seed=3).fit(obj, theta, train)
    torch.testing.assert_close(s.ritz_values_after(s.iterations_done), s.ritz_values)
    for j in (12, 13):  # the leading block of the projected matrix is what a shorter fit gives
        short = iu.ArnoldiSolver(rank=5, iterations=j, block_size=4, seed=3).fit(obj, theta, train)
        torch.testing.assert_close(s.ritz_values_after(j), short.ritz_values, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="iterations must lie"):
        s.ritz_values_after(41)


@pytest.mark.parametrize("b", BLOCKS)
def test_repeated_eigenvalues_do_not_stop_early(multi_output, b):
    """The old Arnoldi stopped at the invariant subspace after 7 of 35 products (one direction
    per distinct eigenvalue) and kept 7 eigenpairs, with no warning."""
    obj, theta, train, test = multi_output
    p = obj.p
    H = obj.hessian(theta, train)
    lam = torch.linalg.eigvalsh(H).flip(0)
    assert int((lam[:-1] - lam[1:] > 1e-9).sum()) + 1 < p // 2  # heavily repeated spectrum
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = iu.ArnoldiSolver(rank=p, iterations=p, block_size=b, seed=0).fit(obj, theta, train)
    assert s.iterations_done == p and s.eigenvalues.numel() == p
    assert s.restarts > 0 or b >= 5  # a block of 5 or more spans each 5-fold eigenspace
    torch.testing.assert_close(s.eigenvalues, lam, rtol=1e-10, atol=1e-12)
    exact = iu.ExactSolver().fit(obj, theta, train)
    torch.testing.assert_close(iu.influence(obj, theta, s, train, test),
                               iu.influence(obj, theta, exact, train, test), rtol=1e-8, atol=1e-12)
    again = iu.ArnoldiSolver(rank=p, iterations=p, block_size=b, seed=0).fit(obj, theta, train)
    assert torch.equal(again.eigenvalues, s.eigenvalues)  # restarts are seeded: deterministic


def test_fewer_pairs_than_rank_warns(mlp30):
    obj, theta, train, _, lam, _ = mlp30
    positive = int((lam > 1e-8 * lam.abs().max()).sum())
    with pytest.warns(FewerEigenpairsWarning, match=rf"kept {positive} of rank={obj.p} eigenpairs.*positive_only=False"):
        s = iu.ArnoldiSolver(rank=obj.p, iterations=obj.p, block_size=4).fit(obj, theta, train)
    assert s.eigenvalues.numel() == positive < obj.p
    assert issubclass(FewerEigenpairsWarning, UserWarning)


def test_block_float32_stays_on_dtype(mlp30):
    obj, theta, train, _, lam, _ = mlp30
    model = iu.models.MLP(4, hidden=(30,), n_classes=2)
    o32 = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    t32 = theta.float()
    s = iu.ArnoldiSolver(rank=3, iterations=60, block_size=4).fit(o32, t32, (train[0].float(), train[1].float()))
    assert s.eigenvalues.dtype == s.eigenvectors.dtype == torch.float32
    assert ((s.eigenvalues.double() - lam[:3]) / lam[:3]).abs().max() < 1e-3


def test_block_size_validation(logreg):
    obj, theta, train, _ = logreg
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block_size must be a positive integer"):
            iu.ArnoldiSolver(rank=2, iterations=10, block_size=bad)
    with pytest.raises(ValueError, match=r"block_size \(12\) is larger than iterations \(10\)"):
        iu.ArnoldiSolver(rank=2, iterations=10, block_size=12)
    with pytest.raises(ValueError, match=rf"larger than the number of parameters p = {obj.p}; pass block_size <= {obj.p}"):
        iu.ArnoldiSolver(rank=2, iterations=10, block_size=8).fit(obj, theta, train)
    assert "block_size=4" in repr(iu.ArnoldiSolver(rank=2, iterations=10, block_size=4))


def test_block_hvp_non_finite_is_refused(logreg):
    obj, theta, train, _ = logreg
    X, y = train
    bad = (X.clone(), y)
    bad[0][3, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="example 3"):
        iu.ArnoldiSolver(rank=2, iterations=4, block_size=2).fit(obj, theta, bad)
