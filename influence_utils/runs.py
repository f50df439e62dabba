"""One training-run engine: the schedule, the step, and the loop every ground truth runs on.

Every way this package trains is the same loop over the same step:

* :func:`~influence_utils.training.train` — one run, recording its trajectory;
* :func:`~influence_utils.training.retrain_without` and
  :func:`~influence_utils.perturbation.weighted_runs` — runs over rows of per-example weights;
* :func:`~influence_utils.divergence.perturbed_runs` — runs over (z, ε), the unperturbed run as
  a row with ε = 0;
* the fine-tuning of :func:`~influence_utils.correction.correct` — runs over selected subsets.

This module holds that loop and what it is made of:

* :class:`SGD` — the schedule (steps, step size, batch size, the seed of the batch order, the
  recorded steps), one frozen value passed wherever a run is asked for;
* :func:`step_loss` — the objective of one step of one run:
  ``(1/b) Σ_{i∈B_t} w_i ℓ(z_i; θ) + (wd/2)‖θ‖² + ε Σ_z ℓ(z; θ)`` plus an optional proximal term;
* :func:`descend` — gradient descent on it, for one run (θ ``[p]``) or a block of runs
  (θ ``[k, p]``, stepped together in one ``vmap``);
* :func:`newton_runs` — the second method: the runs' exact optima by Newton's method;
* :class:`Proximal` — the ``(λ/2)‖θ − θ0‖² − cᵀ(θ − θ0)`` term of the proximal (Bregman) runs.

Because every entry point steps its runs through :func:`descend`, runs with the same schedule,
data and start give bit-identical parameters whichever entry point asked for them, when they sit
at the same row of a block of the same size (lone runs, θ ``[p]`` as in ``train``, likewise among
themselves). Between rows, block sizes (the ``chunk`` of the entry points) and a lone run, the
batched kernels may round differently (a row's place in memory can change the SIMD path): such
runs agree to rounding (about 1e-16 relative in float64, 1e-7 in float32), not to the bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, vmap

from .batching import Data, subset, validate_batch
from .objective import Objective
from .utils import progress

__all__ = ["SGD", "batch_order", "record_steps", "Proximal", "step_loss", "descend", "descend_rows", "gd_schedule",
           "run_blocks", "newton_runs", "tensor_data"]


def batch_order(n: int, steps: int, batch_size: int | None = None, seed: int = 0) -> Tensor | None:
    """The example indices used at each step, ``[steps, batch_size]`` (``None`` = full batch).

    Consecutive slices of a stream of seeded random permutations of ``range(n)``: every epoch
    sees each example once, and the order depends on ``seed`` only.
    """
    if batch_size is None or batch_size >= n:
        return None
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return _draw_order(int(n), int(steps), int(batch_size), int(seed)).clone()


@functools.lru_cache(maxsize=64)
def _draw_order(n: int, steps: int, batch_size: int, seed: int) -> Tensor:
    """The draw behind :func:`batch_order`, cached: a run differentiated inside ``vmap`` (which
    refuses random draws) finds the order drawn by an earlier call outside it."""
    gen = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    perms = [torch.randperm(n, generator=gen) for _ in range(-(-need // n))]  # host: the same order on every device
    return torch.cat(perms)[:need].view(steps, batch_size)


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


@dataclass(frozen=True)
class SGD:
    """A gradient-descent schedule: what every training run of this package is given.

    Example:
        ``iu.train(obj, theta0, data, iu.SGD(600, 0.3, batch_size=32))``; the same schedule,
        twice as long: ``schedule.replace(steps=1200)``. Every function that takes a schedule
        also takes its fields as keywords (``steps=600, lr=0.3, batch_size=32``).

    Attributes:
        steps: number of updates (≥ 0).
        lr: the step size η (> 0).
        batch_size: examples per step; ``None`` (or ≥ n) = full-batch gradient descent.
        seed: seeds the batch order (:func:`batch_order`); runs with the same seed see the same
            batches.
        record_every: record θ every this many steps (the start and end always), a tuple of
            the steps to record, or ``None``: the start and the end.
    """

    steps: int
    lr: float
    batch_size: int | None = None
    seed: int = 0
    record_every: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        try:
            steps = operator.index(self.steps)  # an int, a NumPy or 0-d torch integer; not a float
        except TypeError:
            steps = -1
        if isinstance(self.steps, bool) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        object.__setattr__(self, "steps", steps)
        lr = float(self.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0 (the step size η), got {self.lr!r}")
        object.__setattr__(self, "lr", lr)
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or None (full batch), got {self.batch_size!r}")
        if self.record_every is not None and not isinstance(self.record_every, int):
            object.__setattr__(self, "record_every", tuple(int(t) for t in self.record_every))
        record_steps(self.steps, self.record_every)  # raises for recorded steps outside [0, steps]

    def replace(self, **changes: Any) -> SGD:
        """A copy with ``changes`` (field names of :class:`SGD`)."""
        return dataclasses.replace(self, **changes)

    def order(self, n: int) -> Tensor | None:
        """The batch indices of every step for ``n`` examples, ``[steps, batch_size]`` (``None``: full batch)."""
        return batch_order(n, self.steps, self.batch_size, self.seed)

    def recorded(self) -> list[int]:
        """The recorded steps (:func:`record_steps`)."""
        return record_steps(self.steps, self.record_every)

    @classmethod
    def of(cls, schedule: SGD | None = None, what: str = "this run", **fields: Any) -> SGD:
        """``schedule`` with ``fields`` replaced, or a new schedule from ``fields`` alone.

        The keyword form of every function that takes a schedule: ``train(obj, θ, data,
        steps=5, lr=0.1)`` is ``train(obj, θ, data, SGD(5, 0.1))``.

        Raises:
            TypeError: for a field :class:`SGD` does not have, or when neither a schedule nor
                ``steps`` and ``lr`` are given.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(names))
        if unknown:
            raise TypeError(f"unknown argument(s) {unknown}; a schedule has the fields {names}")
        if schedule is not None:
            if not isinstance(schedule, SGD):
                raise TypeError(f"schedule must be an iu.SGD, got a {type(schedule).__name__}")
            return schedule.replace(**fields) if fields else schedule
        if "steps" not in fields or "lr" not in fields:
            raise TypeError(f"{what} needs a schedule: pass iu.SGD(steps, lr, ...) or steps= and lr=")
        return cls(**fields)


