"""Seeding, progress bars and small statistics shared by the whole package."""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["seed_everything", "progress", "pearson", "spearman"]

T = TypeVar("T")


def check_learning_rate(lr: float, name: str = "lr") -> float:
    """``lr`` as a float, or a ValueError that names it unless it is a finite number > 0."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {lr}")
    return value


def seed_everything(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """The one seeding call: Python, NumPy and torch RNGs, and deterministic kernels.

    Args:
        seed: the seed.
        deterministic: also call ``torch.use_deterministic_algorithms(True)`` (and set the
            cuBLAS workspace variable it needs on GPUs), so the same profile on the same
            machine gives the same numbers, and keep float32 matrix products and convolutions
            in IEEE float32 on GPUs (no TensorFloat-32, which torch uses by default for float32
            convolutions on Ampere and later GPUs).

    Returns:
        A ``torch.Generator`` seeded with ``seed`` for code that prefers an explicit generator.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # TF32 keeps a 10-bit mantissa (errors near 1e-3); Hessian solves amplify that. The legacy
        # flags, not torch >= 2.9's fp32_precision settings: after those, reading allow_tf32 raises.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TF32.*", category=UserWarning)  # "will be deprecated"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, show: bool | None = None) -> Iterator[T]:
    """Wrap a long loop in a ``tqdm.auto`` progress bar in interactive use, silently otherwise.

    Bars are off under pytest and when ``IU_PROGRESS=0``; ``show=True``/``False`` forces the
    choice.
    """
    if show is None:  # bars are for people; the book's test and build commands set IU_PROGRESS=0,
        # so executed notebooks stay free of bar output
        show = not (os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("IU_PROGRESS", "1") == "0")
    if not show:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, leave=False))


def as_numpy(x) -> np.ndarray:
    """A tensor (any device, any dtype) or array-like as a float64 NumPy array, detached and on the host."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def pearson(x, y) -> float:
    """Pearson correlation of two equally long arrays (flattened)."""
    a, b = as_numpy(x), as_numpy(y)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two arrays of the same length >= 2, got {a.shape} and {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of average ranks, ties handled)."""
    from scipy.stats import rankdata

    return pearson(rankdata(as_numpy(x)), rankdata(as_numpy(y)))
