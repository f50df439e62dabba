"""One frozen configuration object with every size, step count and seed the book uses.

Two profiles, selected by the environment variable ``IU_PROFILE``:

* ``quick`` (default): every chapter runs on a 2-core CPU with no network, in minutes, on data
  shipped inside Python packages.
* ``full``: paper scale on one GPU; downloads what it needs.

A quick run shows the same phenomena as a full one at a smaller scale. The first cell of every
chapter prints the global settings and its own section::

    cfg = iu.get_config()
    print(cfg.describe("ch1"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Config", "Chapter1", "Chapter3", "get_config", "PROFILES", "config_hash"]


@dataclass(frozen=True)
class Chapter1:
    """Chapter 1: exact influence vs exact leave-one-out on logistic regression."""

    dataset: str = "digits"
    classes: tuple[int, int] = (3, 5)
    n_train: int = 200
    n_test: int = 72  # the digits test pool holds 73 threes and fives
    weight_decay: float = 1e-2
    n_removed: int = 200  # training examples whose leave-one-out optimum is computed
    n_pairs_plot: int = 2000  # (test, train) pairs drawn in the scatter plot


@dataclass(frozen=True)
class Chapter3:
    """Chapter 3: numeric stability of inverse-Hessian-vector products (exact, CG, LiSSA, ABIF).

    An MLP (``hidden`` tanh units, float64) on ``dataset`` is trained by ``steps`` full-batch
    gradient-descent steps of size ``lr``; its exact Hessian is the reference. ``n_rhs`` test
    gradients are the right-hand sides of the solver studies. The reference damping is
    ``damping_factor`` times minus the most negative eigenvalue. LiSSA's grid: scales are
    ``lissa_scale_factors`` times λ_max, dampings ``lissa_damping_factors`` times |λ_min|, depths
    ``lissa_depths``. CG runs ``cg_max_iter`` iterations; Arnoldi ``arnoldi_iterations`` steps,
    compared on the ``arnoldi_top_k`` largest eigenvalues; ABIF ranks ``abif_ranks`` with
    ``abif_iterations_factor`` × rank HVPs each. The larger model is ``resnet_*``: a ResNet
    (``resnet_depth``, ``resnet_width``) on ``resnet_dataset``, trained for ``resnet_steps`` SGD
    steps on batches of ``resnet_batch_size`` (images average-pooled to ``resnet_image_size``
    pixels a side); its Hessian is taken over ``resnet_hvp_examples``
    training images and ``resnet_n_test`` test images are scored against all training images.
    """

    dataset: str = "digits"
    n_train: int = 400
    n_test: int = 100
    hidden: int = 24
    weight_decay: float = 1e-3
    steps: int = 300
    lr: float = 1.0
    n_rhs: int = 8
    damping_factor: float = 3.0
    lissa_scale_factors: tuple[float, ...] = (0.3, 0.7, 1.5, 10.0)
    lissa_damping_factors: tuple[float, ...] = (0.0, 0.5, 3.0, 30.0)
    lissa_depths: tuple[int, ...] = (1, 3, 10, 30, 100, 300, 1000, 3000)
    cg_max_iter: int = 150
    arnoldi_iterations: int = 160
    arnoldi_top_k: int = 10
    abif_ranks: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    abif_iterations_factor: int = 2
    resnet_dataset: str = "mnist5k"
    resnet_image_size: int = 14
    resnet_depth: int = 8
    resnet_width: int = 16
    resnet_n_train: int = 256
    resnet_n_test: int = 3
    resnet_steps: int = 50
    resnet_lr: float = 0.15
    resnet_batch_size: int = 32
    resnet_hvp_examples: int = 16
    resnet_rank: int = 10
    resnet_arnoldi_iterations: int = 20
    resnet_cg_iter: int = 6
    resnet_lissa_depth: int = 10


@dataclass(frozen=True)
class Config:
    """Every size, step count and seed of the book for one profile.

    Attributes:
        profile: ``"quick"`` or ``"full"``.
        seed: the one seed passed to :func:`influence_utils.utils.seed_everything`.
        device: ``"cpu"``, or ``"cuda"`` in the full profile when a GPU is present.
        ch1: chapter 1 settings.
        ch3: chapter 3 settings.
    """

    profile: str
    seed: int = 0
    device: str = "cpu"
    ch1: Chapter1 = field(default_factory=Chapter1)
    ch3: Chapter3 = field(default_factory=Chapter3)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self, *sections: str) -> str:
        """A readable, stable listing of the settings (printed by each chapter's first cell).

        Args:
            *sections: chapter sections to list (e.g. ``"ch2"``), after the global settings
                (profile, seed, device). None: list everything.

        Raises:
            ValueError: for a section that does not exist, listing the ones that do.
        """
        d = self.as_dict()
        known = [k for k, v in d.items() if isinstance(v, dict)]
        unknown = [s for s in sections if s not in known]
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; choose from {known}")
        if sections:
            d = {k: v for k, v in d.items() if not isinstance(v, dict) or k in sections}
        lines = [f"influence_utils config, profile={self.profile!r}"]

        def walk(prefix: str, d: dict[str, Any]) -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(f"{prefix}{k}.", v)
                else:
                    lines.append(f"  {prefix + k:<18} = {v!r}")

        walk("", d)
        return "\n".join(lines)

    def hash(self) -> str:
        return config_hash(self.as_dict())


def _quick() -> Config:
    return Config(profile="quick")


def _full() -> Config:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Config(
        profile="full",
        device=device,
        ch1=Chapter1(dataset="mnist5k", classes=(3, 5), n_train=800, n_test=200, n_removed=200),
        ch3=Chapter3(n_train=1000, hidden=48, steps=1500, lissa_depths=(1, 3, 10, 30, 100, 300, 1000, 3000, 10000),
                     arnoldi_iterations=400, abif_ranks=(5, 10, 20, 50, 100, 200, 400), resnet_n_train=2000,
                     resnet_n_test=20, resnet_steps=500, resnet_batch_size=64, resnet_hvp_examples=512,
                     resnet_rank=50, resnet_arnoldi_iterations=150, resnet_cg_iter=50, resnet_lissa_depth=200),
    )


PROFILES = {"quick": _quick, "full": _full}


def get_config(profile: str | None = None) -> Config:
    """The configuration of ``profile``, or of ``$IU_PROFILE`` (default ``"quick"``).

    Raises:
        ValueError: for an unknown profile, listing the known ones.
    """
    name = profile if profile is not None else os.environ.get("IU_PROFILE", "quick")
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (from IU_PROFILE); choose one of {sorted(PROFILES)}")
    return PROFILES[name]()


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _canonical(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.dtype):
        return str(obj)
    raise TypeError(f"cannot hash a config value of type {type(obj).__name__}: use plain numbers and strings")


def config_hash(config: Any) -> str:
    """A stable hex digest of a config (a dataclass or nested dict of plain values)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