def tensor_data(data: Data, what: str = "data") -> tuple[Any, Tensor]:
    """``(inputs, targets)`` of tensor data, checked; a DataLoader is refused (batches must be indexable)."""
    if not isinstance(data, (tuple, list)):
        raise TypeError(f"{what} must be tensor data (inputs, targets) so batches can be indexed; got a "
                        f"{type(data).__name__}")
    return validate_batch(data)


class Proximal:
    """The terms ``(λ/2)‖θ − θ0‖² − cᵀ(θ − θ0)`` of the proximal option of the runs.

    ``c`` is ``∇L(θ0)`` of the unperturbed, unweighted full-data objective with ``bregman=True``
    (θ0 is then a stationary point of the objective when nothing is removed), else zero.

    Args:
        obj: the objective.
        theta0: the anchor θ0, ``[p]``.
        data: the full training data ``(inputs, targets)`` (or a DataLoader) whose gradient is ``c``.
        proximal: λ ≥ 0.
        bregman: subtract the linear term.
    """

    def __init__(self, obj: Objective, theta0: Tensor, data: Any, proximal: float, bregman: bool) -> None:
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
    def make(obj: Objective, theta0: Tensor, data: Any, proximal: float, bregman: bool) -> Proximal | None:
        """The term, or ``None`` when it is zero (``proximal=0`` without ``bregman``)."""
        if proximal == 0 and not bregman:
            return None
        return Proximal(obj, theta0, data, proximal, bregman)


def step_loss(obj: Objective, theta: Tensor, batch: Data, weights: Tensor | None = None, z: Data | None = None,
              eps: Tensor | float | None = None, prox: Proximal | None = None) -> Tensor:
    """The objective of one step of one run, a scalar (what :func:`descend` differentiates).

    ``obj.loss(θ, batch, weights) + eps · Σ_{z_k ∈ z} ℓ(z_k; θ) + prox(θ)``: the (weighted)
    mini-batch loss with weight decay, the perturbation, and the proximal term. ``weights``
    are the batch's ``[b]`` weights; ``z`` an ``(inputs, targets)`` batch.
    """
    value = obj.loss(theta, batch) if weights is None else obj.loss(theta, batch, weights)
    if z is not None:
        value = value + eps * obj.losses(theta, z[0], z[1]).sum()
    if prox is not None:
        value = value + prox(theta)
    return value


