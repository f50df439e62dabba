"""Bad input that used to give a silently wrong answer now gives a clear error (or a distinct cache entry)."""

import math

import pytest
import torch
from torch import nn

import influence_utils as iu
from influence_utils import checkpoints as C
from influence_utils.batching import iter_chunks


def _logreg(n=20, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(d, 2).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-2)
    return obj, obj.theta(), (x, y)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True])
def test_objective_refuses_a_chunk_size_that_is_not_a_positive_integer(bad):
    obj, _, _ = _logreg()
    with pytest.raises(ValueError, match="chunk_size"):
        obj.chunk_size = bad
    with pytest.raises(ValueError, match="chunk_size"):
        iu.Objective(nn.Linear(3, 2), iu.per_example_cross_entropy, chunk_size=bad)


def test_negative_chunk_size_is_refused_where_data_is_chunked():
    _, _, data = _logreg()
    with pytest.raises(ValueError, match="chunk_size"):
        list(iter_chunks(data, -5))
    assert len(list(iter_chunks(data, 0))) == 1  # 0 (or None): the data whole, as before


@pytest.mark.parametrize("lr", [math.nan, math.inf, -0.1, 0.0])
def test_non_finite_or_non_positive_step_sizes_are_refused(lr):
    obj, theta, data = _logreg()
    solver = iu.ExactSolver().fit(obj, theta, data)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        iu.time_bounded_influence(obj, theta, solver, data, data, steps=3, lr=lr)
    with pytest.raises(ValueError, match="learning rates must be finite"):
        iu.tracin(obj, [theta], [lr], data, data)


def _tiny_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    return iu.data.Dataset(name="tiny", train=(x[:4], y[:4]), test=(x[4:], y[4:]), class_names=("a", "b"),
                           description="six random 8x8 images")


def test_fingerprint_covers_every_value_of_every_tensor():
    ds = _tiny_dataset()
    a = nn.Linear(200, 2)
    b = nn.Linear(200, 2)
    b.load_state_dict(a.state_dict())
    assert C._fingerprint(ds, a) == C._fingerprint(ds, b)
    with torch.no_grad():
        b.weight[1, 150] += 1e-3  # beyond the first 64 values of the tensor
    assert C._fingerprint(ds, a) != C._fingerprint(ds, b)


def test_cache_key_carries_the_code_version():
    ds = _tiny_dataset()
    key = C._cache_key(iu.config.TopLayerTask(), ds, nn.Linear(2, 2))
    assert key["code"] == {"version": iu.__version__, "schema": C.CACHE_SCHEMA}
