"""Objective: gradients, per-example gradients, HVPs and Hessians against closed forms."""

import pytest
import torch
from torch import nn

import influence_utils as iu


def _design(X):
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], 1)


def _analytic_logreg(obj, theta, X, y):
    """Closed forms for L2 logistic regression with θ = (w, b)."""
    Xa = _design(X)
    p = torch.sigmoid(Xa @ theta)
    per_example = (p - y)[:, None] * Xa  # ∇ℓ_i
    H = (Xa.T * (p * (1 - p))) @ Xa / X.shape[0] + obj.weight_decay * torch.eye(Xa.shape[1], dtype=X.dtype)
    return per_example, H


def test_theta_roundtrip_and_load(logreg):
    obj, theta, _, _ = logreg
    assert obj.p == 6 and obj.theta().shape == (6,)
    copy = iu.Objective(type(obj.model)(5).double(), iu.per_example_cross_entropy)
    copy.load(theta)
    assert torch.equal(copy.theta(), theta)
    views = obj.unflatten(theta)
    assert list(views) == ["lin.weight", "lin.bias"] and views["lin.weight"].shape == (1, 5)


def test_loss_and_grad_match_closed_form(logreg):
    obj, theta, (X, y), _ = logreg
    g_ex, _ = _analytic_logreg(obj, theta, X, y)
    p = torch.sigmoid(_design(X) @ theta)
    loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean() + 0.5 * obj.weight_decay * theta.pow(2).sum()
    torch.testing.assert_close(obj.loss(theta, (X, y)), loss)
    torch.testing.assert_close(obj.grad(theta, (X, y)), g_ex.mean(0) + obj.weight_decay * theta)
    assert obj.grad(theta, (X, y)).norm() < 1e-10  # minimize_newton reached the optimum


def test_per_example_grads_closed_form_and_loop(logreg):
    obj, theta, (X, y), _ = logreg
    g_ex, _ = _analytic_logreg(obj, theta, X, y)
    G = obj.per_example_grads(theta, (X, y))
    torch.testing.assert_close(G, g_ex)
    # a plain autograd loop, one example at a time
    loop = []
    for i in range(X.shape[0]):
        t = theta.clone().requires_grad_()
        loss_i = iu.per_example_cross_entropy(obj.forward(t, X[i : i + 1]), y[i : i + 1]).sum()
        loop.append(torch.autograd.grad(loss_i, t)[0])
    loop = torch.stack(loop)
    torch.testing.assert_close(G, loop)


def test_per_example_grads_chunked_equals_whole(mlp):
    obj, theta, train, _ = mlp
    whole = obj.per_example_grads(theta, train)
    small = iu.Objective(obj.model, obj.loss_fn, weight_decay=obj.weight_decay, chunk_size=7)
    torch.testing.assert_close(small.per_example_grads(theta, train), whole)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), batch_size=13)
    torch.testing.assert_close(obj.per_example_grads(theta, loader), whole)
    torch.testing.assert_close(obj.hvp(theta, loader, whole[:3]), obj.hvp(theta, train, whole[:3]))


def test_hessian_and_hvp_closed_form(logreg):
    obj, theta, (X, y), _ = logreg
    _, H = _analytic_logreg(obj, theta, X, y)
    torch.testing.assert_close(obj.hessian(theta, (X, y)), H)
    V = torch.randn(3, obj.p, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(theta, (X, y), V), V @ H)
    torch.testing.assert_close(obj.hvp(theta, (X, y), V[0]), H @ V[0])


def test_gauss_newton_equals_hessian_for_glm_and_is_psd(logreg, mlp):
    obj, theta, train, _ = logreg
    # for a linear model with a convex loss the Gauss–Newton matrix is the Hessian
    torch.testing.assert_close(obj.hessian(theta, train, gauss_newton=True), obj.hessian(theta, train))
    obj, theta, train, _ = mlp
    gn = obj.hessian(theta, train, gauss_newton=True)
    h = obj.hessian(theta, train)
    assert torch.linalg.eigvalsh(gn).min() > 0  # PSD + weight decay
    assert torch.linalg.eigvalsh(h).min() < 0  # the MLP's Hessian is indefinite
    assert not torch.allclose(gn, h)


def test_weights_remove_examples_keeping_normalisation(logreg):
    obj, theta, (X, y), _ = logreg
    n = X.shape[0]
    w = torch.ones(n, dtype=torch.float64)
    w[4] = 0
    keep = torch.arange(n) != 4
    expected = obj.per_example_losses(theta, (X[keep], y[keep])).sum() / n + 0.5 * obj.weight_decay * theta.pow(2).sum()
    torch.testing.assert_close(obj.loss(theta, (X, y), w), expected)
    H_w = obj.hessian(theta, (X, y), weights=w)
    g4 = obj.per_example_grads(theta, (X[4:5], y[4:5]))[0]
    p = torch.sigmoid(_design(X[4:5]) @ theta)[0]
    x4 = _design(X[4:5])[0]
    torch.testing.assert_close(H_w, obj.hessian(theta, (X, y)) - p * (1 - p) * torch.outer(x4, x4) / n)
    assert g4.shape == (obj.p,)


