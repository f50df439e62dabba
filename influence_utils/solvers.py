"""Inverse-Hessian-vector products: exact, conjugate gradient, LiSSA and Arnoldi (ABIF).

Every solver has one interface::

    solver = iu.ArnoldiSolver(rank=50, iterations=200).fit(obj, theta, train)
    x = solver.solve(v)        # (H + damping·I)⁻¹ v for v of shape [p] or [k, p]

where H is the Hessian of ``obj.loss`` over ``train`` at ``theta``. ``solver.hvp_count`` counts
Hessian-vector products spent (a block of k vectors counts k). :class:`ExactSolver` and
:class:`ArnoldiSolver` also expose ``.eigenvalues`` ``[r]`` (of H, undamped, descending) and
``.eigenvectors`` ``[p, r]``, which the time-bounded influence needs.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from .batching import (
    Data,
    named_tensors,
    num_examples,
    subset,
    validate_batch,
)
from .objective import Objective

__all__ = [
    "Solver",
    "ExactSolver",
    "CGSolver",
    "LissaSolver",
    "ArnoldiSolver",
    "LissaDivergenceError",
    "ConvergenceWarning",
    "FewerEigenpairsWarning",
]


@runtime_checkable
class Solver(Protocol):
    """What the scores need of a solver: ``fit`` on the training objective, then ``solve``.

    The four solvers here follow it; so can one of your own (the scores call nothing else,
    except ``eigenvalues`` ``[r]`` and ``eigenvectors`` ``[p, r]`` where a low-rank or
    time-bounded score uses them).

    Attributes:
        damping: λ ≥ 0; ``solve`` applies ``(H + λI)⁻¹``.
    """

    damping: float

    def fit(self, obj: Objective, theta: Tensor, data: Data) -> Solver:
        """Prepare to solve with the Hessian of ``obj.loss`` over ``data`` at ``theta`` ``[p]``; returns self."""
        ...

    def solve(self, v: Tensor) -> Tensor:
        """``(H + damping·I)⁻¹ v`` for ``v`` of shape ``[p]`` or ``[k, p]`` (same shape out)."""
        ...


class LissaDivergenceError(RuntimeError):
    """LiSSA's recursion diverged: ``scale`` too small or ``damping`` too small.

    Attributes:
        step: the recursion step at which the divergence was detected (1-based).
        depth: the depth the solver was asked for.
        scale: the solver's ``scale``.
        damping: the solver's ``damping``.
        growth: the largest ``‖x_step‖ / ‖v‖`` over the right-hand sides at that step.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int | None = None,
        depth: int | None = None,
        scale: float | None = None,
        damping: float | None = None,
        growth: float | None = None,
    ) -> None:
        super().__init__(message)
        self.step, self.depth, self.scale, self.damping, self.growth = step, depth, scale, damping, growth


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


class FewerEigenpairsWarning(UserWarning):
    """An eigen-solver kept fewer eigenpairs than the ``rank`` it was asked for."""


def _nonfinite_source(obj: Objective, theta: Tensor, data: Data, losses: bool = True) -> str | None:
    """Where a NaN or inf in the curvature comes from: θ, an input, a target or a loss (None when
    ``losses`` is False and θ and the data are finite)."""
    if not torch.isfinite(theta).all():
        bad = (~torch.isfinite(theta)).nonzero().flatten()
        return f"theta has {bad.numel()} non-finite entries (first at index {int(bad[0])})"
    inputs, targets = data if isinstance(data, (tuple, list)) and len(data) == 2 else (data, None)
    leaves = [("targets", targets)] + named_tensors(inputs)
    for name, t in leaves:
        if isinstance(t, Tensor) and t.is_floating_point() and t.ndim >= 1 and not torch.isfinite(t).all():
            rows = (~torch.isfinite(t.reshape(t.shape[0], -1))).any(1).nonzero().flatten()
            return (f"the training data: {name} has non-finite values in {rows.numel()} examples "
                    f"(first: example {int(rows[0])}); remove or repair them")
    if not losses:
        return None
    try:
        losses = obj.per_example_losses(theta, data)
    except Exception:  # noqa: BLE001 - the diagnosis must not hide the original problem
        return "the Hessian-vector products (the inputs, targets and θ are finite)"
    if not torch.isfinite(losses).all():
        rows = (~torch.isfinite(losses)).nonzero().flatten()
        return (f"the per-example losses: {rows.numel()} examples have a non-finite loss at theta "
                f"(first: example {int(rows[0])}); the model overflows on them (check the input scale "
                "and theta)")
    return ("the second derivatives themselves overflow (the inputs, targets, θ and losses are "
            "finite); check the scale of the inputs and of theta, or compute in float64")


def _check_finite(result: Tensor, what: str, obj: Objective, theta: Tensor, data: Data) -> Tensor:
    if not torch.isfinite(result).all():
        raise FloatingPointError(
            f"the {what} contains NaN or inf, so every score would be NaN; it comes from "
            f"{_nonfinite_source(obj, theta, data)}"
        )
    return result


