"""One divergence study of a trained checkpoint: spectrum, paired runs, noise control, estimators vs T.

Chapter 7 asks the same questions of several models (a BERT, a ResNet, an MLP); this module
answers them for any objective and checkpoint with the tools of
:mod:`influence_utils.divergence`, so every model goes through exactly the same measurement:

1. the spectrum: Arnoldi (:class:`~influence_utils.solvers.ArnoldiSolver`) on the training
   objective at the checkpoint, over a seeded subsample of ``hessian_examples`` training examples;
   among the top Ritz values by magnitude, how many are negative, and ``η·λ_max``;
2. paired runs (:func:`~influence_utils.divergence.perturbed_runs`): from the checkpoint, mini-batch
   SGD with ε·ℓ(z) added, ε = −1/n (the removal of z), for a panel of ``n_z`` training examples z
   drawn at random, all with the same batch order as the unperturbed run; the gap
   ‖θ_ε(t) − θ(t)‖ and the loss of ``n_queries`` test queries at log-spaced steps (:func:`log_steps`);
3. the ε = 0 control: the unperturbed run repeated with ``control_seeds`` other batch orders; its
   distance to the first one is what randomness alone does;
4. three estimators of the same quantity, in the units and sign of
   :func:`~influence_utils.scores.influence` (positive: z helps the query): ABIF (Arnoldi IF on
   the positive eigenspace, one prediction for every T), time-bounded IF on the same eigenpairs
   (one per T) and TracIn over the recorded checkpoints of the unperturbed run (one per T); their
   Pearson and Spearman correlation with the measured change at every T, each with a 95 %
   bootstrap interval that resamples the training examples z and the queries together
   (:func:`~influence_utils.stats.bootstrap_correlations`, the same resamples for every T);
5. the growth of the gap fitted as an exponential and as a power law, with R² and bootstrap
   intervals over the panel (:func:`~influence_utils.divergence.fit_growth_models`); wall time
   and peak memory (:func:`~influence_utils.resources.measure`).

:meth:`FadingStudy.fades` decides "influence fades" by a criterion on the intervals: the
correlation's upper bound at the last horizon lies below its lower bound at the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import stats
from .batching import num_examples, subset
from .divergence import (
    GrowthFit,
    GrowthModels,
    divergence_curve,
    fit_growth_models,
    fit_growth_rate,
    perturbed_runs,
    tracin_vs_steps,
)
from .objective import Objective
from .resources import Measurement, measure
from .runs import SGD
from .scores import influence, time_bounded_influence
from .solvers import ArnoldiSolver, Solver
from .training import train as sgd_train

__all__ = ["FadingStudy", "fading_study", "study_settings", "top_by_magnitude", "log_steps", "epochs_to_steps",
           "ESTIMATORS", "correlation_table", "window_correlations", "WindowCorrelations", "positive_eigenpairs"]

#: The estimators every study compares, in the order of its tables.
ESTIMATORS = ("ABIF", "time-bounded IF", "TracIn")


def top_by_magnitude(values: Tensor, k: int) -> Tensor:
    """The ``k`` entries of ``values`` largest in absolute value, in descending order of value."""
    idx = values.abs().argsort(descending=True)[:k]
    return values[idx].sort(descending=True).values


def log_steps(horizon: int, points: int = 12) -> list[int]:
    """About ``points`` log-spaced steps from 1 to ``horizon``, with 0 first: the recording grid.

    Args:
        horizon: the last step (≥ 1), always included.
        points: how many positive steps to aim for (≥ 2); rounding to integers merges a few
            near 1, so the grid can be shorter.

    Raises:
        ValueError: for ``horizon < 1`` or ``points < 2``.
    """
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive integer number of steps, got {horizon}")
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    grid = np.unique(np.round(np.geomspace(1, horizon, int(points))).astype(int))
    return [0, *(int(v) for v in grid)]


def epochs_to_steps(epochs: float, n: int, batch_size: int | None) -> int:
    """SGD steps that make ``epochs`` passes over ``n`` examples in batches of ``batch_size`` (≥ 1).

    ``None`` (full batch): one step per epoch.
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    per_epoch = 1.0 if batch_size is None else n / batch_size
    return max(1, round(epochs * per_epoch))