def test_params_subset_by_name_and_predicate():
    model = iu.models.MLP(3, hidden=(4,), n_classes=2).double()
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith("head")]
    obj = iu.Objective(model, iu.per_example_cross_entropy, params=head)
    assert obj.names == head and obj.p == sum(p.numel() for n, p in model.named_parameters() if n in head)
    obj2 = iu.Objective(model, iu.per_example_cross_entropy, params=lambda n: n.startswith("head"))
    assert obj2.names == head
    X = torch.randn(7, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (7,)).double()
    # gradient of the subset equals the corresponding slice of the full gradient
    full = iu.Objective(model, iu.per_example_cross_entropy)
    gf = full.unflatten(full.grad(full.theta(), (X, y)))
    gs = obj.unflatten(obj.grad(obj.theta(), (X, y)))
    for n in head:
        torch.testing.assert_close(gs[n], gf[n])


def test_bad_inputs_raise_clear_errors(logreg):
    obj, theta, (X, y), _ = logreg
    frozen = nn.Linear(3, 1)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        iu.Objective(frozen, iu.per_example_cross_entropy)
    with pytest.raises(ValueError, match="unknown parameter names"):
        iu.Objective(obj.model, iu.per_example_cross_entropy, params=["nope"])
    with pytest.raises(ValueError, match="selected no parameter"):
        iu.Objective(obj.model, iu.per_example_cross_entropy, params=lambda n: False)
    with pytest.raises(ValueError, match=r"theta must have shape \[6\]"):
        obj.loss(theta[:3], (X, y))
    with pytest.raises(TypeError, match="float32"):
        obj.loss(theta.float(), (X, y))
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        obj.loss(theta, (X, y[:-1]))
    with pytest.raises(TypeError, match="pair"):
        obj.loss(theta, X)
    with pytest.raises(ValueError, match="v must have shape"):
        obj.hvp(theta, (X, y), torch.zeros(5, dtype=torch.float64))
    bad = X.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite per-example gradients \(rows \[2\]\)"):
        obj.per_example_grads(theta, (bad, y))
    with pytest.raises(ValueError, match="reduction='none'"):
        iu.Objective(obj.model, lambda out, t: (out - t).pow(2).mean()).loss(theta, (X, y))


# --------------------------------------------------------------------------- projected gradients


