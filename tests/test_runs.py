"""The training-run engine (influence_utils.runs): one schedule type, one step, one loop.

Every entry point that trains steps its runs through ``runs.descend``, so runs with the same
schedule, data and start are the same computation wherever they come from."""

import pytest
import torch

import influence_utils as iu
from influence_utils import correction as cr
from influence_utils import runs
from influence_utils.divergence import linear_response, perturbed_runs
from influence_utils.perturbation import weighted_runs


def _problem(dtype, conv: bool):
    g = torch.Generator().manual_seed(11)
    n = 40
    if conv:
        x = torch.randn(n, 1, 6, 6, generator=g).to(dtype)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                    torch.nn.Linear(48, 3)).to(dtype)
    else:
        x = torch.randn(n, 5, generator=g).to(dtype)
        model = iu.models.MLP(5, hidden=(7,), n_classes=3).to(dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    torch.manual_seed(0)
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    return obj, (x, y)


@pytest.mark.parametrize("dtype,conv", [(torch.float64, False), (torch.float32, True)])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_entry_points_give_bit_identical_runs(dtype, conv, batch_size):
    """retrain_without, weighted_runs and perturbed_runs (its unperturbed row and ε = 0 rows) step the
    same runs to the last bit, row for row, in blocks of the same size (here 3 runs); a lone run
    (train, paired_runs, linear_response) is the same step without vmap: bit-identical to the other
    lone runs. Across rows and block sizes the batched kernels round differently (a row's place in
    memory changes the SIMD path): equal to rounding."""
    obj, data = _problem(dtype, conv)
    theta0, n = obj.theta(), data[1].shape[0]
    schedule = iu.SGD(7, 0.2, batch_size=batch_size, seed=3)
    block = iu.retrain_without(obj, theta0, data, [[], [], []], schedule)  # 3 runs, nothing removed
    assert torch.equal(weighted_runs(obj, theta0, data, torch.ones(3, n, dtype=dtype), schedule), block)
    z = iu.batching.subset(data, [0, 1])
    pr = perturbed_runs(obj, theta0, data, z, [0.0], schedule, keep_thetas=True)  # the unperturbed row + 2 runs
    assert torch.equal(torch.cat([pr.base[-1:], pr.perturbed[:, -1]]), block)
    moved = perturbed_runs(obj, theta0, data, iu.batching.subset(data, [0]), [0.0, 0.1], schedule, keep_thetas=True)
    assert torch.equal(moved.perturbed[0, -1], block[1]) and not torch.equal(moved.perturbed[1, -1], block[2])
    reference = block[0]
    lone = iu.train(obj, theta0, data, schedule).final
    assert torch.equal(linear_response(obj, theta0, data, z, schedule).thetas[-1], lone)
    assert torch.equal(iu.paired_runs(obj, theta0, data, z, 0.0, schedule)[1].final, lone)
    scale = 1e-14 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(lone, reference, rtol=scale, atol=scale)
    torch.testing.assert_close(iu.retrain_without(obj, theta0, data, [[]] * 5, schedule, chunk=2)[4], reference,
                               rtol=scale, atol=scale)  # another block size: to rounding


def test_correction_fine_tuning_is_a_block_of_runs_on_selected_subsets():
    """correct's fine-tuning: full-batch runs of obj.loss (with weight decay when asked) on each
    test example's selection, bit-identical to descend on those subsets."""
    obj, train = _problem(torch.float64, False)
    theta = iu.train(obj, obj.theta(), train, steps=20, lr=0.5).final
    x, _ = _problem(torch.float64, False)[1]
    test = (x[:3] * 2, 1 - iu.predict_labels(obj.forward(theta, x[:3] * 2)).clamp(max=1))
    sel = torch.stack([torch.arange(4) + 5 * i for i in range(3)])
    df = cr.correct(obj, theta, train, test, iu.batching.subset(train, slice(20, 40)), {"m": sel}, ks=(4,),
                    steps=(2, 3), lr=0.3, weight_decay=True, self_reference=False)
    xs, ys = train[0][sel], train[1][sel]  # [3, 4, ...]: one subset per run
    recorded = {}

    def evaluate(t, thetas):
        recorded[t] = torch.vmap(lambda u, a, b: obj.loss_fn(obj.forward(u, a), b)[0])(
            thetas, test[0].unsqueeze(1), test[1].unsqueeze(1))

    with torch.no_grad():
        runs.descend(obj, theta.expand(3, -1), (xs, ys), iu.SGD(3, 0.3, record_every=(2, 3)), data_per_run=True,
                     on_record=evaluate)
    for s in (2, 3):
        got = torch.tensor(df[df.s == s].sort_values("example").loss_after.to_numpy())
        assert torch.equal(got, recorded[s])


def test_schedule_is_a_validated_value_accepted_as_keywords():
    s = iu.SGD(10, 0.1, batch_size=4, record_every=[5, 0])
    assert s.record_every == (5, 0) and s.recorded() == [0, 5] and hash(s) == hash(iu.SGD(10, 0.1, 4, 0, (5, 0)))
    assert s.replace(steps=20).steps == 20 and s.steps == 10
    assert runs.SGD.of(None, steps=3, lr=0.5) == iu.SGD(3, 0.5)
    assert runs.SGD.of(s, seed=2) == s.replace(seed=2)
    assert torch.equal(s.order(12), runs.batch_order(12, 10, 4, 0))
    for bad, match in [(dict(steps=-1, lr=0.1), "steps"), (dict(steps=2.5, lr=0.1), "steps"),
                       (dict(steps=3, lr=0.0), "lr"), (dict(steps=3, lr=float("nan")), "lr"),
                       (dict(steps=3, lr=0.1, batch_size=0), "batch_size"),
                       (dict(steps=3, lr=0.1, record_every=[4]), r"\[0, 3\]")]:
        with pytest.raises(ValueError, match=match):
            iu.SGD(**bad)
    with pytest.raises(TypeError, match="steps= and lr="):
        runs.SGD.of(None, "train", steps=3)
    with pytest.raises(TypeError, match="unknown argument"):
        runs.SGD.of(None, steps=3, lr=0.1, epochs=2)
    with pytest.raises(TypeError, match="iu.SGD"):
        runs.SGD.of({"steps": 3}, lr=0.1)
    # the schedule and its keyword form run the same training
    obj, data = _problem(torch.float64, False)
    a = iu.train(obj, obj.theta(), data, iu.SGD(5, 0.3, batch_size=8, record_every=2))
    b = iu.train(obj, obj.theta(), data, steps=5, lr=0.3, batch_size=8, record_every=2)
    assert a.steps == b.steps == [0, 2, 4, 5] and all(torch.equal(u, v) for u, v in zip(a.thetas, b.thetas))


def test_descend_records_and_reports_divergence():
    obj, data = _problem(torch.float64, False)
    with pytest.raises(FloatingPointError, match="diverged at step .* lower lr"):
        runs.descend(obj, obj.theta().expand(2, -1), data, iu.SGD(500, 1e4))
    seen = []
    final, losses = runs.descend(obj, obj.theta().expand(3, -1), data, iu.SGD(4, 0.3, record_every=3),
                                 on_record=lambda t, th: seen.append((t, th.shape)))
    assert final.shape == (3, obj.p) and losses.shape == (4, 3) and seen == [(0, (3, obj.p)), (3, (3, obj.p)),
                                                                           (4, (3, obj.p))]
