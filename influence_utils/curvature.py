"""What the Hessian's spectrum says about influence: negative and near-zero curvature, conditioning.

Influence functions invert the Hessian H of the training objective. At a minimum of a convex loss
H is positive semi-definite and, with weight decay, safely invertible. A trained network is
neither convex nor exactly at a minimum: H has negative eigenvalues and many near zero. This
module summarises a spectrum in the numbers that decide whether ``H⁻¹`` (or ``(H + λI)⁻¹``) is
meaningful, and plots it:

* :func:`spectrum_summary` — count and mass of negative eigenvalues, near-zero count, smallest
  and largest eigenvalue, condition number, and the smallest damping that makes ``H + λI``
  positive semi-definite;
* :func:`plot_spectrum` — sorted eigenvalues on a symmetric-log axis, several models side by side;
* :func:`with_damping` — a fitted eigen-solver (``ExactSolver``, ``ArnoldiSolver``) with another
  damping, without recomputing the Hessian (for damping sweeps).

Eigenvalues come from ``iu.ExactSolver().fit(obj, theta, train).eigenvalues`` (or
``torch.linalg.eigvalsh(obj.hessian(theta, train))``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .solvers import Solver

__all__ = ["SpectrumSummary", "spectrum_summary", "plot_spectrum", "with_damping"]


@dataclass(frozen=True)
class SpectrumSummary:
    """Numbers that describe a symmetric matrix's spectrum (normally a Hessian).

    Attributes:
        p: number of eigenvalues (the matrix is ``[p, p]``).
        n_negative: eigenvalues below ``-tol`` (directions of negative curvature).
        negative_mass: ``Σ|λ_k|`` over those, divided by ``Σ|λ_k|`` over all: the share of the
            spectrum's absolute mass that is negative (0 for a PSD matrix).
        n_near_zero: eigenvalues with ``|λ_k| <= tol`` (flat directions).
        tol: the threshold used, ``rtol · max|λ_k|``.
        smallest: the smallest (most negative) eigenvalue.
        largest: the largest eigenvalue.
        condition_number: ``max|λ_k| / min|λ_k|`` (``inf`` if an eigenvalue is exactly 0): how
            much ``H⁻¹`` can amplify relative errors.
        min_damping: ``max(0, −smallest)``: the damping λ above which ``H + λI`` is positive
            definite, i.e. the proximal objective ``L + (λ/2)‖θ − θ0‖²`` is convex at θ0.
    """

    p: int
    n_negative: int
    negative_mass: float
    n_near_zero: int
    tol: float
    smallest: float
    largest: float
    condition_number: float
    min_damping: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"p={self.p}: {self.n_negative} negative (mass {self.negative_mass:.2%}), "
            f"{self.n_near_zero} near zero (|λ| <= {self.tol:.1e}), smallest {self.smallest:.3e}, "
            f"largest {self.largest:.3e}, condition number {self.condition_number:.2e}"
        )


def spectrum_summary(eigenvalues: Tensor, rtol: float = 1e-6) -> SpectrumSummary:
    """Summarise a spectrum: negative and near-zero eigenvalues, extremes, conditioning.

    Args:
        eigenvalues: ``[p]`` real eigenvalues in any order (e.g. ``ExactSolver.eigenvalues``).
        rtol: an eigenvalue with ``|λ_k| <= rtol · max|λ_k|`` counts as near zero; it then counts
            neither as negative nor as positive.

    Returns:
        A :class:`SpectrumSummary`.

    Raises:
        ValueError: if ``eigenvalues`` is not a non-empty 1-D tensor of finite values, or
            ``rtol`` is negative.
    """
    if not isinstance(eigenvalues, Tensor) or eigenvalues.ndim != 1 or eigenvalues.numel() == 0:
        shape = tuple(eigenvalues.shape) if isinstance(eigenvalues, Tensor) else type(eigenvalues).__name__
        raise ValueError(f"eigenvalues must be a non-empty 1-D tensor [p], got {shape}; pass "
                         "solver.eigenvalues or torch.linalg.eigvalsh(H)")
    if not torch.isfinite(eigenvalues).all():
        raise ValueError("eigenvalues contain NaN or inf: check the Hessian (is theta finite?)")
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    ev = eigenvalues.detach().to(torch.float64)
    absolute = ev.abs()
    top = float(absolute.max())
    tol = rtol * top
    negative = ev < -tol
    total = float(absolute.sum())
    smallest_abs = float(absolute.min())
    return SpectrumSummary(
        p=ev.numel(),
        n_negative=int(negative.sum()),
        negative_mass=float(absolute[negative].sum()) / total if total > 0 else 0.0,
        n_near_zero=int((absolute <= tol).sum()),
        tol=tol,
        smallest=float(ev.min()),
        largest=float(ev.max()),
        condition_number=top / smallest_abs if smallest_abs > 0 else math.inf,
        min_damping=max(0.0, -float(ev.min())),
    )


def plot_spectrum(
    eigenvalues: Tensor,
    *,
    ax=None,
    label: str | None = None,
    color: str | None = None,
    linthresh: float | None = None,
):
    """Plot eigenvalues sorted in descending order against their rank, on a symmetric-log y axis.

    The y axis is linear within ``±linthresh`` and logarithmic outside, so large positive, tiny
    and negative eigenvalues are all visible; negative ones form the tail below the zero line.
    The x axis is the rank divided by p, so models of different sizes share one axis.

    Args:
        eigenvalues: ``[p]`` eigenvalues.
        ax: axes to draw into (default: a new figure with the book's style).
        label, color: of the curve.
        linthresh: half-width of the linear region (default: ``1e-6 · max|λ_k|``).

    Returns:
        The matplotlib figure.
    """
    from .plotting import COLORS, new_figure

    ev = torch.sort(eigenvalues.detach().to(torch.float64).cpu(), descending=True).values
    fig, ax = new_figure() if ax is None else (ax.figure, ax)
    rank = (torch.arange(ev.numel(), dtype=torch.float64) + 0.5) / ev.numel()  # host: plotted
    ax.plot(rank.numpy(), ev.numpy(), color=color or COLORS["if"], lw=1.4, label=label)
    thresh = linthresh if linthresh is not None else 1e-6 * float(ev.abs().max())
    ax.set_yscale("symlog", linthresh=thresh)
    ax.axhline(0.0, color=COLORS["truth"], lw=0.7, ls="--")
    ax.set_xlabel("rank of the eigenvalue / p")
    ax.set_ylabel("eigenvalue (symmetric log scale)")
    if label:
        ax.legend(loc="upper right")
    return fig


def with_damping(solver: Solver, damping: float) -> Solver:
    """A copy of a fitted eigen-solver that inverts ``H + damping·I`` instead: the function form
    of ``solver.with_damping(damping)``.

    ``ExactSolver`` and ``ArnoldiSolver`` hold eigenpairs of the undamped H, so another damping
    needs no new Hessian or eigendecomposition: the copy shares the eigenpairs (no memory is
    copied) and the original is left unchanged.

    Args:
        solver: a fitted solver with ``eigenvalues`` and ``eigenvectors``.
        damping: the new λ ≥ 0.

    Returns:
        The damped copy.

    Raises:
        TypeError: for a solver without eigenpairs (CG, LiSSA: build a new one instead).
        RuntimeError: for an eigen-solver that is not fitted.
        ValueError: for a negative or non-finite damping.
    """
    method = getattr(solver, "with_damping", None)
    if method is None or not hasattr(solver, "eigenvectors"):
        raise TypeError(f"{type(solver).__name__} holds no eigenpairs; fit an ExactSolver or "
                        "ArnoldiSolver, or build a new solver with damping=...")
    return method(damping)  # the eigen-solvers' own method: one implementation
