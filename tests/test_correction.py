"""Correction by fine-tuning on helpful examples: against hand computations, iu.train and scipy."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import influence_utils as iu
from influence_utils import correction as cr


@pytest.fixture(scope="module")
def wrong(logreg):
    """The logistic regression of conftest and its mis-predicted test examples."""
    obj, theta, train, test = logreg
    idx = cr.mispredicted(obj, theta, test)
    assert len(idx) >= 3  # labels are drawn from the logistic model: some are mis-predicted
    return obj, theta, train, (test[0][idx], test[1][idx]), idx


def _after(obj, theta, data, selected, steps, lr):
    """θ after `steps` full-batch gradient-descent steps on `selected` with iu.train."""
    x, y = data
    return iu.train(obj, theta, (x[selected], y[selected]), steps=steps, lr=lr).final


def test_one_step_moves_the_test_loss_by_the_first_order_amount(wrong):
    obj0, theta, train, test, _ = wrong
    obj = iu.Objective(obj0.model, obj0.loss_fn, weight_decay=0.0)
    j = torch.arange(len(test[1])) % 7  # one training example per test example
    g_test = obj.per_example_grads(theta, test)
    g_train = obj.per_example_grads(theta, train)[j]
    first_order = -(g_test * g_train).sum(1)  # per unit lr
    errors = []
    for lr in (1e-2, 5e-3):
        df = cr.correct(obj, theta, train, test, test, {"m": j[:, None]}, ks=[1], steps=[1], lr=lr,
                        self_reference=False, weight_decay=False)
        got = torch.tensor(df["loss_change"].to_numpy())
        # exactly one gradient step θ − lr ∇ℓ(z_j), evaluated by hand
        exact = torch.stack([obj.per_example_losses(theta - lr * g_train[i], (test[0][i:i + 1], test[1][i:i + 1]))[0]
                             for i in range(len(j))]) - obj.per_example_losses(theta, test)
        torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-12)
        errors.append((got - lr * first_order).abs().max())
    # the remainder is second order: halving lr divides it by about 4
    assert 3.5 < float(errors[0] / errors[1]) < 4.5
    assert float(errors[1]) < 0.01 * float((5e-3 * first_order).abs().max())


def test_one_step_ranking_equals_gradient_dot_ranking(wrong):
    obj0, theta, train, test, _ = wrong
    obj = iu.Objective(obj0.model, obj0.loss_fn, weight_decay=0.0)
    n = len(train[1])
    one = (test[0][:1].expand(n, -1), test[1][:1].expand(n))  # test example 0, once per train example
    df = cr.correct(obj, theta, train, one, test, {"each": torch.arange(n)[:, None]}, ks=[1], steps=[1],
                    lr=1e-6, self_reference=False)
    decrease = -torch.tensor(df.sort_values("example")["loss_change"].to_numpy())
    dot = iu.gradient_dot(obj, theta, train, (test[0][:1], test[1][:1]))[0]
    assert torch.equal(decrease.argsort(descending=True), dot.argsort(descending=True))
    # TracIn at the checkpoint ranks like gradient dot, so it selects the largest one-step decreases
    tracin = cr.helpful_scores("tracin", obj, theta, train, (test[0][:1], test[1][:1]))
    assert torch.equal(cr.select_helpful(tracin, 5)[0], decrease.topk(5).indices)


@pytest.mark.parametrize("weight_decay", [True, False])
def test_vectorised_runs_match_iu_train_and_held_out_by_hand(wrong, weight_decay):
    obj, theta, train, test, _ = wrong
    heldout = (train[0][:40], train[1][:40])
    solver = iu.ExactSolver().fit(obj, theta, train)
    scores = cr.helpful_scores("influence", obj, theta, train, test, solver=solver)
    sel = cr.select_helpful(scores, 4)
    df = cr.correct(obj, theta, train, test, heldout, {"if": sel}, ks=[1, 4], steps=[5, 1, 3], lr=0.5,
                    weight_decay=weight_decay, chunk=2, eval_chunk=7)
    assert len(df) == 2 * len(test[1]) * 2 * 3  # (if, self) × examples × k × s
    ref_obj = obj if weight_decay else iu.Objective(obj.model, obj.loss_fn, weight_decay=0.0)
    x_h, y_h = heldout
    right0 = (obj.forward(theta, x_h) > 0).long() == y_h.long()
    loss_h0 = obj.per_example_losses(theta, heldout)
    for row in df.sample(12, random_state=0).itertuples():
        i = int(row.example)
        if row.method == "self":
            th = iu.train(ref_obj, theta, (test[0][i:i + 1], test[1][i:i + 1]), steps=row.s, lr=0.5).final
        else:
            th = _after(ref_obj, theta, train, sel[i, : row.k], row.s, 0.5)
        loss = obj.per_example_losses(th, (test[0][i:i + 1], test[1][i:i + 1]))[0]
        assert row.loss_after == pytest.approx(float(loss), rel=1e-9, abs=1e-12)
        assert row.flipped == bool(((obj.forward(th, test[0][i:i + 1]) > 0).long() == test[1][i].long())[0])
        right = (obj.forward(th, x_h) > 0).long() == y_h.long()
        assert row.heldout_broken == int((right0 & ~right).sum())
        assert row.heldout_fixed == int((~right0 & right).sum())
        assert row.heldout_acc_change == pytest.approx(float(right.double().mean() - right0.double().mean()))
        assert row.heldout_loss_change == pytest.approx(float((obj.per_example_losses(th, heldout) - loss_h0).mean()))
    # the reference on the test example itself does not depend on k
    ref = df[df.method == "self"].pivot_table(index=["example", "s"], columns="k", values="loss_after")
    np.testing.assert_array_equal(ref[1].to_numpy(), ref[4].to_numpy())


class Shift(nn.Module):
    """logit = x + b with the slope fixed at 1 (θ = b only)."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor([b], dtype=torch.float64))

    def forward(self, x):
        return x[:, 0] + self.b


