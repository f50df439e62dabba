"""One report on the five assumptions behind influence functions, for your own model.

:func:`diagnose` measures, at the parameters θ where influence would be computed, how far each
assumption of the classical derivation holds:

=======================  ====================================================================
assumption               what is measured
=======================  ====================================================================
convexity                the top Hessian eigenpairs by magnitude: the share of negative
                         curvature among them, the smallest and largest eigenvalue
numeric stability        the relative residual ``‖(H + d·I)x − v‖/‖v‖`` of the chosen solver and
                         damping d on real right-hand sides (per-example gradients), and
                         LiSSA's convergence condition ``scale > λ_max + d``
training trajectory      how far θ is from a stationary point: ``‖∇L(θ)‖`` against the push of
                         one training example, ``‖∇ℓ(z)‖/n``
parameter divergence     the exponential growth rate r of ``‖θ_ε(t) − θ(t)‖`` in two short
                         paired runs (:func:`~influence_utils.training.paired_runs`) and the
                         horizon ``T* = log(1/|ε|)/r`` in steps over which a first-order
                         prediction stays trustworthy
first-order expansion    the second-order term of the response ``θ_ε − θ`` relative to the
                         first-order term, ``|ε|·‖θ''‖ / (2‖θ'‖)``, for the given ε
=======================  ====================================================================

The result is a :class:`Diagnosis`: a list of :class:`Check` objects (status ``"ok"``,
``"warn"`` or ``"fail"``, the measured numbers, a one-line verdict and a recommendation each),
with :meth:`Diagnosis.table` for a pandas DataFrame and an HTML rendering in notebooks.

Every check is computed on the data you pass: give a subset (a few thousand examples) for a
large data set, since the Hessian-vector products run over all of it.
"""

from __future__ import annotations

import html
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp

from .batching import Data, iter_chunks, num_examples, subset
from .divergence import curvature_growth_rate, fit_growth_rate
from .divergence import horizon as _horizon
from .objective import Objective
from .solvers import (
    ArnoldiSolver,
    CGSolver,
    ConvergenceWarning,
    ExactSolver,
    LissaDivergenceError,
    LissaSolver,
    Solver,
)
from .training import paired_runs

__all__ = ["Check", "Diagnosis", "diagnose", "ASSUMPTIONS"]

#: The five assumptions, in the book's order, with the chapter that treats each.
ASSUMPTIONS: dict[str, str] = {
    "convexity": "02_convexity",
    "numeric_stability": "03_numeric_stability",
    "training_trajectory": "04_training_trajectory",
    "parameter_divergence": "05_parameter_divergence",
    "first_order": "06_first_order",
}

_TITLES = {**{a: a.replace("_", " ") for a in ASSUMPTIONS}, "first_order": "first-order expansion"}

_STATUS_ORDER = {"ok": 0, "skipped": 0, "warn": 1, "fail": 2}


@dataclass
class Check:
    """The outcome of one assumption's check.

    Attributes:
        assumption: key in :data:`ASSUMPTIONS` (``"convexity"``, ...).
        status: ``"ok"`` (holds), ``"warn"`` (holds approximately, read with care), ``"fail"``
            (violated: the classical prediction is unreliable), or ``"skipped"``.
        measure: name of the headline quantity, e.g. ``"negative curvature share"``.
        value: its value (``nan`` when skipped).
        verdict: one line saying what was found.
        recommendation: one line saying what to do about it.
        details: every number measured, by name.
        seconds: wall time of the check.
    """

    assumption: str
    status: str
    measure: str
    value: float
    verdict: str
    recommendation: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def title(self) -> str:
        """Readable name of the assumption."""
        return _TITLES.get(self.assumption, self.assumption)

    @property
    def chapter(self) -> str:
        """File stem of the book chapter about this assumption."""
        return ASSUMPTIONS.get(self.assumption, "")