def _refuse_empty(solver: str, obj: Any, data: Data) -> None:
    """Refuse training data with no examples when fitting on an :class:`Objective` (counted only
    where that is free: tensor pairs and DataLoaders over a sized dataset)."""
    sized = isinstance(data, (tuple, list)) or hasattr(getattr(data, "dataset", None), "__len__")
    if isinstance(obj, Objective) and sized and num_examples(data) == 0:
        raise ValueError(
            f"{solver}.fit got training data with no examples (n = 0): the Hessian is an average over "
            "the training examples, undefined for an empty set. Fit on the training set the model was "
            "trained on, and check the split, filter or DataLoader that produced it"
        )


def _objective_signature(obj: Any) -> tuple | None:
    """What identifies an objective for a fitted solver; None for operators that are not an
    :class:`Objective` (e.g. an explicit matrix), which are not checked."""
    if not isinstance(obj, Objective):
        return None
    loss = getattr(obj.loss_fn, "__qualname__", None) or type(obj.loss_fn).__name__
    return (type(obj.model).__name__, tuple(obj.names), obj.weight_decay, loss, obj.p)


def _describe(signature: tuple) -> str:
    model, names, wd, loss, p = signature
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"({model}, θ = [{shown}] with p = {p}, weight_decay={wd:g}, loss {loss})"


def _fingerprint(theta: Tensor) -> str:
    t = theta.detach().to("cpu", torch.float64)
    return f"[p = {t.numel()}, ‖θ‖ = {float(t.norm()):.6g}, sum = {float(t.sum()):.6g}]"


class _Solver:
    damping: float
    _shown: tuple[str, ...] = ("damping",)  # the settings __repr__ shows, in order

    def __init__(self, damping: float) -> None:
        if damping < 0 or not math.isfinite(damping):
            raise ValueError(f"damping must be a finite number >= 0, got {damping}")
        self.damping = float(damping)
        self.hvp_count = 0
        self._p: int | None = None

    def _matvec(self, obj: Objective, theta: Tensor, data: Data, gauss_newton: bool = False, check: bool = True):
        def mv(v: Tensor) -> Tensor:
            self.hvp_count += 1 if v.ndim == 1 else v.shape[0]
            out = obj.hvp(theta, data, v, gauss_newton=gauss_newton)
            if check and torch.isfinite(v).all():
                _check_finite(out, "Hessian-vector product", obj, theta, data)
            return out

        return mv

    def _remember_fit(self, obj: Objective, theta: Tensor) -> None:
        """Mark the solver fitted (``_p``, which ``solve`` needs) on ``obj`` at ``theta`` (for
        :meth:`check_fitted_on`); every ``fit`` ends here."""
        self._p = obj.p
        signature = _objective_signature(obj)
        self._fit_objective = signature
        self._fit_theta = None if signature is None else theta.detach().clone()

    def check_fitted_on(self, obj: Objective, theta: Tensor) -> None:
        """Refuse to be used at another θ or with another objective than the one it was fitted on.

        The curvature a solver holds belongs to the θ and the objective of ``fit``; scores
        computed with gradients at another θ (a later checkpoint, say) silently mix two models.
        Solvers that were not fitted through ``fit`` are not checked.

        Raises:
            ValueError: naming what the solver was fitted on and what it is used with.
        """
        fitted = getattr(self, "_fit_theta", None)
        used = _objective_signature(obj)
        if fitted is None or used is None:
            return
        if used != self._fit_objective:
            raise ValueError(
                f"{type(self).__name__} was fitted on the objective {_describe(self._fit_objective)} but is "
                f"used with {_describe(used)}; fit the solver on the objective you score with"
            )
        same = theta.shape == fitted.shape and torch.equal(theta.detach().to(fitted.device, fitted.dtype), fitted)
        if not same:
            raise ValueError(
                f"{type(self).__name__} was fitted at theta {_fingerprint(fitted)} but is used at theta "
                f"{_fingerprint(theta)}: its curvature belongs to another model. Fit it at this theta "
                "(solver.fit(obj, theta, train)), or score at the theta it was fitted on"
            )

    def _check_v(self, v: Tensor) -> tuple[Tensor, bool]:
        if self._p is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(obj, theta, train) first")
        if not isinstance(v, Tensor) or v.ndim not in (1, 2) or v.shape[-1] != self._p:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"v must have shape [{self._p}] or [k, {self._p}], got {shape}")
        if not torch.isfinite(v).all():
            raise FloatingPointError("v contains NaN or inf")
        return (v if v.ndim == 2 else v.unsqueeze(0)), v.ndim == 1

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._shown)
        return f"{type(self).__name__}({fields})"


