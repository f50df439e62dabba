"""Tests for influence_utils.models: shapes, parameter counts, vmap per-example gradients,
the 4-D attention mask of the BERT wrapper, and the offline error of the full-profile loader."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from influence_utils import models as M

transformers = pytest.importorskip("transformers")


# --------------------------------------------------------------------------- helpers


def _loss(logits, y):
    """Summed loss under the library's logit convention (binary: [n] logits, float targets)."""
    if logits.ndim == 1:
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum")


def _call(model, params, x):
    """Call a model on one batch the way the Objective does: tensor, tuple or dict inputs."""
    if isinstance(x, dict):
        return functional_call(model, params, args=(), kwargs=x)
    if isinstance(x, (tuple, list)):
        return functional_call(model, params, tuple(x))
    return functional_call(model, params, (x,))


def _vmap_grads(model, names, x, y):
    """Per-example gradients w.r.t. the parameters ``names``; the others are frozen tensors."""
    all_params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    trainable = {k: all_params[k] for k in names}
    frozen = {k: v for k, v in all_params.items() if k not in trainable}

    def f(theta, xi, yi):
        xi = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), xi)
        out = _call(model, {**frozen, **buffers, **theta}, xi)
        return _loss(out, yi.unsqueeze(0))

    return vmap(grad(f), in_dims=(None, 0, 0))(trainable, x, y)


def _loop_grads(model, names, x, y):
    """Reference: one autograd backward per example."""
    params = dict(model.named_parameters())
    out = {k: [] for k in names}
    for i in range(len(y)):
        model.zero_grad(set_to_none=True)
        xi = torch.utils._pytree.tree_map(lambda t, i=i: t[i : i + 1], x)
        logits = model(**xi) if isinstance(xi, dict) else model(xi)
        gs = torch.autograd.grad(_loss(logits, y[i : i + 1]), [params[k] for k in names])
        for k, g in zip(names, gs):
            out[k].append(g)
    return {k: torch.stack(v) for k, v in out.items()}


def _assert_grads_match(model, names, x, y, rtol=1e-9, atol=1e-11):
    got = _vmap_grads(model, names, x, y)
    want = _loop_grads(model, names, x, y)
    assert set(got) == set(names)
    n = len(y)
    for k in names:
        assert got[k].shape == (n, *dict(model.named_parameters())[k].shape)
        torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=atol, msg=k)
    # the examples really differ, so the check is not vacuous
    flat = torch.cat([got[k].reshape(n, -1) for k in names], 1)
    assert not torch.allclose(flat[0], flat[1])


TINY_BERT = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


def _tiny_bert(num_labels=2, seed=0):
    return M.bert_classifier_from_config(transformers.BertConfig(**TINY_BERT), num_labels, seed=seed).double()


def _tiny_batch():
    ids = torch.tensor([[2, 5, 7, 9, 3, 0, 0], [2, 11, 3, 0, 0, 0, 0], [2, 4, 6, 8, 10, 12, 3]])
    return ids, (ids != 0).long()


@pytest.fixture(scope="module")
def minilm():
    model = M.load_minilm_classifier(num_labels=2, dtype=torch.float64, seed=0)
    return model, M.load_minilm_tokenizer()


SENTENCES = ["a gripping, beautifully acted film.", "dull.", "the plot goes nowhere and the jokes fall flat"]


# --------------------------------------------------------------------------- small models


