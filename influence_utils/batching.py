"""Uniform access to data given as ``(inputs, targets)`` tensors or as a ``DataLoader``.

Every function in the package that takes data accepts either

* a tuple ``(inputs, targets)`` where ``targets`` is a tensor ``[n, ...]`` and ``inputs`` is a
  tensor ``[n, ...]``, a tuple of such tensors (passed to the model positionally) or a dict of
  them (passed as keyword arguments), or
* a :class:`torch.utils.data.DataLoader` (or any iterable) yielding such tuples.

Large tuples are cut into chunks so that memory stays bounded; a ``DataLoader`` is consumed
batch by batch as it comes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["Data", "num_examples", "iter_chunks", "index_batch", "subset", "validate_batch", "to_device", "check_iterable",
           "named_tensors"]

#: The data every function of the package takes. Either a tuple ``(inputs, targets)``, with
#: ``inputs`` a tensor ``[n, ...]`` (or a tuple or dict of them) and ``targets`` ``[n, ...]``, or a
#: ``DataLoader`` (any re-iterable) that yields such tuples in a fixed order.
Data = Union[tuple[Any, Tensor], Iterable[tuple[Any, Tensor]]]


def _leading_dims(inputs: Any) -> list[int]:
    leaves, _ = tree_flatten(inputs)
    if not leaves:
        raise ValueError("inputs are empty: expected a tensor, a tuple of tensors or a dict of tensors")
    dims = []
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise TypeError(
                f"inputs must be tensors (or tuples/dicts of tensors), got {type(leaf).__name__}; "
                "encode text first, e.g. with influence_utils.models.encode_texts"
            )
        if leaf.ndim == 0:
            raise ValueError("inputs must have a leading example dimension [n, ...], got a 0-d tensor")
        dims.append(leaf.shape[0])
    return dims


def validate_batch(batch: Any) -> tuple[Any, Tensor]:
    """Check that ``batch`` is ``(inputs, targets)`` with matching leading dimensions.

    Returns:
        The pair ``(inputs, targets)``.

    Raises:
        TypeError, ValueError: with a message saying what shape was expected.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            "data must be a pair (inputs, targets) or a DataLoader yielding such pairs, "
            f"got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    inputs, targets = batch
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor [n], got {type(targets).__name__}")
    dims = _leading_dims(inputs)
    n = targets.shape[0] if targets.ndim else None
    if n is None or any(d != n for d in dims):
        raise ValueError(
            f"inputs and targets disagree on the number of examples: inputs {dims}, "
            f"targets {tuple(targets.shape)}"
        )
    return inputs, targets


def named_tensors(inputs: Any) -> list[tuple[str, Tensor]]:
    """The tensors of ``inputs`` (a tensor, tuple or dict) with names for messages:
    ``[("inputs", x)]``, ``[("inputs[0]", a), ...]`` or ``[("inputs['input_ids']", ids), ...]``."""
    if isinstance(inputs, Mapping):
        pairs = [(f"inputs[{k!r}]", v) for k, v in inputs.items()]
    elif isinstance(inputs, (tuple, list)):
        pairs = [(f"inputs[{i}]", v) for i, v in enumerate(inputs)]
    else:
        pairs = [("inputs", inputs)]
    return [(k, v) for k, v in pairs if isinstance(v, Tensor)]


def index_batch(inputs: Any, index: Tensor | slice) -> Any:
    """Select examples ``index`` from every tensor in ``inputs`` (a tensor, tuple or dict)."""
    return tree_map(lambda t: t[index], inputs)


def subset(data: Data, index: Tensor | slice | Sequence[int]) -> tuple[Any, Tensor]:
    """The examples ``index`` of tensor data ``(inputs, targets)``, as ``(inputs, targets)``.

    ``index``: a slice, an index tensor or a list of indices (moved to the targets' device).
    """
    inputs, targets = data
    if not isinstance(index, slice):
        index = torch.as_tensor(index, dtype=torch.long, device=targets.device)
    return index_batch(inputs, index), targets[index]