def study_settings(section: Any) -> dict:
    """The keyword arguments of :func:`fading_study` from a config section such as ``cfg.ch7``.

    Reads ``n_z, n_queries, record_points, arnoldi_rank, arnoldi_iterations, hessian_examples,
    control_seeds, n_boot, grad_chunk`` (and ``seed`` when present); the horizon, step size and
    batch size are the model's own: pass ``horizon=``, ``lr=`` and ``batch_size=``.
    """
    kw = dict(n_z=section.n_z, n_queries=section.n_queries, record_points=section.record_points,
              rank=section.arnoldi_rank, iterations=section.arnoldi_iterations,
              hessian_examples=section.hessian_examples, control_seeds=section.control_seeds,
              n_boot=section.n_boot, grad_chunk=section.grad_chunk)
    if hasattr(section, "seed"):
        kw["seed"] = section.seed
    return kw


@dataclass
class FadingStudy:
    """The result of :func:`fading_study` for one model.

    Attributes:
        name: the model's label.
        p: number of parameters in θ.
        n: number of training examples.
        lr: SGD step size η of the paired runs.
        batch_size: examples per step (``None``: full batch).
        steps: recorded steps ``[R]`` (0 = the checkpoint), log-spaced.
        z_index: ``[k]`` the training examples z of the panel.
        query_index: ``[n_q]`` the test queries.
        hessian_examples: training examples the Arnoldi fit used.
        eigenvalues: ``[r]`` the top Ritz values of the Hessian by magnitude, descending.
        n_negative: how many of them are negative.
        gaps: ``[k, R]`` ‖θ_ε(t) − θ(t)‖ of each paired run (ε = −1/n).
        control_gaps: ``[S, R]`` ‖θ'(t) − θ(t)‖ between the unperturbed run and ε = 0 runs with
            ``S`` other batch orders.
        growth: per-curve log-linear fit of ``gaps`` (:class:`~influence_utils.divergence.GrowthFit`).
        growth_models: exponential against power law with intervals
            (:class:`~influence_utils.divergence.GrowthModels`).
        actual: ``[R, n_q, k]`` measured effect of removing z on each query's loss (score units).
        actual_control: ``[S, R, n_q, k]`` the same, measured against each control run.
        predictions: estimator name → ``[n_q, k]`` or ``[R, n_q, k]`` scores.
        table: one row per (estimator, T): ``pearson, pearson_low, pearson_high, spearman,
            spearman_low, spearman_high`` (intervals: bootstrap over z and queries).
        control_table: the same for time-bounded IF per control seed (column ``seed``), against
            ``actual_control``.
        measurement: wall time and peak memory of the study.
        solver: the fitted :class:`~influence_utils.solvers.ArnoldiSolver` (reusable, e.g. for a
            sweep of step sizes at the same checkpoint).
    """

    name: str
    p: int
    n: int
    lr: float
    batch_size: int | None
    steps: list[int]
    z_index: Tensor
    query_index: Tensor
    hessian_examples: int
    eigenvalues: Tensor
    n_negative: int
    gaps: Tensor
    control_gaps: Tensor
    growth: GrowthFit
    growth_models: GrowthModels
    actual: Tensor = field(repr=False)
    actual_control: Tensor = field(repr=False)
    predictions: dict = field(repr=False)
    table: Any = field(repr=False)
    control_table: Any = field(repr=False)
    measurement: Measurement = field(default_factory=Measurement)
    solver: Solver | None = field(default=None, repr=False)

    @property
    def rate(self) -> float:
        """Median fitted exponential growth rate of the gap per step over the panel (log units)."""
        return float(self.growth.rate.median())

    @property
    def lambda_max(self) -> float:
        """The largest Ritz value of the Hessian at the checkpoint."""
        return float(self.eigenvalues.max())

    @property
    def eta_lambda_max(self) -> float:
        """``η·λ_max``: gradient descent on the local quadratic is stable below 2."""
        return self.lr * self.lambda_max

    @property
    def steps_per_epoch(self) -> float:
        """Steps that see every training example once (1 for full batch)."""
        return 1.0 if self.batch_size is None else self.n / self.batch_size

    @property
    def epochs(self) -> float:
        """The horizon in epochs of the training set."""
        return self.steps[-1] / self.steps_per_epoch

    def correlation(self, estimator: str, T: int | None = None, method: str = "pearson", control: bool = False):
        """One correlation with its interval (:class:`~influence_utils.stats.Interval`).

        Args:
            estimator: one of :data:`ESTIMATORS`.
            T: the horizon (a recorded step); ``None``: the last one.
            method: ``"pearson"`` or ``"spearman"``.
            control: against the control runs: the mean over control seeds of the estimate and
                of each bound.
        """
        if method not in ("pearson", "spearman"):
            raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
        table = self.control_table if control else self.table
        T = self.steps[-1] if T is None else T
        rows = table[(table.estimator == estimator) & (table["T"] == T)]
        if rows.empty:
            raise KeyError(f"no row for estimator {estimator!r} at T={T}; have {sorted(set(table.estimator))} "
                           f"at T in {self.steps}")
        est, low, high = (float(rows[c].mean()) for c in (method, f"{method}_low", f"{method}_high"))
        return stats.Interval(est, low, high, 0.95, len(self.z_index) * len(self.query_index))

    def fades(self, estimator: str = "time-bounded IF", method: str = "pearson", early: int | None = None,
              late: int | None = None) -> bool:
        """True when the correlation at ``late`` lies wholly below the one at ``early`` (intervals).

        Defaults: ``early`` the first recorded step after 0, ``late`` the last one.
        """
        early = self.steps[1] if early is None else early
        return self.correlation(estimator, late, method).below(self.correlation(estimator, early, method))

    def curve(self, estimator: str, method: str = "pearson", control: bool = False):
        """A DataFrame ``T, estimate, low, high`` of one estimator (T = 0 left out; control: seed means)."""
        table = self.control_table if control else self.table
        rows = table[(table.estimator == estimator) & (table["T"] > 0)]
        cols = {method: "estimate", f"{method}_low": "low", f"{method}_high": "high"}
        return rows.groupby("T", as_index=False)[list(cols)].mean().rename(columns=cols)

    def __repr__(self) -> str:
        return (f"FadingStudy({self.name!r}, p={self.p:,}, n={self.n}, panel {len(self.z_index)} z × "
                f"{len(self.query_index)} queries, T={self.steps[-1]} ({self.epochs:.1f} epochs), "
                f"η·λ_max={self.eta_lambda_max:.2f}, negative eigenvalues {self.n_negative}/{len(self.eigenvalues)}, "
                f"gap growth {self.growth_models.shape})")


