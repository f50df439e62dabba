"""Tests for influence_utils.trunk: the top model on cached trunk outputs is the full model.

Exact answers in float64: logits, per-example gradients, the objective's loss, gradient and
Hessian-vector products of the top parameters agree between the full model (trunk frozen) and
the top model on cached features, for a small random BERT (the bert-base code path), the book's
ResNet and torchvision's ResNet-18 (the full profile's vision model) at tiny input sizes.
"""

import pytest
import torch

import influence_utils as iu
from influence_utils import trunk

transformers = pytest.importorskip("transformers")


def _tiny_bert(layers: int = 3):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=16)
    return iu.models.bert_classifier_from_config(config, num_labels=2, seed=0).double()


def _text_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (6, 9), generator=g)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[1, 5:] = 0  # padded examples: the mask must reach the cached layers and the top
    mask[4, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 1, 0, 1, 0])


def _compare_objectives(model, n_top, inputs, targets, rtol=1e-9, hvp=True):
    """Full-model objective (trunk frozen) vs top model on cached features: θ, loss, grads, HVP."""
    features = trunk.trunk_features(model, inputs, n_top)
    top = trunk.split(model, n_top)
    full = iu.Objective(model, iu.per_example_cross_entropy, params=trunk.top_parameter_names(model, n_top),
                        weight_decay=1e-2)
    fast = iu.Objective(top, iu.per_example_cross_entropy, weight_decay=1e-2)
    assert fast.p == full.p and [top.full_names[n] for n in fast.names] == full.names
    theta = full.theta()
    torch.testing.assert_close(fast.theta(), theta, rtol=0, atol=0)
    slow_data, fast_data = (inputs, targets), (features, targets)
    torch.testing.assert_close(fast.forward(theta, features), full.forward(theta, inputs), rtol=rtol, atol=1e-12)
    torch.testing.assert_close(fast.loss(theta, fast_data), full.loss(theta, slow_data), rtol=rtol, atol=1e-12)
    g_fast, g_full = fast.per_example_grads(theta, fast_data), full.per_example_grads(theta, slow_data)
    assert g_full.abs().max() > 1e-3  # the gradients are not trivially zero
    torch.testing.assert_close(g_fast, g_full, rtol=rtol, atol=1e-12)
    if hvp:
        v = torch.randn(full.p, generator=torch.Generator().manual_seed(2), dtype=theta.dtype)
        torch.testing.assert_close(fast.hvp(theta, fast_data, v), full.hvp(theta, slow_data, v), rtol=1e-8, atol=1e-10)
    return top, fast, features


@pytest.mark.parametrize("n_top", [1, 2])
def test_bert_top_matches_full_model(n_top):
    model = _tiny_bert()
    inputs, targets = _text_batch()
    top, fast, (hidden, mask) = _compare_objectives(model, n_top, inputs, targets)
    assert hidden.shape == (6, 9, 16) and mask.shape == (6, 1, 1, 9)
    assert (mask[1, 0, 0, 5:] < -1e300).all() and (mask[1, 0, 0, :5] == 0).all()
    names = trunk.top_parameter_names(model, n_top)
    assert names == iu.models.bert_top_parameter_names(model, n_top)


def test_bert_cls_only_last_layer_equals_hf_layer():
    model = _tiny_bert()
    inputs, _ = _text_batch()
    hidden, mask = trunk.trunk_features(model, inputs, 1)
    layer = model.model.bert.encoder.layer[-1]
    full = trunk.layer_output(layer(hidden, mask))
    torch.testing.assert_close(trunk._bert_layer_cls(layer, hidden, mask), full[:, :1], rtol=1e-12, atol=1e-12)


def test_top_shares_parameters_with_full_model():
    model = _tiny_bert()
    inputs, _ = _text_batch()
    top = trunk.split(model, 1)
    obj = iu.Objective(top, iu.per_example_cross_entropy)
    before = model(**inputs).detach()
    obj.load(obj.theta() + 0.1)  # writes into the full model's parameters
    assert not torch.allclose(model(**inputs), before)
    torch.testing.assert_close(top(*trunk.trunk_features(model, inputs, 1)), model(**inputs))


def test_book_resnet_top_matches_full_model():
    torch.manual_seed(0)
    model = iu.models.ResNet(depth=14, in_channels=1, n_classes=4, width=4).double().eval()
    x = torch.rand(5, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 1])
    for n_top in (1, 2):
        top, _, features = _compare_objectives(model, n_top, x, y, hvp=n_top == 1)
        assert features.shape[0] == 5 and top.n_blocks == n_top


def test_book_resnet_binary_logits_keep_convention():
    torch.manual_seed(0)
    model = iu.models.ResNet(depth=8, in_channels=1, n_classes=2, width=4).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    out = trunk.split(model)(trunk.trunk_features(model, x))
    assert out.shape == (3,)
    torch.testing.assert_close(out, model(x))


def test_cifar_resnet18_top_matches_full_model():
    """The full profile's ResNet-18 (torchvision, GroupNorm) at a tiny input size."""
    model = iu.trunk.cifar_resnet18(n_classes=3, seed=0).double()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 2])
    top, fast, features = _compare_objectives(model, 1, x, y, rtol=1e-8, hvp=False)
    assert features.shape == (2, 512, 1, 1)
    assert fast.p == 4_722_179  # layer4.1 (two 3x3 convs of 512 channels, two GroupNorms) + fc
    assert all(n.startswith(("layer4.1.", "fc.")) for n in top.full_names.values())


def test_bad_inputs_are_refused_with_a_clear_message():
    with pytest.raises(TypeError, match="BertClassifier, iu.models.ResNet"):
        trunk.split(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="n_layers must be between 1 and 3"):
        trunk.split(_tiny_bert(), 4)
    with pytest.raises(TypeError, match="input_ids"):
        trunk.trunk_features(_tiny_bert(), torch.zeros(2, 3, dtype=torch.long))
    resnet = iu.models.ResNet(depth=8, width=4)
    with pytest.raises(ValueError, match="n_blocks must be between 1 and 3"):
        trunk.split(resnet, 0)
