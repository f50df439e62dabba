"""Tests for influence_utils.checkpoints (and the fading study built on it).

The full-profile code paths (``"bert-base"`` on ``"sst2"``, ``"resnet18"`` on ``"cifar10"``) run
through the very same :func:`checkpoint` with tiny injected models and data, so full mode cannot
rot unseen; the quick-profile ResNet path runs end to end on a few MNIST images.
"""

import dataclasses

import pytest
import torch

import influence_utils as iu
from influence_utils import checkpoints as C
from influence_utils.config import TopLayerTask
from influence_utils.data import Dataset

transformers = pytest.importorskip("transformers")


def _tiny_bert():
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=32)
    return iu.models.bert_classifier_from_config(config, num_labels=2, seed=0)


def _text_dataset():
    rt = iu.load_dataset("rotten_tomatoes", n_train=24, n_test=8, seed=0)
    return Dataset("sst2", rt.train, rt.test, rt.class_names, "tiny stand-in for SST-2")


def _image_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 8, 8, generator=g)
    y = torch.arange(40) % 3
    return Dataset("cifar10", (x[:30], y[:30]), (x[30:], y[30:]), ("a", "b", "c"), "tiny stand-in for CIFAR-10")


BERT_TASK = TopLayerTask(model="bert-base", dataset="sst2", n_train=24, n_test=8, n_top=1, max_length=12, steps=6,
                         lr=0.2, batch_size=8, weight_decay=0.0)
RESNET_TASK = TopLayerTask(model="resnet18", dataset="cifar10", n_train=30, n_test=10, n_top=1, max_length=0,
                           width=4, pretrain_epochs=2, pretrain_lr=3e-3, steps=5, lr=0.1, batch_size=10)


def test_bert_base_path_with_tiny_model(tmp_path):
    tok = iu.models.load_minilm_tokenizer()
    ck = C.checkpoint(BERT_TASK, model=_tiny_bert(), dataset=_text_dataset(), tokenizer=tok, root=tmp_path)
    assert ck.n_train == 24 and ck.p == ck.objective.p > 0
    assert not torch.equal(ck.theta, ck.theta0) and ck.losses.shape == (6,)
    # the checkpoint lives in the full model: the full model on tokens = the top model on features
    enc = iu.models.encode_texts(tok, ck.test_inputs, max_length=BERT_TASK.max_length)
    torch.testing.assert_close(ck.model(**enc), ck.objective.forward(ck.theta, ck.test[0]), rtol=1e-5, atol=1e-5)
    # training lowered the training loss
    obj = ck.objective
    assert obj.per_example_losses(ck.theta, ck.train).mean() < obj.per_example_losses(ck.theta0, ck.train).mean()
    assert 0.0 <= ck.accuracy() <= 1.0
    assert {p.name.split("-")[1] for p in tmp_path.iterdir()} == {"base"}  # bert-base-features/-checkpoint
    assert len(list(tmp_path.iterdir())) == 2


def test_cache_is_reused_and_rebuilt_when_missing(tmp_path, monkeypatch):
    kw = dict(dataset=_image_dataset(), root=tmp_path)
    first = C.checkpoint(RESNET_TASK, model=_small_resnet(), **kw)
    assert first.pretrain_losses.shape == (2,)
    assert len(list(tmp_path.glob("resnet18-*.pt"))) == 3  # pretrained, features, checkpoint

    def fail(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    with monkeypatch.context() as m:  # everything comes from the cache
        m.setattr(C, "sgd_train", fail)
        m.setattr(C, "pretrain", fail)
        again = C.checkpoint(RESNET_TASK, model=_small_resnet(), **kw)
    torch.testing.assert_close(again.theta, first.theta, rtol=0, atol=0)
    torch.testing.assert_close(again.train[0], first.train[0], rtol=0, atol=0)

    for f in tmp_path.glob("resnet18-checkpoint-*.pt"):  # a missing entry is rebuilt, identically
        f.unlink()
    rebuilt = C.checkpoint(RESNET_TASK, model=_small_resnet(), **kw)
    torch.testing.assert_close(rebuilt.theta, first.theta, rtol=0, atol=0)

    other = dataclasses.replace(RESNET_TASK, steps=3)  # another task gets its own entries
    assert not torch.equal(C.checkpoint(other, model=_small_resnet(), **kw).theta, first.theta)


def _small_resnet():
    torch.manual_seed(0)
    return iu.models.ResNet(depth=8, in_channels=3, n_classes=3, width=4)


def test_quick_resnet_path_end_to_end(tmp_path):
    task = TopLayerTask(model="resnet8", dataset="mnist5k", n_train=20, n_test=10, n_top=1, max_length=0, width=4,
                        pretrain_epochs=1, steps=3, lr=0.1, batch_size=10)
    ck = C.checkpoint(task, root=tmp_path)
    assert isinstance(ck.model, iu.models.ResNet) and ck.train[0].shape[:2] == (20, 8)
    assert ck.test[1].shape == (10,)
    torch.testing.assert_close(ck.model(_mnist_test_images(task)), ck.objective.forward(ck.theta, ck.test[0]))


def _mnist_test_images(task):
    return iu.load_dataset("mnist5k", n_train=task.n_train, n_test=task.n_test, seed=task.seed, flatten=False).test[0]


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        C.build_model(TopLayerTask(model="gpt"), 2)


def test_fading_study_on_a_small_mlp():
    """Measured and predicted effects agree at short horizons on a tiny smooth model."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    xt = torch.randn(20, 4, generator=g, dtype=torch.float64)
    yt = (xt[:, 0] + 0.5 * xt[:, 1] > 0).long()
    model = iu.models.MLP(4, hidden=(8,), n_classes=2).double()
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    theta = iu.train(obj, obj.theta(), (x, y), steps=200, lr=0.5).final
    st = iu.fading.fading_study(obj, theta, (x, y), (xt, yt), name="mlp", n_z=4, n_queries=10, horizon=8,
                                record_every=2, lr=0.2, batch_size=None, rank=10, iterations=20)
    assert st.steps == [0, 2, 4, 6, 8] and st.gaps.shape == (4, 5)
    assert (st.gaps[:, 0] == 0).all() and (st.gaps[:, 1:] > 0).all()
    # full-batch control with another "batch order" is the same run: no randomness at all
    torch.testing.assert_close(st.control_gaps, torch.zeros(5, dtype=st.control_gaps.dtype))
    # full-batch GD over a few steps: time-bounded IF and TracIn track the measured effect closely
    assert st.correlation("time-bounded IF", T=2) > 0.99 and st.correlation("TracIn", T=2) > 0.99
    assert len(st.eigenvalues) == 10 and 0 <= st.n_negative <= 10
    assert st.measurement.seconds > 0 and st.measurement.peak_mb > 0
