"""Measuring inverse-Hessian solvers: accuracy against exact answers, cost, and failure modes.

The solvers of :mod:`influence_utils.solvers` all answer ``(H + damping·I)⁻¹ v``. This module
measures how well, at what cost, and where they break:

* :class:`MatrixOperator` — an explicit symmetric matrix (or a diagonal one: a Hessian in its
  eigenbasis) that stands in for an :class:`~influence_utils.objective.Objective`, so that a
  solver can be studied on a known H at the cost of a matrix product per HVP.
* :func:`lissa_error_grid` — LiSSA's relative error over scale × damping × depth, with the
  divergent settings recorded as such (the solver raises
  :class:`~influence_utils.solvers.LissaDivergenceError` there, never returns NaN).
* :func:`arnoldi_eigenvalue_errors` — how fast Arnoldi's top Ritz values approach the exact
  eigenvalues, from one fit.
* :func:`abif_rank_sweep` — ABIF scores against a reference as the rank grows, with cost in HVPs
  and seconds.
* :func:`compare_solvers` and :func:`pairwise_agreement` — several solvers on the same query, side
  by side.

Scores here follow the package convention: ``scores[i, j]`` (``[n_test, n_train]``) estimates
``loss(test_i; θ without train_j) − loss(test_i; θ)``; positive means train_j helps test_i.
Durations are returned as float seconds; format them with :func:`format_seconds` (a string with a
unit) before printing.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from .batching import Data
from .plotting import COLORS, new_figure
from .resources import format_seconds  # re-exported: one duration format for the book
from .solvers import (
    ArnoldiSolver,
    ConvergenceWarning,
    LissaDivergenceError,
    LissaSolver,
    Solver,
)
from .utils import pearson, spearman

__all__ = [
    "MatrixOperator",
    "relative_error",
    "damped_solve",
    "scores_from_grads",
    "eigen_scores",
    "lissa_error_grid",
    "arnoldi_eigenvalue_errors",
    "abif_rank_sweep",
    "compare_solvers",
    "pairwise_agreement",
    "format_seconds",
    "lissa_error_figure",
]


class MatrixOperator:
    """An explicit symmetric matrix that a solver can be fitted on in place of an Objective.

    Solvers only need ``obj.p``, ``obj.hvp(theta, data, v)`` and (for
    :class:`~influence_utils.solvers.ExactSolver`) ``obj.hessian(theta, data)``; this class
    provides them from a matrix, so a solver can be run on a known Hessian at the cost of one
    matrix product per HVP. Given a 1-D tensor of eigenvalues it is the diagonal matrix
    ``diag(λ)``: the Hessian in its own eigenbasis. Every solver here is equivariant under an
    orthogonal change of basis (it uses only HVPs, sums and norms), so running it on ``diag(λ)``
    with right-hand sides ``Vᵀv`` gives the rotated iterates, with the same norms, errors and
    divergence checks, at O(p) instead of O(p²) per HVP.

    Args:
        matrix: ``[p, p]`` symmetric, or ``[p]`` for a diagonal matrix.

    Example::

        op = MatrixOperator(H)
        solver = op.fit(iu.CGSolver(damping=1e-3))
        x = solver.solve(v)
    """

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim not in (1, 2):
            raise ValueError("matrix must be a [p, p] tensor or a [p] diagonal")
        if matrix.ndim == 2:
            if matrix.shape[0] != matrix.shape[1]:
                raise ValueError(f"matrix must be square, got {tuple(matrix.shape)}")
            if not torch.allclose(matrix, matrix.T, rtol=1e-10, atol=1e-12 * float(matrix.abs().max())):
                raise ValueError("matrix must be symmetric (a Hessian): symmetrise it with 0.5 * (H + H.T)")
        self.matrix = matrix
        self.diagonal = matrix.ndim == 1
        self.data = (matrix.new_zeros(1, 1), matrix.new_zeros(1))

    @property
    def p(self) -> int:
        """Dimension of the matrix."""
        return self.matrix.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def theta(self) -> Tensor:
        """A placeholder parameter vector ``[p]`` (zeros); it only carries dtype and device."""
        return torch.zeros(self.p, dtype=self.dtype, device=self.device)

    def hvp(self, theta: Tensor, data: Data, v: Tensor, *, gauss_newton: bool = False, weights: Any = None) -> Tensor:
        """``H v`` for ``v`` of shape ``[p]`` or ``[k, p]`` (``theta`` and ``data`` are ignored)."""
        if v.shape[-1] != self.p or v.ndim not in (1, 2):
            raise ValueError(f"v must have shape [{self.p}] or [k, {self.p}], got {tuple(v.shape)}")
        return v * self.matrix if self.diagonal else v @ self.matrix

    def hessian(self, theta: Tensor, data: Data, *, gauss_newton: bool = False, weights: Any = None, block: int = 256) -> Tensor:
        """The ``[p, p]`` matrix."""
        return torch.diag(self.matrix) if self.diagonal else self.matrix.clone()

    def fit(self, solver: Solver) -> Any:
        """Fit ``solver`` on this matrix and return it."""
        return solver.fit(self, self.theta(), self.data)

    def __repr__(self) -> str:
        kind = "diagonal" if self.diagonal else "dense"
        return f"MatrixOperator({kind}, p={self.p})"


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """``‖estimate − reference‖ / ‖reference‖`` (Frobenius norms over all entries)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(reference.shape)}")
    denom = float(reference.norm())
    if denom == 0:
        raise ValueError("the reference is zero: a relative error is undefined")
    return float((estimate - reference).norm()) / denom


