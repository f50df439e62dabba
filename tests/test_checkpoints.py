"""Tests for influence_utils.checkpoints.

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




# ---------------------------------------------------------------------------------- token lengths and the probe


def test_token_coverage_and_choose_max_length():
    tok = iu.models.load_minilm_tokenizer()
    texts = ["good", "a fine film", "one two three four five six seven eight nine ten", "bad"]
    lengths = [len(tok(t)["input_ids"]) for t in texts]  # [CLS] and [SEP] included
    assert lengths == [3, 5, 12, 3]
    assert C.token_coverage(texts, tok, 3) == 0.5
    assert C.token_coverage(texts, tok, 5) == 0.75 and C.token_coverage(texts, tok, 11) == 0.75
    assert C.token_coverage(texts, tok, 12) == 1.0
    assert C.choose_max_length(texts, tok, coverage=0.5, multiple=1) == 3
    assert C.choose_max_length(texts, tok, coverage=0.75, multiple=1) == 5
    assert C.choose_max_length(texts, tok, coverage=0.75) == 8  # smallest multiple of 8
    assert C.choose_max_length(texts, tok, coverage=0.9) == 16  # 12 tokens, rounded up
    assert C.choose_max_length(texts, tok, coverage=1.0, multiple=4) == 12
    for cov in (0.3, 0.6, 0.9, 1.0):  # the choice covers what it promises, and one multiple less does not
        L = C.choose_max_length(texts, tok, coverage=cov, multiple=2)
        assert L % 2 == 0 and C.token_coverage(texts, tok, L) >= cov > C.token_coverage(texts, tok, L - 2)
    with pytest.raises(ValueError, match="empty"):
        C.token_coverage([], tok, 8)
    with pytest.raises(ValueError, match="empty"):
        C.choose_max_length([], tok)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"coverage must be in \(0, 1\]"):
            C.choose_max_length(texts, tok, coverage=bad)


PROBE_TASK = dataclasses.replace(BERT_TASK, n_train=40, n_test=16)


def _probe_dataset():
    rt = iu.load_dataset("rotten_tomatoes", n_train=40, n_test=16, seed=0)
    return Dataset("sst2", rt.train, rt.test, rt.class_names, "tiny stand-in for SST-2")


def test_linear_probe_on_a_tiny_bert(tmp_path, monkeypatch):
    tok = iu.models.load_minilm_tokenizer()
    kw = dict(dataset=_probe_dataset(), tokenizer=tok, root=tmp_path)
    res = C.linear_probe(PROBE_TASK, model=_tiny_bert(), **kw)
    assert isinstance(res, C.ProbeResult)
    assert (res.n_train, res.n_test, res.max_length, res.feature_dim) == (40, 16, 12, 16)
    assert 0.0 <= res.test_accuracy <= 1.0 and 0.5 < res.train_accuracy <= 1.0
    # it shares the trunk stage with checkpoint(): probe + checkpoint = features, probe, checkpoint entries
    assert sorted(p.name.split("-")[2] for p in tmp_path.iterdir()) == ["features", "probe"]
    ck = C.checkpoint(PROBE_TASK, model=_tiny_bert(), **kw)
    assert sorted(p.name.split("-")[2] for p in tmp_path.iterdir()) == ["checkpoint", "features", "probe"]
    assert ck.n_train == 40

    # the probe is a standardised logistic regression on the whole untrained encoder's last hidden
    # states, averaged over non-padding tokens
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model = _tiny_bert().eval()
    pooled = []
    for x, _ in (kw["dataset"].train, kw["dataset"].test):
        enc = iu.models.encode_texts(tok, x, max_length=PROBE_TASK.max_length)
        hidden, _ = iu.trunk.trunk_features(model, enc, 0)
        keep = enc["attention_mask"][:, :, None].float()
        expected = (hidden * keep).sum(1) / keep.sum(1)
        trunk = iu.trunk.trunk_features(model, enc, PROBE_TASK.n_top)
        torch.testing.assert_close(C._mean_pooled_top(model, trunk, PROBE_TASK.n_top, "cpu"), expected,
                                   rtol=1e-5, atol=1e-5)
        pooled.append(expected.double().numpy())
    scaler = StandardScaler().fit(pooled[0])
    clf = LogisticRegression(random_state=0, max_iter=1000).fit(scaler.transform(pooled[0]), kw["dataset"].train[1])
    for f, (_, y), acc in zip(pooled, (kw["dataset"].train, kw["dataset"].test), (res.train_accuracy, res.test_accuracy)):
        assert abs((clf.predict(scaler.transform(f)) == y.numpy()).mean() - acc) <= 1 / len(y) + 1e-12

    def fail(*a, **k):
        raise AssertionError("the probe was recomputed")

    with monkeypatch.context() as m:  # cached: nothing runs again
        m.setattr(C, "trunk_features", fail)
        m.setattr(C, "_mean_pooled_top", fail)
        assert C.linear_probe(PROBE_TASK, model=_tiny_bert(), **kw) == res
    other = C.linear_probe(PROBE_TASK, model=_tiny_bert(), C=1e-3, **kw)  # C is part of the key
    assert other.n_train == 40 and len(list(tmp_path.glob("bert-base-probe-*.pt"))) == 2


def test_linear_probe_refuses_vision_tasks(tmp_path):
    with pytest.raises(ValueError, match="text task"):
        C.linear_probe(RESNET_TASK, root=tmp_path)
    with pytest.raises(ValueError, match="text"):
        C.linear_probe(BERT_TASK, dataset=_image_dataset(), model=_tiny_bert(), root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_pretrain_schedules():
    """``constant`` is the old behaviour; ``onecycle``/``cosine`` change the run but stay deterministic."""
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(24) % 3

    def run(schedule):
        torch.manual_seed(0)
        model = iu.models.ResNet(depth=8, in_channels=1, n_classes=3, width=4)
        losses = C.pretrain(model, (x, y), epochs=2, lr=1e-2, batch_size=8, schedule=schedule)
        return losses, torch.cat([p.detach().flatten() for p in model.parameters()])

    default = run("constant")
    for schedule in ("onecycle", "cosine"):
        losses, params = run(schedule)
        assert losses.shape == (2,) and torch.isfinite(losses).all()
        assert not torch.equal(params, default[1])
        torch.testing.assert_close(run(schedule)[1], params, rtol=0, atol=0)
    assert TopLayerTask().pretrain_schedule == "constant"
    with pytest.raises(ValueError, match="unknown pretraining schedule 'linear'"):
        run("linear")


def test_parameter_counts_without_download():
    # bert-base-uncased by hand: one encoder layer (attention 4 x (768^2 + 768), two LayerNorms,
    # feed-forward 768 x 3072 both ways with biases), the pooler and a 2-way head.
    layer = 4 * (768 * 768 + 768) + 2 * 2 * 768 + (768 * 3072 + 3072) + (3072 * 768 + 768)
    p, total = C.parameter_counts(TopLayerTask(model="bert-base", dataset="sst2", n_top=1), 2)
    assert p == layer + (768 * 768 + 768) + (768 * 2 + 2) == 7_680_002
    assert total == 109_482_240 + 768 * 2 + 2  # the published bert-base-uncased size, plus the head
    # ResNet-18 (meta device): the same counts as the materialised model
    task = TopLayerTask(model="resnet18", dataset="cifar10", n_top=1, max_length=0, width=64)
    model = C.build_model(task, 10)
    names = set(iu.trunk.top_parameter_names(model, 1))
    assert C.parameter_counts(task, 10) == (
        sum(t.numel() for n, t in model.named_parameters() if n in names),
        sum(t.numel() for t in model.parameters()),
    )
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        C.parameter_counts(TopLayerTask(model="vgg", dataset="cifar10"), 10)
