"""Stand-ins for the full profile's downloads: a dry run of ``IU_PROFILE=full`` on a CPU, offline.

With the environment variable ``IU_STANDIN=1`` (and ``IU_PROFILE=full``), the full profile keeps
its code path, its data split sizes and its model shapes, but nothing is downloaded and little is
computed:

* the downloadable data sets are replaced by deterministic random data with the official split
  sizes and shapes (:data:`OFFICIAL_SPLITS`): ``sst2`` by sentences of random words from a small
  generated vocabulary (so a tokenizer runs on them), ``cifar10`` by random ``uint8`` images
  ``[3, 32, 32]`` with exactly 5,000 / 1,000 examples a class;
* ``bert-base-uncased`` by the same architecture class at reduced depth and width
  (:data:`BERT_SIZES`: 2 layers, hidden 64, 2 heads, bert-base's vocabulary size) with random
  weights, and its tokenizer by a ``transformers.BertTokenizerFast`` built from the generated
  vocabulary; ResNet-18 keeps its architecture (it is never downloaded);
* :func:`standin_config` cuts steps, epochs, iterations, ranks, repeats, bootstrap counts and
  panel sizes of the full config (never the data sizes the size checks read, nor model shapes).

``make dry-run`` (``tools/dry_run.py``) executes every chapter this way. With ``IU_STANDIN``
unset, nothing here is used: :func:`enabled` is false and every hook falls through to the real
full profile. The numbers a stand-in run prints mean nothing: the data are noise.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["enabled", "OFFICIAL_SPLITS", "BERT_SIZES", "standin_config", "sst2_splits",
           "cifar10_splits", "bert_classifier", "tokenizer", "VOCAB_SIZE_WORDS"]

#: Official split sizes (train, test) and input shape of the downloadable data sets; the test part
#: is SST-2's labelled validation split (its test split has no labels) and CIFAR-10's test split.
OFFICIAL_SPLITS = {
    "sst2": {"train": 67_349, "test": 872, "shape": None, "classes": ("negative", "positive"),
             "positive": (37_569, 444)},
    "cifar10": {"train": 50_000, "test": 10_000, "shape": (3, 32, 32),
                "classes": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                            "ship", "truck")},
}

#: BertConfig fields of the stand-in for bert-base-uncased (bert-base has 12 layers, hidden 768, 12 heads).
BERT_SIZES = dict(vocab_size=30_522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=256, max_position_embeddings=512)

#: Words in the stand-in vocabulary (the sentences draw from them).
VOCAB_SIZE_WORDS = 2000

_SEED = 20240611


def enabled() -> bool:
    """True when ``$IU_STANDIN`` is set to something other than ``""``, ``"0"``, ``"false"``, ``"no"``."""
    return os.environ.get("IU_STANDIN", "").strip().lower() not in ("", "0", "false", "no", "off")


# ---------------------------------------------------------------------------------- config


def _cut(obj: Any, **most: Any) -> Any:
    """A copy of the dataclass ``obj`` with fields cut to ``most``: a number to at most its cap (a
    ``min``), a tuple to its first entries, a nested dataclass by a dict of its own cuts."""

    def cut(value: Any, cap: Any) -> Any:
        if isinstance(cap, dict):
            return _cut(value, **cap)
        return tuple(value[:cap]) if isinstance(value, tuple) else min(value, cap)

    return dataclasses.replace(obj, **{name: cut(getattr(obj, name), cap) for name, cap in most.items()})


def standin_config(cfg):
    """The stand-in version of a full-profile :class:`~influence_utils.config.Config`.

    Compute is cut (each cap is a ``min``, so applying it twice changes nothing); data sizes
    (``n_train``, ``n_test``, pool and held-out sizes; only the ResNet task's ``n_train`` / ``n_test``
    are cut to 1,000 / 200, from 10,000 / 1,000, because its trunk runs on a CPU) and model shapes (widths, depths of the
    models, ``max_length``, batch sizes) are kept, so the size and shape bugs of the full profile
    show. A config of another profile is returned unchanged.
    """
    if cfg.profile != "full":
        return cfg
    r = dataclasses.replace
    return r(
        cfg,
        ch1=_cut(cfg.ch1, n_removed=5, n_pairs_plot=500),
        ch2=_cut(cfg.ch2, train={"steps": 200}, warm_steps=20, n_removed=7, n_queries=50, newton_iters=20, n_orders=2),
        ch3=_cut(r(cfg.ch3, lissa_depths=tuple(d for d in cfg.ch3.lissa_depths if d <= 100)),
                 train={"steps": 100}, n_rhs=4, resnet_train={"steps": 10}, resnet_hvp_examples=32, resnet_n_test=4,
                 resnet_rank=8, resnet_arnoldi_iterations=16, resnet_cg_iter=10, resnet_lissa_depth=20, n_seeds=2),
        ch4=_cut(cfg.ch4, mlp={"train": {"steps": 100}}, n_removed=8, n_seeds=2, horizons=3),
        # chapter 5 fits its growth models from step 100 on: 300 steps leave a window to fit
        ch5=_cut(cfg.ch5, mlp={"train": {"steps": 50}}, steps=300, n_perturbed=4),
        ch6=_cut(r(cfg.ch6, horizons=tuple(min(h, 30) for h in cfg.ch6.horizons)),
                 mlp={"train": {"steps": 100}}, n_groups=2, n_examples=2),
        ch7=_cut(cfg.ch7,
                 bert={"steps": 5},
                 # ResNet-18 on a CPU: pretraining skipped, its trunk run over 1,000 + 200 images (not
                 # 10,000 + 1,000); per-example gradients of 1,000 images still need 19 GB, as 10,000 need 189
                 resnet={"pretrain_epochs": 0, "steps": 3, "n_train": 1000, "n_test": 200},
                 mlp={"train": {"steps": 30}}, n_z=4, n_queries=16, horizon_epochs=0.5, record_points=4,
                 arnoldi_rank=6, arnoldi_iterations=12, hessian_examples=64, control_seeds=2, n_boot=100,
                 sweep_n_z=2, sweep_epochs=0.1),
        ch8=_cut(cfg.ch8, n_wrong=4, n_heldout=32, ks=2, steps=2, random_draws=2,
                 # half an epoch: the removal runs then outlast the listed steps (1, 2), as in both real profiles
                 removal_epochs=0.5, arnoldi_rank=6, arnoldi_iterations=12, hessian_examples=64, timing_repeats=2,
                 horizon_steps=3, horizon_k=5, n_explore=2),
        ch9=_cut(cfg.ch9, mlp_train={"steps": 50}, divergence_steps=10, n_boot=100, timing_repeats=2),
    )


# ---------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=None)
def _words() -> tuple[str, ...]:
    """``VOCAB_SIZE_WORDS`` distinct lower-case pseudo-words of 2 to 4 syllables (deterministic)."""
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    gen = torch.Generator().manual_seed(_SEED)
    words: dict[str, None] = {}
    while len(words) < VOCAB_SIZE_WORDS:
        n = int(torch.randint(2, 5, (1,), generator=gen))
        c = torch.randint(len(consonants), (n,), generator=gen).tolist()
        v = torch.randint(len(vowels), (n,), generator=gen).tolist()
        words["".join(consonants[a] + vowels[b] for a, b in zip(c, v))] = None
    return tuple(words)


def _sentences(n: int, gen: torch.Generator) -> tuple[str, ...]:
    """``n`` sentences of 2 to 40 random words (at most 42 tokens with [CLS] and [SEP])."""
    words = _words()
    lengths = torch.randint(2, 41, (n,), generator=gen).tolist()
    ids = iter(torch.randint(len(words), (sum(lengths),), generator=gen).tolist())
    return tuple(" ".join(words[i] for i in itertools.islice(ids, length)) for length in lengths)


def _labels(n: int, counts: list[int], gen: torch.Generator) -> torch.Tensor:
    """A random order of labels with exactly ``counts[c]`` examples of class ``c``."""
    y = torch.cat([torch.full((k,), c, dtype=torch.int64) for c, k in enumerate(counts)])
    return y[torch.randperm(n, generator=gen)]


@functools.lru_cache(maxsize=None)
def sst2_splits() -> tuple[tuple[str, ...], torch.Tensor, tuple[str, ...], torch.Tensor]:
    """Stand-in SST-2: ``(train texts, train labels, test texts, test labels)``, official sizes.

    67,349 training and 872 test sentences of random words, with SST-2's class balance
    (37,569 and 444 positive). Deterministic; no network.
    """
    spec = OFFICIAL_SPLITS["sst2"]
    gen = torch.Generator().manual_seed(_SEED + 1)
    parts = []
    for part, pos in zip(("train", "test"), spec["positive"]):
        n = spec[part]
        parts += [_sentences(n, gen), _labels(n, [n - pos, pos], gen)]
    return tuple(parts)


@functools.lru_cache(maxsize=None)
def cifar10_splits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stand-in CIFAR-10: ``(train images, labels, test images, labels)``, official sizes.

    ``uint8`` images ``[50000, 3, 32, 32]`` and ``[10000, 3, 32, 32]`` of uniform noise, labels
    balanced exactly (5,000 and 1,000 a class). Deterministic; no network.
    """
    spec = OFFICIAL_SPLITS["cifar10"]
    gen = torch.Generator().manual_seed(_SEED + 2)
    parts = []
    for part in ("train", "test"):
        n = spec[part]
        parts.append(torch.randint(0, 256, (n, *spec["shape"]), generator=gen, dtype=torch.uint8))
        parts.append(_labels(n, [n // 10] * 10, gen))
    return tuple(parts)


# ---------------------------------------------------------------------------------- model and tokenizer


def bert_classifier(num_labels: int = 2, seed: int | None = None):
    """Stand-in for ``load_bert_base_classifier``: a random ``BertClassifier`` of :data:`BERT_SIZES`."""
    from transformers import BertConfig

    from .models import bert_classifier_from_config

    return bert_classifier_from_config(BertConfig(**BERT_SIZES), num_labels=num_labels, seed=seed)


@functools.lru_cache(maxsize=None)
def _vocab_file() -> str:
    folder = Path(tempfile.mkdtemp(prefix="iu-standin-vocab-"))
    path = folder / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_words()]) + "\n")
    return str(path)


def tokenizer():
    """Stand-in for ``load_bert_base_tokenizer``: an uncased WordPiece ``BertTokenizerFast`` over the stand-in words."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(_vocab_file(), do_lower_case=True)  # positional: transformers 4.x and 5.x