def check_iterable(data: Data, ordered: bool = False) -> None:
    """Refuse data that would give a silently wrong answer when read batch by batch.

    * A one-shot iterator (a generator, ``iter(loader)``) is used up by its first pass, so every
      later pass (counting the examples, each Hessian-vector product) would see no data.
    * A ``DataLoader`` with ``drop_last=True`` leaves examples out of every pass.
    * With ``ordered=True`` (the data indexes rows or columns of a result, as the training examples
      index the columns of a score matrix), a ``DataLoader`` must read its dataset in order:
      a random sampler (``shuffle=True``) would put column j somewhere else than example j.

    Tensor pairs ``(inputs, targets)`` always pass.

    Raises:
        TypeError: for a one-shot iterator.
        ValueError: for ``drop_last`` or, with ``ordered``, a sampler that is not sequential.
    """
    if isinstance(data, (tuple, list)):
        return
    if iter(data) is data:
        raise TypeError(
            f"data is a one-shot iterator ({type(data).__name__}): it is used up by the first pass, and "
            "influence needs several (counting the examples, every Hessian-vector product). Pass the "
            "DataLoader itself (not iter(loader)) or the tensors (inputs, targets)"
        )
    if getattr(data, "drop_last", False):
        raise ValueError(
            "the DataLoader has drop_last=True, so its last incomplete batch is left out of every pass "
            "(the Hessian and the scores would miss those examples); create it with drop_last=False"
        )
    if ordered:
        from torch.utils.data import SequentialSampler

        sampler = getattr(data, "sampler", None)
        if sampler is not None and not isinstance(sampler, SequentialSampler):
            raise ValueError(
                f"the DataLoader reads its dataset through a {type(sampler).__name__}, not in order, so "
                "row/column j of the result would not be example j of the dataset; create it with "
                "shuffle=False (and no sampler) for scores"
            )


def num_examples(data: Data) -> int:
    """Number of examples in ``data`` (a ``(inputs, targets)`` pair or a DataLoader)."""
    if isinstance(data, (tuple, list)):
        _, targets = validate_batch(data)
        return int(targets.shape[0])
    check_iterable(data)
    dataset = getattr(data, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    return sum(int(validate_batch(b)[1].shape[0]) for b in data)


def iter_chunks(
    data: Data, chunk_size: int | None = None, weights: Tensor | None = None, ordered: bool = False
) -> Iterator[tuple[Any, Tensor, Tensor | None]]:
    """Yield ``(inputs, targets, weights)`` chunks of at most ``chunk_size`` examples.

    Args:
        data: ``(inputs, targets)`` or a DataLoader (re-iterable; see :func:`check_iterable`).
        chunk_size: maximum chunk length for tensor data; ``None`` yields the data whole.
            A DataLoader keeps its own batch size.
        weights: optional per-example weights ``[n]``, sliced alongside (tensor data only).
        ordered: the chunks index rows or columns of a result, so a DataLoader must read its
            dataset in order (no shuffling).
    """
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 0):
        raise ValueError(f"chunk_size must be a non-negative integer (0 or None: no chunking), got {chunk_size!r}")
    if isinstance(data, (tuple, list)):
        inputs, targets = validate_batch(data)
        n = targets.shape[0]
        if weights is not None and weights.shape != (n,):
            raise ValueError(f"weights must have shape [{n}], got {tuple(weights.shape)}")
        step = n if not chunk_size else int(chunk_size)
        for start in range(0, n, max(step, 1)):
            sl = slice(start, min(start + step, n))
            yield (*subset((inputs, targets), sl), None if weights is None else weights[sl])
        return
    if weights is not None:
        raise TypeError("per-example weights need tensor data (inputs, targets), not a DataLoader")
    if isinstance(data, (Mapping, Tensor)):
        raise TypeError("data must be (inputs, targets) or a DataLoader yielding (inputs, targets)")
    check_iterable(data, ordered=ordered)
    for batch in data:
        inputs, targets = validate_batch(batch)
        yield inputs, targets, None


def to_device(inputs: Any, device: torch.device | str | None) -> Any:
    """Move every tensor in ``inputs`` to ``device`` (no-op for ``None``)."""
    if device is None:
        return inputs
    return tree_map(lambda t: t.to(device) if isinstance(t, Tensor) else t, inputs)