@pytest.mark.parametrize("shape", [(5, 64), (5, 1, 8, 8)])
def test_logistic_regression_shapes(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    binary, multi = M.logistic_regression(64), M.logistic_regression(64, n_classes=10)
    assert binary(x).shape == (5,)
    assert multi(x).shape == (5, 10)
    assert M.count_parameters(binary) == 65
    assert M.count_parameters(multi) == 650
    assert [n for n, _ in binary.named_parameters()] == ["linear.weight", "linear.bias"]


def test_mlp_shapes_and_counts():
    x = torch.randn(4, 1, 8, 8)
    assert M.MLP(64)(x).shape == (4,)
    assert M.MLP(64, hidden=(16, 8), n_classes=3, activation="relu")(x).shape == (4, 3)
    assert M.count_parameters(M.MLP(64, hidden=(32,))) == 64 * 32 + 32 + 33
    assert M.count_parameters(M.MLP(64, hidden=())) == 65  # no hidden layer = logistic regression
    assert [n for n, _ in M.MLP(64).named_parameters()][-2:] == ["head.weight", "head.bias"]
    with pytest.raises(ValueError):
        M.MLP(64, activation="swish?")
    with pytest.raises(ValueError):
        M.MLP(64, n_classes=1)


@pytest.mark.parametrize("depth,expected", [(8, 77_754), (14, 174_970), (20, 272_186)])
def test_resnet_shapes_and_counts(depth, expected):
    model = M.ResNet(depth=depth, in_channels=1, n_classes=10, width=16)
    assert M.count_parameters(model) == expected
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    rgb = M.ResNet(depth=depth, in_channels=3, n_classes=10, width=16)
    assert M.count_parameters(rgb) == expected + 288
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_options():
    assert M.ResNet(8, n_classes=2)(torch.randn(3, 1, 28, 28)).shape == (3,)
    plain = M.ResNet(8, norm="none")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    assert plain(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError):
        M.ResNet(depth=10)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_mlp_vmap_grads_match_loop(n_classes):
    torch.manual_seed(0)
    model = M.MLP(64, hidden=(8,), n_classes=n_classes).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, n_classes, (4,))
    _assert_grads_match(model, [n for n, _ in model.named_parameters()], x, y)


def test_logistic_regression_vmap_grads_match_loop():
    torch.manual_seed(0)
    model = M.logistic_regression(64, n_classes=10).double()
    x, y = torch.randn(4, 64, dtype=torch.float64), torch.randint(0, 10, (4,))
    _assert_grads_match(model, [n for n, _ in model.named_parameters()], x, y)


def test_resnet_vmap_grads_match_loop():
    torch.manual_seed(0)
    model = M.ResNet(depth=8, in_channels=1, n_classes=10, width=8).double().eval()
    x, y = torch.randn(3, 1, 12, 12, dtype=torch.float64), torch.tensor([1, 4, 7])
    _assert_grads_match(model, [n for n, _ in model.named_parameters()], x, y)


def test_resnet_per_example_independence():
    """GroupNorm: an example's logits do not depend on the rest of the batch."""
    torch.manual_seed(0)
    model = M.ResNet(depth=8, width=8).double()
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(model(x)[:1], model(x[:1]))


# --------------------------------------------------------------------------- BERT wrapper


def test_tiny_bert_shapes_mask_and_seed():
    model = _tiny_bert(num_labels=3)
    ids, mask = _tiny_batch()
    assert not model.training
    assert model.config._attn_implementation == "eager"
    assert model(ids, mask).shape == (3, 3)
    # the wrapper equals the plain HF model called with its own 2-D mask
    ref = model.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(model(ids, mask), ref, rtol=1e-12, atol=1e-12)
    # padding is really masked: changing padded token ids leaves the logits unchanged
    ids2 = torch.where(mask.bool(), ids, torch.full_like(ids, 17))
    torch.testing.assert_close(model(ids2, mask), model(ids, mask), rtol=1e-12, atol=1e-12)
    # the module-by-module path (used on transformers 4.x) gives the same logits
    use_hf_forward, model._use_hf_forward = model._use_hf_forward, False
    try:
        torch.testing.assert_close(model(ids, mask), ref, rtol=1e-12, atol=1e-12)
    finally:
        model._use_hf_forward = use_hf_forward
    # no mask = attend everywhere
    torch.testing.assert_close(model(ids), model(ids, torch.ones_like(ids)))
    # seeded initialisation is reproducible and leaves the global RNG alone
    state = torch.random.get_rng_state()
    a, b, c = _tiny_bert(seed=1), _tiny_bert(seed=1), _tiny_bert(seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.model.classifier.weight, b.model.classifier.weight)
    assert not torch.equal(a.model.classifier.weight, c.model.classifier.weight)


def test_extended_mask_values():
    model = _tiny_bert()
    ext = model.extended_attention_mask(torch.tensor([[1, 1, 0]]), torch.float32)
    assert ext.shape == (1, 1, 1, 3) and ext.dtype == torch.float32
    assert ext[0, 0, 0, :2].abs().max() == 0 and ext[0, 0, 0, 2] == torch.finfo(torch.float32).min


