"""The stand-ins of the full profile's downloads (IU_STANDIN=1): official sizes, no network."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import torch

import influence_utils as iu
from influence_utils import checkpoints, config, data, models, standin

# the full profile on a CPU warns with its time estimate; the stand-ins are what is checked here
pytestmark = pytest.mark.filterwarnings("ignore:IU_PROFILE=full on a runtime without a GPU")


@pytest.fixture
def standin_on(monkeypatch):
    """IU_STANDIN=1 with every network connection refused and the Hugging Face hub offline."""

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("test_standin: no network for stand-ins")

    monkeypatch.setenv("IU_STANDIN", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("sst2", "cifar10"):  # the real loaders must never be reached
        spec = data._REGISTRY[name]
        monkeypatch.setitem(data._REGISTRY, name, dataclasses.replace(
            spec, loader=lambda name=name: pytest.fail(f"the real {name} loader was called")))


# Official sizes from the data sets' own documentation (GLUE SST-2: 67,349 train, 872
# validation, 1,821 unlabelled test; CIFAR-10: 50,000 train, 10,000 test, 32x32 RGB, 10 classes).
OFFICIAL = {"sst2": (67_349, 872), "cifar10": (50_000, 10_000)}


def test_sst2_standin_has_the_official_sizes_and_runs_through_a_tokenizer(standin_on):
    ds = iu.load_dataset("sst2")
    assert (ds.n_train, ds.n_test) == OFFICIAL["sst2"]
    assert ds.is_text and ds.class_names == ("negative", "positive")
    assert ds.train[1].bincount().tolist() == [67_349 - 37_569, 37_569]
    assert ds.test[1].bincount().tolist() == [428, 444]
    assert "STAND-IN" in ds.description
    tok = checkpoints.tokenizer_for(iu.get_config("full").ch7.bert)
    ids = tok(ds.test[0][:50])["input_ids"]
    # real word pieces, not [UNK]: the vocabulary covers every stand-in word; all fit max_length 64
    assert all(1 not in seq[1:-1] for seq in ids) and max(len(s) for s in ids) <= 64
    assert max(max(s) for s in ids) < standin.BERT_SIZES["vocab_size"]


def test_cifar10_standin_has_the_official_sizes_shapes_and_balance(standin_on):
    ds = iu.load_dataset("cifar10", flatten=False)
    assert (ds.n_train, ds.n_test) == OFFICIAL["cifar10"]
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.train[1].bincount().tolist() == [5000] * 10 and ds.test[1].bincount().tolist() == [1000] * 10
    assert 0.0 <= float(ds.train[0].min()) and float(ds.train[0].max()) <= 1.0
    # the full profile's subsample draws from the stand-in pool, deterministically
    a = iu.load_dataset("cifar10", n_train=20, n_test=10, seed=3)
    b = iu.load_dataset("cifar10", n_train=20, n_test=10, seed=3)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])


def test_standin_bert_is_bert_base_class_at_reduced_size_built_offline(standin_on):
    task = iu.get_config("full").ch7.bert
    assert task.model == "bert-base"
    model = checkpoints.build_model(task, 2)
    assert isinstance(model, models.BertClassifier)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (2, 64, 2, 30_522)
    again = checkpoints.build_model(task, 2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))  # seeded


def test_standin_config_cuts_compute_but_keeps_sizes_and_shapes(monkeypatch):
    monkeypatch.delenv("IU_STANDIN", raising=False)
    real = config.get_config("full")
    monkeypatch.setenv("IU_STANDIN", "1")
    cut = config.get_config("full")
    assert cut != real and config.get_config("quick") == config._quick()
    for task in ("bert", "resnet"):
        a, b = getattr(real.ch7, task), getattr(cut.ch7, task)
        assert (a.model, a.dataset, a.max_length, a.width, a.batch_size, a.n_top) == \
               (b.model, b.dataset, b.max_length, b.width, b.batch_size, b.n_top)
        assert b.steps < a.steps
    assert (cut.ch7.bert.n_train, cut.ch7.bert.n_test) == (real.ch7.bert.n_train, real.ch7.bert.n_test)
    assert (cut.ch8.n_pool_text, cut.ch8.n_pool_image) == (real.ch8.n_pool_text, real.ch8.n_pool_image)
    assert cut.ch7.mlp.n_test == real.ch7.mlp.n_test and cut.ch1.n_train == real.ch1.n_train
    assert cut.ch7.n_boot < real.ch7.n_boot and cut.ch8.n_wrong < real.ch8.n_wrong
    assert standin.standin_config(cut) == cut  # idempotent
    monkeypatch.delenv("IU_STANDIN")
    assert config.get_config("full") == real  # unset: the real full profile again


def test_without_standin_nothing_changes(monkeypatch):
    monkeypatch.delenv("IU_STANDIN", raising=False)
    assert not standin.enabled()
    assert config.get_config("full") == config._full()
    calls = []
    monkeypatch.setattr(models, "load_bert_base_tokenizer", lambda: calls.append("tokenizer") or "real")
    assert checkpoints.tokenizer_for(config._full().ch7.bert) == "real" and calls == ["tokenizer"]
    def real_loader():
        raise data.DatasetUnavailableError("real")

    monkeypatch.setitem(data._REGISTRY, "sst2", dataclasses.replace(data._REGISTRY["sst2"], loader=real_loader))
    with pytest.raises(data.DatasetUnavailableError, match="real"):
        iu.load_dataset("sst2")


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("", False), ("0", False),
                                             ("false", False), ("off", False)])
def test_enabled_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv("IU_STANDIN", value)
    assert standin.enabled() is expected