def damped_solve(exact: Any, v: Tensor, damping: float) -> Tensor:
    """``(H + damping·I)⁻¹ v`` from a fitted :class:`~influence_utils.solvers.ExactSolver`'s eigenpairs, for any damping.

    ``exact`` may also be a diagonal :class:`MatrixOperator` (H in its eigenbasis), for which the
    solve is ``v / (λ + damping)``. Unlike ``ExactSolver.solve`` it does not refuse a nearly
    singular ``H + damping·I``: the reference is what it is, however large. ``v``: ``[p]`` or
    ``[k, p]``; same shape out.
    """
    if isinstance(exact, MatrixOperator) and exact.diagonal:
        return v / (exact.matrix + damping)
    if not hasattr(exact, "eigenvectors"):
        raise TypeError("exact must be a fitted ExactSolver (it holds the eigenpairs of H) or a diagonal MatrixOperator")
    V, lam = exact.eigenvectors, exact.eigenvalues
    return ((v @ V) / (lam + damping)) @ V.T


def scores_from_grads(solver: Solver, g_test: Tensor, g_train: Tensor, n: int) -> Tensor:
    """Influence scores from precomputed per-example gradients, ``[n_test, n_train]``.

    ``scores[i, j] = (1/n) g_test[i]ᵀ (H + damping·I)⁻¹ g_train[j]``, exactly what
    :func:`influence_utils.scores.influence` computes, without recomputing gradients for every
    solver. Positive: train_j helps test_i.

    Args:
        solver: a fitted solver.
        g_test: ``[n_test, p]`` test gradients.
        g_train: ``[n_train, p]`` training gradients.
        n: the training-set size in the factor 1/n.
    """
    return solver.solve(g_test) @ g_train.T / n


def eigen_scores(
    exact: Any, g_test: Tensor, g_train: Tensor, n: int, *, damping: float = 0.0, keep: int | Tensor | None = None
) -> Tensor:
    """Influence scores from an eigendecomposition, restricted to some eigen-directions.

    ``scores[i, j] = (1/n) Σ_{k kept} (u_kᵀ g_test[i]) (u_kᵀ g_train[j]) / (λ_k + damping)``: with
    every direction kept, the exact damped influence; with the top ``r`` kept, the converged limit of
    ABIF at rank r (when those eigenvalues are positive). No direction is refused, however small
    ``λ_k + damping``. Positive: train_j helps test_i.

    Args:
        exact: a fitted :class:`~influence_utils.solvers.ExactSolver` (eigenvalues in descending
            order, eigenvectors as columns).
        g_test, g_train: ``[n_test, p]``, ``[n_train, p]`` per-example gradients.
        n: the training-set size in the factor 1/n.
        damping: added to every kept eigenvalue.
        keep: ``None`` (all directions), an int r (the r largest eigenvalues), or a boolean mask
            ``[p]`` over the eigenvalues.
    """
    if not hasattr(exact, "eigenvectors"):
        raise TypeError("exact must be a fitted ExactSolver (it holds the eigenpairs of H)")
    lam, V = exact.eigenvalues, exact.eigenvectors
    if keep is None:
        mask = torch.ones_like(lam, dtype=torch.bool)
    elif isinstance(keep, Tensor):
        if keep.dtype != torch.bool or keep.shape != lam.shape:
            raise ValueError(f"keep must be a boolean mask of shape {tuple(lam.shape)}, got {keep.dtype} {tuple(keep.shape)}")
        mask = keep
    else:
        if int(keep) < 1:
            raise ValueError(f"keep must be a positive number of eigenpairs, got {keep}")
        mask = torch.arange(lam.numel(), device=lam.device) < int(keep)
    p_test, p_train = g_test @ V[:, mask], g_train @ V[:, mask]
    return (p_test / (lam[mask] + damping)) @ p_train.T / n


