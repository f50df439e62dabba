"""Bad input says what is wrong and how to fix it, instead of failing deep inside torch.

Each test here failed on the earlier code with an error that did not name the cause (an
IndexError or RuntimeError from torch's internals, a ZeroDivisionError, a torch.func error that
never mentions ``eval()``), or with no error at all (an empty data set "succeeded"; a read-only
cache threw the computed result away).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import influence_utils as iu
from influence_utils import cache as cache_module

D = 5


def _data(n: int = 12, d: int = D, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, (X[:, 0] > 0).long()


def _linear(out: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(D, out).double()


# ---------------------------------------------------------------------------- 1. binary logits


@pytest.mark.parametrize("method", ["loss", "per_example_grads", "per_example_losses"])
def test_one_logit_with_cross_entropy_asks_for_one_logit_per_class(method):
    obj = iu.Objective(_linear(1), iu.per_example_cross_entropy)
    with pytest.raises(ValueError, match=r"one logit per\s+class, logits \[n, k\] with k >= 2") as info:
        getattr(obj, method)(obj.theta(), _data())
    message = str(info.value)
    assert "nn.Linear(d, 2)" in message and "per_example_squared_error" in message
    assert "squeeze(-1)" in message  # the binary alternative


def test_cross_entropy_binary_and_multiclass_unchanged():
    logits, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(iu.per_example_cross_entropy(logits, y),
                               nn.functional.cross_entropy(logits, y, reduction="none"), rtol=0, atol=0)
    z, t = torch.randn(6, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    torch.testing.assert_close(iu.per_example_cross_entropy(z, t),
                               nn.functional.binary_cross_entropy_with_logits(z, t.double(), reduction="none"),
                               rtol=0, atol=0)


# ---------------------------------------------------------------------------- 2. dtypes


@pytest.mark.parametrize("method", ["loss", "grad", "per_example_grads", "hvp"])
def test_float32_inputs_with_float64_model_name_both_dtypes(method):
    obj = iu.Objective(_linear(), iu.per_example_cross_entropy)
    theta, (X, y) = obj.theta(), _data()
    args = (theta, (X.float(), y)) + ((theta,) if method == "hvp" else ())
    expected = "inputs are torch.float32 but θ is torch.float64; convert with x.double() (or model.float())"
    with pytest.raises(TypeError, match=re.escape(expected)) as info:
        getattr(obj, method)(*args)
    assert isinstance(info.value, RuntimeError)  # still what callers caught before
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error, chained


def test_integer_inputs_are_named():
    obj = iu.Objective(_linear(), iu.per_example_cross_entropy)
    X, y = _data()
    with pytest.raises(TypeError, match=re.escape("inputs are torch.int64 but θ is torch.float64; convert with x.double()")):
        obj.grad(obj.theta(), (X.long(), y))


# ---------------------------------------------------------------------------- 3. shapes


@pytest.mark.parametrize("method", ["loss", "per_example_grads", "hvp"])
def test_mismatched_feature_size_names_the_shapes(method):
    obj = iu.Objective(_linear(), iu.per_example_cross_entropy)
    theta = obj.theta()
    X, y = _data(d=7)
    args = (theta, (X, y)) + ((theta,) if method == "hvp" else ())
    with pytest.raises(ValueError, match=re.escape("inputs [n, 7]")) as info:
        getattr(obj, method)(*args)
    message = str(info.value)
    assert "in_features=5" in message and "expects inputs [n, 5]" in message
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "shapes cannot be multiplied" in str(info.value.__cause__)


def test_unrelated_model_errors_pass_through_unchanged():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, 2).double()

        def forward(self, x):
            raise RuntimeError("something unrelated went wrong")

    obj = iu.Objective(Broken(), iu.per_example_cross_entropy)
    with pytest.raises(RuntimeError) as info:
        obj.loss(obj.theta(), _data())
    assert type(info.value) is RuntimeError and str(info.value) == "something unrelated went wrong"


# ---------------------------------------------------------------------------- 4. empty data

EMPTY = "no examples (n = 0)"


@pytest.mark.parametrize("method", ["loss", "grad", "hvp", "hessian", "per_example_losses", "per_example_grads"])
def test_empty_data_is_refused_by_the_objective(method):
    obj = iu.Objective(_linear(), iu.per_example_cross_entropy, weight_decay=1e-2)
    theta = obj.theta()
    X, y = _data()
    args = (theta, (X[:0], y[:0])) + ((theta,) if method == "hvp" else ())
    with pytest.raises(ValueError, match=re.escape(f"Objective.{method} got data with {EMPTY}")):
        getattr(obj, method)(*args)


def test_empty_dataloader_is_refused():
    from torch.utils.data import DataLoader, TensorDataset

    obj = iu.Objective(_linear(), iu.per_example_cross_entropy)
    X, y = _data()
    loader = DataLoader(TensorDataset(X[:0], y[:0]), batch_size=4)
    with pytest.raises(ValueError, match=re.escape(EMPTY)):
        obj.grad(obj.theta(), loader)
    with pytest.raises(ValueError, match=re.escape(EMPTY)):
        obj.per_example_grads(obj.theta(), loader)


@pytest.mark.parametrize("make", [
    lambda: iu.ExactSolver(damping=1e-2),
    lambda: iu.CGSolver(damping=1e-2),
    lambda: iu.LissaSolver(damping=1e-2),
    lambda: iu.ArnoldiSolver(rank=2, iterations=4),
], ids=["exact", "cg", "lissa", "arnoldi"])
def test_empty_training_data_is_refused_by_solver_fits(make):
    obj = iu.Objective(_linear(), iu.per_example_cross_entropy, weight_decay=1e-2)
    X, y = _data()
    solver = make()
    with pytest.raises(ValueError, match=re.escape(f"{type(solver).__name__}.fit got training data with {EMPTY}")):
        solver.fit(obj, obj.theta(), (X[:0], y[:0]))


# ---------------------------------------------------------------------------- 5. n_test = 0


@pytest.mark.parametrize("score", ["influence", "gradient_dot"])
def test_empty_test_set_is_refused(score):
    obj = iu.Objective(_linear(), iu.per_example_cross_entropy, weight_decay=1e-2)
    theta, train = obj.theta(), _data()
    X, y = _data(seed=1)
    empty_test = (X[:0], y[:0])
    with pytest.raises(ValueError, match=re.escape("n_test = 0")):
        if score == "influence":
            solver = iu.ExactSolver(damping=1e-2).fit(obj, theta, train)
            iu.influence(obj, theta, solver, train, empty_test)
        else:
            iu.gradient_dot(obj, theta, train, empty_test)


# ---------------------------------------------------------------------------- 6. train mode


@pytest.mark.parametrize("layer", [nn.Dropout(0.5), nn.BatchNorm1d(4)], ids=["dropout", "batchnorm"])
def test_training_mode_dropout_or_batchnorm_asks_for_eval(layer):
    model = nn.Sequential(nn.Linear(D, 4), layer, nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=re.escape("Call model.eval() first")) as info:
        iu.Objective(model, iu.per_example_cross_entropy)
    assert type(layer).__name__ in str(info.value)
    obj = iu.Objective(model.eval(), iu.per_example_cross_entropy)  # eval mode is fine
    assert obj.per_example_grads(obj.theta(), _data()).shape == (12, obj.p)


def test_train_mode_after_building_is_explained_at_use():
    model = nn.Sequential(nn.Linear(D, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double().eval()
    obj = iu.Objective(model, iu.per_example_cross_entropy)
    model.train()
    with pytest.raises(ValueError, match=re.escape("Call model.eval() first")) as info:
        obj.per_example_grads(obj.theta(), _data())
    assert info.value.__cause__ is not None  # torch.func's error, chained


def test_wrapper_in_train_mode_with_eval_children_is_accepted():
    """A fresh wrapper module (training=True) around eval-mode layers, as trunk.split builds."""

    class Top(nn.Module):
        def __init__(self, drop):
            super().__init__()
            self.lin, self.drop = nn.Linear(D, 2).double(), drop

        def forward(self, x):
            return self.drop(self.lin(x))

    top = Top(nn.Dropout(0.5).eval())
    assert top.training
    obj = iu.Objective(top, iu.per_example_cross_entropy)
    assert obj.per_example_grads(obj.theta(), _data()).shape == (12, obj.p)


# ---------------------------------------------------------------------------- 8. read-only cache


def test_unwritable_cache_warns_and_returns_the_result(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(cache_module.tempfile, "mkstemp", refuse)
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(3.0)

    with pytest.warns(UserWarning, match="IU_CACHE_DIR") as record:
        value = iu.cached("ro-test", {"a": 1}, compute, root=tmp_path)
    torch.testing.assert_close(value, torch.arange(3.0))
    assert calls == [1]
    message = str(record[0].message)
    assert str(tmp_path) in message and "PermissionError" in message
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cache_root_that_is_a_file_warns_and_returns(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="IU_CACHE_DIR"):
        value = iu.cached("ro-test", {"a": 1}, lambda: {"x": torch.ones(2)}, root=blocker / "cache")
    torch.testing.assert_close(value["x"], torch.ones(2))


def test_writable_cache_still_stores_without_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = iu.cached("rw-test", {"a": 1}, lambda: torch.arange(4.0), root=tmp_path)
        again = iu.cached("rw-test", {"a": 1}, lambda: pytest.fail("recomputed"), root=tmp_path)
    torch.testing.assert_close(first, again)
