"""Run a frozen trunk once, cache its outputs, and take influence over the top layers only.

When θ is restricted to the last layers of a large model (the last encoder layer and head of
BERT, the last residual block and head of a ResNet), everything below those layers is a fixed
function of the input. Running it once and keeping its outputs makes every later pass (training
steps, paired runs, Hessian-vector products, per-example gradients) cost only the top layers:

    trunk:  input ──► frozen layers ──► features         (once, no gradients)
    top:    features ──► θ-layers ──► logits              (every pass)

:func:`split` builds the *top model*, an ``nn.Module`` that holds the very same parameter
objects as the full model (nothing is copied, so ``Objective(top, ...).load(theta)`` updates the
full model too), and :func:`trunk_features` computes its inputs. The two agree exactly with the
full model: ``top(*trunk_features(model, x, k)) == model(x)`` and the gradients of the top
parameters are the same (checked in ``tests/test_trunk.py``).

Supported models and what "top" means:

* :class:`~influence_utils.models.BertClassifier` (MiniLM, bert-base, any BertConfig): the last
  ``n_top`` encoder layers, the pooler and the classifier head; features are the hidden states
  entering the first top layer ``[n, L, H]`` and the 4-D additive attention mask
  ``[n, 1, 1, L]``. Because the pooler reads only the ``[CLS]`` position, the last layer runs for
  ``[CLS]`` alone (its attention over every token without forming their keys and values, see
  ``_bert_layer_cls``): the same logits at a fraction of the cost.
* :class:`~influence_utils.models.ResNet` (the book's CIFAR-style ResNet) and torchvision's
  ``ResNet`` (e.g. :func:`cifar_resnet18`): the last ``n_top`` residual blocks, the global
  average pooling and the linear head; features are the activations entering the first top block
  ``[n, C, H, W]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .models import BertClassifier, ResNet, finish_logits, group_norm, seeded
from .utils import progress

__all__ = [
    "BertTop",
    "ResNetTop",
    "split",
    "trunk_features",
    "top_parameter_names",
    "cifar_resnet18",
]


def _full_names(top: nn.Module, model: nn.Module) -> dict[str, str]:
    """``{name in top: name in model}`` for every parameter of ``top`` (the same objects)."""
    full = {id(p): n for n, p in model.named_parameters()}
    return {n: full[id(p)] for n, p in top.named_parameters()}


# ---------------------------------------------------------------------------------- BERT


def layer_output(out: Any) -> Tensor:
    """``BertLayer`` returns a tensor (transformers >= 5) or a tuple whose first entry it is (4.x)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _bert_layer_cls(layer: nn.Module, hidden: Tensor, mask: Tensor) -> Tensor:
    """One ``BertLayer`` evaluated at the ``[CLS]`` position only: ``[n, L, H] -> [n, 1, H]``.

    The ``[CLS]`` query attends to keys and values of every token, but both are linear in the
    layer's input ``x_l``, so they never need to be formed. Per head h (query ``q_h``, key and value
    weights ``W_k,h``, ``W_v,h`` of shape ``[d, H]``):

    * score of token l: ``q_hᵀ(W_k,h x_l + b_k,h) = (W_k,hᵀ q_h)ᵀ x_l + const``, and a constant
      shift does not change the softmax, so the key bias drops out;
    * context: ``Σ_l w_l (W_v,h x_l + b_v,h) = W_v,h (Σ_l w_l x_l) + b_v,h`` (the weights sum to 1).

    That costs ``O(H² + heads·L·H)`` per example instead of ``O(L·H²)`` for the keys and values
    of every token; the query, the attention output block and the feed-forward block run for
    position 0 alone. With the model in eval mode (dropout off) this equals
    ``layer(hidden, mask)[:, :1]`` up to rounding (the package's tests check it in float64).
    """
    sa = layer.attention.self
    n, length, width = hidden.shape
    heads, d = sa.num_attention_heads, sa.attention_head_size
    cls = hidden[:, :1]
    q = sa.query(cls).view(n, heads, d)  # [n, h, d]
    scaling = getattr(sa, "scaling", d**-0.5)
    w_k = sa.key.weight.view(heads, d, width)
    u = torch.einsum("nhd,hdi->nhi", q, w_k)  # [n, h, H]: the query pulled back through W_k
    scores = torch.einsum("nhi,nli->nhl", u, hidden) * scaling + mask.reshape(-1, 1, length)
    weights = torch.softmax(scores, dim=-1)  # [n, h, L]
    pooled = torch.einsum("nhl,nli->nhi", weights, hidden)  # [n, h, H]: attention-weighted inputs
    context = torch.einsum("nhi,hdi->nhd", pooled, sa.value.weight.view(heads, d, width))
    if sa.value.bias is not None:
        context = context + sa.value.bias.view(heads, d)
    attended = layer.attention.output(context.reshape(n, 1, heads * d), cls)
    return layer.output(layer.intermediate(attended), attended)


