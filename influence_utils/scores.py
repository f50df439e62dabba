"""Influence scores, all in one sign convention and one unit.

Every function here returns a matrix ``scores[i, j]`` with the **query (test) dimension first**,
estimating the same counterfactual:

    scores[i, j] ≈ loss(test_i; θ trained without train_j) − loss(test_i; θ)

to first order, i.e. the effect of the perturbation ε = −1/n on train_j's weight in
L(θ) = (1/n) Σ ℓ(z; θ) + (wd/2)‖θ‖². **Positive: train_j helps test_i** (removing it raises the
test loss). What differs is *how* θ is assumed to respond to the removal:

* :func:`influence` — θ moves to the new optimum: ``(1/n) ∇ℓ(test_i)ᵀ H⁻¹ ∇ℓ(train_j)``.
* :func:`time_bounded_influence` — θ continues gradient descent for T steps of size η from the
  checkpoint: ``(1/n) ∇ℓ(test_i)ᵀ H⁻¹(I − (I − ηH)^T) ∇ℓ(train_j)``.
* :func:`tracin` — curvature ignored, summed over checkpoints:
  ``(1/n) Σ_k η_k ∇ℓ(test_i; θ_k)ᵀ ∇ℓ(train_j; θ_k)``.
* :func:`gradient_dot` — one unit-step of gradient descent at θ: ``(1/n) ∇ℓ(test_i)ᵀ∇ℓ(train_j)``.

:func:`gradient_cosine` is unitless (a similarity, positive = aligned = helps), and
:func:`self_influence` is the diagonal ``scores[j, j]`` of an example with itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .batching import Data, iter_chunks, num_examples
from .objective import Objective
from .resources import chunk_size_for
from .solvers import Solver
from .utils import check_learning_rate, progress

__all__ = [
    "influence",
    "self_influence",
    "time_bounded_influence",
    "time_bounded_coefficients",
    "tracin",
    "gradient_dot",
    "gradient_cosine",
    "projected_gradients",
    "GRADIENT_COPIES",
]

#: Copies of a chunk's per-example gradients a scoring pass holds at once (the gradients, their
#: projection or normalised copy, the vmapped backward's temporaries): the bytes per training
#: example of a chunk are ``GRADIENT_COPIES · p · itemsize``.
GRADIENT_COPIES = 3


def budget_chunk(obj: Objective, data: Data, chunk_size: int | None) -> int | None:
    """``chunk_size`` capped by the memory budget of θ's device (:func:`~influence_utils.resources.chunk_size_for`).

    Chunks split the *training examples* only, so the scores are the same for any chunk size; on a
    machine with room for ``chunk_size`` examples nothing changes. A DataLoader keeps its batches.
    """
    if not isinstance(data, (tuple, list)):
        return chunk_size
    per_example = GRADIENT_COPIES * obj.p * obj.dtype.itemsize
    return chunk_size_for(per_example, chunk_size, device=obj.device)


def _train_chunks(train: Data, chunk_size: int | None, obj: Objective):
    """Chunks of ``train`` of at most ``chunk_size`` examples and at most what the memory budget holds."""
    for inputs, targets, _ in iter_chunks(train, budget_chunk(obj, train, chunk_size), ordered=True):
        yield inputs, targets


def _pair_matrix(
    obj: Objective,
    theta: Tensor,
    left: Tensor,
    train: Data,
    chunk_size: int | None,
    desc: str,
    show: bool | None,
    basis: Tensor | None = None,
) -> Tensor:
    """``left @ G_trainᵀ`` with train gradients computed chunk by chunk: ``[k, n_train]``.

    With ``basis`` (``[p, r]``), ``left`` is ``[k, r]`` and the result is ``left @ (G_train V)ᵀ``.
    """
    total = None
    chunk_size = budget_chunk(obj, train, chunk_size)
    if isinstance(train, (tuple, list)) and chunk_size:
        total = -(-num_examples(train) // chunk_size)
        if total <= 1 and show is None:
            show = False  # a single chunk needs no bar
    cols = []
    for x, y in progress(_train_chunks(train, chunk_size, obj), desc=desc, total=total, show=show):
        if basis is None:
            cols.append(left @ obj.per_example_grads(theta, (x, y)).T)
        else:
            cols.append(left @ obj.per_example_projections(theta, (x, y), basis).T)
    return torch.cat(cols, dim=1)


def _check_solver(solver: Solver, obj: Objective, theta: Tensor) -> None:
    """A solver fitted at another θ or on another objective is refused (see ``check_fitted_on``)."""
    check = getattr(solver, "check_fitted_on", None)
    if check is not None:
        check(obj, theta)


def influence(
    obj: Objective,
    theta: Tensor,
    solver: Solver,
    train: Data,
    test: Data,
    *,
    n: int | None = None,
    chunk_size: int | None = 1024,
    progress_bar: bool | None = None,
) -> Tensor:
    """Classical influence of every training example on every test loss.

    ``scores[i, j] = (1/n) ∇ℓ(test_i; θ)ᵀ (H + damping·I)⁻¹ ∇ℓ(train_j; θ)``: the first-order
    prediction of ``loss(test_i; θ without train_j) − loss(test_i; θ)`` when θ is re-optimised.
    Positive: train_j helps test_i.

    Args:
        obj: the training objective.
        theta: ``[p]`` parameters (ideally the optimum of ``obj.loss`` over ``train``).
        solver: a fitted solver (:class:`~influence_utils.solvers.ExactSolver`, CG, LiSSA, Arnoldi) whose H
            is the Hessian of ``obj.loss`` over the training set at ``theta``.
        train: training data, ``(inputs, targets)`` or a DataLoader (n examples).
        test: query data (n_test examples).
        n: the n in 1/n; defaults to the size of ``train``. Pass the full training-set size when
            ``train`` is a subset being scored.
        chunk_size: training examples whose gradients are held at once (fewer when the memory
            budget of θ's device, :func:`~influence_utils.resources.memory_budget`, holds fewer;
            the scores are the same).
        progress_bar: show a progress bar (default: only in interactive use).

    Returns:
        ``[n_test, n_train]``.
    """
    _check_solver(solver, obj, theta)
    n = num_examples(train) if n is None else n
    low_rank = _low_rank(solver, obj)
    if low_rank is not None:
        # H⁻¹ = V diag(1/(λ+d)) Vᵀ with r < p columns: score in the r-dimensional eigenbasis, so each
        # chunk of training examples costs its projected gradients G V ([chunk, r]; on dense models from
        # each layer's inputs and output gradients: Objective.per_example_projections) instead of a
        # [chunk, p] x [p, n_test] product.
        V, inv = low_rank
        left = obj.per_example_projections(theta, test, V) * inv  # [n_test, r]
        return _pair_matrix(obj, theta, left, train, chunk_size, "influence", progress_bar, basis=V) / n
    g_test = obj.per_example_grads(theta, test)
    solved = solver.solve(g_test)  # [n_test, p]: H⁻¹ ∇ℓ(test_i), one solve for all test examples
    return _pair_matrix(obj, theta, solved, train, chunk_size, "influence", progress_bar) / n


def _low_rank(solver: Solver, obj: Objective) -> tuple[Tensor, Tensor] | None:
    """``(V [p, r], 1/(λ + d) [r])`` for an eigen-solver holding fewer pairs than parameters, once
    a solve has passed the solver's own checks (a singular H + damping·I is refused); else None."""
    V = getattr(solver, "eigenvectors", None)
    lam = getattr(solver, "eigenvalues", None)
    if V is None or lam is None or V.ndim != 2 or V.shape[1] >= V.shape[0]:
        return None
    solver.solve(torch.zeros(1, obj.p, dtype=obj.dtype, device=obj.device))
    return V, 1.0 / (lam + solver.damping)