def test_tiny_bert_vmap_grads_match_loop():
    model = _tiny_bert(num_labels=2)
    ids, mask = _tiny_batch()
    y = torch.tensor([0, 1, 1])
    names = [n for n, _ in model.named_parameters()]
    _assert_grads_match(model, names, {"input_ids": ids, "attention_mask": mask}, y)
    # restricted to the top: last layer + pooler + head
    top = M.bert_top_parameter_names(model, n_layers=1)
    assert all(n.startswith(("model.bert.encoder.layer.1.", "model.bert.pooler.", "model.classifier.")) for n in top)
    _assert_grads_match(model, top, {"input_ids": ids, "attention_mask": mask}, y)


def test_bert_top_parameter_names_tiny():
    model = _tiny_bert()
    names = dict(model.named_parameters())
    assert M.bert_top_parameter_names(model, 0) == [
        "model.bert.pooler.dense.weight",
        "model.bert.pooler.dense.bias",
        "model.classifier.weight",
        "model.classifier.bias",
    ]
    all_layers = M.bert_top_parameter_names(model, 2)
    assert set(all_layers) <= set(names)
    assert not any("embeddings" in n for n in all_layers)
    with pytest.raises(ValueError):
        M.bert_top_parameter_names(model, 3)


def test_bert_base_loader_offline_error(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", fail)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    with pytest.raises(RuntimeError, match="IU_PROFILE=full") as info:
        M.load_bert_base_classifier()
    assert "network" in str(info.value) and isinstance(info.value.__cause__, OSError)
    with pytest.raises(RuntimeError, match="IU_PROFILE=full"):
        M.load_bert_base_tokenizer()


def test_bert_base_loader_does_not_hide_other_errors(monkeypatch):
    def fail(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", fail)
    with pytest.raises(KeyError):
        M.load_bert_base_classifier()


# --------------------------------------------------------------------------- real MiniLM (offline)


def test_minilm_path():
    path = M.minilm_path()
    assert (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def test_minilm_shapes_and_counts(minilm):
    model, tok = minilm
    assert not model.training
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert M.count_parameters(model) == 22_713_986  # 22,713,216 pretrained + 770 fresh head
    top = M.bert_top_parameter_names(model, n_layers=1)
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in top) == 1_923_074
    assert top[-2:] == ["model.classifier.weight", "model.classifier.bias"]
    batch = M.encode_texts(tok, SENTENCES, max_length=16)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.int64
    assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].shape[1] <= 16
    assert batch["attention_mask"][1].sum() < batch["attention_mask"].shape[1]  # "dull." is padded
    assert M.encode_texts(tok, SENTENCES[:2], max_length=16, pad_to_max_length=True)["input_ids"].shape == (2, 16)
    with torch.no_grad():
        assert model(**batch).shape == (3, 2)


def test_minilm_logits_match_hf_with_2d_mask(minilm):
    model, tok = minilm
    batch = M.encode_texts(tok, SENTENCES, max_length=16)
    with torch.no_grad():
        ours = model(**batch)
        ref = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        alone = model(**M.encode_texts(tok, SENTENCES[1:2], max_length=16))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    # the padded example gives the same logits as when it is encoded without padding
    torch.testing.assert_close(ours[1:2], alone, rtol=1e-8, atol=1e-8)


def test_minilm_top_layer_vmap_grads_match_loop(minilm):
    model, tok = minilm
    batch = M.encode_texts(tok, SENTENCES, max_length=16)
    y = torch.tensor([1, 0, 0])
    _assert_grads_match(model, M.bert_top_parameter_names(model, n_layers=1), batch, y, rtol=1e-8, atol=1e-10)


def test_objective_on_minilm_top_layer(minilm):
    """The package's Objective on the real MiniLM, θ restricted to the top layer and head:
    dict inputs, per-example gradients that sum to the batch gradient, and a symmetric HVP."""
    import influence_utils as iu

    model, tok = minilm
    inputs = M.encode_texts(tok, SENTENCES, max_length=16)
    y = torch.tensor([1, 0, 0])
    obj = iu.Objective(model, iu.per_example_cross_entropy, params=M.bert_top_parameter_names(model, n_layers=0))
    theta = obj.theta()
    G = obj.per_example_grads(theta, (inputs, y))
    assert G.shape == (3, obj.p)
    torch.testing.assert_close(G.mean(0), obj.grad(theta, (inputs, y)))
    u, v = torch.randn(2, obj.p, dtype=torch.float64)
    assert float(u @ obj.hvp(theta, (inputs, y), v)) == pytest.approx(float(v @ obj.hvp(theta, (inputs, y), u)), rel=1e-8)