def _subsample(data: tuple, size: int | None, gen: torch.Generator) -> tuple:
    n = num_examples(data)
    if size is None or size >= n:
        return data
    idx = torch.randperm(n, generator=gen)[:size].sort().values.to(data[1].device)  # host: seeded, then moved
    return subset(data, idx)


def fading_study(
    obj: Objective,
    theta: Tensor,
    train: tuple,
    test: tuple,
    *,
    name: str = "",
    n_z: int = 16,
    n_queries: int = 100,
    horizon: int = 100,
    record_points: int = 12,
    lr: float = 0.1,
    batch_size: int | None = 32,
    seed: int = 0,
    rank: int = 20,
    iterations: int = 40,
    hessian_examples: int | None = 500,
    control_seeds: int = 3,
    n_boot: int = 1000,
    grad_chunk: int = 32,
    solver: ArnoldiSolver | None = None,
    estimators: tuple[str, ...] = ESTIMATORS,
) -> FadingStudy:
    """Measure parameter divergence and the fading of influence from one checkpoint.

    Args:
        obj: the training objective (θ may be a subset of the model's parameters, e.g. the top
            model of :func:`~influence_utils.trunk.split` on cached features).
        theta: the checkpoint ``[p]``.
        train: training data ``(inputs, targets)`` (n examples): the objective of the runs.
        test: test data; ``n_queries`` of them are tracked.
        name: label of the model.
        n_z: training examples in the panel (drawn at random with ``seed``), ≥ 2.
        n_queries: test queries (drawn with ``seed``), ≥ 2.
        horizon: SGD steps of the paired runs, recorded at :func:`log_steps` (``record_points``).
        lr: SGD step size; ``batch_size``: examples per step (``None``: full batch).
        seed: batch order of the paired runs (the controls use ``seed + 1 …``), the panels, the
            Hessian subsample and the bootstrap.
        rank: top Ritz values reported, and positive eigenpairs kept for ABIF and time-bounded IF.
        iterations: Arnoldi iterations (Hessian-vector products on the subsample).
        hessian_examples: training examples (a seeded subsample) the Hessian is taken over
            (``None``: all). Scores still use 1/n with n the full training set.
        control_seeds: ε = 0 runs with other batch orders (≥ 1).
        n_boot: bootstrap replicates of every interval.
        grad_chunk: examples whose per-example gradients are held at once (bounded memory:
            ``grad_chunk · p`` numbers).
        solver: a fitted :class:`~influence_utils.solvers.ArnoldiSolver` at ``theta`` to reuse
            (e.g. across a sweep of step sizes); ``hessian_examples`` is then only reported.
        estimators: which of :data:`ESTIMATORS` to compute (TracIn costs per-example gradients at
            every recorded step); ``"time-bounded IF"`` is always included (the control uses it).

    Returns:
        A :class:`FadingStudy`.

    Raises:
        ValueError: an empty or one-example panel, more panel examples or queries than the data
            has, a horizon shorter than one recorded step, or no control seed.
    """
    n, n_test = num_examples(train), num_examples(test)
    if not 2 <= n_z <= n:
        raise ValueError(f"n_z must be between 2 and the {n} training examples, got {n_z}")
    if not 2 <= n_queries <= n_test:
        raise ValueError(f"n_queries must be between 2 and the {n_test} test examples, got {n_queries}")
    if control_seeds < 1:
        raise ValueError(f"control_seeds must be >= 1, got {control_seeds}")
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; choose from {ESTIMATORS}")
    wanted = [e for e in ESTIMATORS if e in estimators or e == "time-bounded IF"]
    record = log_steps(horizon, record_points)
    gen = torch.Generator().manual_seed(seed)
    z_index = torch.randperm(n, generator=gen)[:n_z].sort().values  # host: seeded indices, moved below
    query_index = torch.randperm(n_test, generator=gen)[:n_queries].sort().values  # host: as above
    z, queries = subset(train, z_index), subset(test, query_index)
    hessian_data = _subsample(train, hessian_examples, gen)
    schedule = SGD(horizon, lr, batch_size=batch_size, seed=seed, record_every=record)
    saved_chunk = obj.chunk_size
    try:
        with measure(name) as m:
            if solver is None:  # Hessian-vector products in the objective's own (large) chunks
                solver = ArnoldiSolver(rank=rank, iterations=iterations, positive_only=True,
                                       seed=seed).fit(obj, theta, hessian_data)
            eig = top_by_magnitude(solver.ritz_values, rank).cpu()
            runs = perturbed_runs(obj, theta, train, z, -1.0 / n, schedule, test=queries, progress_bar=False)
            controls = [sgd_train(obj, theta, train, schedule.replace(seed=seed + 1 + c), progress_bar=False)
                        for c in range(control_seeds)]
            control_gaps = divergence_curve(runs.base, *controls)
            actual = runs.actual_scores()
            actual_control = torch.stack([
                runs.actual_scores(reference_losses=torch.stack([obj.per_example_losses(t, queries)
                                                                 for t in c.thetas]))
                for c in controls])
            obj.chunk_size = grad_chunk  # per-example gradients: grad_chunk · p numbers at a time
            kw = dict(n=n, chunk_size=grad_chunk)
            compute = {
                "ABIF": lambda: influence(obj, theta, solver, train=z, test=queries, progress_bar=False, **kw),
                "time-bounded IF": lambda: time_bounded_influence(obj, theta, solver, z, queries, steps=runs.steps,
                                                                 lr=lr, **kw),
                "TracIn": lambda: tracin_vs_steps(obj, runs.base, runs.steps, lr, z, queries, horizons=runs.steps, n=n),
            }
            predictions = {k: compute[k]().detach().cpu() for k in wanted}
            actual, actual_control = actual.detach().cpu(), actual_control.detach().cpu()
            table = correlation_table(predictions, actual, runs.steps, n_boot=n_boot, seed=seed)
            control_table = _control_table(predictions, actual_control, runs.steps, n_boot, seed)
            window = (record[1], horizon)
            growth = fit_growth_rate(runs.steps, runs.gaps.cpu(), window=window)
            growth_models = fit_growth_models(runs.steps, runs.gaps.cpu(), window=window, n_boot=n_boot, seed=seed)
    finally:
        obj.chunk_size = saved_chunk
    return FadingStudy(
        name=name, p=obj.p, n=n, lr=float(lr), batch_size=batch_size, steps=list(runs.steps), z_index=z_index,
        query_index=query_index, hessian_examples=num_examples(hessian_data), eigenvalues=eig,
        n_negative=int((eig < 0).sum()), gaps=runs.gaps.cpu(), control_gaps=control_gaps.cpu(), growth=growth,
        growth_models=growth_models, actual=actual, actual_control=actual_control, predictions=predictions,
        table=table, control_table=control_table, measurement=m, solver=solver,
    )