def lissa_error_grid(
    obj: Any,
    theta: Tensor,
    data: Data,
    rhs: Tensor,
    exact: Any,
    *,
    scales: Sequence[float],
    dampings: Sequence[float],
    depths: Sequence[int],
) -> pd.DataFrame:
    """LiSSA's relative error against the exact damped solve over scale × damping × depth.

    For each (scale, damping) one :class:`~influence_utils.solvers.LissaSolver` runs to the
    largest depth and records its estimate at every depth (``solve(..., record=depths)``), which
    is what a solver with that depth returns. Where the recursion diverges the solver raises
    :class:`~influence_utils.solvers.LissaDivergenceError`; the grid records those cells as
    ``status="diverged"`` with ``rel_error=inf`` and the step at which divergence was detected.
    Depths before that step keep the (finite, possibly poor) estimate reached so far.

    Args:
        obj, theta, data: what the solver is fitted on (an Objective with its θ and training
            data, or a :class:`MatrixOperator` with ``op.theta()`` and ``op.data``).
        rhs: ``[k, p]`` right-hand sides (e.g. test gradients).
        exact: a fitted :class:`~influence_utils.solvers.ExactSolver` of the same H (undamped), or the diagonal
            :class:`MatrixOperator` itself; the reference for damping d is ``(H + d·I)⁻¹ rhs``.
        scales, dampings, depths: the grid.

    Returns:
        One row per (scale, damping, depth) with columns ``scale``, ``damping``, ``depth``,
        ``status`` (``"ok"`` or ``"diverged"``), ``rel_error`` (``inf`` when diverged),
        ``diverged_at`` (step, or ``<NA>``) and ``hvps`` (HVPs spent up to that depth).
    """
    depths = sorted({int(d) for d in depths})
    if not depths or depths[0] < 1:
        raise ValueError(f"depths must be positive integers, got {depths}")
    k = rhs.shape[0] if rhs.ndim == 2 else 1
    rows = []
    for scale in scales:
        for damping in dampings:
            ref = damped_solve(exact, rhs, damping)
            solver = LissaSolver(damping=damping, scale=scale, depth=depths[-1]).fit(obj, theta, data)
            step = None
            try:
                with warnings.catch_warnings():  # the table reports every depth's error itself
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    solver.solve(rhs, record=depths)
            except LissaDivergenceError as err:
                step = err.step
            for d in depths:
                ok = d in solver.recorded
                rows.append(dict(scale=float(scale), damping=float(damping), depth=d, hvps=k * d,
                                 status="ok" if ok else "diverged", diverged_at=step,
                                 rel_error=relative_error(solver.recorded[d], ref) if ok else math.inf))
    df = pd.DataFrame(rows, columns=["scale", "damping", "depth", "status", "rel_error", "diverged_at", "hvps"])
    df["diverged_at"] = df["diverged_at"].astype("Int64")
    return df