class _EigenSolver(_Solver):
    """Shared solve for solvers that hold eigenpairs: V diag(1/(λ + damping)) Vᵀ v."""

    eigenvalues: Tensor
    eigenvectors: Tensor

    rtol: float

    def solve(self, v: Tensor) -> Tensor:
        """``(H + damping·I)⁻¹ v`` on the held eigenpairs, for v ``[p]`` or ``[k, p]``."""
        vb, single = self._check_v(v)
        shifted = (self.eigenvalues + self.damping).abs()
        scale = self.eigenvalues.abs().max().clamp_min(torch.finfo(shifted.dtype).tiny)
        if shifted.min() <= self.rtol * scale:
            raise ValueError(
                f"H + damping·I is singular on the eigenspace (smallest |eigenvalue + damping| = "
                f"{float(shifted.min()):.3e}, largest |eigenvalue| = {float(scale):.3e}); increase "
                f"damping (e.g. damping={1e-3 * float(scale):.1e}) or add weight_decay to the Objective"
            )
        coef = self.project(vb) / (self.eigenvalues + self.damping)
        out = coef @ self.eigenvectors.T
        return out[0] if single else out

    def project(self, g: Tensor) -> Tensor:
        """Coordinates of ``g`` ([k, p]) on the eigenvectors: ``[k, r]``."""
        return g @ self.eigenvectors

    def with_damping(self, damping: float):
        """A fitted copy that solves with another damping, sharing the eigenpairs (no refit).

        Useful for damping sweeps: ``solver.with_damping(d).solve(v)`` is
        ``V diag(1/(λ + d)) Vᵀ v`` on the same eigenpairs.
        """
        if self._p is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(obj, theta, train) first")
        if damping < 0 or not math.isfinite(damping):
            raise ValueError(f"damping must be a finite number >= 0, got {damping}")
        twin = copy.copy(self)
        twin.damping = float(damping)
        return twin


class ExactSolver(_EigenSolver):
    """Exact ``(H + damping·I)⁻¹ v`` from the explicit Hessian and its eigendecomposition.

    For small models (p up to a few thousand). Works for indefinite H as long as H + damping·I
    is non-singular; a singular one raises an error that suggests damping.

    Args:
        damping: λ ≥ 0 added to every eigenvalue.
        gauss_newton: use the Gauss–Newton matrix instead of the Hessian.
        rtol: eigenvalues with ``|λ + damping| <= rtol · max|λ|`` count as singular.

    Attributes:
        eigenvalues: ``[p]`` eigenvalues of H (undamped), descending.
        eigenvectors: ``[p, p]`` orthonormal columns, matching ``eigenvalues``.
        hessian: the ``[p, p]`` matrix that was decomposed.
    """

    _shown = ("damping", "gauss_newton")

    def __init__(self, damping: float = 0.0, gauss_newton: bool = False, rtol: float = 1e-10) -> None:
        super().__init__(damping)
        self.gauss_newton = gauss_newton
        self.rtol = rtol

    def fit(self, obj: Objective, theta: Tensor, data: Data) -> "ExactSolver":
        _refuse_empty("ExactSolver", obj, data)
        self.hessian = _check_finite(obj.hessian(theta, data, gauss_newton=self.gauss_newton), "Hessian",
                                     obj, theta, data)
        self.hvp_count = obj.p
        evals, evecs = torch.linalg.eigh(self.hessian)
        order = torch.argsort(evals, descending=True)
        self.eigenvalues, self.eigenvectors = evals[order], evecs[:, order]
        self._remember_fit(obj, theta)
        return self