def _tiny_convnet():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()
    x = torch.randn(30, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    return iu.Objective(model, iu.per_example_cross_entropy), (x, y)


@pytest.mark.parametrize("rank", [1, 7, 30])
def test_projections_by_forward_mode_equal_the_projected_per_example_gradients(mlp, rank):
    """G V by forward mode and by reverse mode agree with the explicit [n, p] gradients times V,
    for any number of columns (7 and 30 cross the forward-mode column blocks) and any chunking."""
    obj, theta, train, _ = mlp
    V = torch.linalg.qr(torch.randn(obj.p, rank, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    expected = obj.per_example_grads(theta, train) @ V
    for method in ("jvp", "grad", "kron", "auto"):
        torch.testing.assert_close(obj.per_example_projections(theta, train, V, method=method), expected,
                                   rtol=1e-10, atol=1e-12)
    conv, data = _tiny_convnet()
    theta_c = conv.theta()
    W = torch.randn(conv.p, rank, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(conv.per_example_projections(theta_c, data, W, method="jvp"),
                               conv.per_example_grads(theta_c, data) @ W, rtol=1e-10, atol=1e-12)


class _SharedSequenceNet(nn.Module):
    """Linear layers only, applied to every position of a sequence ``[n, s, d]`` and one of them
    twice (weight sharing): each example's gradient sums over positions and over the two calls."""

    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(4, 5), nn.Linear(5, 5, bias=False), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.mid(torch.tanh(self.mid(torch.tanh(self.inp(x))))))
        return self.out(h.mean(1))


class _BatchCentred(nn.Module):
    """Linear layers only, but the examples of a batch interact (centred by the batch mean)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h - h.mean(0, keepdim=True))


@pytest.mark.parametrize("params", [None, ["mid.weight", "out.bias"]])
def test_kron_projections_sum_over_positions_calls_and_selected_parameters(params, monkeypatch):
    """"kron" equals the explicit gradients times V for sequence inputs, a layer called twice, a
    θ that holds only some parameters, and column blocks smaller than the basis."""
    from influence_utils import objective as objective_module

    torch.manual_seed(0)
    obj = iu.Objective(_SharedSequenceNet().double(), iu.per_example_cross_entropy, params=params)
    x, y = torch.randn(9, 6, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    theta = obj.theta()
    V = torch.randn(obj.p, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = obj.per_example_grads(theta, (x, y)) @ V
    torch.testing.assert_close(obj.per_example_projections(theta, (x, y), V, method="kron"), expected,
                               rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(objective_module, "KRON_FLOATS", 9 * 6 * 5 * 2)  # blocks of 2 columns
    torch.testing.assert_close(obj.per_example_projections(theta, (x, y), V, method="kron"), expected,
                               rtol=1e-10, atol=1e-12)


def test_kron_projections_fall_back_when_the_examples_of_a_batch_interact(monkeypatch):
    """The first-example check catches a model that mixes examples: "auto" falls back to the
    per-example gradients (the right answer), an explicit "kron" refuses."""
    from influence_utils import objective as objective_module

    torch.manual_seed(0)
    obj = iu.Objective(_BatchCentred().double(), iu.per_example_cross_entropy)
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    theta = obj.theta()
    V = torch.randn(obj.p, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert obj.dense
    monkeypatch.setattr(objective_module, "KRON_MIN_PARAMETERS", 0)  # "auto" takes "kron" on this small model
    torch.testing.assert_close(obj.per_example_projections(theta, (x, y), V),
                               obj.per_example_grads(theta, (x, y)) @ V, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="disagrees with the per-example gradients.*use method='grad'"):
        obj.per_example_projections(theta, (x, y), V, method="kron")


def test_projections_choose_kron_only_for_dense_models_with_enough_parameters(mlp, monkeypatch):
    """"auto" takes the Kronecker-structured path for an MLP with at least KRON_MIN_PARAMETERS
    parameters, at any number of columns, and the per-example gradients for a smaller MLP or a
    conv net; "kron" on a conv net is refused."""
    from influence_utils import objective as objective_module

    obj, theta, train, _ = mlp
    conv, data = _tiny_convnet()
    assert obj.dense and not conv.dense
    calls = []
    original = objective_module.Objective._projections_kron
    monkeypatch.setattr(objective_module.Objective, "_projections_kron",
                        lambda self, *a: calls.append(self) or original(self, *a))
    assert obj.p < objective_module.KRON_MIN_PARAMETERS
    obj.per_example_projections(theta, train, torch.zeros(obj.p, 3, dtype=torch.float64))
    assert calls == []  # too few parameters for the hooks to pay
    monkeypatch.setattr(objective_module, "KRON_MIN_PARAMETERS", obj.p)
    obj.per_example_projections(theta, train, torch.zeros(obj.p, 3, dtype=torch.float64))
    obj.per_example_projections(theta, train, torch.zeros(obj.p, 60, dtype=torch.float64))
    monkeypatch.setattr(objective_module, "KRON_MIN_PARAMETERS", 0)
    conv.per_example_projections(conv.theta(), data, torch.zeros(conv.p, 3, dtype=torch.float64))
    assert calls == [obj, obj]
    with pytest.raises(ValueError, match="method='kron' needs every module.*nn.Linear"):
        conv.per_example_projections(conv.theta(), data, torch.zeros(conv.p, 3, dtype=torch.float64), method="kron")


def test_projections_refuse_a_bad_basis_or_method(mlp):
    obj, theta, train, _ = mlp
    with pytest.raises(ValueError, match=rf"basis must be \[p={obj.p}, r\], got \(3, 2\)"):
        obj.per_example_projections(theta, train, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="method must be 'auto', 'jvp', 'grad' or 'kron', got 'fast'"):
        obj.per_example_projections(theta, train, torch.zeros(obj.p, 2, dtype=torch.float64), method="fast")


def test_the_finiteness_check_is_exact_when_a_sum_overflows():
    """The one-reduction fast path never accepts NaN or inf and never refuses finite entries whose
    sum overflows."""
    from influence_utils.objective import _check_finite

    big = torch.full((4, 3), 3e38, dtype=torch.float32)  # finite, but the sum is inf
    _check_finite(big, "x")
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(4, 3)
        t[2, 1] = bad
        with pytest.raises(FloatingPointError, match=r"rows \[2\]"):
            _check_finite(t, "x")
    _check_finite(torch.zeros(0, 3), "x")


def test_accuracy_counts_predicted_labels_in_chunks():
    """Binary (one logit, class 1 where positive) and multiclass (argmax), any chunking, against
    the count by hand; empty data is refused."""
    torch.manual_seed(0)
    x = torch.randn(23, 4, dtype=torch.float64)
    binary = iu.Objective(nn.Linear(4, 1).double(), iu.per_example_cross_entropy, chunk_size=5)
    multi = iu.Objective(nn.Linear(4, 3).double(), iu.per_example_cross_entropy, chunk_size=5)
    y2, y3 = torch.randint(0, 2, (23,)), torch.randint(0, 3, (23,))
    for obj, y in ((binary, y2), (multi, y3)):
        theta = obj.theta()
        logits = obj.forward(theta, x)
        pred = (logits > 0).long() if logits.ndim == 1 else logits.argmax(1)
        assert obj.accuracy(theta, (x, y)) == int((pred == y).sum()) / 23
        assert torch.equal(iu.predict_labels(logits), pred)
    assert 0 < binary.accuracy(binary.theta(), (x, y2)) < 1  # a test that can tell counts apart
    with pytest.raises(ValueError, match="no examples"):
        multi.accuracy(multi.theta(), (x[:0], y3[:0]))
    with pytest.raises(ValueError, match=r"logits must be \[n\] \(binary\) or \[n, C\]"):
        iu.predict_labels(torch.zeros(2, 3, 4))
