"""Parameter divergence: how far a perturbed training run drifts from the unperturbed one.

Train from a checkpoint θ₀ with step size η on the step objectives L_t (a mini-batch of
:meth:`~influence_utils.objective.Objective.loss`), once as is and once with ε·ℓ(z) added to
every step. Both runs see the same batches in the same order, so they differ *only* by ε. This
module measures and predicts what happens to that difference:

* :func:`perturbed_runs` — the runs themselves, for many (z, ε) at once (one ``vmap`` over the
  runs, the unperturbed run included as a row with ε = 0): the gap ‖θ_ε(t) − θ(t)‖ and the test
  losses at every recorded step, collected in a :class:`PerturbedRuns`.
* :func:`divergence_curve` — ‖θ_k(t) − θ_ref(t)‖ from recorded trajectories (e.g. from
  :func:`~influence_utils.training.paired_runs` or two :func:`~influence_utils.training.train` runs
  with different seeds: the noise floor).
* :func:`fit_growth_rate` — a log-linear fit of the exponential phase of a gap curve, its rate
  per step and the implied :term:`horizon` (:class:`GrowthFit`); :func:`curvature_growth_rate`
  is the rate a fixed Hessian implies.
* :func:`linear_response` — the first-order response δ(t) = ∂θ_ε(t)/∂ε along the unperturbed run,
  by the recursion ``δ_{t+1} = (I − ηH_t)δ_t − η∇ℓ(z, θ_t)`` with Hessian-vector products of each
  step's objective (:class:`LinearResponse`); :func:`fixed_curvature_response` is its closed form
  ``δ_T = −H⁻¹(I − (I − ηH)^T) g`` when H and g are held fixed.
* :func:`tracin_vs_steps` — TracIn summed over the checkpoints before each horizon T.
* the correlation of each estimator with the measured change as a function of T, with bootstrap
  intervals: :func:`~influence_utils.fading.correlation_table`.

**Sign and units.** A run with ε·ℓ(z) added changes test_i's loss by Δ_i(t). The measured
counterpart of a score (:meth:`PerturbedRuns.actual_scores`) is ``−(1/n)·Δ_i(t)/ε``: the change a
removal of z (ε = −1/n) causes, if the effect is linear in ε. It is in the units and sign of
:func:`~influence_utils.scores.influence`, :func:`~influence_utils.scores.time_bounded_influence`
and :func:`~influence_utils.scores.tracin` (positive: z helps test_i), with layout
``[steps, n_test, runs]``, query dimension first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap
from torch.utils._pytree import tree_map

from .batching import Data, index_batch, num_examples
from .objective import Objective
from .runs import SGD, descend, run_blocks, tensor_data
from .scores import gradient_dot, time_bounded_coefficients
from .stats import Interval
from .training import Trajectory

__all__ = [
    "PerturbedRuns",
    "perturbed_runs",
    "divergence_curve",
    "GrowthFit",
    "fit_growth_rate",
    "GrowthModels",
    "fit_growth_models",
    "curvature_growth_rate",
    "horizon",
    "LinearResponse",
    "linear_response",
    "fixed_curvature_response",
    "tracin_vs_steps",
]


# --------------------------------------------------------------------------- helpers


def _device_of(*values: Any) -> torch.device | None:
    """The device of the first tensor among ``values`` (``None``: none is a tensor, use the default)."""
    return next((v.device for v in values if isinstance(v, Tensor)), None)


def _as_eps(eps: float | Sequence[float] | Tensor, dtype: torch.dtype, device) -> Tensor:
    e = torch.as_tensor(eps, dtype=dtype, device=device).reshape(-1)
    if e.numel() == 0:
        raise ValueError("eps is empty: give one perturbation size or a list of them")
    if not torch.isfinite(e).all():
        raise ValueError(f"eps must be finite, got {e.tolist()}")
    return e


# --------------------------------------------------------------------------- paired runs


@dataclass
class PerturbedRuns:
    """Runs from one checkpoint, one batch order, that differ only by ε·ℓ(z).

    Row k of every ``[k, ...]`` tensor is the run with ``eps[k]·ℓ(z[z_index[k]])`` added to every
    step; the unperturbed run is stored apart (``base``, ``base_test_losses``).

    Attributes:
        steps: the recorded steps ``[R]`` (0 is the checkpoint).
        lr: the step size η.
        eps: ``[k]`` ε of each run.
        z_index: ``[k]`` which perturbing example (row of ``z``) each run used.
        gaps: ``[k, R]`` ‖θ_ε(t) − θ(t)‖ at the recorded steps.
        n: the number of training examples (the n of a removal, ε = −1/n).
        base: ``[R, p]`` θ(t) of the unperturbed run (``None`` with ``keep_base=False``).
        perturbed: ``[k, R, p]`` θ_ε(t) (``None`` with ``keep_thetas=False``, the default).
        base_test_losses: ``[R, n_test]`` ℓ(test_i; θ(t)) (``None`` without test data).
        test_losses: ``[k, R, n_test]`` ℓ(test_i; θ_ε(t)) (``None`` without test data).
        batch_indices: ``[steps, batch_size]`` the shared batch order, ``None`` for full batch.
        projections: ``[k, R, r]`` the coordinates ``(θ_ε(t) − θ(t))ᵀ V`` of each run's gap on the
            directions V ``[p, r]`` given as ``project`` (``None`` without them).
    """

    steps: list[int]
    lr: float
    eps: Tensor
    z_index: Tensor
    gaps: Tensor
    n: int
    base: Tensor = field(default=None, repr=False)
    perturbed: Tensor | None = field(default=None, repr=False)
    base_test_losses: Tensor | None = field(default=None, repr=False)
    test_losses: Tensor | None = field(default=None, repr=False)
    batch_indices: Tensor | None = field(default=None, repr=False)
    projections: Tensor | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        """Number of perturbed runs."""
        return int(self.eps.numel())

    def test_loss_changes(self, reference_losses: Tensor | None = None) -> Tensor:
        """Measured change of every test loss, ``[R, n_test, k]``: ℓ(test_i; θ_ε_k(t)) − ℓ(test_i; θ_ref(t)).

        Args:
            reference_losses: ``[R, n_test]`` test losses of another reference run (e.g. an
                unperturbed run with a different batch order, for the noise floor); default the
                unperturbed run of this batch order.
        """
        if self.test_losses is None:
            raise ValueError("these runs recorded no test losses: pass test=(inputs, targets) to perturbed_runs")
        ref = self.base_test_losses if reference_losses is None else reference_losses
        if ref.shape != self.base_test_losses.shape:
            raise ValueError(f"reference_losses must have shape {tuple(self.base_test_losses.shape)} "
                             f"[recorded steps, n_test], got {tuple(ref.shape)}")
        return (self.test_losses - ref.unsqueeze(0)).permute(1, 2, 0)

    def actual_scores(self, n: int | None = None, reference_losses: Tensor | None = None) -> Tensor:
        """The measured counterpart of an influence score, ``[R, n_test, k]``.

        ``−(1/n) · [ℓ(test_i; θ_ε_k(t)) − ℓ(test_i; θ(t))] / ε_k``: the change of test_i's loss
        that removing z (ε = −1/n) causes after t steps, if the effect is linear in ε. Same sign
        and units as :func:`~influence_utils.scores.influence`: positive means z helps test_i.

        Args:
            n: the n of 1/n (default: the training-set size the runs used).
            reference_losses: as in :meth:`test_loss_changes`.

        Raises:
            ValueError: if a run has ε = 0 (nothing to divide by).
        """
        if (self.eps == 0).any():
            raise ValueError("a run with eps = 0 has no effect to scale; drop it or use test_loss_changes()")
        n = self.n if n is None else n
        return -self.test_loss_changes(reference_losses) / (n * self.eps)

    def __repr__(self) -> str:
        return (f"PerturbedRuns(runs={self.k}, steps={self.steps[-1]}, recorded={len(self.steps)}, "
                f"lr={self.lr}, max gap={float(self.gaps.max()):.3g})")


def perturbed_runs(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    z: Any,
    eps: float | Sequence[float] | Tensor,
    schedule: SGD | None = None,
    *,
    test: Data = None,
    keep_thetas: bool = False,
    keep_base: bool = True,
    project: Tensor | None = None,
    chunk: int = 64,
    progress_bar: bool | None = None,
    **sgd: Any,
) -> PerturbedRuns:
    """Training runs from ``theta0`` perturbed by ε·ℓ(z), for every z and every ε, and the unperturbed run.

    Every run takes ``θ ← θ − lr·∇[obj.loss(θ, B_t) + ε·ℓ(z; θ)]`` with the batches B_t of
    :func:`~influence_utils.runs.batch_order` (``seed``): the steps of
    :func:`~influence_utils.training.train` with ``perturbation=(z, ε)``. All runs are stepped
    together in one ``vmap`` (:func:`~influence_utils.runs.descend`), ``chunk`` runs at a time; the unperturbed run is a row with ε = 0 in
    the same computation, so base and perturbed runs differ only by ε, not by rounding.

    Args:
        obj: the objective.
        theta0: the checkpoint ``[p]`` every run starts from.
        data: training data ``(inputs, targets)`` (n examples).
        z: the perturbing examples ``(inputs [m, ...], targets [m])``.
        eps: one ε or a list; every z is run with every ε (``k = m·len(eps)`` runs, z-major:
            run ``k`` uses ``z[k // len(eps)]`` and ``eps[k % len(eps)]``). ε = −1/n removes z
            from the objective (full batch) and ε > 0 up-weights it.
        schedule: as in :func:`~influence_utils.training.train`, shared by all runs (its seed
            gives them one batch order); ``record_every`` defaults to 1 in the keyword form, or
            lists the steps (e.g. log-spaced horizons ``[0, 1, 2, 5, 10, 20, 50, ...]``).
        test: optional query data: record ℓ(test_i; θ) at every recorded step of every run.
        keep_thetas: also keep the parameters of every perturbed run at every recorded step
            (``k·R·p`` numbers: mind the memory). By default only what the chapters read is kept:
            the gaps ``[k, R]``, the test losses ``[k, R, n_test]``, the projections and the
            unperturbed run's parameters ``[R, p]``.
        keep_base: keep the unperturbed run's parameters ``[R, p]`` (the checkpoints of
            :func:`tracin_vs_steps`, the reference of :func:`divergence_curve`); ``False`` drops
            them too, for a model whose ``R·p`` numbers do not fit.
        project: optional directions ``[p, r]`` (e.g. Hessian eigenvectors): record the gap's
            coordinates ``(θ_ε(t) − θ(t))ᵀ V`` at every recorded step, ``[k, R, r]``.
        chunk: runs stepped together. Memory: the parameters and gradients of ``chunk + 1`` runs
            (``2·(chunk + 1)·p`` numbers, plus a step's activations for each run); nothing of a
            run's past is kept beyond the recorded gaps, losses and projections.
        progress_bar: show a progress bar over steps (default: interactive use only).

    Returns:
        A :class:`PerturbedRuns`.

    Raises:
        FloatingPointError: if a run diverges (non-finite parameters; lower ``lr``).
    """
    if schedule is None:
        sgd.setdefault("record_every", 1)
    schedule = SGD.of(schedule, "perturbed_runs", **sgd)
    inputs, targets = tensor_data(data, "data")
    zx, zy = tensor_data(z, "z")
    obj.check_theta(theta0)
    n, m = int(targets.shape[0]), int(zy.shape[0])
    e = _as_eps(eps, theta0.dtype, theta0.device)
    z_index = torch.arange(m, device=theta0.device).repeat_interleave(e.numel())
    eps_all = e.repeat(m)
    if test is not None:
        tensor_data(test, "test")
    if project is not None and (project.ndim != 2 or project.shape[0] != theta0.numel()):
        raise ValueError(f"project must be directions [p={theta0.numel()}, r], got {tuple(project.shape)}")
    blocks, parts = list(run_blocks(eps_all.numel(), chunk, progress_bar=False)), []
    for ci, rows in enumerate(blocks):
        # row 0 is the unperturbed run (ε = 0; its z is a placeholder that contributes 0·∇ℓ)
        zi = torch.cat([z_index[rows][:1], z_index[rows]])
        zk = (tree_map(lambda t: t.unsqueeze(1), index_batch(zx, zi)), zy[zi].unsqueeze(1))  # one z per run
        ek = torch.cat([eps_all.new_zeros(1), eps_all[rows]])
        record = _Recorder(obj, test, keep_thetas, keep_base and ci == 0, project)
        descend(obj, theta0.detach().expand(len(zi), -1), (inputs, targets), schedule, perturbation=(zk, ek),
                on_record=record, desc=f"perturbed runs {ci + 1}/{len(blocks)}", progress_bar=progress_bar)
        parts.append({key: torch.stack(v, dim=1) for key, v in record.steps.items() if v})  # [rows, R, ...]
        del record  # its per-step tensors (with keep_thetas, views that keep each step's block alive)

    def cat(key: str, rows: slice = slice(None)) -> Tensor | None:
        return torch.cat([part[key][rows] for part in parts]) if key in parts[0] else None

    first = parts[0]
    return PerturbedRuns(schedule.recorded(), schedule.lr, eps_all, z_index, cat("gap"), n,
                         base=first["base"][0] if keep_base else None, perturbed=cat("theta"),
                         base_test_losses=first["loss"][0] if test is not None else None,
                         test_losses=cat("loss", slice(1, None)), batch_indices=schedule.order(n),
                         projections=cat("proj"))


class _Recorder:
    """What :func:`perturbed_runs` keeps at each recorded step of one block of runs (row 0
    unperturbed): the gaps, the test losses, the projections, and (if asked) the parameters."""

    def __init__(self, obj: Objective, test: Data, keep_thetas: bool, keep_base: bool, project: Tensor | None):
        self.obj, self.test, self.keep_thetas, self.keep_base, self.project = obj, test, keep_thetas, keep_base, project
        self.steps = {"gap": [], "base": [], "theta": [], "loss": [], "proj": []}

    def __call__(self, t: int, theta: Tensor) -> None:
        diff, b = theta[1:] - theta[:1], self.steps
        b["gap"].append(diff.norm(dim=-1))
        if self.keep_base:
            b["base"].append(theta[:1].clone())  # a copy: a view would keep all the block's runs
        if self.keep_thetas:
            b["theta"].append(theta[1:])
        if self.project is not None:
            b["proj"].append(diff @ self.project)
        if self.test is not None:
            b["loss"].append(vmap(lambda u: self.obj.per_example_losses(u, self.test))(theta))


def _thetas_of(run: Any, what: str) -> tuple[Tensor, list[int] | None]:
    if isinstance(run, Trajectory):
        return torch.stack(run.thetas), list(run.steps)
    if isinstance(run, Tensor):
        return run, None
    raise TypeError(f"{what} must be a Trajectory or a tensor of parameters, got {type(run).__name__}")


def divergence_curve(reference: Trajectory | Tensor, *others: Trajectory | Tensor) -> Tensor:
    """‖θ_k(t) − θ_ref(t)‖ at every recorded step, ``[k, R]``.

    Args:
        reference: the reference run: a :class:`~influence_utils.training.Trajectory` or its
            parameters ``[R, p]``.
        *others: runs to compare, each a Trajectory recorded at the same steps, a tensor
            ``[R, p]``, or a block ``[k, R, p]``.

    Example::

        base, pert = iu.paired_runs(obj, theta0, train, z, eps, steps=200, lr=0.1, record_every=1)
        gap = iu.divergence_curve(base, pert)[0]        # [201]
        noise = iu.divergence_curve(base, iu.train(obj, theta0, train, steps=200, lr=0.1,
                                                   batch_size=32, seed=1, record_every=1))
    """
    if not others:
        raise ValueError("divergence_curve needs a reference and at least one other run")
    ref, ref_steps = _thetas_of(reference, "reference")
    if ref.ndim != 2:
        raise ValueError(f"the reference must be [recorded steps, p], got {tuple(ref.shape)}")
    blocks = []
    for k, other in enumerate(others):
        th, st = _thetas_of(other, f"run {k}")
        if ref_steps is not None and st is not None and st != ref_steps:
            raise ValueError(f"run {k} was recorded at other steps than the reference; record both with the "
                             "same steps and record_every")
        th = th.unsqueeze(0) if th.ndim == 2 else th
        if th.shape[1:] != ref.shape:
            raise ValueError(f"run {k} has shape {tuple(th.shape)}, expected [k, {ref.shape[0]}, {ref.shape[1]}]")
        blocks.append((th - ref.unsqueeze(0)).norm(dim=-1))
    return torch.cat(blocks)


# --------------------------------------------------------------------------- growth rate


@dataclass
class GrowthFit:
    """A fitted exponential ``gap(t) ≈ exp(intercept + rate·t)`` (per curve).

    Attributes:
        rate: ``[...]`` growth rate per step (log units: the gap is multiplied by e^rate each step).
        intercept: ``[...]`` log of the fitted gap at step 0.
        r2: ``[...]`` coefficient of determination of the log-linear fit.
        window: ``(start, stop)`` the steps the fit used (inclusive).
        n_points: ``[...]`` points used per curve.
    """

    rate: Tensor
    intercept: Tensor
    r2: Tensor
    window: tuple[int, int]
    n_points: Tensor

    @property
    def doubling_steps(self) -> Tensor:
        """Steps for the gap to double, ``log 2 / rate`` (inf where it does not grow)."""
        return torch.where(self.rate > 0, math.log(2) / self.rate, torch.full_like(self.rate, math.inf))

    def predict(self, steps: Sequence[int] | Tensor) -> Tensor:
        """The fitted gap at ``steps`` ``[S]``: ``[..., S]``."""
        s = torch.as_tensor(steps, dtype=self.rate.dtype, device=self.rate.device)
        return torch.exp(self.intercept.unsqueeze(-1) + self.rate.unsqueeze(-1) * s)

    def horizon(self, tolerance: float) -> Tensor:
        """The step T* at which the fitted gap reaches ``tolerance``: :func:`horizon` from gap₀ =
        exp(intercept), the fitted gap at step 0 (the :term:`horizon` beyond which the runs are more
        than ``tolerance`` apart)."""
        return horizon(self.rate, torch.exp(self.intercept), tolerance)


def horizon(rate: float | Tensor, initial_gap: float | Tensor, tolerance: float) -> Tensor:
    """Steps until a gap growing like ``initial_gap · e^(rate·t)`` reaches ``tolerance``.

    ``T* = log(tolerance / initial_gap) / rate`` — the Grönwall-type horizon: with a single
    example's perturbation of size ``|ε|·‖∇ℓ(z)‖`` per step, first-order predictions can hold only
    while the gap is small, i.e. for ``T ≲ log(1/|ε|)/rate``. 0 if the gap starts at or above
    ``tolerance``; ``inf`` if it starts below and does not grow.
    """
    device = _device_of(rate, initial_gap)
    rate = torch.as_tensor(rate, dtype=torch.float64, device=device)
    gap0 = torch.as_tensor(initial_gap, dtype=torch.float64, device=device)
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if (gap0 <= 0).any():
        raise ValueError("initial_gap must be > 0 (a gap of 0 never grows)")
    log_ratio = math.log(tolerance) - torch.log(gap0)
    out = torch.where(rate > 0, log_ratio / torch.where(rate > 0, rate, torch.ones_like(rate)),
                      torch.full_like(log_ratio, math.inf))
    return torch.where(log_ratio <= 0, torch.zeros_like(out), out)


def fit_growth_rate(
    steps: Sequence[int] | Tensor,
    gaps: Tensor,
    window: tuple[int, int] | None = None,
) -> GrowthFit:
    """Least-squares fit of ``log gap(t) = intercept + rate·t`` over a window of steps.

    Vectorised over curves: ``gaps`` may be ``[R]`` or ``[..., R]`` (e.g. ``runs.gaps``), one fit
    per curve. Points with a gap of 0 (step 0, where the runs coincide) or a non-finite gap are
    left out.

    Args:
        steps: the recorded steps ``[R]``.
        gaps: ``[..., R]`` gap curves.
        window: ``(start, stop)``, fit only the steps ``start <= t <= stop`` — choose the
            exponential phase on a log plot, after the transient of the first steps and before
            saturation. ``None``: every step with a positive gap.

    Returns:
        A :class:`GrowthFit` with ``rate`` etc. of shape ``gaps.shape[:-1]``.

    Raises:
        ValueError: if a curve has fewer than 2 usable points in the window.
    """
    g = gaps.to(torch.float64)
    s = torch.as_tensor(steps, dtype=torch.float64, device=g.device)
    if s.ndim != 1 or g.shape[-1] != s.numel():
        raise ValueError(f"gaps must be [..., {s.numel()}] to match steps [R], got {tuple(g.shape)}")
    lo, hi = (float(s.min()), float(s.max())) if window is None else (float(window[0]), float(window[1]))
    if lo > hi:
        raise ValueError(f"window start {lo} is after its stop {hi}")
    use = (s >= lo) & (s <= hi) & (g > 0) & torch.isfinite(g)
    w = use.to(torch.float64)
    count = w.sum(-1)
    if (count < 2).any():
        raise ValueError(f"some curve has fewer than 2 positive gaps in the window {(lo, hi)}; widen the window")
    y = torch.where(use, g.clamp_min(1e-300).log(), torch.zeros_like(g))
    sx = torch.where(use, s.expand_as(g), torch.zeros_like(g))
    mx, my = sx.sum(-1) / count, y.sum(-1) / count
    dx = (sx - mx.unsqueeze(-1)) * w
    dy = (y - my.unsqueeze(-1)) * w
    sxx = (dx * dx).sum(-1)
    if (sxx == 0).any():
        raise ValueError("the usable points of some curve all lie at one step; widen the window")
    rate = (dx * dy).sum(-1) / sxx
    intercept = my - rate * mx
    resid = (y - intercept.unsqueeze(-1) - rate.unsqueeze(-1) * sx) * w
    syy = (dy * dy).sum(-1)
    r2 = torch.where(syy > 0, 1 - (resid * resid).sum(-1) / syy.clamp_min(1e-300), torch.ones_like(syy))
    return GrowthFit(rate, intercept, r2, (int(lo), int(hi)), count.to(torch.long))


@dataclass
class GrowthModels:
    """An exponential and a power law fitted to the median gap curve of a panel, with intervals.

    ``exponential``: ``log gap = a + rate·t``; ``power law``: ``log gap = a + exponent·log t``,
    both by least squares on the median over the panel of the gap curves, in a window of steps.
    Every number is an :class:`~influence_utils.stats.Interval` whose bounds come from a bootstrap
    over the panel's curves (the perturbed examples z are the resampling unit).

    Attributes:
        rate: growth rate per step of the exponential (log units).
        exponent: exponent of the power law.
        r2_exponential: R² of the exponential fit (in log gap).
        r2_power: R² of the power-law fit.
        window: ``(start, stop)`` steps used.
        n_curves: curves in the panel.
    """

    rate: Any
    exponent: Any
    r2_exponential: Any
    r2_power: Any
    window: tuple[int, int]
    n_curves: int

    @property
    def shape(self) -> str:
        """``"power law"`` or ``"exponential"`` when one fit's R² interval lies wholly above the other's, else ``"undecided"``."""
        if self.r2_power.above(self.r2_exponential):
            return "power law"
        if self.r2_exponential.above(self.r2_power):
            return "exponential"
        return "undecided"


def _log_fits(t: Tensor, log_gap: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Slopes and R² of ``log_gap [B, m]`` against ``t`` and against ``log t`` (vectorised over B)."""
    def fit(x: Tensor) -> tuple[Tensor, Tensor]:
        dx = x - x.mean()
        dy = log_gap - log_gap.mean(-1, keepdim=True)
        slope = (dy * dx).sum(-1) / (dx * dx).sum()
        resid = dy - slope.unsqueeze(-1) * dx
        syy = (dy * dy).sum(-1)
        r2 = torch.where(syy > 0, 1 - (resid * resid).sum(-1) / syy.clamp_min(1e-300), torch.ones_like(syy))
        return slope, r2

    rate, r2_exp = fit(t)
    exponent, r2_pow = fit(t.log())
    return rate, r2_exp, exponent, r2_pow


def fit_growth_models(
    steps: Sequence[int] | Tensor,
    gaps: Tensor,
    window: tuple[int, int] | None = None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GrowthModels:
    """Exponential or power law? Both fitted to the median gap of a panel, with bootstrap intervals.

    Args:
        steps: recorded steps ``[R]``.
        gaps: ``[k, R]`` one gap curve per perturbed example (e.g. ``runs.gaps``), k ≥ 2.
        window: ``(start, stop)`` steps to fit (default: every step ≥ 1 with a positive median gap).
        n_boot: bootstrap replicates (panel curves resampled with replacement).
        confidence: two-sided level of the intervals.
        seed: seeds the bootstrap.

    Returns:
        A :class:`GrowthModels`; :attr:`GrowthModels.shape` names the better fit when their R²
        intervals do not overlap.

    Raises:
        ValueError: fewer than 2 curves, fewer than 3 usable steps in the window, or a window
            that includes step 0 (a power law has no value there).
    """
    # on the host: a small [k, R] panel, bootstrapped with a seeded CPU generator, so that the
    # intervals are the same numbers whichever device the gaps come from (floats are returned)
    s = torch.as_tensor(steps, dtype=torch.float64, device="cpu")  # host: see above
    g = torch.as_tensor(gaps, device="cpu").detach().to(torch.float64)
    if g.ndim != 2 or g.shape[1] != s.numel():
        raise ValueError(f"gaps must be [k, R] with R = {s.numel()} recorded steps, got {tuple(g.shape)}")
    if g.shape[0] < 2:
        raise ValueError("need at least 2 gap curves to bootstrap over the panel")
    lo, hi = (1.0, float(s.max())) if window is None else (float(window[0]), float(window[1]))
    if lo <= 0:
        raise ValueError(f"the window must start at a step >= 1 (log t), got {window}")
    use = (s >= lo) & (s <= hi) & (g.median(0).values > 0)
    if int(use.sum()) < 3:
        raise ValueError(f"fewer than 3 recorded steps with a positive gap in the window {(lo, hi)}; widen it")
    t, g = s[use], g[:, use].clamp_min(1e-300)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, g.shape[0], (int(n_boot), g.shape[0]), generator=gen)  # host: see above
    curves = torch.cat([g.median(0).values[None], g[idx].median(1).values])  # [1 + B, m]
    fits = _log_fits(t, curves.log())
    alpha = (1 - confidence) / 2

    def interval(values: Tensor) -> Interval:
        q = torch.quantile(values[1:], torch.tensor([alpha, 1 - alpha], dtype=values.dtype, device=values.device))
        return Interval(float(values[0]), float(q[0]), float(q[1]), confidence, int(g.shape[0]))

    rate, r2_exp, exponent, r2_pow = (interval(v) for v in fits)
    return GrowthModels(rate=rate, exponent=exponent, r2_exponential=r2_exp, r2_power=r2_pow,
                        window=(int(t.min()), int(t.max())), n_curves=int(g.shape[0]))


def curvature_growth_rate(eigenvalues: Tensor, lr: float) -> float:
    """Growth rate per step that a fixed Hessian implies: ``log max_i |1 − η λ_i|``.

    Gradient descent multiplies the component of a perturbation along eigenvector i by
    ``1 − ηλ_i`` each step. It grows where ``λ < 0`` (factor ``1 + η|λ|``) or where ``λ > 2/η``
    (unstable step). Compare with :func:`fit_growth_rate` on measured gaps. Grönwall's
    inequality bounds it by ``log(1 + η·max|λ|)``.

    Args:
        eigenvalues: ``[r]`` Hessian eigenvalues (e.g. ``ExactSolver(...).fit(...).eigenvalues``).
        lr: step size η.

    Returns:
        float: the rate per step; negative when every direction contracts.
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64, device=_device_of(eigenvalues))
    return float(torch.log((1 - lr * lam).abs().max()))


# --------------------------------------------------------------------------- linear response


@dataclass
class LinearResponse:
    """The first-order response δ(t) = ∂θ_ε(t)/∂ε of a run perturbed by ε·ℓ(z), along the unperturbed run.

    Attributes:
        steps: recorded steps ``[R]``.
        lr: the step size η.
        delta: ``[m, R, p]`` δ(t) per perturbing example (per unit ε): θ_ε(t) ≈ θ(t) + ε·δ(t).
        thetas: ``[R, p]`` the unperturbed run θ(t).
        n: number of training examples.
    """

    steps: list[int]
    lr: float
    delta: Tensor = field(repr=False)
    thetas: Tensor = field(repr=False)
    n: int

    def gaps(self, eps: float | Sequence[float] | Tensor) -> Tensor:
        """Predicted gaps ``|ε|·‖δ(t)‖``: ``[m·len(eps), R]``, rows in the order of :func:`perturbed_runs`."""
        e = _as_eps(eps, self.delta.dtype, self.delta.device)
        norms = self.delta.norm(dim=-1)  # [m, R]
        return (norms.unsqueeze(1) * e.abs()[None, :, None]).reshape(-1, norms.shape[-1])

    def scores(self, obj: Objective, test: Data, n: int | None = None) -> Tensor:
        """First-order prediction of removing z, ``[R, n_test, m]``: ``−(1/n)·∇ℓ(test_i; θ(t))ᵀ δ(t)``.

        The best any first-order method can do: it follows the actual trajectory and propagates
        the perturbation through every step's curvature. Units and sign of
        :func:`~influence_utils.scores.influence` (positive: z helps test_i).
        """
        n = self.n if n is None else n
        out = [obj.per_example_grads(theta, test) @ self.delta[:, r].T for r, theta in enumerate(self.thetas)]
        return -torch.stack(out) / n


def linear_response(
    obj: Objective,
    theta0: Tensor,
    data: Data,
    z: Any,
    schedule: SGD | None = None,
    *,
    progress_bar: bool | None = None,
    **sgd: Any,
) -> LinearResponse:
    """The linear response δ(t) = ∂θ_ε(t)/∂ε at ε = 0, for every z, by the recursion along the run.

    Differentiating one step ``θ_ε ← θ_ε − η∇[L_t(θ_ε) + εℓ(z; θ_ε)]`` in ε at ε = 0 gives

        δ_{t+1} = (I − ηH_t) δ_t − η ∇ℓ(z; θ_t),    δ_0 = 0,

    with H_t the Hessian of step t's objective (``obj.loss`` on batch B_t, weight decay
    included) at the unperturbed θ_t. This function runs the unperturbed training of
    :func:`perturbed_runs` (same arguments, same batches) and carries δ for all m examples along
    with one block Hessian-vector product per step. No matrix is formed; memory is ``m·R·p``.

    Args:
        obj, theta0, data, schedule, sgd, progress_bar: as in :func:`perturbed_runs`.
        z: the perturbing examples ``(inputs [m, ...], targets [m])``.

    Returns:
        A :class:`LinearResponse`; ``θ(t) + ε·delta[j, r]`` is the first-order prediction of the
        run perturbed by ``ε·ℓ(z_j)`` at step ``steps[r]``.
    """
    if schedule is None:
        sgd.setdefault("record_every", 1)
    schedule = SGD.of(schedule, "linear_response", **sgd)
    tensor_data(z, "z")
    obj.check_theta(theta0)
    n, m, lr = int(tensor_data(data, "data")[1].shape[0]), num_examples(z), schedule.lr
    delta = theta0.new_zeros(m, theta0.numel())
    deltas, thetas = [], []

    def record(t: int, theta: Tensor) -> None:
        deltas.append(delta)
        thetas.append(theta)

    def carry(t: int, theta: Tensor, batch: Data) -> None:  # δ ← δ − η(H_t δ + ∇ℓ(z; θ_t)), before θ's step
        nonlocal delta
        delta = delta - lr * (obj.hvp(theta, batch, delta) + obj.per_example_grads(theta, z))

    descend(obj, theta0, data, schedule, on_record=record, on_step=carry, desc="linear response",
            progress_bar=progress_bar)
    return LinearResponse(schedule.recorded(), lr, torch.stack(deltas, dim=1), torch.stack(thetas), n)


def fixed_curvature_response(
    curvature: Tensor | Any,
    g: Tensor,
    steps: int | Sequence[int],
    lr: float,
    *,
    outside: str = "flat",
) -> Tensor:
    """Closed form of the linear response for a fixed Hessian H and gradient g: ``δ_T = −H⁻¹(I − (I − ηH)^T) g``.

    In H's eigenbasis (λ_i, u_i), ``δ_T = −Σ_i c_i(T) ⟨u_i, g⟩ u_i`` with
    ``c(T) = (1 − (1 − ηλ)^T)/λ`` (:func:`~influence_utils.scores.time_bounded_coefficients`):
    → 1/λ for λ > 0 (classical influence), ηT at λ = 0 (TracIn), exponential growth for λ < 0.
    Well defined for singular and indefinite H (no inverse is taken).

    Args:
        curvature: the Hessian ``[p, p]`` (symmetric), or a fitted solver with ``eigenvalues``
            and ``eigenvectors`` (:class:`~influence_utils.solvers.ExactSolver`,
            :class:`~influence_utils.solvers.ArnoldiSolver`; its damping is added to λ).
        g: ``[p]`` or ``[m, p]`` gradients ∇ℓ(z).
        steps: T, or a sequence of horizons.
        lr: step size η.
        outside: for a rank-limited eigenspace, ``"flat"`` treats the rest of parameter space as
            zero curvature (coefficient ηT) and ``"drop"`` ignores it, as in
            :func:`~influence_utils.scores.time_bounded_influence`.

    Returns:
        δ_T of the shape of ``g``, or ``[len(steps), *g.shape]`` for a sequence of horizons.
    """
    if isinstance(curvature, Tensor):
        if curvature.ndim != 2 or curvature.shape[0] != curvature.shape[1]:
            raise ValueError(f"curvature must be a square Hessian [p, p], got {tuple(curvature.shape)}")
        lam, V = torch.linalg.eigh(0.5 * (curvature + curvature.T))
    elif hasattr(curvature, "eigenvalues") and hasattr(curvature, "eigenvectors"):
        lam, V = curvature.eigenvalues + getattr(curvature, "damping", 0.0), curvature.eigenvectors
    else:
        raise TypeError("curvature must be a Hessian tensor [p, p] or a fitted ExactSolver/ArnoldiSolver")
    if outside not in ("flat", "drop"):
        raise ValueError(f"outside must be 'flat' or 'drop', got {outside!r}")
    if g.shape[-1] != V.shape[0]:
        raise ValueError(f"g must have last dimension p = {V.shape[0]}, got {tuple(g.shape)}")
    many = not isinstance(steps, int)
    horizons = list(steps) if many else [steps]
    proj = g @ V  # [..., r]
    rest = g - proj @ V.T
    out = []
    for T in horizons:
        d = -(proj * time_bounded_coefficients(lam, int(T), lr)) @ V.T
        if outside == "flat":
            d = d - lr * int(T) * rest
        out.append(d)
    return torch.stack(out) if many else out[0]


# --------------------------------------------------------------------------- estimators vs T


def tracin_vs_steps(
    obj: Objective,
    checkpoints: Sequence[Tensor] | Tensor,
    checkpoint_steps: Sequence[int],
    lr: float,
    train: Data,
    test: Data,
    horizons: Sequence[int],
    *,
    n: int | None = None,
) -> Tensor:
    """TracIn for every horizon T, summing the checkpoints taken before T, ``[len(horizons), n_test, n_train]``.

    ``scores_T[i, j] = (1/n) Σ_k η·(min(s_{k+1}, T) − s_k)·∇ℓ(test_i; θ_k)ᵀ ∇ℓ(train_j; θ_k)`` over
    checkpoints θ_k taken at steps s_k < T (the last one stands for the steps up to T). One
    checkpoint at step 0 gives ``ηT·(1/n)∇ℓ(test)ᵀ∇ℓ(train)``, the first term of
    :func:`~influence_utils.scores.time_bounded_influence`. Same units and sign as
    :func:`~influence_utils.scores.tracin` (positive: train_j helps test_i).

    Args:
        checkpoints: θ_k, a list of ``[p]`` or a tensor ``[K, p]`` (e.g. ``runs.base[::10]``).
        checkpoint_steps: the step s_k of each checkpoint, increasing.
        lr: step size η.
        train, test: the examples to score (``train`` is the perturbing z).
        horizons: the horizons T.
        n: the n of 1/n (default: the size of ``train``).
    """
    if len(checkpoints) != len(checkpoint_steps) or len(checkpoints) == 0:
        raise ValueError(f"need one step per checkpoint, got {len(checkpoints)} checkpoints and "
                         f"{len(checkpoint_steps)} steps")
    s = list(checkpoint_steps)
    if any(b <= a for a, b in zip(s[:-1], s[1:])):
        raise ValueError(f"checkpoint_steps must be increasing, got {s}")
    n = num_examples(train) if n is None else n
    dots = torch.stack([gradient_dot(obj, th, train, test, n=n) for th in checkpoints])  # [K, n_test, n_train]
    starts = torch.tensor(s, dtype=dots.dtype, device=dots.device)
    ends = torch.cat([starts[1:], torch.full((1,), math.inf, dtype=dots.dtype, device=dots.device)])
    out = []
    for T in horizons:
        weight = lr * (ends.clamp_max(float(T)) - starts).clamp_min(0)
        out.append(torch.einsum("k,kij->ij", weight, dots))
    return torch.stack(out)