@dataclass
class Diagnosis:
    """The report of :func:`diagnose`: one :class:`Check` per assumption.

    Use ``diagnosis["convexity"]`` for one check, :meth:`table` for a DataFrame, ``print`` for
    text; in a notebook it renders as a coloured HTML table.

    Attributes:
        checks: the checks, in the order of :data:`ASSUMPTIONS`.
        settings: the settings the checks ran with (solver, damping, ε, steps, lr, ...).
    """

    checks: list[Check]
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, assumption: str) -> Check:
        for c in self.checks:
            if c.assumption == assumption:
                return c
        raise KeyError(f"no check {assumption!r}; this diagnosis has {[c.assumption for c in self.checks]}")

    def __iter__(self):
        return iter(self.checks)

    @property
    def status(self) -> str:
        """The worst status over all checks (``"ok"``, ``"warn"`` or ``"fail"``)."""
        worst = max((_STATUS_ORDER[c.status] for c in self.checks), default=0)
        return {0: "ok", 1: "warn", 2: "fail"}[worst]

    @property
    def verdict(self) -> str:
        """One line over all checks."""
        failed = [c.title for c in self.checks if c.status == "fail"]
        warned = [c.title for c in self.checks if c.status == "warn"]
        ran = [c for c in self.checks if c.status != "skipped"]
        if not failed and not warned:
            return f"all {len(ran)} checked assumptions hold: classical influence is trustworthy here"
        parts = []
        if failed:
            parts.append("violated: " + ", ".join(failed))
        if warned:
            parts.append("approximate: " + ", ".join(warned))
        return "; ".join(parts) + " (see the recommendations)"

    def table(self):
        """A pandas DataFrame, one row per assumption.

        Columns: ``assumption``, ``status``, ``measure``, ``value``, ``verdict``,
        ``recommendation``, ``chapter``, ``seconds``.
        """
        import pandas as pd

        columns = ("status", "measure", "value", "verdict", "recommendation", "chapter", "seconds")
        return pd.DataFrame([{"assumption": c.title, **{k: getattr(c, k) for k in columns}} for c in self.checks])

    def __str__(self) -> str:
        lines = [f"diagnosis: {self.verdict}"]
        for c in self.checks:
            lines.append(f"  [{c.status:>4}] {c.title}: {c.measure} = {_fmt(c.value)}")
            lines.append(f"         {c.verdict}")
            if c.status not in ("ok", "skipped"):
                lines.append(f"         -> {c.recommendation}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        inner = ", ".join(f"{c.assumption}={c.status}" for c in self.checks)
        return f"Diagnosis({inner})"

    def _repr_html_(self) -> str:
        colors = {"ok": "#2a9d8f", "warn": "#e0a21f", "fail": "#c0392b", "skipped": "#888888"}
        rows = []
        for c in self.checks:
            rows.append(
                "<tr>"
                f"<td style='text-align:left'><b>{html.escape(c.title)}</b></td>"
                f"<td style='color:white;background:{colors.get(c.status, '#888')};text-align:center'>"
                f"{html.escape(c.status)}</td>"
                f"<td style='text-align:left'>{html.escape(c.measure)} = {html.escape(_fmt(c.value))}</td>"
                f"<td style='text-align:left'>{html.escape(c.verdict)}</td>"
                f"<td style='text-align:left'>{html.escape(c.recommendation)}</td>"
                "</tr>"
            )
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in
                       ("assumption", "status", "measured", "verdict", "recommendation"))
        return (
            f"<p><b>Influence diagnosis:</b> {html.escape(self.verdict)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )


def _eq(x: float) -> str:
    """``"= 0.0123"`` or ``"< 1e-8"``."""
    text = _fmt(x)
    return text if text.startswith("<") else f"= {text}"


def _fmt(x: float) -> str:
    """Three significant digits; values below 1e-8 (rounding level) as ``< 1e-8``."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if 0 < abs(x) < 1e-8:
        return "< 1e-8"
    return f"{x:.3g}"


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------


def _spectrum(obj: Objective, theta: Tensor, data: Data, rank: int, iterations: int, exact_max: int, seed: int):
    """Top eigenvalues of H by magnitude (descending by value) and how they were found."""
    if obj.p <= exact_max:
        evals = torch.linalg.eigvalsh(obj.hessian(theta, data))
        full_min = float(evals.min())
        order = evals.abs().argsort(descending=True)[:rank]
        return evals[order].sort(descending=True).values, "exact", full_min
    solver = ArnoldiSolver(rank=min(rank, iterations), iterations=iterations, positive_only=False, seed=seed)
    solver.fit(obj, theta, data)
    return solver.eigenvalues, f"Arnoldi ({solver.iterations_done} iterations)", float(solver.ritz_values.min())


def _check_convexity(evals: Tensor, method: str, lam_max: float, lam_min: float) -> Check:
    scale = float(evals.abs().max())
    neg = evals[evals < 0]
    share = float(neg.abs().sum() / evals.abs().sum()) if scale > 0 else 0.0
    details = {
        "lambda_max": lam_max,
        "lambda_min": lam_min,
        "n_eigenvalues": len(evals),
        "n_negative": int(len(neg)),
        "negative_share": share,
        "method": method,
    }
    tiny = 1e-6 * scale
    if lam_min >= -tiny:
        status = "ok"
        verdict = (f"no negative curvature among the top {len(evals)} eigenvalues ({method}); "
                   f"λ from {lam_min:.3g} to {lam_max:.3g}")
        rec = "none needed: H is positive (semi-)definite here"
        if lam_min <= tiny:
            rec = "H is nearly singular: keep a small damping or weight decay"
    else:
        status = "warn" if share < 0.05 else "fail"
        verdict = (f"negative curvature: λ_min ≈ {lam_min:.3g} against λ_max ≈ {lam_max:.3g}; {len(neg)} of the "
                   f"top {len(evals)} eigenvalues by magnitude are negative ({share:.1%} of their magnitude)")
        rec = (f"H⁻¹ is not a minimiser's response: use damping > {-lam_min:.2g} (e.g. {-2 * lam_min:.2g}), "
               "or ArnoldiSolver(positive_only=True), which inverts only the positive eigenspace")
    return Check("convexity", status, "negative curvature share", share, verdict, rec, details)


def _check_stability(obj, theta, data, solver, probes: Tensor, lam_max: float, lam_min: float) -> Check:
    d = solver.damping
    details: dict[str, Any] = {"solver": repr(solver), "damping": d}
    lissa_scale_needed = lam_max + d
    details["lissa_min_scale"] = lissa_scale_needed
    details["lissa_needs_damping_above"] = max(0.0, -lam_min)
    lissa_ok = None
    if isinstance(solver, LissaSolver):
        lissa_ok = solver.scale > lissa_scale_needed and lam_min + d > 0
        details["lissa_scale"] = solver.scale
        details["lissa_condition_met"] = lissa_ok
    name = type(solver).__name__
    indefinite = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            x = solver.solve(probes)
        indefinite = any("non-positive curvature" in str(w.message) for w in caught)
        hx = obj.hvp(theta, data, x) + d * x
        res = ((hx - probes).norm(dim=1) / probes.norm(dim=1).clamp_min(1e-300))
        residual = float(res.max())
        finite = bool(torch.isfinite(res).all())
    except (LissaDivergenceError, ValueError, FloatingPointError) as err:
        residual, finite = float("inf"), False
        details["error"] = str(err).split("\n")[0]
    details["residual"] = residual
    details["n_probes"] = int(probes.shape[0])
    cond = f"; LiSSA converges only with scale > λ_max + damping = {lissa_scale_needed:.3g}"
    if lam_min + d <= 0:
        cond += f" and damping > {-lam_min:.3g}"
    if not finite:
        status = "fail"
        verdict = f"{name} with damping {d:g} failed: {details.get('error', 'non-finite solution')}"
    elif residual < 1e-3:
        status = "ok"
        verdict = f"{name} with damping {d:g} solves (H + dI)x = v to relative residual {_fmt(residual)}"
    elif residual < 1e-1:
        status = "warn"
        verdict = f"{name} with damping {d:g} leaves relative residual {residual:.2g}"
    else:
        status = "fail"
        verdict = f"{name} with damping {d:g} leaves relative residual {residual:.2g}: H⁻¹v is not computed"
    if indefinite:
        status = "fail"
        details["indefinite"] = True
        verdict = (f"{name} with damping {d:g} met non-positive curvature (H + dI is indefinite) and stopped "
                   f"at relative residual {residual:.2g}")
    if lissa_ok is False:
        status = "fail"
        verdict += f"; LiSSA's scale {solver.scale:g} breaks its convergence condition"
    if status == "ok":
        rec = "none needed" + cond
    elif isinstance(solver, ArnoldiSolver):
        rec = ("Arnoldi inverts only its top eigenspace, so a residual is expected: raise rank/iterations "
               "if the residual must shrink, or accept it as the intended regularisation")
    else:
        rec = (f"raise damping (above {max(0.0, -lam_min):.2g}), add iterations, or use ArnoldiSolver" + cond)
    return Check("numeric_stability", status, "solver residual", residual, verdict, rec, details)


def _grad_norms(obj: Objective, theta: Tensor, data: Data, chunk: int = 256) -> Tensor:
    out = []
    for x, y, _ in iter_chunks(data, chunk):
        out.append(obj.per_example_grads(theta, (x, y)).norm(dim=1))
    return torch.cat(out)


def _check_trajectory(obj, theta, data, n: int, norms: Tensor, lam_max: float) -> Check:
    g = obj.grad(theta, data)
    gnorm = float(g.norm())
    loss = float(obj.loss(theta, data))
    push = float(norms.median()) / n  # the gradient one example adds to L
    ratio = gnorm / push if push > 0 else float("inf")
    gap = gnorm**2 / (2 * lam_max) if lam_max > 0 else float("nan")  # nan when λ_max is unknown
    details = {
        "grad_norm": gnorm,
        "loss": loss,
        "median_example_grad_norm": float(norms.median()),
        "relative_grad_norm": gnorm / max(float(norms.mean()), 1e-300),
        "grad_vs_one_example": ratio,
        "loss_gap_lower_bound": gap,
        "relative_loss_gap": gap / loss if loss > 0 else float("nan"),
    }
    if ratio < 0.1:
        status = "ok"
        verdict = (f"θ is stationary: ‖∇L‖ {_eq(gnorm)}, {_fmt(ratio)} times the push of one example "
                   "(‖∇ℓ‖/n)")
        rec = "none needed: re-optimising without an example moves θ only by that example's push"
    elif ratio < 1:
        status = "warn"
        verdict = f"θ is nearly stationary: ‖∇L‖ = {gnorm:.2g} is {ratio:.2g} times the push of one example"
        rec = "train a little longer, or compare influence with warm-start fine-tuning rather than retraining"
    else:
        status = "fail"
        verdict = f"θ is not a stationary point: ‖∇L‖ = {gnorm:.2g} is {ratio:.3g} times the push of one example"
        if gap == gap:
            verdict += f" (loss {loss:.3g}, at least {gap:.2g} still to gain)"
        rec = ("re-optimising moves θ more than removing any one example: read influence as the effect of "
               "continuing training from this checkpoint and validate it against warm-start fine-tuning")
    return Check("training_trajectory", status, "‖∇L‖ / (‖∇ℓ‖/n)", ratio, verdict, rec, details)


def _check_divergence(obj, theta, data, z: int, eps: float, steps: int, lr: float, batch_size, seed,
                      evals: Tensor | None) -> Check:
    zb = subset(data, slice(z, z + 1))
    base, pert = paired_runs(obj, theta, data, zb, eps, steps=steps, lr=lr, batch_size=batch_size,
                             seed=seed, record_every=1)
    dist = torch.stack([(a - b).norm() for a, b in zip(pert.thetas, base.thetas)]).to(torch.float64)
    t = torch.tensor(base.steps, dtype=torch.float64, device=dist.device)
    # A constant perturbation ε∇ℓ(z) pushes the runs apart linearly at first (gap ≈ η t |ε| ‖∇ℓ‖);
    # the exponential rate is the log-linear growth of gap/t, fitted after the first quarter.
    fit = fit_growth_rate(t[1:], dist[1:] / t[1:], window=(max(1, steps // 4), steps))
    rate = float(fit.rate)
    horizon = float(_horizon(rate, abs(eps), 1.0)) if rate > 0 else float("inf")
    details = {
        "rate_per_step": rate,
        "fit_r2": float(fit.r2),
        "curvature_rate": curvature_growth_rate(evals, lr) if evals is not None else float("nan"),
        "horizon_steps": horizon,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "eps": eps,
        "example": z,
        "distances": dist.tolist(),
        "growth_over_run": float(dist[-1] / dist[1]) if dist[1] > 0 else float("nan"),
    }
    if rate * steps < math.log(2):
        status = "ok"
        verdict = f"no exponential drift over {steps} steps (rate {rate:.2g}/step beyond the linear drift)"
        rec = "none needed over this horizon; re-check for longer fine-tuning"
        horizon_text = "∞"
    else:
        status = "fail" if horizon < steps else "warn"
        horizon_text = f"{horizon:.0f}"
        verdict = (f"an exponential fit to the gap between the runs grows at {rate:.2g}/step beyond the linear "
                   f"drift: if it keeps that rate, predictions are trustworthy for "
                   f"about T* = log(1/|ε|)/r ≈ {horizon:.0f} steps")
        rec = (f"trust influence only for fine-tuning horizons below ~{horizon:.0f} steps at lr {lr:g}: use "
               "time-bounded influence with that horizon, not retraining from scratch")
    details["horizon_text"] = horizon_text
    curv = details["curvature_rate"]
    details["curvature_horizon_steps"] = math.log(1 / abs(eps)) / curv if curv > 0 else float("inf")
    if curv > 0 and status == "ok":
        verdict += (f"; the curvature allows up to {curv:.2g}/step along its most negative direction "
                    f"(T* ≈ {details['curvature_horizon_steps']:.0f} steps if that direction takes over)")
    return Check("parameter_divergence", status, "horizon T* (steps)", horizon, verdict, rec, details)


def _third_derivative(obj: Objective, theta: Tensor, data: Data, u: Tensor) -> Tensor:
    """``∇³L[u, u]`` = the derivative of ``H(θ)u`` along u, ``[p]``."""
    try:
        return jvp(lambda t: obj.hvp(t, data, u), (theta,), (u,))[1]
    except (RuntimeError, NotImplementedError):  # pragma: no cover - models torch.func cannot nest
        h = 1e-3 * (theta.norm().clamp_min(1.0) / u.norm().clamp_min(1e-30))
        return (obj.hvp(theta + h * u, data, u) - obj.hvp(theta - h * u, data, u)) / (2 * h)


def _check_first_order(obj, theta, data, solver, probe_idx: list[int], eps: float) -> Check:
    if not isinstance(data, (tuple, list)):
        return _skipped("first_order", "second-order / first-order term", "needs tensor data (inputs, targets)")
    ratios = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j in probe_idx:
            zb = subset(data, slice(j, j + 1))
            g = obj.per_example_grads(theta, zb)[0]
            u = -solver.solve(g)  # θ' = dθ_ε/dε
            # d/dε of [∇L(θ_ε) + ε∇ℓ_z(θ_ε)] = 0 twice: H θ'' + ∇³L[θ', θ'] + 2 ∇²ℓ_z θ' = 0
            t3 = _third_derivative(obj, theta, data, u)
            hz = obj.hvp(theta, zb, u) - obj.weight_decay * u  # ∇²ℓ(z) u: the one example's HVP, no decay
            second = -solver.solve(t3 + 2 * hz)  # θ''
            ratios.append(abs(eps) * float(second.norm()) / (2 * float(u.norm())))
    worst = max(ratios)
    details = {"eps": eps, "ratios": ratios, "examples": list(probe_idx), "median_ratio": sorted(ratios)[len(ratios) // 2]}
    if worst < 0.1:
        status = "ok"
        verdict = f"the second-order term is at most {worst:.1%} of the first for ε = {eps:.3g}"
        rec = "none needed at this ε"
    elif worst < 0.5:
        status = "warn"
        verdict = f"the second-order term reaches {worst:.0%} of the first for ε = {eps:.3g}"
        rec = "expect effects to be misestimated by that much; use smaller groups (smaller |ε|)"
    else:
        status = "fail"
        verdict = f"the second-order term reaches {worst:.3g}× the first for ε = {eps:.3g}"
        rec = "first-order influence cannot predict this perturbation: remove fewer examples at once, or retrain"
    return Check("first_order", status, "second-order / first-order term", worst, verdict, rec, details)


def _skipped(assumption: str, measure: str, why: str) -> Check:
    return Check(assumption, "skipped", measure, float("nan"), f"skipped: {why}", "", {})


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def diagnose(
    obj: Objective,
    theta: Tensor,
    data: Data,
    *,
    solver: Solver | None = None,
    damping: float = 0.0,
    eps: float | None = None,
    rank: int = 20,
    iterations: int = 60,
    steps: int = 40,
    lr: float | None = None,
    batch_size: int | None = None,
    n_probes: int = 3,
    checks: tuple[str, ...] | list[str] | None = None,
    exact_max: int = 1500,
    seed: int = 0,
) -> Diagnosis:
    """Check the five assumptions of influence functions at ``theta`` on ``data``.

    Args:
        obj: the training objective (model, per-example loss, weight decay, selected θ).
        theta: ``[p]`` the parameters where influence would be computed.
        data: the training data ``(inputs, targets)`` (a DataLoader works for the curvature
            checks only); a subset of a few thousand examples is enough and keeps this fast.
        solver: the inverse-Hessian solver you plan to use (fitted here on ``data``). ``None``:
            :class:`~influence_utils.solvers.ExactSolver` when ``p <= exact_max``, else
            :class:`~influence_utils.solvers.CGSolver`, both with ``damping``.
        damping: damping for the default solver.
        eps: the perturbation of one example's weight; default ``-1/n`` (remove one example).
            Use ``-k/n`` to ask about removing a group of k.
        rank: eigenpairs examined for convexity (top by magnitude).
        iterations: Arnoldi iterations for the spectrum (when ``p > exact_max``).
        steps: length of the paired runs for parameter divergence.
        lr: step size of the paired runs; default ``1/λ_max`` (a stable gradient-descent step).
            Pass your fine-tuning learning rate.
        batch_size: mini-batch size of the paired runs (``None``: full batch, deterministic).
        n_probes: training examples (those with the largest gradients) used as right-hand sides
            and perturbations.
        checks: a subset of :data:`ASSUMPTIONS` keys to run (default: all five).
        exact_max: the largest p for which the explicit Hessian is used.
        seed: seeds the Arnoldi start and the batch order.

    Returns:
        A :class:`Diagnosis`.

    Example::

        report = iu.diagnose(obj, theta, train, lr=0.1)
        report             # an HTML table in a notebook
        report.table()     # a pandas DataFrame
        report["parameter_divergence"].details["horizon_steps"]
    """
    wanted = list(ASSUMPTIONS) if checks is None else list(checks)
    unknown = [c for c in wanted if c not in ASSUMPTIONS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {list(ASSUMPTIONS)}")
    n = num_examples(data)
    eps = -1.0 / n if eps is None else float(eps)
    if eps == 0:
        raise ValueError("eps must be non-zero (e.g. -1/n to remove one example)")
    if solver is None:
        solver = ExactSolver(damping=damping) if obj.p <= exact_max else CGSolver(damping=damping, max_iter=100, tol=1e-6)
    ctx = _Context(obj, theta, data, solver, set(wanted), n, eps, lr, steps, batch_size, seed)
    ctx.measure(rank, iterations, exact_max, n_probes)
    out: list[Check] = []
    for name in (a for a in ASSUMPTIONS if a in wanted):
        timer = time.perf_counter()
        check, shared = _CHECKS[name](ctx)
        check.seconds = time.perf_counter() - timer + ctx.seconds.get(shared, 0.0)
        out.append(check)
    settings = {"solver": repr(solver), "damping": getattr(solver, "damping", damping), "eps": eps, "lr": ctx.lr,
                "steps": steps, "batch_size": batch_size, "n": n, "p": obj.p, "spectrum": ctx.method}
    return Diagnosis(out, settings)


@dataclass
class _Context:
    """What :func:`diagnose`'s checks share: the inputs, then the spectrum, the gradient norms,
    the probes and the fitted solver (:meth:`measure`), with the seconds each took."""

    obj: Objective
    theta: Tensor
    data: Data
    solver: Solver
    wanted: set[str]
    n: int
    eps: float
    lr: float | None
    steps: int
    batch_size: int | None
    seed: int
    evals: Tensor | None = None
    method: str = "not computed"
    lam_max: float = float("nan")
    lam_min: float = float("nan")
    norms: Tensor | None = None
    probe_idx: list[int] = field(default_factory=list)
    probes: Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def tensor_data(self) -> bool:
        return isinstance(self.data, (tuple, list))

    def measure(self, rank: int, iterations: int, exact_max: int, n_probes: int) -> None:
        """The spectrum (when a check or the default lr needs it), the gradient norms and probes,
        and the solver's fit (when a check uses it), timed."""
        obj, theta, data = self.obj, self.theta, self.data
        timer = time.perf_counter()
        if {"convexity", "numeric_stability"} & self.wanted or (self.lr is None and "parameter_divergence" in self.wanted):
            self.evals, self.method, smallest = _spectrum(obj, theta, data, rank, iterations, exact_max, self.seed)
            self.lam_max, self.lam_min = float(self.evals.max()), min(float(self.evals.min()), smallest)
            if self.lr is None:
                if self.lam_max <= 0:
                    raise ValueError("the Hessian has no positive eigenvalue at theta; pass lr explicitly")
                self.lr = 1.0 / self.lam_max
        self.seconds["spectrum"] = time.perf_counter() - timer

        timer = time.perf_counter()
        self.norms = _grad_norms(obj, theta, data)
        self.probe_idx = self.norms.argsort(descending=True)[: max(1, n_probes)].tolist()
        if self.tensor_data:
            probe_batch = subset(data, self.probe_idx)
        else:
            probe_batch = next(iter(iter_chunks(data, n_probes)))[:2]
        self.probes = obj.per_example_grads(theta, probe_batch)
        self.seconds["norms"] = time.perf_counter() - timer

        timer = time.perf_counter()
        if {"numeric_stability", "first_order"} & self.wanted:
            self.solver.fit(obj, theta, data)
        self.seconds["fit"] = time.perf_counter() - timer


def _run_divergence(c: _Context) -> Check:
    if not c.tensor_data:
        return _skipped("parameter_divergence", "horizon T* (steps)", "paired runs need tensor data (inputs, targets)")
    spec = None if c.evals is None else torch.cat([c.evals, c.evals.new_tensor([c.lam_min])])
    return _check_divergence(c.obj, c.theta, c.data, c.probe_idx[0], c.eps, c.steps, c.lr, c.batch_size, c.seed, spec)


#: Each assumption's check, and the shared measurement whose time it is charged with.
_CHECKS = {
    "convexity": lambda c: (_check_convexity(c.evals, c.method, c.lam_max, c.lam_min), "spectrum"),
    "numeric_stability": lambda c: (_check_stability(c.obj, c.theta, c.data, c.solver, c.probes, c.lam_max, c.lam_min), "fit"),
    "training_trajectory": lambda c: (_check_trajectory(c.obj, c.theta, c.data, c.n, c.norms, c.lam_max), "norms"),
    "parameter_divergence": lambda c: (_run_divergence(c), None),
    "first_order": lambda c: (_check_first_order(c.obj, c.theta, c.data, c.solver, c.probe_idx, c.eps), None),
}