def test_collateral_damage_on_a_hand_made_case():
    obj = iu.Objective(Shift(-1.0), iu.per_example_cross_entropy)
    theta = obj.theta()
    train = (torch.tensor([[0.0], [3.0]], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64))
    test = (torch.tensor([[0.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))  # logit −1: wrong
    x_h = torch.tensor([-2.0, -0.8, -0.3, 0.2, 0.7, 2.0], dtype=torch.float64)
    y_h = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    df = cr.correct(obj, theta, train, test, (x_h[:, None], y_h), {"m": torch.tensor([[0]])}, ks=[1], steps=[1],
                    lr=2.0, self_reference=False)
    row = df.iloc[0]
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    b1 = -1.0 + 2.0 * (1 - sigmoid(-1.0))  # one step on ℓ = −log σ(0 + b): b ← b − lr(σ(b) − 1)
    assert b1 == pytest.approx(0.4621171572600098)
    # before (b = −1): predictions 0 0 0 0 0 1, correct T T F T F T (4 of 6)
    # after (b ≈ 0.462): predictions 0 0 1 1 1 1, correct T T T F T T (5 of 6)
    assert bool(row.flipped) and row.pred_before == 0 and row.pred_after == 1
    assert row.heldout_broken == 1 and row.heldout_fixed == 2
    assert row.heldout_acc_change == pytest.approx(1 / 6)

    def bce(z, y):
        return math.log1p(math.exp(-z)) if y == 1 else math.log1p(math.exp(z))

    before = np.mean([bce(x - 1.0, y) for x, y in zip(x_h.tolist(), y_h.tolist())])
    after = np.mean([bce(x + b1, y) for x, y in zip(x_h.tolist(), y_h.tolist())])
    assert row.heldout_loss_change == pytest.approx(after - before, rel=1e-12)
    assert row.loss_change == pytest.approx(bce(b1, 1) - bce(-1.0, 1), rel=1e-12)


def test_random_baseline_draws_only_from_the_true_class():
    g = torch.Generator().manual_seed(0)
    y_train = torch.randint(0, 3, (60,), generator=g)
    y_test = torch.tensor([0, 1, 2, 2, 1])
    s = cr.random_scores(y_train, y_test, seed=3)
    sel = cr.select_helpful(s, 10)
    assert (y_train[sel] == y_test[:, None]).all()
    assert sel.unique(dim=1).shape == sel.shape and all(len(set(r.tolist())) == 10 for r in sel)
    assert not torch.equal(sel[2], sel[3])  # same class, independent draws
    torch.testing.assert_close(cr.random_scores(y_train, y_test, seed=3), s)
    assert not torch.equal(cr.select_helpful(cr.random_scores(y_train, y_test, seed=4), 10), sel)
    # uniform over the class: every example of class 0 is drawn about equally often over many draws
    many = cr.random_scores(y_train, torch.zeros(3000, dtype=torch.long), seed=1)
    counts = torch.bincount(cr.select_helpful(many, 5).flatten(), minlength=60)
    n0 = int((y_train == 0).sum())
    assert (counts[y_train != 0] == 0).all()
    expected = 3000 * 5 / n0
    assert (counts[y_train == 0].double() - expected).abs().max() < 5 * math.sqrt(expected)
    with pytest.raises(ValueError, match="fewer than k"):
        cr.select_helpful(s, int((y_train == 0).sum()) + 1)


def test_helpful_scores_are_the_package_scores(wrong):
    obj, theta, train, test, _ = wrong
    arnoldi = iu.ArnoldiSolver(rank=obj.p, iterations=obj.p).fit(obj, theta, train)
    torch.testing.assert_close(cr.helpful_scores("abif", obj, theta, train, test, solver=arnoldi),
                               iu.influence(obj, theta, arnoldi, train=train, test=test))
    torch.testing.assert_close(
        cr.helpful_scores("tbif", obj, theta, train, test, solver=arnoldi, horizon=5, lr=0.1),
        iu.time_bounded_influence(obj, theta, arnoldi, train, test, 5, 0.1, outside="drop"))
    torch.testing.assert_close(cr.helpful_scores("tracin", obj, theta, train, test),
                               iu.gradient_dot(obj, theta, train, test))
    torch.testing.assert_close(cr.helpful_scores("cosine", obj, theta, train, test),
                               iu.gradient_cosine(obj, theta, train, test))
    # helpful = positive: a step on the top ABIF example lowers the test loss for every example
    df = cr.correct(obj, theta, train, test, test, {"abif": cr.select_helpful(
        cr.helpful_scores("abif", obj, theta, train, test, solver=arnoldi), 1)}, ks=[1], steps=[1], lr=1e-3,
        self_reference=False)
    assert (df.loss_change < 0).all()


def test_wilson_interval_known_values():
    lo, hi = cr.wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4901625, 0.9433178), abs=1e-6)
    lo, hi = cr.wilson_interval(0, 10)
    z2 = 1.959963984540054 ** 2
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2))
    from scipy.stats import binomtest

    for s, n, c in [(3, 20, 0.95), (17, 20, 0.9), (50, 50, 0.99), (1, 7, 0.8)]:
        ref = binomtest(s, n).proportion_ci(confidence_level=c, method="wilson")
        assert cr.wilson_interval(s, n, c) == pytest.approx((ref.low, ref.high), abs=1e-12)
    low, high = cr.wilson_interval(np.array([0, 5]), np.array([5, 5]))
    assert low.shape == (2,) and high[1] == 1.0
    with pytest.raises(ValueError):
        cr.wilson_interval(3, 2)


