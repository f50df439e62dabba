"""One divergence study of a trained checkpoint: spectrum, paired runs, noise control, estimators vs T.

Chapter 7 asks the same questions of several models (a BERT, a ResNet, an MLP); this module
answers them for any objective and checkpoint with the tools of
:mod:`influence_utils.divergence`, so every model goes through exactly the same measurement:

1. the spectrum: Arnoldi (:class:`~influence_utils.solvers.ArnoldiSolver`) on the training
   objective at the checkpoint; among the top Ritz values by magnitude, how many are negative;
2. paired runs (:func:`~influence_utils.divergence.perturbed_runs`): from the checkpoint, mini-batch
   SGD with ε·ℓ(z) added, ε = −1/n (the removal of z), for a panel of training examples z, all
   with the same batch order as the unperturbed run; the gap ‖θ_ε(t) − θ(t)‖ and the loss of
   a panel of test queries at every recorded step;
3. the ε = 0 control: the unperturbed run repeated with another batch order; its distance to the
   first one is what randomness alone does;
4. three estimators of the same quantity, in the units and sign of
   :func:`~influence_utils.scores.influence` (positive: z helps the query): ABIF (Arnoldi IF on
   the positive eigenspace, one prediction for every T), time-bounded IF on the same eigenpairs
   (one per T) and TracIn over the recorded checkpoints of the unperturbed run (one per T);
   their Pearson and Spearman correlation with the measured change as a function of T
   (:func:`~influence_utils.divergence.correlation_vs_steps`), against the paired run and
   against the control;
5. a log-linear fit of the gap growth (:func:`~influence_utils.divergence.fit_growth_rate`), and
   wall time and peak memory (:func:`~influence_utils.resources.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .batching import index_batch, num_examples
from .divergence import GrowthFit, correlation_vs_steps, divergence_curve, fit_growth_rate, perturbed_runs, tracin_vs_steps
from .objective import Objective
from .resources import Measurement, measure
from .scores import influence, time_bounded_influence
from .solvers import ArnoldiSolver
from .training import train as sgd_train

__all__ = ["FadingStudy", "fading_study", "study_settings", "top_by_magnitude"]


def top_by_magnitude(values: Tensor, k: int) -> Tensor:
    """The ``k`` entries of ``values`` largest in absolute value, in descending order of value."""
    idx = values.abs().argsort(descending=True)[:k]
    return values[idx].sort(descending=True).values


def study_settings(section: Any) -> dict:
    """The keyword arguments of :func:`fading_study` from a config section such as ``cfg.ch7``.

    Reads ``n_z, n_queries, horizon, record_every, batch_size, arnoldi_rank, arnoldi_iterations,
    grad_chunk`` (and ``seed`` when present); the step size is the model's own, pass ``lr=``.
    """
    kw = dict(n_z=section.n_z, n_queries=section.n_queries, horizon=section.horizon,
              record_every=section.record_every, batch_size=section.batch_size, rank=section.arnoldi_rank,
              iterations=section.arnoldi_iterations, grad_chunk=section.grad_chunk)
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
        lr: SGD step size of the paired runs.
        steps: recorded steps ``[R]`` (0 = the checkpoint).
        z_index: ``[k]`` the training examples z of the panel.
        query_index: ``[n_q]`` the test queries.
        eigenvalues: ``[r]`` the top Ritz values of the Hessian by magnitude, descending.
        n_negative: how many of them are negative.
        gaps: ``[k, R]`` ‖θ_ε(t) − θ(t)‖ of each paired run (ε = −1/n).
        control_gaps: ``[R]`` ‖θ'(t) − θ(t)‖ between the unperturbed run and an ε = 0 run with
            another batch order.
        growth: per-curve log-linear fit of ``gaps`` over steps ``record_every .. horizon``.
        actual: ``[R, n_q, k]`` measured effect of removing z on each query's loss (score units).
        actual_control: the same, measured against the control run (randomness included).
        predictions: estimator name → ``[n_q, k]`` or ``[R, n_q, k]`` scores.
        table: Pearson/Spearman of each estimator against ``actual`` at each T (a DataFrame with
            columns ``estimator, T, pearson, spearman``).
        control_table: the same against ``actual_control``.
        measurement: wall time and peak memory of the study.
    """

    name: str
    p: int
    n: int
    lr: float
    steps: list[int]
    z_index: Tensor
    query_index: Tensor
    eigenvalues: Tensor
    n_negative: int
    gaps: Tensor
    control_gaps: Tensor
    growth: GrowthFit
    actual: Tensor = field(repr=False)
    actual_control: Tensor = field(repr=False)
    predictions: dict = field(repr=False)
    table: Any = field(repr=False)
    control_table: Any = field(repr=False)
    measurement: Measurement = field(default_factory=Measurement)

    @property
    def rate(self) -> float:
        """Median fitted growth rate of the gap per step over the panel (log units)."""
        return float(self.growth.rate.median())

    @property
    def relative_gaps(self) -> Tensor:
        """``[k, R]`` gaps divided by each run's gap after the first recorded step (> 0)."""
        return self.gaps / self.gaps[:, 1:2]

    def correlation(self, estimator: str, T: int | None = None, method: str = "pearson",
                    control: bool = False) -> float:
        """One entry of ``table`` (or ``control_table``); ``T=None``: the last horizon."""
        table = self.control_table if control else self.table
        T = self.steps[-1] if T is None else T
        row = table[(table.estimator == estimator) & (table["T"] == T)]
        if row.empty:
            raise KeyError(f"no row for estimator {estimator!r} at T={T}; have {sorted(set(table.estimator))} "
                           f"at T in {self.steps}")
        return float(row[method].iloc[0])

    def curve(self, estimator: str, method: str = "pearson", control: bool = False) -> tuple[list[int], list[float]]:
        """``(T values, correlations)`` of one estimator, T = 0 (no change yet) left out."""
        table = self.control_table if control else self.table
        rows = table[(table.estimator == estimator) & (table["T"] > 0)]
        return rows["T"].tolist(), rows[method].tolist()

    def __repr__(self) -> str:
        return (f"FadingStudy({self.name!r}, p={self.p:,}, n={self.n}, runs={len(self.z_index)}, "
                f"T={self.steps[-1]}, negative eigenvalues {self.n_negative}/{len(self.eigenvalues)}, "
                f"median rate {self.rate:.3g}/step)")


