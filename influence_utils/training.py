"""Deterministic training that records its trajectory, and the ground truths influence predicts.

* :func:`train` — (mini-batch) gradient descent on ``obj.loss`` with a seeded batch order,
  optional per-example weights and an optional perturbation ε·Σℓ(z); records checkpoints.
* :func:`retrain_without` — the counterfactual runs: the same training with example(s) removed
  (weight 0, keeping the 1/n normalisation), vectorised over many removals with ``vmap``. From
  the initialisation it is leave-one-out retraining from scratch; from a checkpoint it is
  warm-start continuation; with ``method="newton"`` it is the exact leave-one-out optimum of a
  convex objective.
* :func:`paired_runs` — two runs from the same checkpoint and batch order that differ only by
  ε·ℓ(z): the setting of parameter divergence.
* :func:`minimize_newton` — the exact optimum of a small convex objective.

Both :func:`train` and :func:`retrain_without` take a ``proximal`` option: the objective gains
``(λ/2)‖θ − θ0‖²`` around the starting point θ0, and with ``bregman=True`` also loses the linear
term ``∇L(θ0)ᵀ(θ − θ0)``, so that θ0 is a stationary point when nothing is removed. The
counterfactual runs then compute the proximal response that damped influence (a solver with
``damping=λ``) estimates to first order (Bae et al. 2022).

Everything is a pure function of its arguments: the same seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from .batching import Data, validate_batch
from .objective import Objective
from .runs import (
    SGD,
    Proximal,
    descend,
    descend_rows,
    gd_schedule,
    newton_runs,
    tensor_data,
)

__all__ = [
    "Trajectory",
    "train",
    "retrain_without",
    "paired_runs",
    "minimize_newton",
    "removal_weights",
    "loss_changes",
]


@dataclass
class Trajectory:
    """A recorded training run.

    Attributes:
        thetas: parameters ``[p]`` at each recorded step, the start and the end included.
        steps: the step number of each entry of ``thetas`` (0 is the start).
        lr: the step size η.
        losses: ``[steps]`` the (mini-batch, weighted, perturbed) objective before each update.
        batch_indices: ``[steps, batch_size]`` example indices per step, ``None`` for full batch.
    """

    thetas: list[Tensor]
    steps: list[int]
    lr: float
    losses: Tensor
    batch_indices: Tensor | None = field(default=None, repr=False)

    @property
    def final(self) -> Tensor:
        """The parameters after the last step, ``[p]``."""
        return self.thetas[-1]

    @property
    def checkpoints(self) -> list[Tensor]:
        """Checkpoints for :func:`~influence_utils.scores.tracin`: every recorded θ but the last."""
        return self.thetas[:-1]

    @property
    def learning_rates(self) -> list[float]:
        """η times the steps each checkpoint stands for (until the next one), for TracIn."""
        return [self.lr * (b - a) for a, b in zip(self.steps[:-1], self.steps[1:])]

    def __repr__(self) -> str:
        return (
            f"Trajectory(steps={self.steps[-1]}, lr={self.lr}, checkpoints={len(self.thetas)}, "
            f"final loss={float(self.losses[-1]) if len(self.losses) else float('nan'):.4g})"
        )


def removal_weights(n: int, removals: Sequence[int | Sequence[int]], dtype=torch.float64,
                    device: torch.device | str | None = None) -> Tensor:
    """Weights ``[m, n]`` on ``device``: row k is all ones except zeros at ``removals[k]`` (an index or group)."""
    w = torch.ones(len(removals), n, dtype=dtype, device=device)
    for k, r in enumerate(removals):
        idx = torch.as_tensor([r] if isinstance(r, int) else list(r), dtype=torch.long, device=device)
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"removal {r} is out of range for {n} training examples")
        w[k, idx] = 0.0
    return w


def train(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    schedule: SGD | None = None,
    *,
    weights: Tensor | None = None,
    perturbation: tuple[Any, float] | None = None,
    progress_bar: bool | None = None,
    proximal: float = 0.0,
    bregman: bool = False,
    **sgd: Any,
) -> Trajectory:
    """Deterministic (mini-batch) gradient descent on ``obj.loss``, recording the trajectory.

    Each step takes ``θ ← θ − lr · ∇[(1/b) Σ_{i∈B} w_i ℓ(z_i; θ) + (wd/2)‖θ‖² + ε Σ_z ℓ(z; θ)]``
    on the batch B given by :func:`~influence_utils.runs.batch_order` (``seed``), the whole data
    when ``batch_size`` is ``None``: one run of :func:`~influence_utils.runs.descend`.

    Args:
        obj: the objective (model, loss, weight decay, selected parameters).
        theta0: starting parameters ``[p]`` (an initialisation or a checkpoint).
        data: ``(inputs, targets)`` tensors.
        schedule: an :class:`~influence_utils.runs.SGD`, or its fields as keywords
            (``steps=600, lr=0.3, batch_size=32``); θ is recorded at the schedule's recorded steps.
        weights: per-example weights ``[n]`` (0 removes an example, keeping the 1/n scaling).
        perturbation: ``(z, eps)`` adds ``eps · Σ_{z_k ∈ z} ℓ(z_k; θ)`` to every step's objective;
            ``z`` is an ``(inputs, targets)`` batch.
        progress_bar: show a progress bar (default: interactive use only).
        proximal: λ ≥ 0: add ``(λ/2)‖θ − theta0‖²`` to every step's objective, so training is
            fine-tuning that stays near its start (the proximal objective of Bae et al. 2022).
        bregman: also subtract ``∇L(theta0)ᵀ(θ − theta0)``, the linear term of the unweighted,
            unperturbed full-data objective at the start, so that ``theta0`` is a stationary
            point unless ``weights`` or ``perturbation`` change the objective. With ``proximal=λ``
            the response to a small perturbation is then, to first order, exactly the damped
            influence ``(H + λI)⁻¹`` at ``theta0``.

    Returns:
        A :class:`Trajectory`.

    Raises:
        FloatingPointError: when the loss becomes non-finite (lower ``lr``).
    """
    schedule = SGD.of(schedule, "train", **sgd)
    inputs, targets = tensor_data(data, "training data")
    n = targets.shape[0]
    if weights is not None and weights.shape != (n,):
        raise ValueError(f"weights must have shape [{n}], got {tuple(weights.shape)}")
    if perturbation is not None:
        validate_batch(perturbation[0])
    prox = Proximal.make(obj, theta0, (inputs, targets), proximal, bregman)
    thetas, at = [], []
    final, losses = descend(obj, theta0, (inputs, targets), schedule, weights=weights, perturbation=perturbation,
                            prox=prox, on_record=lambda t, theta: (thetas.append(theta), at.append(t)),
                            progress_bar=progress_bar)
    if at[-1] != schedule.steps:  # the end is always recorded
        thetas.append(final)
        at.append(schedule.steps)
    return Trajectory(thetas, at, schedule.lr, losses, schedule.order(n))


def paired_runs(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    z: Any,
    eps: float,
    schedule: SGD | None = None,
    **sgd: Any,
) -> tuple[Trajectory, Trajectory]:
    """Two runs from ``theta0`` with the same schedule (batch order) that differ only by ``eps · ℓ(z)``.

    ``schedule`` and ``sgd``: as in :func:`train`.

    Returns:
        ``(base, perturbed)`` trajectories; ``perturbed.thetas[k] − base.thetas[k]`` is the
        divergence at step ``base.steps[k]``.
    """
    schedule = SGD.of(schedule, "paired_runs", **sgd)
    return train(obj, theta0, data, schedule), train(obj, theta0, data, schedule, perturbation=(z, eps))


def minimize_newton(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    *,
    weights: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> Tensor:
    """The exact minimiser of a small, strictly convex ``obj.loss`` by damped Newton's method.

    Newton steps with the explicit Hessian and a backtracking line search, until the gradient
    norm is below ``tol``. For logistic regression and other convex models with weight decay.

    Returns:
        ``θ*`` ``[p]``.

    Raises:
        RuntimeError: if the gradient norm is still above ``tol`` after ``max_iter`` iterations.
    """
    theta = theta0.detach().clone()
    value = obj.loss(theta, data, weights)
    for _ in range(max_iter):
        g = obj.grad(theta, data, weights)
        if g.norm() <= tol:
            return theta
        h = obj.hessian(theta, data, weights=weights)
        step = torch.linalg.solve(h, g)
        if (g @ step) <= 0:  # not a descent direction: the objective is not convex here
            step = g
        t = 1.0
        while True:
            candidate = theta - t * step
            new_value = obj.loss(candidate, data, weights)
            if new_value <= value - 1e-4 * t * (g @ step) or t < 1e-10:
                break
            t *= 0.5
        theta, value = candidate, new_value
    g = obj.grad(theta, data, weights)
    if g.norm() > tol:
        raise RuntimeError(
            f"Newton did not converge in {max_iter} iterations (gradient norm {float(g.norm()):.2e} > "
            f"tol={tol:.0e}); is the objective convex? Add weight_decay or raise max_iter."
        )
    return theta


def retrain_without(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    removals: Sequence[int | Sequence[int]],
    schedule: SGD | None = None,
    *,
    method: str = "gd",
    newton_iterations: int = 10,
    tol: float = 1e-9,
    chunk: int = 64,
    progress_bar: bool | None = None,
    proximal: float = 0.0,
    bregman: bool = False,
    newton_hessian: str = "each",
    **sgd: Any,
) -> Tensor:
    """Final parameters of the counterfactual runs with each removal applied, ``[m, p]``.

    Removal k sets the weight of ``removals[k]`` (one index or a group of indices) to zero while
    keeping the 1/n normalisation: the objective ``(1/n) Σ_{i ∉ R} ℓ(z_i) + (wd/2)‖θ‖²`` that
    influence functions predict with ε = −1/n per removed example. Runs are vectorised with
    ``vmap``, ``chunk`` at a time.

    Args:
        obj, data: as in :func:`train`.
        theta0: where each run starts. With ``method="gd"``: the initialisation for leave-one-out
            retraining from scratch, or a checkpoint for warm-start continuation. With
            ``method="newton"``: a nearby point, normally the full-data optimum.
        removals: ``m`` indices or groups of indices.
        schedule: with ``method="gd"``: an :class:`~influence_utils.runs.SGD`, or its fields
            as keywords (``steps``, ``lr``, ``batch_size``, ``seed``), as in :func:`train`.
        method: ``"gd"`` — the schedule's gradient descent, the steps of :func:`train` with the
            same batch order; ``"newton"`` — the exact optimum of the (convex) objective by
            ``newton_iterations`` full Newton steps.
        tol: with ``"newton"``, the gradient norm every run must reach (else RuntimeError).
        chunk: runs vectorised together (memory grows with it).
        progress_bar: show a progress bar over chunks (default: interactive use only).
        proximal: λ ≥ 0: every run's objective gains ``(λ/2)‖θ − theta0‖²``. From a checkpoint
            this is the proximal response of Bae et al. (2022): fine-tuning without the example
            that is held near the checkpoint. With ``"gd"`` the runs are that fine-tuning; with
            ``"newton"`` they find its exact stationary point (a minimum when
            ``H + λI`` is positive definite; otherwise the nearby saddle, which is what
            damped influence linearises).
        bregman: as in :func:`train`: a checkpoint that is not an exact optimum then does not
            drift, and the first-order response to a removal is exactly damped influence at ``theta0``.
        newton_hessian: with ``"newton"``, ``"each"`` (every run's own Hessian, quadratic
            convergence) or ``"start"`` (the full-data Hessian at ``theta0`` plus ``proximal``,
            factorised once: a chord method), the ``hessian`` of :func:`~influence_utils.runs.newton_runs`.

    Returns:
        ``[m, p]``.

    Example:
        The proximal response to removing examples 3 and 7, and the damped influence that
        predicts it (``loss_changes(obj, thetas, theta0, test)`` ≈ ``scores[:, [3, 7]]``)::

            thetas = retrain_without(obj, theta0, train, [3, 7], method="newton", proximal=0.1,
                                     bregman=True, newton_hessian="start")
            scores = influence(obj, theta0, ExactSolver(damping=0.1).fit(obj, theta0, train),
                               train=train, test=test)
    """
    inputs, targets = tensor_data(data, "training data")
    W = removal_weights(targets.shape[0], removals, dtype=theta0.dtype, device=theta0.device)
    theta0 = theta0.detach()
    prox = Proximal.make(obj, theta0, (inputs, targets), proximal, bregman)
    if method == "newton":
        advice = "start closer to the optimum or raise newton_iterations"
        if prox is not None or newton_hessian == "start":
            advice = ("raise proximal (H + proximal·I must be safely positive definite at theta0; see "
                      "iu.curvature.spectrum_summary(...).min_damping), raise newton_iterations, or use "
                      "newton_hessian='each'")
        return newton_runs(obj, theta0.expand(W.shape[0], -1).clone(), data, W, prox=prox, iterations=newton_iterations,
                           tol=tol, hessian=newton_hessian, chunk=chunk, desc="counterfactual runs",
                           progress_bar=progress_bar, advice=advice)
    if method != "gd":
        raise ValueError(f"method must be 'gd' or 'newton', got {method!r}")
    return descend_rows(obj, theta0.expand(W.shape[0], -1), (inputs, targets), W,
                        gd_schedule(schedule, sgd, "retrain_without"), prox=prox, chunk=chunk,
                        desc="counterfactual runs", progress_bar=progress_bar)


def loss_changes(obj: Objective, thetas: Tensor, theta: Tensor, data: Data) -> Tensor:
    """Actual change of every example's loss between ``theta`` and each of ``thetas``.

    ``out[i, k] = ℓ(z_i; thetas[k]) − ℓ(z_i; theta)``: with ``thetas`` from
    :func:`retrain_without` this is the ground truth that influence scores predict, in the same
    layout (query dimension first, one column per removal).

    Args:
        thetas: ``[m, p]`` counterfactual parameters.
        theta: ``[p]`` the reference parameters.
        data: the query examples (n of them).

    Returns:
        ``[n, m]``.
    """
    if thetas.ndim != 2:
        raise ValueError(f"thetas must be [m, p], got {tuple(thetas.shape)}")
    reference = obj.per_example_losses(theta, data)
    after = vmap(lambda t: obj.per_example_losses(t, data))(thetas)  # [m, n]
    return after.T - reference[:, None]