def _control_table(predictions: dict, actual_control: Tensor, steps: list[int], n_boot: int, seed: int):
    import pandas as pd

    tbif = {"time-bounded IF": predictions["time-bounded IF"]}  # the control asks one question
    parts = [correlation_table(tbif, a, steps, n_boot=n_boot, seed=seed).assign(seed=s) for s, a in enumerate(actual_control)]
    return pd.concat(parts, ignore_index=True)


def correlation_table(predictions: dict, actual: Tensor, steps: list[int], *, n_boot: int = 1000, seed: int = 0,
                      methods: tuple[str, ...] = ("pearson", "spearman")):
    """Pearson and Spearman of every estimator with the measured change at every horizon T, with intervals.

    The table :func:`fading_study` builds, for predictions and measurements made elsewhere (e.g. by
    :func:`~influence_utils.divergence.perturbed_runs` and the estimators of chapter 5).

    Args:
        predictions: estimator name → ``[n_q, k]`` (one prediction for every T) or ``[R, n_q, k]``.
        actual: ``[R, n_q, k]`` measured change (queries × training examples z) at each recorded step.
        steps: the recorded steps ``[R]``; horizons where nothing changed (T = 0) are left out.
        n_boot: bootstrap replicates; queries and z are resampled together (``unit="both"``), with
            the same resamples for every estimator and T (common random numbers).
        seed: seeds the bootstrap.
        methods: which correlations, ``"pearson"`` and/or ``"spearman"``.

    Returns:
        A pandas DataFrame, one row per estimator and horizon T, with the columns ``estimator``,
        ``T``, ``pearson``, ``pearson_low``, ``pearson_high``, ``spearman``, ``spearman_low`` and
        ``spearman_high`` (95 % intervals; only the columns of the methods asked for).
    """
    import pandas as pd

    unknown = set(methods) - {"pearson", "spearman"}
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of ('pearson', 'spearman'), got {methods}")
    rows = []
    live = [r for r, T in enumerate(steps) if T > 0 and torch.any(actual[r] != 0)]
    for name, pred in predictions.items():
        xs, ys = _paired(name, pred, actual, live)
        result = {m: stats.bootstrap_correlations(xs, ys, method=m, unit="both", n_boot=n_boot, seed=seed) for m in methods}
        for i, r in enumerate(live):
            row = {"estimator": name, "T": int(steps[r])}
            for m, intervals in result.items():
                row.update({m: intervals[i].estimate, f"{m}_low": intervals[i].low, f"{m}_high": intervals[i].high})
            rows.append(row)
    return pd.DataFrame(rows)


