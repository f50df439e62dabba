"""Profiles, the config-keyed cache, seeding and the plotting helpers."""

import dataclasses
import warnings

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


def _tf32_flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_seed_everything_turns_tensorfloat32_off_without_warnings():
    """TF32 (torch's default for float32 convolutions on Ampere+ GPUs) is off after the seeding call,
    readable through both of torch's APIs; deterministic=False leaves it alone."""
    before = _tf32_flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        iu.seed_everything(0, deterministic=False)
        assert _tf32_flags() == (True, True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            iu.seed_everything(0)
        assert _tf32_flags() == (False, False)
        if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9: the newer settings agree
            assert torch.backends.cudnn.conv.fp32_precision != "tf32"
            assert torch.backends.cuda.matmul.fp32_precision != "tf32"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


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


# Split sizes of the data sets chapters 7 and 8 use (train, test); the full ones download, so their
# sizes are stated here from the data registry (SST-2: 67,349 train, 872 labelled validation used
# as test; CIFAR-10: 50,000 / 10,000) and the offline ones are loaded.
_FULL_SPLITS = {"sst2": (67349, 872), "cifar10": (50000, 10000)}


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_chapter_7_and_8_sizes_fit_their_data_sets(profile):
    cfg = iu.get_config(profile)
    splits = {}
    for task in (cfg.ch7.bert, cfg.ch7.resnet):
        if task.dataset in _FULL_SPLITS:
            splits[task.dataset] = _FULL_SPLITS[task.dataset]
        else:
            ds = iu.load_dataset(task.dataset)
            splits[task.dataset] = (ds.n_train, ds.n_test)
    for task in (cfg.ch7.bert, cfg.ch7.resnet):
        n_train, n_test = splits[task.dataset]
        assert task.n_train <= n_train and task.n_test <= n_test, task
        assert cfg.ch7.n_z <= task.n_train and cfg.ch7.hessian_examples <= task.n_train
        assert cfg.ch7.n_queries <= task.n_test and cfg.ch8.hessian_examples <= task.n_train
    text_test, image_test = splits[cfg.ch7.bert.dataset][1], splits[cfg.ch7.resnet.dataset][1]
    assert cfg.ch8.n_pool_text <= text_test and cfg.ch8.n_pool_image <= image_test
    assert cfg.ch8.n_wrong + cfg.ch8.n_heldout <= min(cfg.ch8.n_pool_text, cfg.ch8.n_pool_image)
    assert cfg.ch7.n_queries <= cfg.ch7.mlp.n_test and cfg.ch7.hessian_examples <= cfg.ch7.mlp.n_train