def test_analyze_counts_flips_with_wilson_intervals(wrong):
    obj, theta, train, test, _ = wrong
    sel = cr.select_helpful(cr.helpful_scores("cosine", obj, theta, train, test), 3)
    df = cr.correct(obj, theta, train, test, train, {"cos": sel}, ks=[1, 3], steps=[1, 20], lr=1.0)
    table = cr.analyze(df, n_boot=200)
    assert list(table.method.unique()) == ["cos", "self"]
    assert len(table) == 2 * 2 * 2 and (table.interval == "wilson").all()
    for row in table.itertuples():
        part = df[(df.method == row.method) & (df.k == row.k) & (df.s == row.s)]
        assert row.n == len(test[1]) and row.flips == int(part.flipped.sum())
        assert (row.flip_low, row.flip_high) == pytest.approx(cr.wilson_interval(int(row.flips), row.n))
        assert row.flip_low <= row.flip_rate <= row.flip_high
    # fine-tuning on the test example itself for 20 steps at lr 1 flips every one of them
    assert table[(table.method == "self") & (table.s == 20)].flip_rate.min() == 1.0


def test_multiclass_runs_match_iu_train():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=g)
    model = iu.models.MLP(4, hidden=(6,), n_classes=3).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    theta = iu.train(obj, obj.theta(), (x[:40], y[:40]), steps=50, lr=0.5).final
    train, rest = (x[:40], y[:40]), (x[40:], y[40:])
    idx = cr.mispredicted(obj, theta, rest)
    test = (rest[0][idx], rest[1][idx])
    sel = cr.select_helpful(cr.random_scores(train[1], test[1], seed=0), 2)
    df = cr.correct(obj, theta, train, test, rest, {"random": sel}, ks=[2], steps=[2], lr=0.3, weight_decay=True,
                    test_ids=idx.tolist())
    assert sorted(df.example.unique().tolist()) == sorted(idx.tolist())
    row = df[(df.method == "random")].iloc[0]
    i = idx.tolist().index(row.example)
    th = _after(obj, theta, train, sel[i], 2, 0.3)
    logits = obj.forward(th, test[0][i:i + 1])
    assert row.pred_after == int(logits.argmax(-1)[0])
    assert row.loss_after == pytest.approx(float(obj.per_example_losses(th, (test[0][i:i + 1], test[1][i:i + 1]))[0]))


