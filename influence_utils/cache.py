"""A config-keyed cache for expensive artifacts (trained checkpoints, eigenpairs, ground truths).

::

    theta = iu.cached("ch1-logreg", {"n_train": 200, "seed": 0}, lambda: expensive())

The file name carries a hash of the config; the file stores the config itself, so a file whose
stored config differs from the one asked for (copied by hand, or a hash collision) is refused
with a clear message rather than silently used. A corrupt or unreadable file is recomputed.
Values may be tensors and plain containers of tensors, numbers and strings.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from .config import canonical, config_hash

__all__ = ["cached", "cache_dir", "cache_path", "CacheMismatchError"]

T = TypeVar("T")


class CacheMismatchError(RuntimeError):
    """A cache file exists for this name and hash but was computed with a different config."""


def cache_dir() -> Path:
    """``$IU_CACHE_DIR``, or ``~/.cache/influence_utils``."""
    root = os.environ.get("IU_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "influence_utils"


def cache_path(name: str, config: Any, root: str | Path | None = None) -> Path:
    """Where the artifact ``name`` computed with ``config`` lives."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"cache name must be a plain file stem, got {name!r}")
    return Path(root or cache_dir()) / f"{name}-{config_hash(config)[:16]}.pt"


def cached(
    name: str,
    config: Any,
    compute: Callable[[], T],
    *,
    root: str | Path | None = None,
    refresh: bool = False,
) -> T:
    """Load ``name`` for ``config`` from the cache, or compute, store and return it.

    Args:
        name: a short stem such as ``"ch7-minilm-checkpoint"``.
        config: everything the value depends on (a dataclass or nested dict of plain values).
        compute: called with no arguments when the value is not cached.
        root: cache folder (default :func:`cache_dir`).
        refresh: recompute and overwrite even if a valid entry exists.

    Raises:
        CacheMismatchError: the file for this name and hash stores a different config.
    """
    path = cache_path(name, config, root)
    wanted = json.dumps(canonical(config), sort_keys=True)
    if path.exists() and not refresh:
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            stored, value = entry["config"], entry["value"]
        except Exception as err:  # corrupt, truncated, or from an incompatible version
            warnings.warn(f"cache file {path} is unreadable ({type(err).__name__}); recomputing", stacklevel=2)
        else:
            if stored != wanted:
                raise CacheMismatchError(
                    f"{path} was computed with a different config:\n  stored: {stored}\n  wanted: {wanted}\n"
                    f"Delete the file or call cached(..., refresh=True) to recompute it."
                )
            return value
    value = compute()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save({"config": wanted, "value": value}, tmp)
        os.replace(tmp, path)
    except OSError as err:  # read-only or full disk: keep the result, which cost the computation
        warnings.warn(
            f"could not write the cache file {path} ({type(err).__name__}: {err}); the result is "
            f"returned but not cached. Make the cache directory {path.parent} writable, or set "
            "IU_CACHE_DIR to a writable directory",
            UserWarning,
            stacklevel=2,
        )
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return value