class CGSolver(_Solver):
    """Conjugate gradient on ``(H + damping·I) x = v``, vectorised over a block of right-hand sides.

    CG needs a positive-definite matrix. When it meets non-positive curvature (``dᵀ(H+λI)d <= 0``,
    i.e. H + damping·I is indefinite) it stops that right-hand side and warns; when it runs out of
    iterations it warns with the residual reached. ``residuals`` keeps the history of relative
    residuals ``‖(H+λI)x − v‖/‖v‖`` of the last :meth:`solve`, ``[iterations + 1, k]``.

    Args:
        damping: λ ≥ 0 added to H.
        max_iter: iterations (one block HVP each).
        tol: relative residual at which a right-hand side counts as solved.
        gauss_newton: use the Gauss–Newton matrix instead of the Hessian.
    """

    _shown = ("damping", "max_iter", "tol")

    def __init__(self, damping: float = 1e-3, max_iter: int = 100, tol: float = 1e-8, gauss_newton: bool = False) -> None:
        super().__init__(damping)
        if max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        self.max_iter, self.tol, self.gauss_newton = int(max_iter), float(tol), gauss_newton
        self.residuals: Tensor | None = None
        self.converged: bool | None = None

    def fit(self, obj: Objective, theta: Tensor, data: Data) -> "CGSolver":
        _refuse_empty("CGSolver", obj, data)
        self._mv = self._matvec(obj, theta, data, self.gauss_newton)
        self._remember_fit(obj, theta)
        return self

    def solve(self, v: Tensor) -> Tensor:
        """``(H + damping·I)⁻¹ v`` by CG, for v ``[p]`` or ``[k, p]`` (same shape out)."""
        b, single = self._check_v(v)
        A = lambda u: self._mv(u) + self.damping * u  # noqa: E731
        x = torch.zeros_like(b)
        r = b.clone()
        d = r.clone()
        bnorm = b.norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
        rs = (r * r).sum(1)
        active = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
        history = [(rs.sqrt() / bnorm)]
        negative = torch.zeros_like(active)
        for _ in range(self.max_iter):
            active &= history[-1] > self.tol
            if not active.any():
                break
            Ad = A(d)
            curv = (d * Ad).sum(1)
            bad = active & (curv <= 0)
            negative |= bad
            active &= ~bad
            alpha = torch.where(active, rs / torch.where(active, curv, torch.ones_like(curv)), torch.zeros_like(rs))
            x = x + alpha[:, None] * d
            r = r - alpha[:, None] * Ad
            rs_new = (r * r).sum(1)
            beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
            d = torch.where(active[:, None], r + beta[:, None] * d, d)
            rs = torch.where(active, rs_new, rs)
            history.append(rs.sqrt() / bnorm)
        self.residuals = torch.stack(history)
        final = history[-1]
        self.converged = bool((final <= self.tol).all())
        if negative.any():
            warnings.warn(
                f"CG met non-positive curvature on {int(negative.sum())} of {b.shape[0]} right-hand "
                "sides: H + damping·I is not positive definite. Increase damping (above minus the "
                "most negative eigenvalue) or use ArnoldiSolver, which inverts only the positive "
                "eigenspace.",
                ConvergenceWarning,
                stacklevel=2,
            )
        elif not self.converged:
            warnings.warn(
                f"CG did not converge in {self.max_iter} iterations: worst relative residual "
                f"{float(final.max()):.2e} > tol={self.tol:.0e}. Increase max_iter or damping.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return x[0] if single else x


def _repeat_generator(seed: int, rep: int) -> torch.Generator:
    """The CPU generator of repeat ``rep`` for ``seed``: ``seed`` itself for the first repeat, an
    independent stream derived from ``(seed, rep)`` by :class:`numpy.random.SeedSequence` for the
    others, so that no two (seed, repeat) pairs share a stream (``seed + rep`` would give seeds s
    and s + 1 all but one stream in common)."""
    if rep == 0:
        return torch.Generator().manual_seed(seed)
    words = np.random.SeedSequence(seed % 2**64, spawn_key=(rep,)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


class LissaSolver(_Solver):
    """LiSSA (Agarwal et al. 2017): the truncated Neumann series for ``(H + damping·I)⁻¹ v``.

    The recursion ``x₀ = v``, ``x_{t+1} = v + x_t − (H + damping·I) x_t / scale`` gives
    ``x_depth / scale``. It converges only when every eigenvalue of ``(H + damping·I)/scale`` lies
    in (0, 2): ``scale`` must exceed half the largest eigenvalue (``scale > λ_max`` is the safe
    choice) and ``damping`` must exceed minus the most negative one. When the iterates grow
    faster than a converging series can, :class:`LissaDivergenceError` is raised, naming both.

    The error of a converging recursion shrinks like ``max |1 − (λ + damping)/scale|^depth`` over
    the eigenvalues λ of H: the depth needed grows like ``scale / (λ_min + damping)``. With
    deterministic HVPs (``batch_size=None``), a recursion stopped before it converged warns
    (:class:`ConvergenceWarning`): the series' last terms shrink by a ratio ρ per step, so what was
    cut off is about ``‖last term‖·ρ/(1 − ρ)``; when that exceeds ``tol`` times the answer, the
    warning gives the estimated relative error and the depth needed to reach ``tol``. For a
    converging series with a symmetric H the ratio of successive terms never decreases, so both
    are lower bounds: a depth from the warning may warn again, with a better estimate. (A run
    that is short on purpose silences it with ``warnings.simplefilter("ignore", ConvergenceWarning)``.)

    Args:
        damping: λ ≥ 0 added to H.
        scale: the divisor s.
        depth: recursion steps (one block HVP each).
        repeats: independent recursions averaged (useful with stochastic batches).
        seed: seeds the mini-batch sampling; every repeat draws from its own independent stream
            (the first from ``seed`` itself), and different seeds share no stream.
        batch_size: examples per stochastic HVP; ``None`` uses the whole data (deterministic).
        gauss_newton: use the Gauss–Newton matrix instead of the Hessian.
        tol: relative truncation error (estimated) above which a deterministic run warns.
    """

    _shown = ("damping", "scale", "depth", "repeats", "batch_size")

    def __init__(
        self,
        damping: float = 1e-3,
        scale: float = 10.0,
        depth: int = 1000,
        repeats: int = 1,
        seed: int = 0,
        batch_size: int | None = None,
        gauss_newton: bool = False,
        tol: float = 1e-2,
    ) -> None:
        super().__init__(damping)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if depth < 1 or repeats < 1:
            raise ValueError("depth and repeats must be >= 1")
        if not 0 < tol < 1:
            raise ValueError(f"tol is a relative error in (0, 1), e.g. 1e-2; got {tol}")
        self.scale, self.depth, self.repeats, self.seed = float(scale), int(depth), int(repeats), int(seed)
        self.tol = float(tol)
        self.batch_size, self.gauss_newton = batch_size, gauss_newton
        self.recorded: dict[int, Tensor] = {}

    def fit(self, obj: Objective, theta: Tensor, data: Data) -> "LissaSolver":
        _refuse_empty("LissaSolver", obj, data)
        if self.batch_size is not None:
            validate_batch(data)  # stochastic batches need indexable tensors
        self._obj, self._theta, self._data = obj, theta, data
        self._n = num_examples(data)
        source = _nonfinite_source(obj, theta, data, losses=False)
        if source is not None:  # a NaN in the data is not a divergence
            raise FloatingPointError(f"LiSSA cannot run on non-finite curvature; it comes from {source}")
        self._remember_fit(obj, theta)
        return self

    def _batch_mv(self, generator: torch.Generator | None):
        if self.batch_size is None or self.batch_size >= self._n:
            # no finiteness check per product: a diverging recursion is LiSSA's own error
            return self._matvec(self._obj, self._theta, self._data, self.gauss_newton, check=False)

        def mv(v: Tensor) -> Tensor:
            idx = torch.randint(self._n, (self.batch_size,), generator=generator)  # host: seeded indices
            batch = subset(self._data, idx)
            return self._matvec(self._obj, self._theta, batch, self.gauss_newton, check=False)(v)

        return mv

    def solve(self, v: Tensor, *, record: Sequence[int] | None = None) -> Tensor:
        """``(H + damping·I)⁻¹ v`` by the LiSSA recursion, for v ``[p]`` or ``[k, p]``.

        Args:
            v: right-hand side(s), ``[p]`` or ``[k, p]``.
            record: depths ``d <= depth`` at which to keep the estimate (averaged over repeats,
                shaped like ``v``) in ``self.recorded[d]``: the answer a solver with
                ``depth=d`` would give, at no extra cost. If the recursion diverges (in its
                first repeat), the depths reached before that step are kept.

        Raises:
            LissaDivergenceError: the iterates grew faster than a converging series can
                (``‖x_t‖ > (t + 1)‖v‖``), or, with deterministic HVPs, the series' terms
                ``x_t − x_{t−1} = (I − (H + damping·I)/scale)^t v`` grew for 3 steps in a row, which
                for a symmetric H proves that some eigenvalue makes the series diverge (this
                catches the slow divergence along a slightly negative eigenvalue long before the
                iterates blow up); the message names scale and damping, the error carries ``.step``.
        """
        b, single = self._check_v(v)
        wanted = sorted({int(d) for d in record}) if record is not None else []
        if wanted and (wanted[0] < 1 or wanted[-1] > self.depth):
            raise ValueError(f"record depths must lie in [1, depth={self.depth}], got {wanted}")
        self.recorded: dict[int, Tensor] = {}
        sums: dict[int, Tensor] = {d: torch.zeros_like(b) for d in wanted}
        bnorm = b.norm(dim=1)
        total = torch.zeros_like(b)
        deterministic = self.batch_size is None or self.batch_size >= self._n
        slack = 1.0 if deterministic else 10.0
        floor = 1e3 * torch.finfo(b.dtype).eps  # terms below floor·‖x‖ are rounding noise
        for rep in range(self.repeats):
            gen = _repeat_generator(self.seed, rep)
            mv = self._batch_mv(gen)
            x = b.clone()
            term = bnorm  # the series' 0th term, v
            rising = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
            for t in range(1, self.depth + 1):
                x_new = b + x - (mv(x) + self.damping * x) / self.scale
                term_prev, term = term, (x_new - x).norm(dim=1)  # ‖(I − (H + λI)/s)^t v‖, the t-th term
                x = x_new
                xnorm = x.norm(dim=1)
                # A converging series has ‖x_t‖ <= (t + 1)‖v‖ and, with a fixed symmetric H,
                # non-increasing terms: ‖M^t v‖² = Σ c_i² μ_i^{2t} is log-convex in t, so once
                # it grows some |μ_i| > 1 and it grows for ever.
                if deterministic:
                    up = (term > term_prev * (1 + 1e-9)) & (term > floor * xnorm)
                    rising = torch.where(up, rising + 1, torch.zeros_like(rising))
                too_big = (xnorm > slack * (t + 1) * bnorm * (1 + 1e-6)).any()
                if not torch.isfinite(xnorm).all() or too_big or (rising >= 3).any():
                    if rep == 0:  # the sums hold this first recursion's estimates for d < t
                        self.recorded = {d: sums[d][0] if single else sums[d] for d in wanted if d < t}
                    growth = float((xnorm / bnorm).max())
                    why = "the iterates outgrew a converging series" if too_big else "the series' terms grew for 3 steps in a row"
                    raise LissaDivergenceError(
                        f"LiSSA diverged at step {t} of {self.depth} ({why}; ‖x‖/‖v‖ = {growth:.3g}) "
                        f"with scale={self.scale:g} and damping={self.damping:g}. The recursion converges "
                        "only if every eigenvalue of (H + damping·I)/scale lies in (0, 2): increase scale "
                        "above the largest Hessian eigenvalue, and damping above minus the most negative one.",
                        step=t,
                        depth=self.depth,
                        scale=self.scale,
                        damping=self.damping,
                        growth=growth,
                    )
                if t in sums:
                    sums[t] = sums[t] + x / self.scale
            total = total + x / self.scale
        self.recorded = {d: (sums[d] / self.repeats)[0] if single else sums[d] / self.repeats for d in wanted}
        if deterministic:
            self._warn_truncated(term_prev, term, x.norm(dim=1))
        out = total / self.repeats
        return out[0] if single else out

    def _warn_truncated(self, before: Tensor, last: Tensor, xnorm: Tensor) -> None:
        """Warn when the cut-off tail of the series, ``tail = last·ρ/(1 − ρ)`` with ``ρ = last/before``
        (per right-hand side, ``[k]`` each), exceeds ``tol`` times the converged answer's size,
        estimated as ``‖x‖ + tail``."""
        floor = 1e3 * torch.finfo(last.dtype).eps * xnorm
        rho = torch.where(before > 0, last / before, torch.zeros_like(last)).clamp(max=1 - 1e-12)
        tail = torch.where(last > floor, last * rho / (1 - rho), torch.zeros_like(last))
        rel = tail / (xnorm + tail).clamp_min(torch.finfo(xnorm.dtype).tiny)  # of the converged answer
        worst = int(rel.argmax())
        if float(rel[worst]) <= self.tol:
            return
        r = float(rho[worst])
        more = math.log(self.tol / float(rel[worst])) / math.log(r) if 0 < r < 1 else math.inf
        needed = f"{self.depth + math.ceil(more):,}" if math.isfinite(more) else "far more"
        warnings.warn(
            f"LiSSA stopped at depth {self.depth} before converging: the truncated tail of the series is "
            f"an estimated {float(rel[worst]):.0%} of the answer (its terms shrink by {r:.4f} per step; the "
            f"slowest direction may shrink slower still, so this is a lower bound). A depth of at least "
            f"{needed} is needed to reach tol={self.tol:g}; or raise damping, or lower scale toward the "
            "largest eigenvalue (it must stay above it).",
            ConvergenceWarning,
            stacklevel=3,
        )


DEFAULT_BLOCK_SIZE = 4  # ArnoldiSolver's block when none is given (chosen by measurement, see its docstring)
MIN_BLOCK_STEPS = 25  # ... but only when that leaves at least this many block steps; else one vector


class ArnoldiSolver(_EigenSolver):
    """Arnoldi-based influence (ABIF): invert H only on its top eigenspace.

    Arnoldi iteration (Schioppa et al. 2022) builds an orthonormal Krylov basis Q from a random
    start with ``iterations`` Hessian-vector products (full Gram–Schmidt, applied twice for
    stability), diagonalises the small projected matrix, and keeps the top ``rank`` Ritz pairs.
    By default only positive eigenvalues are kept (``positive_only=True``): directions of zero or
    negative curvature, where H⁻¹ is undefined or explosive, are dropped. Then
    ``solve(v) = V diag(1/(λ + damping)) Vᵀ v``; the component of v outside span(V) maps to 0.

    With ``block_size=b > 1`` it is block Arnoldi (block Lanczos with full re-orthogonalisation):
    it starts from b random vectors and applies H to b basis vectors at a time with one block
    Hessian-vector product, which costs much less per vector than b single products. The total
    number of products, and the dimension of the basis, is still ``iterations``.

    When the basis becomes an invariant subspace of H before ``iterations`` products (a Hessian
    with repeated eigenvalues, such as ``I ⊗ M`` of a multi-output linear model, stops a Krylov
    space from one start vector after one direction per distinct eigenvalue), the iteration
    restarts from a fresh random vector orthogonal to the basis (drawn from the same seeded
    generator), so it never stops early while unexplored directions remain.

    Args:
        rank: number of eigenpairs kept.
        iterations: Hessian-vector products, i.e. the dimension of the basis; capped at p. More
            iterations sharpen the top pairs.
        damping: λ ≥ 0 added to the kept eigenvalues in :meth:`solve`.
        seed: seeds the random start vectors (and the restart vectors).
        positive_only: keep only eigenvalues ``> rtol · max|λ|`` (ABIF); ``False`` keeps the
            top ``rank`` by absolute value, negative ones included.
        rtol: relative threshold for "positive", and for detecting an invariant subspace.
        gauss_newton: use the Gauss–Newton matrix instead of the Hessian.
        block_size: b, the vectors multiplied by H per step (one block Hessian-vector product);
            between 1 and ``iterations`` (and at most p). ``None`` (default) uses 4 when that
            leaves at least 25 block steps (``iterations >= 100``), else 1 (capped at p). On a
            2-core CPU, b = 4 reached the accuracy of single-vector Arnoldi with the same 200
            products several times faster, while b = 8 lost accuracy. With few products a block
            space is a polynomial of low degree in H, which finds the ends of the spectrum later:
            with 12 products on chapter 3's ResNet, b = 4 (3 steps) missed most of the negative
            curvature that b = 1 (12 steps) finds.

    Attributes:
        eigenvalues: ``[r]`` kept eigenvalues of H (undamped), descending.
        eigenvectors: ``[p, r]`` orthonormal columns.
        ritz_values: all ``[m]`` eigenvalues of the projected matrix, descending.
        projected: the ``[m, m]`` symmetrised projected matrix ``QᵀHQ``; its leading ``[j, j]``
            block is what the first ``j`` products from the same start give (see
            :meth:`ritz_values_after`).
        iterations_done: m, the Hessian-vector products taken (the basis dimension): fewer than
            ``iterations`` only when all p directions are exhausted.
        restarts: how many times the basis became invariant and was extended by a fresh random
            vector.

    Warns:
        FewerEigenpairsWarning: when fewer than ``rank`` eigenpairs are kept.
    """

    _shown = ("rank", "iterations", "damping", "positive_only", "seed", "block_size")

    def __init__(
        self,
        rank: int = 50,
        iterations: int = 200,
        damping: float = 0.0,
        seed: int = 0,
        positive_only: bool = True,
        rtol: float = 1e-8,
        gauss_newton: bool = False,
        block_size: int | None = None,
    ) -> None:
        super().__init__(damping)
        if rank < 1 or iterations < 1:
            raise ValueError("rank and iterations must be >= 1")
        if iterations < rank:
            raise ValueError(f"iterations ({iterations}) must be >= rank ({rank}): Arnoldi finds at most one eigenpair per iteration")
        if block_size is not None and (isinstance(block_size, bool) or int(block_size) != block_size or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}; pass block_size=1 "
                             "for single-vector Arnoldi, a small block such as 4, or None for the default")
        if block_size is not None and block_size > iterations:
            raise ValueError(f"block_size ({block_size}) is larger than iterations ({iterations}), the total "
                             "number of Hessian-vector products; pass a smaller block_size or more iterations")
        self.rank, self.iterations, self.seed = int(rank), int(iterations), int(seed)
        self.positive_only, self.rtol, self.gauss_newton = positive_only, rtol, gauss_newton
        self.block_size = None if block_size is None else int(block_size)

    def fit(self, obj: Objective, theta: Tensor, data: Data) -> "ArnoldiSolver":
        _refuse_empty("ArnoldiSolver", obj, data)
        p, b = obj.p, self.block_size
        if b is None:
            b = min(DEFAULT_BLOCK_SIZE if self.iterations >= DEFAULT_BLOCK_SIZE * MIN_BLOCK_STEPS else 1, p)
        if b > p:
            raise ValueError(f"block_size ({b}) is larger than the number of parameters p = {p}; pass "
                             f"block_size <= {p}")
        mv = self._matvec(obj, theta, data, self.gauss_newton)
        m = min(self.iterations, p)
        basis = _KrylovBasis(m, p, theta, self.seed, self.rtol)
        basis.extend(basis.fresh(min(b, m)), column=None)
        done = 0  # basis vectors already multiplied by H (columns of the projected matrix filled)
        while done < m and done < basis.k:
            c = min(b, m - done, basis.k - done)
            W = mv(basis.Q[done : done + c])  # one block product: [c, p]
            basis.extend(W, column=done)
            done += c
        A = basis.H[:done, :done]
        A = 0.5 * (A + A.T)
        self.projected = A
        self.restarts = basis.restarts
        evals, U = torch.linalg.eigh(A)
        self.ritz_values = evals.flip(0)
        if self.positive_only:
            top = evals.abs().max()
            keep = (evals > self.rtol * top).nonzero().flatten()
            if keep.numel() == 0:
                raise ValueError(
                    f"Arnoldi found no positive eigenvalue among {done} Ritz values (largest "
                    f"{float(evals.max()):.3e}): the Hessian is negative semi-definite on the explored "
                    "subspace. Check that theta is a trained model, add weight_decay to the Objective, "
                    "use gauss_newton=True, or pass positive_only=False."
                )
            order = keep[torch.argsort(evals[keep], descending=True)]
        else:
            order = torch.argsort(evals.abs(), descending=True)
        order = order[: self.rank]
        order = order[torch.argsort(evals[order], descending=True)]
        self.eigenvalues = evals[order]
        self.eigenvectors = basis.Q[:done].T @ U[:, order]
        self.iterations_done = done
        self._remember_fit(obj, theta)
        if order.numel() < self.rank:
            self._warn_fewer(order.numel(), done, p, int((evals > self.rtol * evals.abs().max()).sum()))
        return self

    def _warn_fewer(self, kept: int, done: int, p: int, positive: int) -> None:
        if self.rank > p:
            why, fix = (f"the model has only p = {p} parameters", f"pass rank <= {p}")
        else:
            why = (f"only {positive} of the {done} Ritz values are positive (positive_only=True drops zero "
                   "and negative curvature)")
            fix = ("pass more iterations to explore more of the spectrum, a smaller rank, or "
                   "positive_only=False to keep negative eigenvalues too")
        warnings.warn(
            f"ArnoldiSolver kept {kept} of rank={self.rank} eigenpairs: {why}; {fix}",
            FewerEigenpairsWarning,
            stacklevel=3,
        )

    def ritz_values_after(self, iterations: int) -> Tensor:
        """The Ritz values (eigenvalue estimates) after the first ``iterations`` Hessian-vector products.

        Arnoldi's projected matrix after j products is the leading ``[j, j]`` block of the one after
        m > j products (same start), so one fit gives the whole convergence history for free. With
        ``block_size=b > 1`` the first j basis vectors span the block Krylov space of j/b steps when
        b divides j; otherwise they are that of ⌊j/b⌋ steps plus part of the next block, and the
        values are the Rayleigh–Ritz estimates on that j-dimensional subspace.

        Returns:
            ``[iterations]`` Ritz values, descending (all of them, negative ones included).

        Raises:
            ValueError: ``iterations`` outside ``[1, iterations_done]``.
        """
        if not hasattr(self, "projected"):
            raise RuntimeError("ArnoldiSolver is not fitted: call .fit(obj, theta, train) first")
        if not 1 <= iterations <= self.iterations_done:
            raise ValueError(f"iterations must lie in [1, {self.iterations_done}] (the steps taken), got {iterations}")
        return torch.linalg.eigvalsh(self.projected[:iterations, :iterations]).flip(0)


class _KrylovBasis:
    """An orthonormal basis ``Q [m, p]`` grown by (block) Arnoldi with full re-orthogonalisation,
    and the projected matrix ``H [m, m]`` (``H[:, j] = Qᵀ (A q_j)`` for the operator A).

    A new vector whose component outside the basis is negligible (``<= rtol · scale``, scale the
    largest projected entry so far: the basis is invariant for it) is replaced by a fresh random
    vector orthogonal to the basis, drawn from the seeded generator, and counted in ``restarts``.
    """

    def __init__(self, m: int, p: int, like: Tensor, seed: int, rtol: float) -> None:
        self.m, self.p, self.rtol = m, p, rtol
        self.dtype, self.device = like.dtype, like.device
        self.gen = torch.Generator().manual_seed(seed)
        self.Q = torch.zeros(m, p, dtype=like.dtype, device=like.device)
        self.H = torch.zeros(m, m, dtype=like.dtype, device=like.device)
        self.k = 0  # vectors in the basis
        self.scale = 0.0
        self.restarts = 0

    def fresh(self, c: int) -> Tensor:
        """``[c, p]`` random vectors from the seeded CPU generator, on the basis' device."""
        return torch.randn(c, self.p, generator=self.gen, dtype=self.dtype).to(self.device)  # host: then moved

    def _orthogonalise(self, w: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """``w`` ([c, p]) minus its projection on ``Q[:k]``, twice (classical Gram–Schmidt with one
        re-orthogonalisation), and the coefficients ``[c, k]`` removed."""
        Qk = self.Q[:k]
        h = w @ Qk.T
        w = w - h @ Qk
        h2 = w @ Qk.T
        return w - h2 @ Qk, h + h2

    def extend(self, W: Tensor, column: int | None) -> None:
        """Orthogonalise the block ``W`` ([c, p], ``A`` applied to basis vectors ``column ..
        column + c``, or start vectors when ``column`` is None) against the basis, record its
        coefficients in ``H`` and append the new directions while the basis has fewer than m."""
        k0 = self.k
        if k0:
            W, h = self._orthogonalise(W, k0)
            if column is not None:
                self.H[:k0, column : column + W.shape[0]] = h.T
                self.scale = max(self.scale, float(h.abs().max()))
        for i in range(W.shape[0]):
            w = W[i]
            if self.k > k0:  # against the directions this block already added
                w, h = self._orthogonalise(w.unsqueeze(0), self.k)
                w = w[0]
                if column is not None:
                    self.H[k0 : self.k, column + i] = h[0, k0:]
            if self.k >= self.m:  # the basis is full: only the coefficients were needed
                continue
            beta = float(w.norm())
            if column is not None:
                self.scale = max(self.scale, beta)
            if beta <= self.rtol * self.scale or beta == 0.0:
                w, beta = self._restart()
                if w is None:
                    break
            elif column is not None:
                self.H[self.k, column + i] = beta
            self.Q[self.k] = w / beta
            self.k += 1

    def _restart(self) -> tuple[Tensor | None, float]:
        """A fresh unit direction orthogonal to the basis (None when the basis spans everything)."""
        if self.k >= self.p:
            return None, 0.0
        for _ in range(3):
            r = self.fresh(1)
            size = float(r.norm())
            r, _ = self._orthogonalise(r, self.k)
            beta = float(r.norm())
            if beta > 1e-6 * size:
                self.restarts += 1
                return r[0], beta
        return None, 0.0
