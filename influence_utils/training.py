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
from torch.func import grad, grad_and_value, vmap

from .batching import Data, subset, validate_batch
from .objective import Objective
from .utils import progress

__all__ = [
    "Trajectory",
    "batch_order",
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


def batch_order(n: int, steps: int, batch_size: int | None = None, seed: int = 0) -> Tensor | None:
    """The example indices used at each step, ``[steps, batch_size]`` (``None`` = full batch).

    Consecutive slices of a stream of seeded random permutations of ``range(n)``: every epoch
    sees each example once, and the order depends on ``seed`` only.
    """
    if batch_size is None or batch_size >= n:
        return None
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    perms = [torch.randperm(n, generator=gen) for _ in range(-(-need // n))]  # host: the same order on every device
    return torch.cat(perms)[:need].view(steps, batch_size)


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


def _tensor_data(data: Data) -> tuple[Any, Tensor]:
    if not isinstance(data, (tuple, list)):
        raise TypeError("training needs tensor data (inputs, targets) so batches can be indexed; got a "
                        f"{type(data).__name__}")
    return validate_batch(data)


def _step_objective(obj: Objective, inputs: Any, targets: Tensor, order: Tensor | None, t: int,
                    weights: Tensor | None, perturbation: tuple[Any, float] | None,
                    prox: "_Proximal | None" = None):
    if order is None:
        batch, w = (inputs, targets), weights
    else:
        idx = order[t]
        batch = subset((inputs, targets), idx)
        w = None if weights is None else weights[idx]

    def f(theta: Tensor) -> Tensor:
        value = obj.loss(theta, batch, w)
        if perturbation is not None:
            (zx, zy), eps = perturbation
            value = value + eps * obj.losses(theta, zx, zy).sum()
        if prox is not None:
            value = value + prox(theta)
        return value

    return f


class _Proximal:
    """The terms ``(λ/2)‖θ − θ0‖² − cᵀ(θ − θ0)`` added by the ``proximal`` option.

    ``c`` is ``∇L(θ0)`` of the unperturbed, unweighted full-data objective with ``bregman=True``
    (θ0 is then a stationary point of the objective when nothing is removed), else zero.
    """

    def __init__(self, obj: Objective, theta0: Tensor, data: Data, proximal: float, bregman: bool) -> None:
        if not (proximal >= 0 and proximal < float("inf")):
            raise ValueError(f"proximal must be a finite number >= 0 (the λ of (λ/2)‖θ − θ0‖²), got {proximal}")
        self.strength = float(proximal)
        self.anchor = theta0.detach()
        self.linear = obj.grad(self.anchor, data).detach() if bregman else None

    def __call__(self, theta: Tensor) -> Tensor:
        d = theta - self.anchor
        value = 0.5 * self.strength * d.pow(2).sum()
        if self.linear is not None:
            value = value - self.linear @ d
        return value

    @staticmethod
    def make(obj: Objective, theta0: Tensor, data: Data, proximal: float, bregman: bool) -> "_Proximal | None":
        if proximal == 0 and not bregman:
            return None
        return _Proximal(obj, theta0, data, proximal, bregman)


def record_steps(steps: int, record_every: int | Sequence[int] | None) -> list[int]:
    """The steps at which a run records θ: 0 and ``steps`` for ``None``, every ``record_every``
    steps plus the last for an int, or the given steps (sorted, within ``[0, steps]``)."""
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    if record_every is None:
        return [0, steps]
    if not isinstance(record_every, int):
        at = sorted({int(t) for t in record_every})
        if not at or at[0] < 0 or at[-1] > steps:
            raise ValueError(f"recorded steps must lie in [0, {steps}], got {list(record_every)}")
        return at
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    return sorted(set(range(0, steps, record_every)) | {steps})


def train(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    *,
    steps: int,
    lr: float,
    batch_size: int | None = None,
    seed: int = 0,
    weights: Tensor | None = None,
    perturbation: tuple[Any, float] | None = None,
    record_every: int | Sequence[int] | None = None,
    progress_bar: bool | None = None,
    proximal: float = 0.0,
    bregman: bool = False,
) -> Trajectory:
    """Deterministic (mini-batch) gradient descent on ``obj.loss``, recording the trajectory.

    Each step takes ``θ ← θ − lr · ∇[(1/b) Σ_{i∈B} w_i ℓ(z_i; θ) + (wd/2)‖θ‖² + ε Σ_z ℓ(z; θ)]``
    on the batch B given by :func:`batch_order` (``seed``), the whole data when ``batch_size`` is
    ``None``.

    Args:
        obj: the objective (model, loss, weight decay, selected parameters).
        theta0: starting parameters ``[p]`` (an initialisation or a checkpoint).
        data: ``(inputs, targets)`` tensors.
        steps: number of updates.
        lr: step size η.
        batch_size: examples per step; ``None`` = full-batch gradient descent.
        seed: seeds the batch order.
        weights: per-example weights ``[n]`` (0 removes an example, keeping the 1/n scaling).
        perturbation: ``(z, eps)`` adds ``eps · Σ_{z_k ∈ z} ℓ(z_k; θ)`` to every step's objective;
            ``z`` is an ``(inputs, targets)`` batch.
        record_every: record θ every this many steps (the start and end are always recorded),
            or a list of the steps to record (e.g. :func:`~influence_utils.fading.log_steps`).
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
    inputs, targets = _tensor_data(data)
    n = targets.shape[0]
    if weights is not None and weights.shape != (n,):
        raise ValueError(f"weights must have shape [{n}], got {tuple(weights.shape)}")
    if perturbation is not None:
        validate_batch(perturbation[0])
    order = batch_order(n, steps, batch_size, seed)
    prox = _Proximal.make(obj, theta0, (inputs, targets), proximal, bregman)
    record = set(record_steps(steps, record_every))
    theta = theta0.detach().clone()
    thetas, at, losses = [], [], []
    for t in progress(range(steps), desc="training", total=steps, show=progress_bar):
        if t in record:
            thetas.append(theta)
            at.append(t)
        g, value = grad_and_value(_step_objective(obj, inputs, targets, order, t, weights, perturbation, prox))(theta)
        if not torch.isfinite(value):
            raise FloatingPointError(f"training diverged at step {t} (loss {float(value)}); lower lr={lr}")
        theta = theta - lr * g
        losses.append(value.detach())
    thetas.append(theta)
    at.append(steps)
    return Trajectory(thetas, at, float(lr), torch.stack(losses) if losses else theta.new_zeros(0), order)


def paired_runs(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    z: Any,
    eps: float,
    *,
    steps: int,
    lr: float,
    batch_size: int | None = None,
    seed: int = 0,
    record_every: int | Sequence[int] | None = None,
) -> tuple[Trajectory, Trajectory]:
    """Two runs from ``theta0`` with the same batch order that differ only by ``eps · ℓ(z)``.

    Returns:
        ``(base, perturbed)`` trajectories; ``perturbed.thetas[k] − base.thetas[k]`` is the
        divergence at step ``base.steps[k]``.
    """
    kw = dict(steps=steps, lr=lr, batch_size=batch_size, seed=seed, record_every=record_every)
    base = train(obj, theta0, data, **kw)
    perturbed = train(obj, theta0, data, perturbation=(z, eps), **kw)
    return base, perturbed


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
    *,
    method: str = "gd",
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    newton_iterations: int = 10,
    tol: float = 1e-9,
    chunk: int = 64,
    progress_bar: bool | None = None,
    proximal: float = 0.0,
    bregman: bool = False,
    newton_hessian: str = "each",
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
        method: ``"gd"`` — ``steps`` of gradient descent exactly as :func:`train` with the same
            ``seed`` (same batch order); ``"newton"`` — the exact optimum of the (convex) objective
            by ``newton_iterations`` full Newton steps.
        tol: with ``"newton"``, the gradient norm every run must reach (else RuntimeError).
        chunk: runs vectorised together (memory grows with it).
        progress_bar: show a progress bar over chunks (default: interactive use only).
        proximal: λ ≥ 0: every run's objective gains ``(λ/2)‖θ − theta0‖²``. From a checkpoint
            this is the proximal response of Bae et al. (2022): fine-tuning without the example
            that is held near the checkpoint. With ``"gd"`` the runs are that fine-tuning; with
            ``"newton"`` they find its exact stationary point (a minimum when
            ``H + λI`` is positive definite; otherwise the nearby saddle, which is what
            damped influence linearises).
        bregman: also subtract ``∇L(theta0)ᵀ(θ − theta0)`` (full data, nothing removed), so
            that ``theta0`` is stationary when nothing is removed: a checkpoint that is not an
            exact optimum then does not drift, and the first-order response to a removal is
            exactly damped influence at ``theta0``.
        newton_hessian: with ``"newton"``: ``"each"`` — every run uses the Hessian at its own
            iterate (quadratic convergence, one ``[p, p]`` Hessian per run and iteration);
            ``"start"`` — all runs share the full-data Hessian at ``theta0`` (plus ``proximal``),
            factorised once (a chord method: linear convergence, but each iteration costs one
            gradient per run; it stops early once every run of a chunk reaches ``tol``). Either
            way every run must reach ``tol``.

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
    inputs, targets = _tensor_data(data)
    n = targets.shape[0]
    W = removal_weights(n, removals, dtype=theta0.dtype, device=theta0.device)
    theta0 = theta0.detach()
    prox = _Proximal.make(obj, theta0, (inputs, targets), proximal, bregman)
    if newton_hessian not in ("each", "start"):
        raise ValueError(f"newton_hessian must be 'each' or 'start', got {newton_hessian!r}")

    def run_loss(t: Tensor, w: Tensor) -> Tensor:
        value = obj.loss(t, data, w)
        return value if prox is None else value + prox(t)

    if method == "newton" and newton_hessian == "start":
        h0 = obj.hessian(theta0, data)
        if prox is not None:
            h0 = h0 + prox.strength * torch.eye(obj.p, dtype=h0.dtype, device=h0.device)
        lu, pivots = torch.linalg.lu_factor(h0)

        def run_block(ws: Tensor) -> Tensor:
            thetas = theta0.expand(ws.shape[0], -1)
            for _ in range(newton_iterations):
                g = vmap(grad(run_loss))(thetas, ws)  # [k, p]
                if g.norm(dim=1).max() <= tol:  # every run has settled
                    break
                thetas = thetas - torch.linalg.lu_solve(lu, pivots, g.T).T
            return thetas
    elif method == "newton":
        def run(w: Tensor) -> Tensor:
            theta = theta0
            for _ in range(newton_iterations):
                g = grad(lambda t: run_loss(t, w))(theta)
                h = obj.hessian(theta, data, weights=w)
                if prox is not None:
                    h = h + prox.strength * torch.eye(obj.p, dtype=h.dtype, device=h.device)
                theta = theta - torch.linalg.solve(h, g)
            return theta
    elif method == "gd":
        if steps is None or lr is None:
            raise ValueError("method='gd' needs steps and lr")
        order = batch_order(n, steps, batch_size, seed)

        def run(w: Tensor) -> Tensor:
            theta = theta0
            for t in range(steps):
                theta = theta - lr * grad(_step_objective(obj, inputs, targets, order, t, w, None, prox))(theta)
            return theta
    else:
        raise ValueError(f"method must be 'gd' or 'newton', got {method!r}")
    if method != "newton" or newton_hessian != "start":
        run_block = vmap(run)
    starts = range(0, W.shape[0], chunk)
    out = torch.cat([run_block(W[i : i + chunk]) for i in progress(starts, desc="counterfactual runs",
                                                                   total=len(starts), show=progress_bar)])
    if method == "newton":
        advice = "start closer to the optimum or raise newton_iterations"
        if prox is not None or newton_hessian == "start":
            advice = ("raise proximal (H + proximal·I must be safely positive definite at theta0; see "
                      "iu.curvature.spectrum_summary(...).min_damping), raise newton_iterations, or use "
                      "newton_hessian='each'")
        finite = torch.isfinite(out).all(dim=1)
        gnorm = torch.full((out.shape[0],), float("inf"), dtype=out.dtype, device=out.device)
        if finite.any():
            gnorm[finite] = vmap(lambda t, w: grad(run_loss)(t, w).norm())(out[finite], W[finite])
        if (gnorm > tol).any():
            raise RuntimeError(
                f"Newton did not reach tol={tol:.0e} for {int((gnorm > tol).sum())} removals (worst "
                f"gradient norm {float(gnorm.max()):.2e}); {advice}"
            )
    elif not torch.isfinite(out).all():
        raise FloatingPointError("a counterfactual run diverged (non-finite parameters); lower lr")
    return out



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