def fading_study(
    obj: Objective,
    theta: Tensor,
    train: tuple,
    test: tuple,
    *,
    name: str = "",
    n_z: int = 6,
    n_queries: int = 40,
    horizon: int = 40,
    record_every: int = 4,
    lr: float = 0.1,
    batch_size: int | None = 32,
    seed: int = 0,
    rank: int = 20,
    iterations: int = 40,
    grad_chunk: int = 32,
) -> FadingStudy:
    """Measure parameter divergence and the fading of influence from one checkpoint.

    Args:
        obj: the training objective (θ may be a subset of the model's parameters, e.g. the top
            model of :func:`~influence_utils.trunk.split` on cached features).
        theta: the checkpoint ``[p]``.
        train: training data ``(inputs, targets)`` (n examples): the objective of the runs and
            of the Hessian.
        test: test data; ``n_queries`` of them are tracked.
        name: label of the model.
        n_z: training examples in the panel (drawn with ``seed``).
        n_queries: test queries (drawn with ``seed``).
        horizon: SGD steps of the paired runs; ``record_every``: recording interval.
        lr: SGD step size; ``batch_size``: examples per step (``None``: full batch).
        seed: batch order of the paired runs (the control uses ``seed + 1``) and the panels.
        rank: top Ritz values reported, and positive eigenpairs kept for ABIF and time-bounded IF.
        iterations: Arnoldi iterations (Hessian-vector products on the whole training set).
        grad_chunk: examples whose per-example gradients are held at once (bounded memory:
            ``grad_chunk · p`` numbers).

    Returns:
        A :class:`FadingStudy`.
    """
    n = num_examples(train)
    gen = torch.Generator().manual_seed(seed)
    z_index = torch.randperm(n, generator=gen)[:n_z].sort().values
    query_index = torch.randperm(num_examples(test), generator=gen)[:n_queries].sort().values
    z = (index_batch(train[0], z_index.to(train[1].device)), train[1][z_index.to(train[1].device)])
    queries = (index_batch(test[0], query_index.to(test[1].device)), test[1][query_index.to(test[1].device)])
    saved_chunk = obj.chunk_size
    obj.chunk_size = grad_chunk
    try:
        with measure(name) as m:
            solver = ArnoldiSolver(rank=rank, iterations=iterations, positive_only=True, seed=seed).fit(obj, theta, train)
            eig = top_by_magnitude(solver.ritz_values, rank).cpu()
            runs = perturbed_runs(obj, theta, train, z, -1.0 / n, steps=horizon, lr=lr, batch_size=batch_size,
                                  seed=seed, record_every=record_every, test=queries, progress_bar=False)
            control = sgd_train(obj, theta, train, steps=horizon, lr=lr, batch_size=batch_size, seed=seed + 1,
                                record_every=record_every, progress_bar=False)
            control_gaps = divergence_curve(runs.base, control)[0]
            control_losses = torch.stack([obj.per_example_losses(t, queries) for t in control.thetas])
            actual = runs.actual_scores()
            actual_control = runs.actual_scores(reference_losses=control_losses)
            kw = dict(n=n, chunk_size=grad_chunk)
            predictions = {
                "ABIF": influence(obj, theta, solver, train=z, test=queries, progress_bar=False, **kw),
                "time-bounded IF": time_bounded_influence(obj, theta, solver, z, queries, steps=runs.steps, lr=lr, **kw),
                "TracIn": tracin_vs_steps(obj, runs.base, runs.steps, lr, z, queries, horizons=runs.steps, n=n),
            }
            table = correlation_vs_steps(predictions, actual, runs.steps)
            control_table = correlation_vs_steps(predictions, actual_control, runs.steps)
            growth = fit_growth_rate(runs.steps, runs.gaps, window=(record_every, horizon))
    finally:
        obj.chunk_size = saved_chunk
    return FadingStudy(
        name=name, p=obj.p, n=n, lr=float(lr), steps=list(runs.steps), z_index=z_index, query_index=query_index,
        eigenvalues=eig, n_negative=int((eig < 0).sum()), gaps=runs.gaps.cpu(), control_gaps=control_gaps.cpu(),
        growth=growth, actual=actual.cpu(), actual_control=actual_control.cpu(),
        predictions={k: v.cpu() for k, v in predictions.items()}, table=table, control_table=control_table,
        measurement=m,
    )