def _paired(name: str, pred: Tensor, actual: Tensor, rows: list[int]) -> tuple[list, list]:
    """``pred`` (``[n_q, k]``, the same for every T, or ``[R, n_q, k]``) and ``actual`` ``[R, n_q, k]`` at
    ``rows``, as float64 arrays; refuses a prediction of the wrong shape."""
    pred = pred.unsqueeze(0).expand_as(actual) if pred.shape == actual.shape[1:] else pred
    if pred.shape != actual.shape:
        raise ValueError(f"predictions[{name!r}] has shape {tuple(pred.shape)}; expected {tuple(actual.shape)}")
    return [pred[r].double().cpu().numpy() for r in rows], [actual[r].double().cpu().numpy() for r in rows]


@dataclass
class WindowCorrelations:
    """Mean correlation over a window of horizons T, per estimator, with bootstrap intervals.

    Every replicate resamples the queries and the training examples z once (``unit="both"``) and
    uses that resample for every estimator and every T in the window, so the replicates of two
    estimators are paired and :meth:`difference` gives the paired interval.

    Attributes:
        window: ``(first, last)`` horizon of the window (inclusive bounds asked for).
        horizons: the recorded steps averaged over.
        method: ``"pearson"`` or ``"spearman"``.
        intervals: estimator name → :class:`~influence_utils.stats.Interval` of the window mean.
        replicates: estimator name → ``[B]`` bootstrap replicates of the window mean.
        confidence: two-sided level of the intervals.
    """

    window: tuple[int, int]
    horizons: list[int]
    method: str
    intervals: dict
    replicates: dict = field(repr=False)
    confidence: float = 0.95

    def __getitem__(self, name: str):
        return self.intervals[name]

    def difference(self, a: str, b: str):
        """Paired interval of ``mean corr(a) − mean corr(b)`` over the window; ``.low > 0``: a is better."""
        diff = self.replicates[a] - self.replicates[b]
        diff = diff[~np.isnan(diff)]
        low, high = stats.percentile(diff, self.confidence)
        est = self.intervals[a].estimate - self.intervals[b].estimate
        return stats.Interval(est, low, high, self.confidence, self.intervals[a].n)