def self_influence(
    obj: Objective,
    theta: Tensor,
    solver: Solver,
    data: Data,
    *,
    n: int | None = None,
    chunk_size: int | None = 256,
) -> Tensor:
    """Self-influence ``(1/n) ∇ℓ(z_j)ᵀ (H + damping·I)⁻¹ ∇ℓ(z_j)`` of every example, ``[n]``.

    The predicted rise of an example's own loss when it is removed from training (positive for a
    positive-definite H); large values flag atypical or mislabelled examples.
    """
    _check_solver(solver, obj, theta)
    n = num_examples(data) if n is None else n
    low_rank = _low_rank(solver, obj)
    out = []
    for x, y in _train_chunks(data, chunk_size, obj):
        if low_rank is None:
            g = obj.per_example_grads(theta, (x, y))
            out.append((solver.solve(g) * g).sum(1))
        else:
            proj = obj.per_example_projections(theta, (x, y), low_rank[0])
            out.append((proj * proj * low_rank[1]).sum(1))
    return torch.cat(out) / n


def time_bounded_coefficients(eigenvalues: Tensor, steps: int, lr: float) -> Tensor:
    """``c(T) = (1 − (1 − ηλ)^T) / λ`` for each eigenvalue λ (``[r]`` in, ``[r]`` out).

    The coefficient of the linear response along an eigenvector after T gradient-descent steps:
    → 1/λ for λ > 0 (classical influence), = ηT at λ = 0 (TracIn), and grows like
    (1 + η|λ|)^T for λ < 0 (divergence). Computed stably near λ = 0.

    Raises:
        ValueError: ``lr`` is not a finite number > 0, or ``steps`` is not a non-negative integer.
    """
    lr = check_learning_rate(lr)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    lam = eigenvalues.to(torch.float64)
    x = lr * lam
    small = x.abs() < 1e-8
    safe_x = torch.where(small, torch.ones_like(x), x)
    # 1 − (1 − x)^T, via expm1/log1p where 1 − x > 0 for accuracy at small |x|
    pos = (1 - safe_x) > 0
    one_minus_pow = torch.where(
        pos,
        -torch.expm1(steps * torch.log1p(-safe_x.clamp(max=1 - 1e-16))),
        1 - (1 - safe_x) ** steps,
    )
    c = torch.where(small, lr * steps * (1 - (steps - 1) * x / 2), one_minus_pow / torch.where(small, torch.ones_like(lam), lam))
    return c.to(eigenvalues.dtype)