def arnoldi_eigenvalue_errors(
    solver: Solver, exact_eigenvalues: Tensor, iterations: Sequence[int], k: int
) -> pd.DataFrame:
    """Relative error of Arnoldi's top-k Ritz values after each number of iterations.

    Uses one fitted solver: the Ritz values after j steps come from the leading block of its
    projected matrix (:meth:`~influence_utils.solvers.ArnoldiSolver.ritz_values_after`). The i-th
    largest Ritz value is compared with the i-th largest exact eigenvalue.

    Args:
        solver: a fitted :class:`~influence_utils.solvers.ArnoldiSolver`.
        exact_eigenvalues: ``[p]`` eigenvalues of H (any order), e.g. from ``torch.linalg.eigvalsh``.
        iterations: step counts to evaluate (each at most ``solver.iterations_done``).
        k: how many of the largest eigenvalues to compare.

    Returns:
        Columns ``iterations``, ``position`` (1 = largest), ``ritz``, ``exact``, ``rel_error``.
    """
    exact = exact_eigenvalues.sort(descending=True).values
    rows = []
    for m in iterations:
        ritz = solver.ritz_values_after(int(m))
        for i in range(min(k, ritz.numel())):
            lam = float(exact[i])
            rows.append(dict(iterations=int(m), position=i + 1, ritz=float(ritz[i]), exact=lam,
                             rel_error=abs(float(ritz[i]) - lam) / abs(lam)))
    return pd.DataFrame(rows, columns=["iterations", "position", "ritz", "exact", "rel_error"])


def _agreement(scores: Tensor, reference: Tensor | None) -> dict[str, float]:
    if reference is None:
        return {}
    return {"rel_error": relative_error(scores, reference), "pearson": pearson(scores, reference),
            "spearman": spearman(scores, reference)}


def abif_rank_sweep(
    obj: Any,
    theta: Tensor,
    data: Data,
    g_test: Tensor,
    g_train: Tensor,
    *,
    ranks: Sequence[int],
    reference: Tensor | None = None,
    damping: float = 0.0,
    iterations: Callable[[int], int] | int = lambda r: 2 * r,
    n: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[int, Tensor]]:
    """ABIF scores as the rank grows: agreement with a reference, and cost in HVPs and seconds.

    For each rank r a fresh :class:`~influence_utils.solvers.ArnoldiSolver` (``positive_only=True``: the top positive
    eigenspace) is fitted with ``iterations(r)`` HVPs and timed, fit and scores together.

    Args:
        obj, theta, data: the objective, θ and the data that define H.
        g_test, g_train: ``[n_test, p]``, ``[n_train, p]`` per-example gradients.
        ranks: the ranks to try (each capped at p).
        reference: ``[n_test, n_train]`` scores to compare with (e.g. exact damped influence).
        damping: added to the kept eigenvalues.
        iterations: Arnoldi steps for rank r, a function of r (default 2r) or a fixed number;
            capped at p and raised to at least r.
        n: training-set size in 1/n (default ``len(g_train)``).
        seed: Arnoldi start vector.

    Returns:
        ``(table, scores)``: a DataFrame with columns ``rank``, ``kept`` (eigenpairs kept, fewer
        than the rank when fewer positive ones were found), ``iterations``, ``hvps``,
        ``seconds``, ``smallest_kept`` (eigenvalue), and ``rel_error``, ``pearson``,
        ``spearman`` against the reference; and a dict rank -> scores ``[n_test, n_train]``.
    """
    n = g_train.shape[0] if n is None else n
    p = g_test.shape[1]
    rows, out = [], {}
    for r in ranks:
        r = min(int(r), p)
        m = iterations(r) if callable(iterations) else int(iterations)
        m = max(min(int(m), p), r)
        start = time.perf_counter()
        solver = ArnoldiSolver(rank=r, iterations=m, damping=damping, seed=seed).fit(obj, theta, data)
        s = scores_from_grads(solver, g_test, g_train, n)
        seconds = time.perf_counter() - start
        out[r] = s
        rows.append(dict(rank=r, kept=int(solver.eigenvalues.numel()), iterations=solver.iterations_done,
                         hvps=solver.hvp_count, seconds=seconds, smallest_kept=float(solver.eigenvalues.min()),
                         **_agreement(s, reference)))
    return pd.DataFrame(rows), out