def window_correlations(
    predictions: dict,
    actual: Tensor,
    steps: list[int],
    window: tuple[int, int],
    *,
    method: str = "pearson",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> WindowCorrelations:
    """The mean over a window of horizons of each estimator's correlation with the measured change.

    Args:
        predictions: estimator name → ``[n_q, k]`` (the same for every T) or ``[R, n_q, k]``.
        actual: ``[R, n_q, k]`` measured change at each recorded step.
        steps: the recorded steps ``[R]``.
        window: ``(first, last)``: the recorded T with ``first <= T <= last`` (and T > 0) are averaged.
        method: ``"pearson"`` or ``"spearman"``.
        n_boot: bootstrap replicates (queries and z resampled together, the same for every
            estimator and T).
        confidence: two-sided level.
        seed: seeds the bootstrap.

    Returns:
        A :class:`WindowCorrelations`.

    Raises:
        ValueError: no recorded horizon in the window, or a prediction of the wrong shape.
    """
    stats.check_boot(n_boot, confidence)
    rows = [r for r, T in enumerate(steps) if T > 0 and window[0] <= T <= window[1]]
    if not rows:
        raise ValueError(f"no recorded step in the window {window}; recorded: {list(steps)}")
    names = list(predictions)
    xs, ys = [], []
    for name in names:
        x, y = _paired(name, predictions[name], actual, rows)
        xs, ys = xs + x, ys + y
    estimates, boot, n, _ = stats.correlation_replicates(xs, ys, method, "both", int(n_boot), int(seed))
    m = len(rows)
    intervals, replicates = {}, {}
    for i, name in enumerate(names):
        rep = boot[i * m:(i + 1) * m].mean(axis=0)  # NaN where any horizon's replicate is degenerate
        replicates[name] = rep
        low, high = stats.percentile(rep[~np.isnan(rep)], confidence)
        intervals[name] = stats.Interval(float(np.mean(estimates[i * m:(i + 1) * m])), low, high, float(confidence), int(n))
    return WindowCorrelations(window=(int(window[0]), int(window[1])), horizons=[int(steps[r]) for r in rows],
                              method=method, intervals=intervals, replicates=replicates, confidence=float(confidence))


def positive_eigenpairs(solver: Solver) -> Solver:
    """A copy of a fitted eigen-solver that keeps only its eigenpairs with λ > 0 (ABIF's convention).

    With :func:`~influence_utils.scores.time_bounded_influence` (``outside="flat"``, the default) the
    directions of zero or negative curvature then count as flat, with TracIn's coefficient ηT,
    exactly as for a positive-only :class:`~influence_utils.solvers.ArnoldiSolver`; no negative
    eigenvalue is extrapolated exponentially. The original solver is left unchanged.

    Raises:
        TypeError: for a solver without ``eigenvalues`` and ``eigenvectors``.
        ValueError: when no eigenvalue is positive.
    """
    import copy

    if not (hasattr(solver, "eigenvalues") and hasattr(solver, "eigenvectors")):
        raise TypeError(f"{type(solver).__name__} holds no eigenpairs (or is not fitted); fit an ExactSolver or "
                        "ArnoldiSolver first")
    keep = solver.eigenvalues > 0
    if not bool(keep.any()):
        raise ValueError("no positive eigenvalue: nothing to keep")
    out = copy.copy(solver)
    out.eigenvalues, out.eigenvectors = solver.eigenvalues[keep], solver.eigenvectors[:, keep]
    return out