def time_bounded_influence(
    obj: Objective,
    theta: Tensor,
    solver: Solver,
    train: Data,
    test: Data,
    steps: int | Sequence[int],
    lr: float,
    *,
    outside: str = "flat",
    n: int | None = None,
    chunk_size: int | None = 1024,
) -> Tensor:
    """Influence over a bounded horizon of T gradient-descent steps from the checkpoint θ.

    ``scores[i, j] = (1/n) ∇ℓ(test_i)ᵀ C_T ∇ℓ(train_j)`` with
    ``C_T = Σ_r c_r(T) u_r u_rᵀ (+ outside part)`` and ``c(T) = (1 − (1 − η(λ+d))^T)/(λ+d)`` on the
    solver's eigenpairs (λ, u) and damping d: the first-order prediction of
    ``loss(test_i) − loss(test_i; unperturbed)`` after T steps of full-batch gradient descent with
    step ``lr`` on L without train_j, started at θ, holding H and the gradients fixed. Positive:
    train_j helps test_i. T = 1 gives :func:`tracin` at one checkpoint; T → ∞ gives
    :func:`influence` when H + dI is positive definite.

    Directions outside the solver's eigenspace: a rank-r solver (Arnoldi) only knows r eigenpairs.
    With ``outside="flat"`` (default) the rest of parameter space is treated as zero curvature, so
    its coefficient is c = ηT, exactly TracIn's; this keeps T = 1 equal to TracIn for any rank, but
    grows without bound in T. ``outside="drop"`` ignores those directions, as ABIF does.
    An :class:`~influence_utils.solvers.ExactSolver` covers all of parameter space, so the choice is moot.

    Args:
        obj, theta, train, test, n, chunk_size: as in :func:`influence`.
        solver: a fitted solver exposing ``eigenvalues`` and ``eigenvectors`` (Exact or Arnoldi).
        steps: T, an int, or a sequence of horizons evaluated together.
        lr: the gradient-descent step size η.
        outside: ``"flat"`` or ``"drop"``.

    Returns:
        ``[n_test, n_train]``, or ``[len(steps), n_test, n_train]`` for a sequence of horizons.
    """
    if not (hasattr(solver, "eigenvalues") and hasattr(solver, "eigenvectors")):
        raise TypeError(
            f"time_bounded_influence needs eigenpairs; {type(solver).__name__} has none. Use a fitted "
            "ExactSolver or ArnoldiSolver."
        )
    if outside not in ("flat", "drop"):
        raise ValueError(f"outside must be 'flat' or 'drop', got {outside!r}")
    check_learning_rate(lr)
    many = not isinstance(steps, int)
    horizons = list(steps) if many else [steps]
    if any(int(t) != t or t < 0 for t in horizons):
        raise ValueError(f"steps must be non-negative integers, got {steps}")
    _check_solver(solver, obj, theta)
    n = num_examples(train) if n is None else n
    lam = solver.eigenvalues + solver.damping
    V = solver.eigenvectors
    g_test = obj.per_example_grads(theta, test)
    p_test = g_test @ V  # [n_test, r]
    coefs = [time_bounded_coefficients(lam, int(T), lr) for T in horizons]
    outs = []
    for x, y in _train_chunks(train, chunk_size, obj):
        g = obj.per_example_grads(theta, (x, y))
        p_tr = g @ V
        # the part of g_testᵀ g_train outside span(V), shared by every horizon
        flat = g_test @ g.T - p_test @ p_tr.T if outside == "flat" else None
        per_t = []
        for T, c in zip(horizons, coefs):
            s = (p_test * c) @ p_tr.T
            if flat is not None:
                s = s + lr * T * flat
            per_t.append(s)
        outs.append(torch.stack(per_t))
    scores = torch.cat(outs, dim=2) / n
    return scores if many else scores[0]


