"""How far the first-order expansion in the perturbation size ε carries.

Influence functions linearise the response to up-weighting a training example (or a group of
them) by ε: the objective ``L(θ) + ε Σ_{z ∈ G} ℓ(z; θ)`` gives each member of G the weight
``1 + nε`` in the mean ``(1/n) Σ w_i ℓ(z_i; θ)``. So

* ε = −1/n removes the group, ε = +k/n adds k duplicates of each member;
* a score ``s`` in the book's units (the first-order change of a test loss when the group is
  *removed*; positive = the group helps) predicts the change ``−n ε s`` for any ε.

This module measures the actual response over a range of ε and compares it with that line:

* :func:`weighted_runs` — the training procedure rerun with arbitrary per-example weights,
  vectorised over many weightings (gradient descent from a start point or checkpoint, or the
  exact optimum by Newton's method);
* :func:`epsilon_sweep` — actual vs first-order predicted test-loss change for a list of ε,
  returned as a :class:`Sweep` whose ``second_order`` is ``actual − predicted``;
* :func:`group_removal` — removing whole groups, with the first-order prediction
  :func:`group_scores` = the sum of the members' individual scores;
* :func:`random_groups` and :func:`similar_groups` — groups drawn at random, or made of the
  nearest neighbours of an anchor (by cosine similarity of features or gradients);
* :func:`linearized_removal` — the *exact* first-order response of a gradient-descent run,
  by forward-mode differentiation through every step: what every influence estimate
  approximates, so that ``actual − linearized`` is the pure second-order remainder;
* :func:`loglog_slope` and :func:`linearity_break` — the order of the remainder and the ε at
  which the linear prediction stops being accurate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import jvp, vmap

from .batching import Data
from .objective import Objective
from .runs import SGD, descend, descend_rows, gd_schedule, newton_runs, tensor_data
from .utils import as_numpy

__all__ = [
    "Sweep",
    "upweight_weights",
    "weighted_runs",
    "epsilon_sweep",
    "group_scores",
    "group_removal",
    "random_groups",
    "similar_groups",
    "linearized_removal",
    "loglog_slope",
    "linearity_break",
]

Group = int | Sequence[int]


def _indices(group: Group, n: int, device=None) -> Tensor:
    idx = torch.as_tensor([group] if isinstance(group, int) else list(group), dtype=torch.long, device=device)
    if idx.numel() == 0:
        raise ValueError("a group must contain at least one training example")
    if idx.min() < 0 or idx.max() >= n:
        raise IndexError(f"group {group} is out of range for {n} training examples")
    if idx.unique().numel() != idx.numel():
        raise ValueError(f"group {list(idx.tolist())} repeats an example; duplicates are ε = k/n, not repeats")
    return idx


def upweight_weights(n: int, group: Group, eps: Sequence[float] | Tensor, dtype=torch.float64,
                     device=None) -> Tensor:
    """Per-example weights ``[k, n]`` for the objective ``L + ε_k Σ_{z∈G} ℓ(z)``.

    Row k is all ones except ``1 + n·ε_k`` on the members of ``group``: ε = −1/n removes the group
    (weight 0), ε = +k/n adds k copies of each member. On ``device`` (default: that of ``eps``
    when it is a tensor, else the CPU).
    """
    if device is None:
        device = eps.device if isinstance(eps, Tensor) else "cpu"
    idx = _indices(group, n, device)
    e = torch.as_tensor(eps, dtype=dtype, device=device).reshape(-1)
    w = torch.ones(e.numel(), n, dtype=dtype, device=device)
    w[:, idx] = (1 + n * e)[:, None]
    return w


def weighted_runs(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    weights: Tensor,
    schedule: SGD | None = None,
    *,
    method: str = "gd",
    newton_iterations: int = 10,
    tol: float = 1e-9,
    chunk: int = 64,
    progress_bar: bool | None = None,
    **sgd: Any,
) -> Tensor:
    """Final parameters of the training procedure under each row of ``weights``, ``[m, p]``.

    The generalisation of :func:`~influence_utils.training.retrain_without` to any weights
    (up-weighting, duplicates, negative weights), vectorised with ``vmap``, ``chunk`` at a time.

    Args:
        obj, data: the objective and the training data ``(inputs, targets)`` (n examples).
        theta0: the start ``[p]``: an initialisation, a checkpoint (warm start) or, for
            ``method="newton"``, a point near the optimum (normally the unweighted optimum).
            ``[m, p]``: one start per run, e.g. the results of an earlier call, to continue
            each run for more steps (full-batch gradient descent has no clock, so 10 + 20
            steps give the same result as 30).
        weights: ``[m, n]`` per-example weights, e.g. from :func:`upweight_weights`.
        schedule: with ``method="gd"``: an :class:`~influence_utils.runs.SGD`, or its fields as
            keywords, as in :func:`~influence_utils.training.train`.
        method: ``"gd"`` — the schedule's (mini-batch) gradient descent, the steps of
            :func:`~influence_utils.training.train` with the same batch order; ``"newton"`` — the
            exact optimum by ``newton_iterations`` full Newton steps (convex objectives).
        tol: with ``"newton"``, the gradient norm every run must reach.

    Returns:
        ``[m, p]``.

    Raises:
        FloatingPointError: a run diverged. RuntimeError: Newton did not reach ``tol``.
    """
    inputs, targets = tensor_data(data)
    n = targets.shape[0]
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights must be [m, {n}] (one row per run), got {tuple(weights.shape)}")
    weights = weights.to(theta0)
    theta0 = theta0.detach()
    if theta0.ndim == 2 and theta0.shape[0] != weights.shape[0]:
        raise ValueError(f"theta0 has {theta0.shape[0]} starts for {weights.shape[0]} runs; give one per row of weights")
    # a copy per run, never an expanded view: forward-mode AD (the Hessian of method="newton", built
    # from more than one block of HVPs when p > 256) refuses memory shared between runs
    starts = (theta0 if theta0.ndim == 2 else theta0.expand(weights.shape[0], -1)).clone()
    if method == "newton":
        return newton_runs(obj, starts, data, weights, iterations=newton_iterations, tol=tol, chunk=chunk,
                           desc="weighted runs", progress_bar=progress_bar,
                           advice="use smaller |ε|, start closer or raise newton_iterations")
    if method != "gd":
        raise ValueError(f"method must be 'gd' or 'newton', got {method!r}")
    return descend_rows(obj, starts, (inputs, targets), weights, gd_schedule(schedule, sgd, "weighted_runs"),
                        chunk=chunk, desc="weighted runs", progress_bar=progress_bar)


def _loss_change(obj: Objective, thetas: Tensor, reference: Tensor, test: Data) -> Tensor:
    """``[m, n_test]``: test losses at each of ``thetas`` minus those at ``reference``."""
    ref = obj.per_example_losses(reference, test)
    return torch.stack([obj.per_example_losses(t, test) for t in thetas]) - ref


@dataclass
class Sweep:
    """Actual vs first-order change of the test losses over a range of ε.

    Attributes:
        eps: ``[k]`` the perturbation sizes (ε = −1/n: removal, +k/n: k duplicates).
        actual: ``[k, n_test]`` test loss after training with ε minus test loss with ε = 0.
        predicted: ``[k, n_test]`` the first-order prediction ``−n ε · scores``.
        n: the number of training examples.
    """

    eps: Tensor
    actual: Tensor
    predicted: Tensor
    n: int

    @property
    def second_order(self) -> Tensor:
        """``actual − predicted``, ``[k, n_test]``: everything beyond the linear term."""
        return self.actual - self.predicted

    @property
    def relative_error(self) -> Tensor:
        """``‖actual − predicted‖ / ‖predicted‖`` over the test examples, ``[k]``."""
        return self.second_order.norm(dim=1) / self.predicted.norm(dim=1).clamp_min(1e-300)

    def __repr__(self) -> str:
        return f"Sweep({len(self.eps)} values of ε from {float(self.eps.min()):.3g} to {float(self.eps.max()):.3g}, n={self.n})"


def epsilon_sweep(
    obj: Objective,
    theta0: Tensor,
    train: Data,
    test: Data,
    group: Group,
    eps: Sequence[float] | Tensor,
    scores: Tensor,
    *,
    method: str = "gd",
    **run_kwargs: Any,
) -> Sweep:
    """Up-weight ``group`` by each ε, retrain, and compare with the first-order prediction.

    The actual change is ``ℓ(test; θ_ε) − ℓ(test; θ_0)`` where θ_ε and θ_0 come from the same
    procedure (:func:`weighted_runs` with ``method`` and ``run_kwargs``: same start, same steps,
    same batch order), the unperturbed run included in the same batch. The prediction is
    ``−n ε · scores``, where ``scores`` is the removal score of the group in the book's units
    (e.g. ``iu.influence(...)[:, j]``, a time-bounded score for a T-step warm start, or
    :func:`group_scores` for a group).

    Args:
        obj, train, test: objective, training data (n examples) and query data.
        theta0: where every run starts (see :func:`weighted_runs`).
        group: one training index or a group of indices.
        eps: the ε values, signed.
        scores: ``[n_test]`` first-order removal prediction for the group (positive = helps).
        method, run_kwargs: passed to :func:`weighted_runs`.

    Returns:
        A :class:`Sweep`.
    """
    _, targets = tensor_data(train)
    n = targets.shape[0]
    e = torch.as_tensor(eps, dtype=theta0.dtype, device=theta0.device).reshape(-1)
    scores = torch.as_tensor(scores, dtype=theta0.dtype, device=theta0.device)
    if scores.ndim != 1:
        raise ValueError(f"scores must be [n_test] (one column of a score matrix), got {tuple(scores.shape)}")
    W = upweight_weights(n, group, torch.cat([e.new_zeros(1), e]), dtype=theta0.dtype, device=theta0.device)
    thetas = weighted_runs(obj, theta0, train, W, method=method, **run_kwargs)
    actual = _loss_change(obj, thetas[1:], thetas[0], test)
    if actual.shape[1] != scores.shape[0]:
        raise ValueError(f"scores has {scores.shape[0]} entries but test has {actual.shape[1]} examples")
    predicted = -n * e[:, None] * scores[None, :]
    return Sweep(e, actual, predicted, n)


def group_scores(scores: Tensor, groups: Sequence[Group]) -> Tensor:
    """First-order prediction for removing each group: the sum of its members' scores.

    Args:
        scores: ``[n_test, n_train]`` individual removal scores (book units, positive = helps).
        groups: m groups of training indices.

    Returns:
        ``[n_test, m]``.
    """
    n = scores.shape[1]
    return torch.stack([scores[:, _indices(g, n, scores.device)].sum(1) for g in groups], dim=1)


def group_removal(
    obj: Objective,
    theta0: Tensor,
    train: Data,
    test: Data,
    groups: Sequence[Group],
    scores: Tensor,
    *,
    method: str = "gd",
    **run_kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Remove each group, retrain, and compare with the summed first-order prediction.

    Args:
        scores: ``[n_test, n_train]`` individual removal scores.
        groups: m groups; each is removed on its own (weight 0, the 1/n kept).
        method, run_kwargs: passed to :func:`weighted_runs` (the unperturbed run is added).

    Returns:
        ``(predicted, actual)``, both ``[n_test, m]``: :func:`group_scores`, and
        ``ℓ(test; θ without group) − ℓ(test; θ_0)`` with θ_0 from the same procedure.
    """
    _, targets = tensor_data(train)
    n = targets.shape[0]
    predicted = group_scores(scores, groups)
    W = torch.ones(len(groups) + 1, n, dtype=theta0.dtype, device=theta0.device)
    for k, g in enumerate(groups):
        W[k + 1, _indices(g, n, W.device)] = 0.0
    thetas = weighted_runs(obj, theta0, train, W, method=method, **run_kwargs)
    return predicted, _loss_change(obj, thetas[1:], thetas[0], test).T