def compare_solvers(
    solvers: Mapping[str, Any],
    obj: Any,
    theta: Tensor,
    data: Data,
    g_test: Tensor,
    g_train: Tensor,
    *,
    reference: Tensor | None = None,
    n: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Tensor]]:
    """Fit each solver, score the same query, and measure cost and agreement.

    Each solver is fitted on ``(obj, theta, data)`` and used for
    ``scores = (1/n) solve(g_test) g_trainᵀ``; fit and solve are timed together and HVPs counted.
    A :class:`~influence_utils.solvers.LissaDivergenceError` or a
    :class:`~influence_utils.solvers.ConvergenceWarning` (e.g. CG meeting negative curvature) is
    recorded in ``failure``, not raised; other warnings pass through.

    Args:
        solvers: name -> unfitted solver.
        obj, theta, data: what H is (the data may be a subsample of the training set).
        g_test, g_train: precomputed per-example gradients (computed once for all solvers).
        reference: optional ``[n_test, n_train]`` reference scores.
        n: training-set size in 1/n (default ``len(g_train)``).

    Returns:
        ``(table, scores)``: a DataFrame indexed by solver name with columns ``hvps``,
        ``seconds``, ``failure`` (``""`` when none) and, with a reference, ``rel_error``,
        ``pearson``, ``spearman``; and a dict name -> scores (absent for a solver that raised).
    """
    n = g_train.shape[0] if n is None else n
    rows, out = [], {}
    for name, solver in solvers.items():
        failure = ""
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                solver.fit(obj, theta, data)
                s = scores_from_grads(solver, g_test, g_train, n)
            except LissaDivergenceError as err:
                s, failure = None, f"diverged at step {err.step}"
        seconds = time.perf_counter() - start
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):  # not ours to swallow
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        notes = [str(w.message).split(":")[0] for w in caught if issubclass(w.category, ConvergenceWarning)]
        if notes and not failure:
            failure = "; ".join(notes)
        row = dict(solver=name, hvps=solver.hvp_count, seconds=seconds, failure=failure)
        if s is not None:
            out[name] = s
            row.update(_agreement(s, reference))
        rows.append(row)
    return pd.DataFrame(rows).set_index("solver"), out


def pairwise_agreement(scores: Mapping[str, Tensor], method: str = "spearman") -> pd.DataFrame:
    """Correlation of every pair of score matrices (all entries flattened): a symmetric table.

    Args:
        scores: name -> ``[n_test, n_train]`` scores.
        method: ``"spearman"`` or ``"pearson"``.
    """
    corr = {"spearman": spearman, "pearson": pearson}
    if method not in corr:
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    names = list(scores)
    table = pd.DataFrame(index=names, columns=names, dtype=float)
    for a in names:
        for b in names:
            table.loc[a, b] = 1.0 if a == b else corr[method](scores[a], scores[b])
    return table


def lissa_error_figure(grid: pd.DataFrame, scale: float, damping: float, depth: int | None = None, ax=None):
    """LiSSA's relative error against depth for one (scale, damping) of a :func:`lissa_error_grid`.

    Converging depths are drawn as a curve; where the recursion diverged a red cross marks the
    step at which the solver raised. ``depth`` marks one depth with a vertical line.

    Returns:
        The matplotlib figure.
    """
    sel = grid[(grid.scale == scale) & (grid.damping == damping)].sort_values("depth")
    if sel.empty:
        raise ValueError(f"no grid rows for scale={scale} and damping={damping}; choose values from the grid")
    if ax is None:
        fig, ax = new_figure()
    else:
        fig = ax.figure
    ok = sel[sel.status == "ok"]
    ax.plot(ok.depth, ok.rel_error, marker="o", ms=3, color=COLORS["if"], label="LiSSA, relative error")
    ax.axhline(1.0, color=COLORS["truth"], lw=0.8, ls=":", label="error of the zero estimate")
    bad = sel[sel.status == "diverged"]
    if not bad.empty:
        step = int(bad.diverged_at.iloc[0])
        top = float(ok.rel_error.max()) if not ok.empty else 1.0
        ax.plot([step], [max(top, 1.0)], marker="x", ms=9, mew=2, ls="none", color=COLORS["accent"],
                label=f"LissaDivergenceError at step {step}")
    if depth is not None:
        ax.axvline(depth, color=COLORS["tbif"], lw=1, ls="--", label=f"depth {depth}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("depth (recursion steps)")
    ax.set_ylabel("relative error vs exact damped solve")
    ax.set_title(f"scale {scale:.3g}, damping {damping:.3g}")
    ax.legend(loc="lower left")
    return fig