def descend(
    obj: Objective,
    theta: Tensor,
    data: Data,
    schedule: SGD,
    *,
    weights: Tensor | None = None,
    perturbation: tuple[Data, Tensor | float] | None = None,
    prox: Proximal | None = None,
    data_per_run: bool = False,
    on_record: Callable[[int, Tensor], None] | None = None,
    on_step: Callable[[int, Tensor, Any], None] | None = None,
    desc: str = "training",
    progress_bar: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Gradient descent by ``schedule`` on :func:`step_loss`: one run, or a block of runs in one ``vmap``.

    Step t of every run takes ``θ ← θ − lr·∇ step_loss(θ; B_t)`` on the batch B_t of
    ``schedule.order(n)``, the same for every run of the block.

    Args:
        obj: the objective.
        theta: the start: ``[p]`` for one run, ``[k, p]`` for k runs (each row a run's own start).
        data: ``(inputs [n, ...], targets [n])`` shared by the runs; with ``data_per_run``, one data
            set per run, ``(inputs [k, n, ...], targets [k, n])`` (full batch only).
        schedule: steps, lr, batch size and seed (its ``record_every`` says when ``on_record`` is called).
        weights: per-example weights, ``[n]`` for one run, ``[k, n]`` for a block (``None``: all 1).
        perturbation: ``(z, eps)``: adds ``eps · Σ_{z_k∈z} ℓ(z_k; θ)``. One run: ``z`` a batch and
            ``eps`` a float; a block: ``z`` one batch per run (``inputs [k, m, ...]``,
            ``targets [k, m]``) and ``eps`` ``[k]``.
        prox: the proximal term, the same for every run.
        on_record: called as ``on_record(t, θ)`` at every recorded step (θ ``[p]`` or ``[k, p]``).
        on_step: called as ``on_step(t, θ, batch)`` before step t's update (e.g. to carry a
            tangent along the run, as :func:`~influence_utils.divergence.linear_response` does).
        desc, progress_bar: the progress bar over steps (default: interactive use only).

    Returns:
        ``(θ after the last step, losses)``: ``[p]`` and ``[steps]`` for one run, ``[k, p]`` and
        ``[steps, k]`` for a block; ``losses[t]`` is step t's objective before its update.

    Raises:
        FloatingPointError: a run's loss or parameters became non-finite (lower lr).
    """
    one = theta.ndim == 1
    inputs, targets = validate_batch(data) if not data_per_run else data
    n = int(targets.shape[-1])
    if data_per_run and schedule.batch_size is not None and schedule.batch_size < n:
        raise ValueError("runs with their own data sets step on full batches; set batch_size=None")
    step = _step_gradient(obj, prox, one, weights is not None, perturbation is not None, data_per_run)
    order = schedule.order(n)
    record = set(schedule.recorded())
    z, eps = perturbation if perturbation is not None else (None, None)
    theta = theta.detach().clone()
    losses = []
    for t in progress(range(schedule.steps + 1), desc=desc, total=schedule.steps + 1, show=progress_bar):
        if on_record is not None and t in record:
            on_record(t, theta)
        if t == schedule.steps:
            break
        batch, w = (inputs, targets), weights
        if order is not None:
            batch = subset((inputs, targets), order[t])
            w = None if weights is None else weights[..., order[t]]
        if on_step is not None:
            on_step(t, theta, batch)
        g, value = step(theta, batch, w, z, eps)
        if not torch.isfinite(value).all():
            raise FloatingPointError(f"{desc} diverged at step {t} (loss {_worst(value)}); lower lr={schedule.lr}")
        theta = theta - schedule.lr * g
        del g  # not kept to the next step: a block's gradients are as large as its parameters
        losses.append(value.detach())
    if not torch.isfinite(theta).all():
        raise FloatingPointError(f"{desc} diverged (non-finite parameters); lower lr={schedule.lr}")
    stacked = torch.stack(losses) if losses else theta.new_zeros((0,) if one else (0, theta.shape[0]))
    return theta, stacked


def gd_schedule(schedule: SGD | None, sgd: dict, what: str) -> SGD:
    """The schedule of a ``method="gd"`` call: ``schedule`` with the keyword fields ``sgd`` (:meth:`SGD.of`).

    Raises:
        ValueError: neither a schedule nor ``steps`` and ``lr`` were given.
    """
    if schedule is None and not {"steps", "lr"} <= set(sgd):
        raise ValueError("method='gd' needs steps and lr: a schedule iu.SGD(steps, lr, ...), or steps= and lr=")
    return SGD.of(schedule, what, **sgd)


def descend_rows(obj: Objective, starts: Tensor, data: Data, weights: Tensor, schedule: SGD, *,
                 prox: Proximal | None = None, chunk: int = 64, desc: str = "runs",
                 progress_bar: bool | None = None) -> Tensor:
    """Final parameters ``[m, p]`` of m runs, run k from ``starts[k]`` with the per-example weights
    ``weights[k]`` (``[m, n]``), :func:`descend` ``chunk`` runs at a time."""
    return torch.cat([descend(obj, starts[rows], data, schedule, weights=weights[rows], prox=prox, desc=desc)[0]
                      for rows in run_blocks(weights.shape[0], chunk, desc, progress_bar)])


def run_blocks(m: int, chunk: int, desc: str = "runs", progress_bar: bool | None = None) -> Iterator[slice]:
    """The slices of ``m`` runs, ``chunk`` at a time (the blocks :func:`descend` steps together), with a progress bar."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (runs vectorised together), got {chunk}")
    starts = range(0, m, chunk)
    return (slice(a, min(a + chunk, m)) for a in progress(starts, desc=desc, total=len(starts), show=progress_bar))