def test_bad_input_errors(wrong, logreg):
    obj, theta, train, test, idx = wrong
    sel = torch.zeros(len(test[1]), 2, dtype=torch.long)
    kw = dict(ks=[1, 2], steps=[1], lr=0.1)
    _, _, _, full_test = logreg
    right = torch.tensor([i for i in range(len(full_test[1])) if i not in set(idx.tolist())])
    with pytest.raises(ValueError, match="already predicted correctly"):
        cr.correct(obj, theta, train, (full_test[0][right], full_test[1][right]), test, {"m": sel[:1].expand(len(right), 2)}, **kw)
    with pytest.raises(ValueError, match="selections"):
        cr.correct(obj, theta, train, test, test, {"m": sel[:, :1]}, **kw)
    with pytest.raises(ValueError, match="outside"):
        cr.correct(obj, theta, train, test, test, {"m": sel + 10_000}, **kw)
    with pytest.raises(ValueError, match="ks"):
        cr.correct(obj, theta, train, test, test, {"m": sel}, ks=[0, 1], steps=[1], lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        cr.correct(obj, theta, train, test, test, {"m": sel}, ks=[1], steps=[], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        cr.correct(obj, theta, train, test, test, {"m": sel}, ks=[1], steps=[1], lr=-1.0)
    with pytest.raises(ValueError, match="reference"):
        cr.correct(obj, theta, train, test, test, {"self": sel}, **kw)
    with pytest.raises(ValueError, match="unknown method"):
        cr.helpful_scores("loo", obj, theta, train, test)
    with pytest.raises(ValueError, match="solver"):
        cr.helpful_scores("abif", obj, theta, train, test)
    with pytest.raises(TypeError, match="ArnoldiSolver"):
        cr.helpful_scores("abif", obj, theta, train, test, solver=iu.ExactSolver().fit(obj, theta, train))
    with pytest.raises(ValueError, match="horizon"):
        cr.helpful_scores("tbif", obj, theta, train, test, solver=iu.ExactSolver().fit(obj, theta, train))
    with pytest.raises(ValueError, match="k="):
        cr.select_helpful(torch.zeros(2, 5), 6)
    with pytest.raises(ValueError, match="NaN"):
        cr.select_helpful(torch.full((2, 5), float("nan")), 1)
    with pytest.raises(ValueError, match="class labels"):
        cr.random_scores(torch.tensor([0.5, 1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="correct"):
        cr.analyze(__import__("pandas").DataFrame({"a": [1]}))


def test_sample_is_mispredicted_and_disjoint_from_heldout(logreg):
    obj, theta, _, test = logreg
    wrong_all = set(cr.mispredicted(obj, theta, test).tolist())
    picked, held = cr.sample_mispredicted(obj, theta, test, 4, n_heldout=10, seed=0)
    assert set(picked.tolist()) <= wrong_all and len(set(picked.tolist())) == 4
    assert not set(picked.tolist()) & set(held.tolist()) and len(set(held.tolist())) == 10
    again = cr.sample_mispredicted(obj, theta, test, 4, n_heldout=10, seed=0)
    assert torch.equal(again[0], picked) and torch.equal(again[1], held)
    with pytest.raises(ValueError, match="mis-predicted"):
        cr.sample_mispredicted(obj, theta, test, len(wrong_all) + 1, n_heldout=1)
    with pytest.raises(ValueError, match="held-out"):
        cr.sample_mispredicted(obj, theta, test, 2, n_heldout=len(test[1]))


def test_first_order_prediction_is_the_small_step_limit(wrong):
    obj0, theta, train, test, _ = wrong
    obj = iu.Objective(obj0.model, obj0.loss_fn, weight_decay=0.0)
    sel = cr.select_helpful(cr.helpful_scores("tracin", obj, theta, train, test), 3)
    lr = 1e-4
    pred = cr.first_order_loss_change(obj, theta, train, test, sel, 3, [1, 2], lr)
    df = cr.correct(obj, theta, train, test, test, {"t": sel}, ks=[3], steps=[1, 2], lr=lr, self_reference=False)
    actual = torch.tensor(df.pivot(index="example", columns="s", values="loss_change").to_numpy())
    torch.testing.assert_close(actual, pred, rtol=2e-3, atol=1e-9)
    torch.testing.assert_close(pred[:, 1], 2 * pred[:, 0])  # linear in s
    assert (pred < 0).all()  # TracIn-selected examples are predicted to help


# --------------------------------------------------------------------------- honest statistics and baselines
def test_wilson_interval_is_the_stats_one():
    assert cr.wilson_interval is iu.stats.wilson_interval
    assert "wilson_interval" in cr.__all__


def test_score_methods_equal_helpful_scores_from_one_pass(wrong):
    obj, theta, train, test, _ = wrong
    arnoldi = iu.ArnoldiSolver(rank=obj.p - 1, iterations=obj.p).fit(obj, theta, train)
    methods = ["abif", "tbif", "tracin", "cosine", "random"]
    got = cr.score_methods(methods, obj, theta, train, test, solver=arnoldi, horizon=5, lr=0.1, seed=2, chunk_size=7)
    assert list(got) == methods
    for m in methods:
        ref = cr.helpful_scores(m, obj, theta, train, test, solver=arnoldi, horizon=5, lr=0.1, seed=2)
        torch.testing.assert_close(got[m], ref, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="eigen-solver"):
        cr.score_methods(["abif"], obj, theta, train, test)
    with pytest.raises(ValueError, match="horizon"):
        cr.score_methods(["tbif"], obj, theta, train, test, solver=arnoldi)
    with pytest.raises(ValueError, match="unknown"):
        cr.score_methods(["loo"], obj, theta, train, test)


def test_random_selections_are_independent_seeded_draws():
    y_train = torch.arange(40) % 2
    y_test = torch.tensor([0, 1, 1])
    draws = cr.random_selections(y_train, y_test, 4, draws=5, seed=7)
    assert list(draws) == [f"random#{d}" for d in range(5)]
    for d, sel in enumerate(draws.values()):
        assert torch.equal(sel, cr.select_helpful(cr.random_scores(y_train, y_test, seed=7 + d), 4))
        assert (y_train[sel] == y_test[:, None]).all()
    assert len({tuple(s[0].tolist()) for s in draws.values()}) > 1
    with pytest.raises(ValueError, match="draws"):
        cr.random_selections(y_train, y_test, 4, draws=0)


def _frame(rows):
    import pandas as pd

    cols = ["method", "example", "k", "s", "flipped", "heldout_acc_change", "heldout_broken", "loss_change"]
    return pd.DataFrame(rows, columns=cols)


def test_clean_fix_on_a_hand_made_frame():
    df = _frame([("m", 0, 1, 1, True, 0.0, 0, -1.0), ("m", 1, 1, 1, True, -0.01, 5, -1.0),
                 ("m", 2, 1, 1, True, -0.012, 6, -1.0), ("m", 3, 1, 1, False, 0.02, 0, 1.0)])
    assert cr.clean_fix(df).tolist() == [True, True, False, False]  # a drop of exactly 1 point is clean
    assert cr.clean_fix(df, tolerance=0.0).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="missing"):
        cr.clean_fix(df.drop(columns="flipped"))


def test_average_draws_gives_the_fraction_of_draws_that_flip():
    rows = [("abif", 0, 1, 1, True, -0.02, 3, -1.0), ("abif", 1, 1, 1, False, 0.0, 0, 0.5)]
    flips = {0: [True, True, False, True, False], 1: [False, False, False, False, True]}
    for d in range(5):
        for ex in (0, 1):
            rows.append((f"random#{d}", ex, 1, 1, flips[ex][d], -0.004 * d, d, -0.1 * d))
    merged = cr.average_draws(_frame(rows))
    rnd = merged[merged.method == "random"].set_index("example")
    assert rnd.loc[0, "flipped"] == pytest.approx(0.6) and rnd.loc[1, "flipped"] == pytest.approx(0.2)
    # clean: flipped and a drop of at most 0.01 (draws 0..2: 0, −0.004, −0.008)
    assert rnd.loc[0, "clean"] == pytest.approx(2 / 5) and rnd.loc[1, "clean"] == 0.0
    assert rnd.loc[0, "heldout_acc_change"] == pytest.approx(-0.008)
    assert rnd.loc[0, "heldout_broken"] == pytest.approx(2.0) and (rnd.draws == 5).all()
    ab = merged[merged.method == "abif"].set_index("example")
    assert ab.loc[0, "flipped"] == 1.0 and ab.loc[0, "clean"] == 0.0 and ab.loc[1, "draws"] == 1
    with pytest.raises(ValueError, match="same"):
        cr.average_draws(_frame(rows[:-1]))
    with pytest.raises(ValueError, match="no draws"):
        cr.average_draws(_frame(rows[:2]))
    # a method already named "random" would be mixed with the merged draws (two rows per example)
    clash = [("random", *r[1:]) for r in rows[:2]] + rows[2:]
    with pytest.raises(ValueError, match="already hold a method named 'random'"):
        cr.average_draws(_frame(clash))


def test_analyze_intervals_per_method_k_s():
    rng = np.random.default_rng(0)
    rows = []
    for ex in range(30):
        rows.append(("abif", ex, 1, 1, ex % 3 == 0, float(rng.normal(-0.01, 0.01)), 1, -1.0))
        rows.append(("random", ex, 1, 1, (ex % 5) / 5, float(rng.normal(0, 0.01)), 0, -0.5))
    df = _frame(rows)
    out = cr.analyze(df, n_boot=500, seed=3).set_index("method")
    a = out.loc["abif"]
    assert a.n == 30 and a.flips == 10 and a.interval == "wilson"
    assert (a.flip_low, a.flip_high) == pytest.approx(iu.stats.wilson_interval(10, 30))
    acc = iu.stats.bootstrap_mean(df[df.method == "abif"].heldout_acc_change.to_numpy(), n_boot=500, seed=3)
    assert (a.acc_change, a.acc_low, a.acc_high) == pytest.approx((acc.estimate, acc.low, acc.high))
    clean = cr.clean_fix(df[df.method == "abif"]).sum()
    assert a.clean_rate == pytest.approx(clean / 30)
    r = out.loc["random"]
    assert r.interval == "bootstrap" and r.flip_rate == pytest.approx(np.mean([(e % 5) / 5 for e in range(30)]))
    assert r.flip_low < r.flip_rate < r.flip_high


def test_compare_wires_mcnemar_sign_test_and_holm():
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 40
    parts = []
    for k in (1, 10):
        a = rng.random(n) < 0.6
        b = rng.random(n) < 0.3
        r = rng.integers(0, 6, n) / 5
        for name, v in (("abif", a), ("cosine", b), ("random", r)):
            parts.append(pd.DataFrame({"method": name, "example": np.arange(n), "k": k, "s": 1, "flipped": v}))
    df = pd.concat(parts, ignore_index=True)
    out = cr.compare({"m1": df, "m2": df}, [("abif", "cosine"), ("abif", "random")])
    assert len(out) == 2 * 2 * 2 and set(out.model) == {"m1", "m2"}
    for row in out.itertuples():
        fa = df[(df.method == row.a) & (df.k == row.k)].flipped.to_numpy().astype(float)
        fb = df[(df.method == row.b) & (df.k == row.k)].flipped.to_numpy().astype(float)
        if row.b == "cosine":
            t = iu.stats.mcnemar_exact(fa, fb)
            assert row.test == "mcnemar" and row.n == n and (row.only_a, row.only_b) == (t.only_a, t.only_b)
            assert row.pvalue == pytest.approx(t.pvalue)
        else:
            d = fa - fb
            assert row.test == "sign" and row.n == int((d != 0).sum())
            assert row.pvalue == pytest.approx(iu.stats.sign_test(d))
    np.testing.assert_allclose(out.pvalue_holm, iu.stats.holm(out.pvalue.to_numpy()))
    assert (out.significant == (out.pvalue_holm < 0.05)).all()
    sig = out[out.significant]
    assert ((sig.verdict == "a") == (sig.only_a > sig.only_b)).all()
    assert (out[~out.significant].verdict == "no difference").all()
    with pytest.raises(ValueError, match="unknown method"):
        cr.compare(df, [("abif", "tracin")])


def test_remove_and_retrain_equals_retrain_without_and_train(wrong):
    obj, theta, train, test, idx = wrong
    heldout = (train[0][:30], train[1][:30])
    scores = cr.helpful_scores("cosine", obj, theta, train, test)
    kw = dict(lr=0.5, batch_size=16, seed=4)
    df = cr.remove_and_retrain(obj, theta, train, test, heldout, scores, ks=[1, 3], steps=[2, 10],
                               recipe=iu.SGD(1000, **kw), test_ids=idx.tolist(), chunk=3)
    n_test = len(test[1])
    assert len(df) == 2 * 2 * 2 * n_test  # (remove, continue) × k × s × examples
    harmful = cr.select_harmful(scores, 3)
    assert torch.equal(harmful, (-scores).topk(3, dim=1).indices)
    right0 = (obj.forward(theta, heldout[0]) > 0).long() == heldout[1].long()
    for s in (2, 10):
        th_w = iu.retrain_without(obj, theta, train, [harmful[i, :3].tolist() for i in range(n_test)],
                                  steps=s, **kw)
        base = iu.train(obj, theta, train, steps=s, **kw).final
        for i in (0, n_test - 1):
            w = torch.ones(len(train[1]), dtype=torch.float64)
            w[harmful[i, :3]] = 0
            by_train = iu.train(obj, theta, train, steps=s, weights=w, **kw).final
            torch.testing.assert_close(th_w[i], by_train)
            one = (test[0][i:i + 1], test[1][i:i + 1])
            for method, th in (("remove", by_train), ("continue", base)):
                row = df[(df.method == method) & (df.k == 3) & (df.s == s) & (df.example == int(idx[i]))].iloc[0]
                assert row.loss_after == pytest.approx(float(obj.per_example_losses(th, one)[0]), rel=1e-9)
                assert row.flipped == bool((obj.forward(th, one[0]) > 0).long()[0] == one[1][0].long())
                right = (obj.forward(th, heldout[0]) > 0).long() == heldout[1].long()
                assert row.heldout_acc_change == pytest.approx(float(right.double().mean() - right0.double().mean()))
                assert row.heldout_broken == int((right0 & ~right).sum())
    # the run without removal is the same for every example and every k
    cont = df[df.method == "continue"]
    assert cont.groupby("s").heldout_acc_change.nunique().max() == 1
    with pytest.raises(ValueError, match="scores"):
        cr.remove_and_retrain(obj, theta, train, test, heldout, scores[:, :5], ks=[1], steps=[1], recipe=iu.SGD(1, **kw))
    with pytest.raises(TypeError, match="recipe"):
        cr.remove_and_retrain(obj, theta, train, test, heldout, scores, ks=[1], steps=[1], recipe=kw)


def test_correction_costs_amortise_the_fit_and_decide_by_ranges():
    out = cr.correction_costs(fit=10.0, per_correction=[0.9, 1.0, 1.1], retrain_top=[2.0, 3.0, 4.0],
                              retrain_scratch=50.0, counts=(1, 100)).set_index(["strategy", "corrections"])
    ours1 = out.loc[("influence + fine-tuning", 1)]
    assert ours1.seconds == pytest.approx(11.0) and (ours1.low, ours1.high) == pytest.approx((10.9, 11.1))
    assert out.loc[("influence + fine-tuning", 100)].seconds == pytest.approx(110.0)
    assert out.loc[("influence + fine-tuning", 100)].per_correction == pytest.approx(1.1)
    assert out.loc[("retrain top from checkpoint", 1)].vs_influence == "costs less"  # 2..4 s < 10.9 s
    assert out.loc[("retrain top from checkpoint", 100)].vs_influence == "costs more"  # 200..400 s > 120 s
    assert out.loc[("retrain from scratch", 100)].seconds == pytest.approx(5000.0)
    near = cr.correction_costs(fit=0.0, per_correction=[1.0, 2.0], retrain_top=[1.5], retrain_scratch=9.0, counts=(1,))
    assert near.set_index("strategy").loc["retrain top from checkpoint"].vs_influence == "comparable"
    with pytest.raises(ValueError, match="fit"):
        cr.correction_costs(fit=-1.0, per_correction=1.0, retrain_top=1.0, retrain_scratch=1.0)


def test_the_test_follows_the_method_not_the_values():
    import pandas as pd

    n = 20
    flips = np.zeros(n)
    flips[:3] = 1.0  # the averaged draws happen to be all 0 or 1
    df = pd.concat([pd.DataFrame({"method": "abif", "example": np.arange(n), "k": 1, "s": 1, "draws": 1,
                                  "flipped": np.arange(n) < 10, "heldout_acc_change": 0.0}),
                    pd.DataFrame({"method": "random", "example": np.arange(n), "k": 1, "s": 1, "draws": 5,
                                  "flipped": flips, "heldout_acc_change": 0.0})], ignore_index=True)
    row = cr.compare(df, [("abif", "random")]).iloc[0]
    assert row.test == "sign" and row.n == 7 and row.pvalue == pytest.approx(iu.stats.sign_test(np.r_[np.ones(7)]))
    assert cr.analyze(df, n_boot=200).set_index("method").loc["random", "interval"] == "bootstrap"