def random_groups(n: int, size: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` groups of ``size`` distinct training indices drawn uniformly (seeded)."""
    if not 1 <= size <= n:
        raise ValueError(f"size must be between 1 and n={n}, got {size}")
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen)[:size].sort().values.tolist()  # host: seeded CPU draw, lists out
            for _ in range(count)]


def similar_groups(features: Tensor, size: int, anchors: Sequence[int]) -> list[list[int]]:
    """For each anchor, the group of its ``size`` most similar training examples (itself included).

    Similarity is the cosine of ``features`` rows: inputs, embeddings, or per-example gradients
    (then a group is examples that pull the parameters the same way, whose effects add up).

    Args:
        features: ``[n, d]``.
        size: group size.
        anchors: training indices, one group each.

    Returns:
        ``len(anchors)`` lists of indices.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [n, d], got {tuple(features.shape)}; flatten them first")
    n = features.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"size must be between 1 and n={n}, got {size}")
    f = features / features.norm(dim=1, keepdim=True).clamp_min(1e-30)
    a = torch.as_tensor(list(anchors), dtype=torch.long, device=features.device)
    sim = f[a] @ f.T
    sim[torch.arange(len(a), device=features.device), a] = math.inf  # the anchor first, even with duplicated rows
    return sim.topk(size, dim=1).indices.sort(dim=1).values.tolist()


def linearized_removal(
    obj: Objective,
    theta0: Tensor,
    train: Data,
    test: Data,
    groups: Sequence[Group],
    schedule: SGD | None = None,
    *,
    chunk: int = 16,
    **sgd: Any,
) -> Tensor:
    """The exact first-order prediction of removing each group, for a gradient-descent run.

    ``out[i, k] = −Σ_{j ∈ G_k} ∂ℓ(test_i; θ_T(w)) / ∂w_j`` at ``w = 1``, where θ_T(w) is the
    result of ``steps`` of (mini-batch) gradient descent from ``theta0`` with per-example
    weights w (:func:`weighted_runs`, ``method="gd"``). It is computed by forward-mode
    differentiation through every step, so it follows the curvature along the actual
    trajectory: no fixed Hessian, no optimum assumed. Same units and sign as the scores
    (positive = the group helps). From a stationary point with full-batch steps it equals
    :func:`~influence_utils.scores.time_bounded_influence` with an exact solver, and
    ``actual − out`` is the pure second-order remainder.

    ``schedule`` and ``sgd``: as in :func:`weighted_runs` (``record_every`` is ignored).

    Returns:
        ``[n_test, m]``.
    """
    schedule = SGD.of(schedule, "linearized_removal", **sgd).replace(record_every=None)
    inputs, targets = tensor_data(train)
    n = targets.shape[0]
    t_inputs, t_targets = tensor_data(test, "test")
    start = theta0.detach()
    ones = torch.ones(n, dtype=theta0.dtype, device=theta0.device)
    schedule.order(n)  # drawn here, outside vmap (which refuses random draws); descend finds it cached

    def test_losses(w: Tensor) -> Tensor:
        final, _ = descend(obj, start, (inputs, targets), schedule, weights=w, desc="linearized removal",
                           progress_bar=False)
        return obj.losses(final, t_inputs, t_targets)

    tangents = torch.zeros(len(groups), n, dtype=theta0.dtype, device=theta0.device)
    for k, g in enumerate(groups):
        tangents[k, _indices(g, n, tangents.device)] = 1.0
    out = torch.cat([vmap(lambda u: jvp(test_losses, (ones,), (u,))[1])(tangents[i : i + chunk])
                     for i in range(0, len(groups), chunk)])
    return -out.T


def loglog_slope(x: Any, y: Any) -> float:
    """Least-squares slope of ``log|y|`` against ``log|x|`` (the order of a power law).

    Pairs where either is zero are skipped. A remainder that is second order in ε has slope 2.
    """
    a, b = np.abs(as_numpy(x)), np.abs(as_numpy(y))
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same length, got {a.shape} and {b.shape}")
    keep = (a > 0) & (b > 0)
    if keep.sum() < 2:
        raise ValueError("need at least two pairs with non-zero x and y for a log-log fit")
    return float(np.polyfit(np.log(a[keep]), np.log(b[keep]), 1)[0])


def linearity_break(eps: Any, relative_error: Any, threshold: float = 0.1) -> float:
    """The smallest ``|ε|`` at which the relative error of the linear prediction reaches ``threshold``.

    Returns ``inf`` when no ε in the sweep reaches it (linear over the whole range).
    """
    e, r = np.abs(as_numpy(eps)), as_numpy(relative_error)
    if e.shape != r.shape:
        raise ValueError(f"eps and relative_error must have the same length, got {e.shape} and {r.shape}")
    hit = e[r >= threshold]
    return float(hit.min()) if hit.size else math.inf