def _step_gradient(obj: Objective, prox: Proximal | None, one: bool, weighted: bool, perturbed: bool,
                   data_per_run: bool) -> Callable:
    """``(θ, batch, w, z, eps) -> (∇ step_loss, step_loss)``, vmapped over the runs of a block."""
    def f(theta, batch, w, z, eps):
        return step_loss(obj, theta, batch, w, z, eps, prox)

    g = grad_and_value(f)
    if one:
        return g
    return vmap(g, in_dims=(0, 0 if data_per_run else None, 0 if weighted else None, 0 if perturbed else None,
                            0 if perturbed else None))


def _worst(value: Tensor) -> str:
    bad = value[~torch.isfinite(value)] if value.ndim else value
    return f"{float(bad.reshape(-1)[0])}"


def newton_runs(
    obj: Objective,
    starts: Tensor,
    data: Data,
    weights: Tensor,
    *,
    prox: Proximal | None = None,
    iterations: int = 10,
    tol: float = 1e-9,
    hessian: str = "each",
    chunk: int = 64,
    desc: str = "Newton runs",
    progress_bar: bool | None = None,
    advice: str = "start closer to the optimum or raise newton_iterations",
) -> Tensor:
    """The stationary points of the runs' objectives ``obj.loss(θ, data, w_k) + prox(θ)``, by Newton's method, ``[k, p]``.

    Args:
        starts: ``[k, p]``, one start per run (normally the unweighted optimum).
        weights: ``[k, n]``, one row of per-example weights per run.
        prox: the proximal term shared by the runs.
        iterations: Newton steps per run.
        tol: the gradient norm every run must reach.
        hessian: ``"each"``: every run uses the Hessian at its own iterate (quadratic
            convergence, one ``[p, p]`` Hessian per run and step); ``"start"``: all runs share
            the full-data Hessian at ``starts[0]`` (plus the proximal λ), factorised once (a chord
            method: linear convergence, one gradient per run and step; a block stops early once
            all its runs reach ``tol``).
        chunk: runs vectorised together.
        advice: what the error suggests when a run misses ``tol``.

    Raises:
        FloatingPointError: a run's parameters became non-finite.
        RuntimeError: a run's gradient norm is still above ``tol``.
    """
    if hessian not in ("each", "start"):
        raise ValueError(f"newton_hessian must be 'each' or 'start', got {hessian!r}")

    def run_loss(t: Tensor, w: Tensor) -> Tensor:
        value = obj.loss(t, data, w)
        return value if prox is None else value + prox(t)

    def damped(h: Tensor) -> Tensor:
        return h if prox is None else h + prox.strength * torch.eye(obj.p, dtype=h.dtype, device=h.device)

    if hessian == "start":
        lu, pivots = torch.linalg.lu_factor(damped(obj.hessian(starts[0], data)))

        def block(thetas: Tensor, ws: Tensor) -> Tensor:
            for _ in range(iterations):
                g = vmap(grad(run_loss))(thetas, ws)  # [k, p]
                if g.norm(dim=1).max() <= tol:  # every run has settled
                    break
                thetas = thetas - torch.linalg.lu_solve(lu, pivots, g.T).T
            return thetas
    else:
        def run(theta: Tensor, w: Tensor) -> Tensor:
            for _ in range(iterations):
                g = grad(run_loss)(theta, w)
                theta = theta - torch.linalg.solve(damped(obj.hessian(theta, data, weights=w)), g)
            return theta
        block = vmap(run)
    out = torch.cat([block(starts[rows], weights[rows]) for rows in run_blocks(weights.shape[0], chunk, desc, progress_bar)])
    finite = torch.isfinite(out).all(dim=1)
    gnorm = torch.full((out.shape[0],), float("inf"), dtype=out.dtype, device=out.device)
    if finite.any():
        gnorm[finite] = vmap(lambda t, w: grad(run_loss)(t, w).norm())(out[finite], weights[finite])
    if (gnorm > tol).any():
        raise RuntimeError(
            f"Newton did not reach tol={tol:.0e} for {int((gnorm > tol).sum())} of {out.shape[0]} runs (worst "
            f"gradient norm {float(gnorm.max()):.2e}); {advice}"
        )
    return out