class BertTop(nn.Module):
    """The last ``n_layers`` encoder layers, pooler and head of a :class:`~influence_utils.models.BertClassifier`.

    The modules are those of ``classifier`` itself (shared, not copied): parameters of the top
    model *are* parameters of the full model.

    Args:
        classifier: a :class:`~influence_utils.models.BertClassifier` in eval mode.
        n_layers: encoder layers in the top (at least 1).

    Shapes:
        ``forward(hidden [n, L, H], mask [n, 1, 1, L]) -> logits [n, num_labels]``, with ``hidden``
        the output of encoder layer ``N − n_layers − 1`` (the embeddings when all layers are in the
        top) and ``mask`` the additive mask (0 attended, very negative padded), as returned by
        :func:`trunk_features`.

    Parameter names are ``layers.<i>.…`` (i = 0 for the first top layer), ``pooler.…`` and
    ``classifier.…``; ``full_names`` maps them to the names in the full model.
    """

    def __init__(self, classifier: BertClassifier, n_layers: int = 1):
        super().__init__()
        if not isinstance(classifier, BertClassifier):
            raise TypeError(f"BertTop needs a BertClassifier, got {type(classifier).__name__}")
        bert = classifier.model.bert
        total = len(bert.encoder.layer)
        if not 1 <= n_layers <= total:
            raise ValueError(f"n_layers must be between 1 and {total}, got {n_layers}")
        if bert.pooler is None:
            raise ValueError("the BERT model has no pooler; build it with add_pooling_layer=True")
        self.n_layers = n_layers
        self.first = total - n_layers
        self.layers = nn.ModuleList(bert.encoder.layer[self.first :])
        self.pooler = bert.pooler
        self.dropout = classifier.model.dropout
        self.classifier = classifier.model.classifier
        self.num_labels = classifier.num_labels
        self.full_names: dict[str, str] = _full_names(self, classifier)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Logits ``[n, num_labels]`` from cached features ``hidden [n, L, H]``, ``mask [n, 1, 1, L]``."""
        mask = mask.to(hidden.dtype).clamp_min(torch.finfo(hidden.dtype).min)
        for layer in self.layers[:-1]:
            hidden = layer_output(layer(hidden, mask))
        cls = _bert_layer_cls(self.layers[-1], hidden, mask)
        return self.classifier(self.dropout(self.pooler(cls)))


@torch.no_grad()
def _bert_trunk(classifier: BertClassifier, inputs: dict, n_layers: int, chunk_size: int,
                progress_bar: bool | None) -> tuple[Tensor, Tensor]:
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        raise TypeError("BERT inputs must be a dict with input_ids [n, L] and attention_mask [n, L] "
                        "(see iu.models.encode_texts)")
    ids = inputs["input_ids"]
    attention = inputs.get("attention_mask")
    attention = torch.ones_like(ids) if attention is None else attention
    bert = classifier.model.bert
    dtype = bert.embeddings.word_embeddings.weight.dtype
    device = bert.embeddings.word_embeddings.weight.device
    first = len(bert.encoder.layer) - n_layers
    hidden, masks = [], []
    starts = range(0, ids.shape[0], chunk_size)
    for s in progress(starts, desc="trunk", total=len(starts), show=progress_bar):
        x = ids[s : s + chunk_size].to(device)
        mask = classifier.extended_attention_mask(attention[s : s + chunk_size].to(device), dtype)
        h = bert.embeddings(input_ids=x, token_type_ids=torch.zeros_like(x))
        for layer in bert.encoder.layer[:first]:
            h = layer_output(layer(h, mask))
        hidden.append(h)
        masks.append(mask)
    return torch.cat(hidden), torch.cat(masks)


# ---------------------------------------------------------------------------------- ResNets


def _resnet_parts(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module], str]:
    """``(stem modules, residual blocks in order, kind)`` of a supported ResNet."""
    if isinstance(model, ResNet):
        return [model.stem], [b for stage in model.stages for b in stage], "book"
    if all(hasattr(model, a) for a in ("conv1", "layer1", "layer4", "avgpool", "fc")):  # torchvision
        stem = [model.conv1, model.bn1, model.relu, model.maxpool]
        blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
        return stem, blocks, "torchvision"
    raise TypeError(
        f"unsupported model {type(model).__name__}: split() knows iu.models.BertClassifier, "
        "iu.models.ResNet and torchvision ResNets"
    )


class ResNetTop(nn.Module):
    """The last ``n_blocks`` residual blocks, global pooling and head of a ResNet (shared modules).

    Args:
        model: an :class:`~influence_utils.models.ResNet` or a torchvision ``ResNet``.
        n_blocks: residual blocks in the top (at least 1).

    Shapes:
        ``forward(features [n, C, H, W]) -> logits`` (``[n, n_classes]``, ``[n]`` for the book's
        two-class ResNet), with ``features`` the activations entering the first top block.

    Parameter names are ``blocks.<i>.…`` and ``head.…``; ``full_names`` maps them to the names
    in the full model.
    """

    def __init__(self, model: nn.Module, n_blocks: int = 1):
        super().__init__()
        _, blocks, kind = _resnet_parts(model)
        if not 1 <= n_blocks <= len(blocks):
            raise ValueError(f"n_blocks must be between 1 and {len(blocks)}, got {n_blocks}")
        self.n_blocks = n_blocks
        self.kind = kind
        self.blocks = nn.ModuleList(blocks[len(blocks) - n_blocks :])
        self.pool = model.pool if kind == "book" else model.avgpool
        self.head = model.head if kind == "book" else model.fc
        self.n_classes = model.n_classes if kind == "book" else None
        self.full_names: dict[str, str] = _full_names(self, model)

    def forward(self, features: Tensor) -> Tensor:
        """Logits from the activations entering the first top block."""
        h = features
        for block in self.blocks:
            h = block(h)
        logits = self.head(torch.flatten(self.pool(h), 1))
        return finish_logits(logits, self.n_classes) if self.n_classes is not None else logits


@torch.no_grad()
def _resnet_trunk(model: nn.Module, images: Tensor, n_blocks: int, chunk_size: int,
                  progress_bar: bool | None) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise TypeError("ResNet inputs must be an image tensor [n, C, H, W]")
    stem, blocks, _ = _resnet_parts(model)
    trunk = nn.Sequential(*stem, *blocks[: len(blocks) - n_blocks])
    param = next(model.parameters())
    out = []
    starts = range(0, images.shape[0], chunk_size)
    for s in progress(starts, desc="trunk", total=len(starts), show=progress_bar):
        out.append(trunk(images[s : s + chunk_size].to(param.device, param.dtype)))
    return torch.cat(out)


# ---------------------------------------------------------------------------------- dispatch


def split(model: nn.Module, n_top: int = 1) -> nn.Module:
    """The top model of ``model``: its last ``n_top`` layers (or blocks) and head.

    Args:
        model: a :class:`~influence_utils.models.BertClassifier`, an
            :class:`~influence_utils.models.ResNet` or a torchvision ``ResNet``, in eval mode.
        n_top: encoder layers (BERT) or residual blocks (ResNet) in the top.

    Returns:
        A :class:`BertTop` or :class:`ResNetTop` sharing the parameters of ``model``. Build the
        objective on it, ``iu.Objective(top, loss_fn)``: its θ is exactly the parameters named by
        :func:`top_parameter_names`, in the same order.
    """
    if isinstance(model, BertClassifier):
        return BertTop(model, n_top)
    return ResNetTop(model, n_top)


def trunk_features(model: nn.Module, inputs: Any, n_top: int = 1, *, chunk_size: int = 64,
                   progress_bar: bool | None = None) -> Any:
    """Run the frozen trunk of ``model`` once: the inputs of :func:`split`'s top model.

    Args:
        model: as in :func:`split` (eval mode; no gradients are recorded).
        inputs: BERT: ``dict(input_ids=[n, L], attention_mask=[n, L])`` from
            :func:`~influence_utils.models.encode_texts`; ResNet: images ``[n, C, H, W]``.
        n_top: as in :func:`split`.
        chunk_size: examples per forward pass (bounded memory).
        progress_bar: show a progress bar over chunks (default: interactive use only).

    Returns:
        For BERT a tuple ``(hidden [n, L, H], mask [n, 1, 1, L])``; for a ResNet the features
        ``[n, C, H, W]``. Use them as the inputs of training data: ``(features, targets)``.
    """
    if isinstance(model, BertClassifier):
        return _bert_trunk(model, inputs, n_top, chunk_size, progress_bar)
    return _resnet_trunk(model, inputs, n_top, chunk_size, progress_bar)


def top_parameter_names(model: nn.Module, n_top: int = 1) -> list[str]:
    """Names, in the full model, of the parameters that form θ for ``split(model, n_top)``.

    ``iu.Objective(model, loss, params=top_parameter_names(model, k))`` on the full model and
    ``iu.Objective(split(model, k), loss)`` on cached features have the same θ (same order), the
    same losses and the same gradients.
    """
    return list(split(model, n_top).full_names.values())


def cifar_resnet18(n_classes: int = 10, in_channels: int = 3, groups: int = 32, seed: int | None = None) -> nn.Module:
    """ResNet-18 (He et al., 2016) for 32x32 images, with GroupNorm: the full profile's vision model.

    torchvision's ``resnet18`` with the usual CIFAR changes: a 3x3 stride-1 first convolution and
    no max-pooling, and GroupNorm (at most ``groups`` groups) instead of BatchNorm so that
    per-example gradients under ``torch.func.vmap`` are exact. 11.2M parameters for 10 classes;
    the last block (``layer4.1``) and the head hold 4.7M.

    Args:
        n_classes: output logits ``[n, n_classes]``.
        in_channels: 3 for CIFAR-10.
        groups: maximum GroupNorm groups per layer.
        seed: seed of the initialisation; ``None`` uses the global RNG.

    Returns:
        A torchvision ``ResNet`` in eval mode (use :func:`split` for its top).
    """
    from torchvision.models import resnet18

    with seeded(seed):
        model = resnet18(num_classes=n_classes, norm_layer=lambda c: group_norm(c, "group", groups))
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    for m in model.modules():  # in-place activations are not needed and confuse functional transforms
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model.eval()