def tracin(
    obj: Objective,
    checkpoints: Sequence[Tensor],
    learning_rates: Sequence[float],
    train: Data,
    test: Data,
    *,
    n: int | None = None,
    chunk_size: int | None = 1024,
) -> Tensor:
    """TracIn over checkpoints (Pruthi et al. 2020), in the units of :func:`influence`.

    ``scores[i, j] = (1/n) Σ_k η_k ∇ℓ(test_i; θ_k)ᵀ ∇ℓ(train_j; θ_k)``: the first-order change of
    test_i's loss when train_j's gradient is removed from each training interval k, ignoring how
    earlier changes propagate through curvature. Positive: train_j helps test_i.

    Args:
        checkpoints: parameters θ_k, each ``[p]`` (e.g. ``trajectory.thetas``), or a ``[K, p]`` tensor.
        learning_rates: η_k, the step size times the number of steps that checkpoint k stands for
            (e.g. ``trajectory.learning_rates``).

    Returns:
        ``[n_test, n_train]``.
    """
    if len(checkpoints) != len(learning_rates) or len(checkpoints) == 0:  # a list or a [K, p] tensor
        raise ValueError(
            f"need one learning rate per checkpoint, got {len(checkpoints)} checkpoints and "
            f"{len(learning_rates)} learning rates"
        )
    bad = [float(eta) for eta in learning_rates if not (math.isfinite(float(eta)) and float(eta) > 0)]
    if bad:
        raise ValueError(f"learning rates must be finite numbers > 0, got {bad}")
    n = num_examples(train) if n is None else n
    total = None
    for theta_k, eta in zip(checkpoints, learning_rates):
        left = float(eta) * obj.per_example_grads(theta_k, test)
        s = _pair_matrix(obj, theta_k, left, train, chunk_size, "tracin", False)
        total = s if total is None else total + s
    return total / n


def gradient_dot(obj: Objective, theta: Tensor, train: Data, test: Data, *, n: int | None = None, chunk_size: int | None = 1024) -> Tensor:
    """``(1/n) ∇ℓ(test_i)ᵀ ∇ℓ(train_j)``, ``[n_test, n_train]``: TracIn at one checkpoint with η = 1.

    The first-order change of test_i's loss, per unit step size, from removing train_j's gradient
    from one full-batch gradient step. Positive: train_j helps test_i.
    """
    n = num_examples(train) if n is None else n
    return _pair_matrix(obj, theta, obj.per_example_grads(theta, test), train, chunk_size, "gradient dot", False) / n


def gradient_cosine(obj: Objective, theta: Tensor, train: Data, test: Data, *, chunk_size: int | None = 1024) -> Tensor:
    """Cosine similarity of per-example gradients, ``[n_test, n_train]`` in [−1, 1].

    Unitless; same sign as the other scores (positive: a gradient step on train_j lowers
    test_i's loss, so train_j helps test_i).
    """
    g_test = obj.per_example_grads(theta, test)
    g_test = g_test / g_test.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cols = []
    for x, y in _train_chunks(train, chunk_size, obj):
        g = obj.per_example_grads(theta, (x, y))
        cols.append(g_test @ (g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)).T)
    return torch.cat(cols, dim=1)


def projected_gradients(obj: Objective, theta: Tensor, data: Data, basis: Tensor, *,
                        chunk_size: int | None = 1024) -> Tensor:
    """Per-example gradients projected on a basis, ``G V``, ``[n, r]``, without holding ``G`` (``[n, p]``).

    The gradients are computed ``chunk_size`` examples at a time (fewer when the memory budget of
    θ's device, :func:`~influence_utils.resources.memory_budget`, holds fewer) and projected at
    once, so the memory is that of one chunk plus the ``[n, r]`` result. Row i equals
    ``obj.per_example_grads(theta, data)[i] @ basis`` for any chunk size.

    Args:
        obj, theta: the objective and the parameters ``[p]``.
        data: ``(inputs, targets)`` or a DataLoader (n examples, in order).
        basis: ``[p, r]``, e.g. a solver's ``eigenvectors``.
        chunk_size: the largest chunk of examples whose gradients are held at once.

    Returns:
        ``[n, r]``.
    """
    rows = [obj.per_example_projections(theta, (x, y), basis) for x, y in _train_chunks(data, chunk_size, obj)]
    return torch.cat(rows)
