"""Profiles, the config-keyed cache, seeding and the plotting helpers."""

import dataclasses

import pytest
import torch

import influence_utils as iu
from influence_utils.cache import cache_path


def test_profiles(monkeypatch):
    monkeypatch.delenv("IU_PROFILE", raising=False)
    quick = iu.get_config()
    assert quick.profile == "quick" and quick.device == "cpu"
    monkeypatch.setenv("IU_PROFILE", "full")
    full = iu.get_config()
    assert full.profile == "full" and full.ch1.n_train > quick.ch1.n_train
    assert quick.hash() != full.hash() and quick.hash() == iu.get_config("quick").hash()
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.seed = 1
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        iu.get_config("fast")
    text = quick.describe()
    assert "profile='quick'" in text and "ch1.n_train" in text
    only = quick.describe("ch1")
    assert "seed" in only and "ch1.n_train" in only
    with pytest.raises(ValueError, match="unknown config section"):
        quick.describe("ch99")


def test_cache_roundtrip_mismatch_and_corruption(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"theta": torch.arange(3.0), "note": "x"}

    cfg = {"n": 3, "seed": 0}
    v1 = iu.cached("thing", cfg, compute, root=tmp_path)
    v2 = iu.cached("thing", cfg, compute, root=tmp_path)
    assert len(calls) == 1 and torch.equal(v1["theta"], v2["theta"])
    iu.cached("thing", {"n": 4, "seed": 0}, compute, root=tmp_path)  # another config, another file
    assert len(calls) == 2
    iu.cached("thing", cfg, compute, root=tmp_path, refresh=True)
    assert len(calls) == 3
    # a file whose stored config differs from the one asked for is refused
    path = cache_path("thing", cfg, tmp_path)
    torch.save({"config": '{"n": 99}', "value": 1}, path)
    with pytest.raises(iu.CacheMismatchError, match="different config"):
        iu.cached("thing", cfg, compute, root=tmp_path)
    # a corrupt file is recomputed
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        v = iu.cached("thing", cfg, compute, root=tmp_path)
    assert len(calls) == 4 and torch.equal(v["theta"], torch.arange(3.0))
    with pytest.raises(ValueError, match="plain file stem"):
        iu.cached("../x", cfg, compute, root=tmp_path)


def test_seed_everything_makes_runs_repeatable():
    iu.seed_everything(7)
    a = torch.randn(3)
    iu.seed_everything(7)
    assert torch.equal(a, torch.randn(3))


def test_statistics():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert iu.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert iu.spearman(x, x**3) == pytest.approx(1.0)
    assert iu.pearson(x, -x) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same length"):
        iu.pearson(x, x[:2])


def test_scatter_figure_reports_correlation():
    x = torch.linspace(0, 1, 50)
    fig = iu.plotting.scatter_predicted_actual(x, x + 0.01 * torch.sin(40 * x))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("Pearson 1.000" in t or "Pearson 0.99" in t for t in labels)
