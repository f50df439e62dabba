"""Correcting a mis-prediction with a few fine-tuning steps on helpful training examples.

The protocol, for a test example ``z'`` that the model at the checkpoint ``θ₀`` gets wrong:

1. **Score** every training example for ``z'``'s loss *on its true label* with an estimator
   (:func:`helpful_scores`: ABIF, time-bounded influence, TracIn, gradient cosine, or random).
2. **Select** the top-k helpful ones (:func:`select_helpful`).
3. **Fine-tune**: take s steps of plain gradient descent from ``θ₀`` on the mean loss of the k
   selected examples, ``θ ← θ − lr ∇[(1/k) Σ_{j∈S} ℓ(z_j; θ) (+ (wd/2)‖θ‖²)]``.
4. **Report** (:func:`correct`) whether the prediction flipped to the true label, the change of
   ``z'``'s loss, and the collateral damage on a held-out set: the change of accuracy and of
   the mean loss, and how many previously correct held-out predictions became wrong.

**Sign rule, stated once.** Every score here follows the package's convention: ``scores[i, j]``
(shape ``[n_test, n_train]``) is **positive when training example j helps test example i**,
i.e. when up-weighting j lowers test i's loss (removing it raises the loss). The *helpful*
examples for a correction are therefore the **largest positive scores** of the test example's
loss on its true label. For gradient cosine and TracIn this means the training gradients most
aligned with the test gradient; for ABIF the same in the metric ``H⁻¹`` restricted to the top
positive eigenspace. A gradient step on an example with score ``s > 0`` lowers the test loss by
about ``lr · n · s`` (one step, one selected example, :func:`~influence_utils.scores.gradient_dot`
scale).

Runs are vectorised with ``torch.func.vmap`` over test examples (one run per test example and
k), and the grid of step counts s is read along one run of ``max(s)`` steps. The fine-tuning
on the test example itself (``method="self"``) is the upper reference: it uses the test label,
which a real correction would not have.

Results are tidy ``pandas`` DataFrames: :func:`correct` gives one row per
(method, test example, k, s).

**Honest statistics.** The test example is the statistical unit. :func:`random_selections` draws
several random selections per example and :func:`average_draws` turns them into one outcome per
example (the fraction of draws that flip). :func:`analyze` gives, per (method, k, s), the flip
rate with its interval, the net change of held-out accuracy with a bootstrap interval over test
examples and the clean-fix rate (:func:`clean_fix`); :func:`compare` runs paired tests between
methods on the same examples (exact McNemar, or the sign test against an averaged baseline) with a
Holm correction across every comparison it is given. :func:`score_methods` computes several
estimators from one pass over the training gradients.

**The classical use of influence**, for contrast (:func:`remove_and_retrain`): remove each test
example's k most *harmful* training examples (most negative scores, its opponents) and continue
training from the checkpoint with the checkpoint's own recipe, next to a paired run without the
removal. :func:`correction_costs` tabulates what corrections cost against retraining.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap
from torch.utils._pytree import tree_map

from .batching import Data, index_batch, iter_chunks, subset, validate_batch
from .objective import Objective, predict_labels
from .runs import SGD, descend
from .scores import (
    budget_chunk,
    gradient_cosine,
    gradient_dot,
    influence,
    time_bounded_coefficients,
    time_bounded_influence,
    tracin,
)
from .solvers import ArnoldiSolver, Solver
from .stats import bootstrap_mean, holm, mcnemar_exact, sign_test, wilson_interval
from .training import retrain_without
from .utils import check_learning_rate, progress

__all__ = [
    "METHODS",
    "mispredicted",
    "sample_mispredicted",
    "helpful_scores",
    "random_scores",
    "select_helpful",
    "correct",
    "first_order_loss_change",
    "wilson_interval",
    "score_methods",
    "random_selections",
    "select_harmful",
    "average_draws",
    "clean_fix",
    "remove_and_retrain",
    "analyze",
    "compare",
    "correction_costs",
    "CLEAN_TOLERANCE",
]

#: Estimators understood by :func:`helpful_scores`.
METHODS = ("abif", "influence", "tbif", "tracin", "cosine", "random")

#: A correction is a *clean fix* when the example flips and held-out accuracy drops by at most this.
CLEAN_TOLERANCE = 0.01

_ROW_COLUMNS = [
    "method", "example", "k", "s", "label", "pred_before", "pred_after", "flipped",
    "loss_before", "loss_after", "loss_change",
    "heldout_acc_change", "heldout_loss_change", "heldout_broken", "heldout_fixed",
]


# --------------------------------------------------------------------------- predictions
def _labels(targets: Tensor) -> Tensor:
    if targets.ndim != 1:
        raise ValueError(f"targets must be class labels [n], got shape {tuple(targets.shape)}")
    if targets.is_floating_point():
        rounded = targets.round()
        if not torch.equal(rounded, targets):
            raise ValueError("targets must be class labels (0/1 floats or int64), got non-integer values")
        return rounded.long()
    return targets.long()


def mispredicted(obj: Objective, theta: Tensor, data: Data) -> Tensor:
    """Indices of the examples in ``data`` whose prediction at ``theta`` is not their label, ``[m]``."""
    inputs, targets = validate_batch(data)
    with torch.no_grad():
        pred = predict_labels(obj.forward(theta, inputs))
    return (pred != _labels(targets).to(pred.device)).nonzero().flatten().cpu()


def sample_mispredicted(obj: Objective, theta: Tensor, data: Data, n: int, *, n_heldout: int,
                        seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed sample of mis-predicted examples and a disjoint held-out set, by index into ``data``.

    ``n`` of the mis-predicted examples are drawn uniformly (seeded), and ``n_heldout`` of the
    remaining examples (right or wrong) form the held-out set for the collateral damage; both
    are returned sorted.

    Returns:
        ``(wrong [n], heldout [n_heldout])`` int64 indices.

    Raises:
        ValueError: when ``data`` has fewer than ``n`` mis-predicted examples or too few others.
    """
    n_all = int(validate_batch(data)[1].shape[0])
    wrong = mispredicted(obj, theta, data)
    if len(wrong) < n:
        raise ValueError(
            f"only {len(wrong)} of {n_all} examples are mis-predicted, fewer than n={n}; use a larger pool"
        )
    gen = torch.Generator().manual_seed(int(seed))
    # host: indices (`mispredicted` returns them on the CPU) drawn from a seeded CPU generator
    picked = wrong[torch.randperm(len(wrong), generator=gen)[:n]].sort().values  # host: as above
    rest = torch.ones(n_all, dtype=torch.bool)  # host: as above
    rest[picked] = False
    others = rest.nonzero().flatten()
    if len(others) < n_heldout:
        raise ValueError(f"only {len(others)} examples remain for a held-out set of {n_heldout}")
    held = others[torch.randperm(len(others), generator=gen)[:n_heldout]].sort().values  # host: indices
    return picked, held


# --------------------------------------------------------------------------- scores
def random_scores(train_targets: Tensor, test_targets: Tensor, *, seed: int = 0) -> Tensor:
    """Random "scores" that select training examples of the test example's true class.

    ``scores[i, j]`` is uniform in (0, 1) when train j has test i's (true) label and ``-inf``
    otherwise, so :func:`select_helpful` draws k examples of the true class uniformly without
    replacement, independently for every test example (seeded).

    Args:
        train_targets: ``[n_train]`` labels.
        test_targets: ``[n_test]`` true labels.
        seed: seeds the draw.

    Returns:
        ``[n_test, n_train]`` float64.
    """
    tr, te = _labels(train_targets), _labels(test_targets)
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(te.shape[0], tr.shape[0], generator=gen, dtype=torch.float64)  # host: seeded; selection runs on the CPU
    same = te.cpu()[:, None] == tr.cpu()[None, :]
    return torch.where(same, u, torch.full_like(u, -math.inf))


def helpful_scores(
    method: str,
    obj: Objective,
    theta: Tensor,
    train: Data,
    test: Data,
    *,
    solver: Solver | None = None,
    horizon: int | None = None,
    lr: float | None = None,
    checkpoints: Sequence[Tensor] | None = None,
    learning_rates: Sequence[float] | None = None,
    seed: int = 0,
    chunk_size: int | None = 1024,
) -> Tensor:
    """Scores of every training example for every test example's loss on its true label.

    The test data must carry the **true** labels: every score is that of the test loss on them.
    Larger = more helpful (see the module docstring for the sign rule).

    Args:
        method: one of :data:`METHODS`:

            * ``"abif"`` — :func:`~influence_utils.scores.influence` with a fitted
              :class:`~influence_utils.solvers.ArnoldiSolver` (``solver``);
            * ``"influence"`` — the same with any fitted solver;
            * ``"tbif"`` — :func:`~influence_utils.scores.time_bounded_influence` over ``horizon``
              steps of size ``lr`` on the solver's eigenpairs (directions outside them dropped,
              as in ABIF);
            * ``"tracin"`` — :func:`~influence_utils.scores.tracin` over ``checkpoints`` and
              ``learning_rates`` (default: the checkpoint ``theta`` alone with step 1);
            * ``"cosine"`` — :func:`~influence_utils.scores.gradient_cosine`;
            * ``"random"`` — :func:`random_scores` (training examples of the true class).
        obj, theta, train, test: the objective, the checkpoint ``[p]``, training data and the
            (mis-predicted) test examples with their true labels.
        solver, horizon, lr, checkpoints, learning_rates: what the chosen method needs.
        seed: seeds ``"random"``.
        chunk_size: training examples whose gradients are held at once (at most what the memory budget holds).

    Returns:
        ``[n_test, n_train]``.

    Raises:
        ValueError: for an unknown method or a missing argument, naming it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if method == "random":
        return random_scores(validate_batch(train)[1], validate_batch(test)[1], seed=seed)
    if method == "cosine":
        return gradient_cosine(obj, theta, train, test, chunk_size=chunk_size)
    if method == "tracin":
        if checkpoints is None:
            checkpoints, learning_rates = [theta], [1.0]
        elif learning_rates is None:
            raise ValueError("method='tracin' with checkpoints needs learning_rates (one per checkpoint)")
        return tracin(obj, list(checkpoints), list(learning_rates), train, test, chunk_size=chunk_size)
    if solver is None:
        raise ValueError(
            f"method={method!r} needs a fitted solver, e.g. "
            "solver=iu.ArnoldiSolver(rank=20, iterations=60).fit(obj, theta, train)"
        )
    if method == "abif" and not isinstance(solver, ArnoldiSolver):
        raise TypeError(f"method='abif' needs an ArnoldiSolver, got {type(solver).__name__}; use method='influence'")
    if method in ("abif", "influence"):
        return influence(obj, theta, solver, train=train, test=test, chunk_size=chunk_size, progress_bar=False)
    if horizon is None or lr is None:
        raise ValueError("method='tbif' needs horizon (steps T) and lr (the step size η)")
    return time_bounded_influence(obj, theta, solver, train, test, int(horizon), float(lr), outside="drop",
                                  chunk_size=chunk_size)


def select_helpful(scores: Tensor, k: int) -> Tensor:
    """Indices of the k most helpful training examples per test example, ``[n_test, k]``.

    The largest scores first (positive = helps; see the module docstring).

    Raises:
        ValueError: for k < 1, k > n_train, NaN scores, or a row with fewer than k finite
            scores (e.g. :func:`random_scores` for a class with fewer than k training examples).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n_test, n_train], got shape {tuple(scores.shape)}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if k > scores.shape[1]:
        raise ValueError(f"k={k} exceeds the {scores.shape[1]} training examples")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; check the estimator (a diverged solver?)")
    values, idx = scores.topk(int(k), dim=1)
    short = ~torch.isfinite(values[:, -1])
    if short.any():
        rows = short.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"test examples {rows} have fewer than k={k} candidates with a finite score (for "
            "'random': fewer training examples of their class); lower k"
        )
    return idx


# --------------------------------------------------------------------------- fine-tuning
def _check_grid(name: str, values: Sequence[int]) -> list[int]:
    vals = [values] if isinstance(values, int) else list(values)
    if not vals or any(int(v) != v or v < 1 for v in vals):
        raise ValueError(f"{name} must be positive integers, got {values}")
    return sorted(set(int(v) for v in vals))


def _stack_rows(inputs: Any, index: Tensor) -> Any:
    """``inputs`` gathered at ``index [m, k]``: every tensor becomes ``[m, k, ...]``."""
    m, k = index.shape
    flat = index_batch(inputs, index.reshape(-1))
    return tree_map(lambda t: t.reshape(m, k, *t.shape[1:]), flat)


def _evaluator(obj: Objective, heldout_x: Any, heldout_y: Tensor, eval_chunk: int):
    """``(θ [k, p], x1, y1) -> (test logits, test loss, held-out logits, held-out losses)`` of k runs,
    each at its own test example ``x1`` (``[k, 1, ...]``)."""
    n_h = int(heldout_y.shape[0])

    def evaluate(theta: Tensor, x1: Any, y1: Tensor):
        test_logits = obj.forward(theta, x1)  # [1] or [1, C]
        test_loss = obj.loss_fn(test_logits, y1)[0]
        h_logits = _forward_all(obj, theta, heldout_x, n_h, eval_chunk)
        h_loss = obj.loss_fn(h_logits, heldout_y)
        return test_logits[0], test_loss, h_logits, h_loss

    return vmap(evaluate)


def _forward_all(obj: Objective, theta: Tensor, inputs: Any, n: int, chunk: int) -> Tensor:
    """``obj.forward`` on all ``n`` examples of ``inputs``, ``chunk`` at a time (callers hold ``no_grad``)."""
    return torch.cat([obj.forward(theta, index_batch(inputs, slice(a, min(a + chunk, n))))
                      for a in range(0, n, chunk)])


def correct(
    obj: Objective,
    theta: Tensor,
    train: Data,
    test: Data,
    heldout: Data,
    selections: Mapping[str, Tensor],
    *,
    ks: Sequence[int],
    steps: Sequence[int],
    lr: float,
    weight_decay: bool = False,
    self_reference: bool = True,
    test_ids: Sequence[int] | None = None,
    chunk: int = 16,
    eval_chunk: int = 256,
    progress_bar: bool | None = None,
):
    """Fine-tune on selected training examples and measure what it does, for every method, k and s.

    For each method, test example i and k in ``ks``: start at ``theta`` and take ``max(steps)``
    full-batch gradient-descent steps on ``(1/k) Σ_{j ∈ S_ik} ℓ(z_j; θ)`` (plus
    ``(wd/2)‖θ‖²`` with ``weight_decay=True``, wd that of ``obj``), where ``S_ik`` is the first k
    entries of ``selections[method][i]``; after each step count s in ``steps`` record the test
    example's prediction and loss and the held-out predictions and losses. Runs are vectorised
    with ``vmap`` over test examples, ``chunk`` at a time.

    With ``self_reference=True`` the method ``"self"`` fine-tunes on the test example itself with
    its true label (the upper reference; the mean over k copies of one example is its own loss,
    so the run is done once and reported under every k).

    Args:
        obj: the objective; its parameters θ are fine-tuned, everything else stays fixed.
        theta: the checkpoint ``[p]``.
        train: ``(inputs, targets)`` training data the selections index into.
        test: ``(inputs, targets)`` mis-predicted test examples with their **true** labels
            (n_test of them; see :func:`mispredicted`).
        heldout: ``(inputs, targets)`` examples for the collateral damage; keep the corrected test
            examples out of it.
        selections: method name -> ``[n_test, ≥ max(ks)]`` training indices, most helpful first
            (from :func:`select_helpful`).
        ks: numbers of selected examples.
        steps: the grid of step counts s, read along one run of ``max(steps)`` steps.
        lr: the gradient-descent step size.
        weight_decay: add the objective's weight decay to the fine-tuning loss.
        self_reference: add the ``"self"`` reference.
        test_ids: labels of the test examples in the output (e.g. their indices in the test set);
            default ``0 .. n_test − 1``.
        chunk: runs vectorised together (memory grows with it).
        eval_chunk: held-out examples evaluated together inside a run.
        progress_bar: show a progress bar (default: interactive use only).

    Returns:
        A DataFrame with one row per (method, example, k, s) and the columns ``method, example,
        k, s, label, pred_before, pred_after, flipped`` (pred_after equals the true label),
        ``loss_before, loss_after, loss_change`` (of the test example on its true label; negative
        = improved), ``heldout_acc_change, heldout_loss_change`` (accuracy and mean loss after
        minus before), ``heldout_broken`` (held-out examples correct before and wrong after) and
        ``heldout_fixed`` (wrong before, correct after).

    Raises:
        ValueError: for bad grids, a non-positive lr, selections of the wrong shape or out of
            range, or a test example that the checkpoint already predicts correctly.
    """
    import pandas as pd

    ks_, steps_, ids = _check_correction(train, test, heldout, selections, ks, steps, lr, self_reference, test_ids,
                                         chunk, eval_chunk)
    before = _before(obj, theta, test, heldout, eval_chunk)
    jobs = _correction_jobs(train, test, selections, ks_, self_reference)
    results = _fine_tune(obj, theta, test, heldout, jobs, steps_, lr, obj.weight_decay if weight_decay else 0.0,
                         chunk, eval_chunk, progress_bar)
    rows = []
    for (name, k_list, _, _), parts in zip(jobs, results):
        rows.extend(_correction_rows(name, k_list, parts, before, steps_, ids))
    frame = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    order = {name: r for r, name in enumerate([*selections, "self"])}
    return frame.sort_values(["method", "k", "s", "example"], key=lambda c: c.map(order) if c.name == "method" else c,
                             kind="stable").reset_index(drop=True)


def _check_correction(train: Data, test: Data, heldout: Data, selections: Mapping[str, Tensor], ks: Sequence[int],
                      steps: Sequence[int], lr: float, self_reference: bool, test_ids: Sequence[int] | None,
                      chunk: int, eval_chunk: int) -> tuple[list[int], list[int], list[int]]:
    """:func:`correct`'s input checks; returns the grids ``ks`` and ``steps`` and the example ids."""
    _, train_y = validate_batch(train)
    _, test_y = validate_batch(test)
    validate_batch(heldout)
    ks_, steps_ = _check_grid("ks", ks), _check_grid("steps", steps)
    check_learning_rate(lr)
    if chunk < 1 or eval_chunk < 1:
        raise ValueError("chunk and eval_chunk must be >= 1")
    n_train, n_test = int(train_y.shape[0]), int(test_y.shape[0])
    if n_test == 0:
        raise ValueError("test is empty: pass the mis-predicted test examples to correct")
    ids = list(range(n_test)) if test_ids is None else [int(i) for i in test_ids]
    if len(ids) != n_test:
        raise ValueError(f"test_ids has {len(ids)} entries for {n_test} test examples")
    if not selections and not self_reference:
        raise ValueError("nothing to run: pass selections or self_reference=True")
    for name, sel in selections.items():
        if name == "self":
            raise ValueError("'self' is the reference run's name; rename the selection")
        if not isinstance(sel, Tensor) or sel.ndim != 2 or sel.shape[0] != n_test or sel.shape[1] < max(ks_):
            shape = tuple(sel.shape) if isinstance(sel, Tensor) else type(sel).__name__
            raise ValueError(
                f"selections[{name!r}] must be [n_test={n_test}, >= max(ks)={max(ks_)}] training "
                f"indices (from select_helpful(scores, k={max(ks_)})), got {shape}"
            )
        if sel.min() < 0 or sel.max() >= n_train:
            raise ValueError(f"selections[{name!r}] has indices outside [0, {n_train})")
    return ks_, steps_, ids


def _before(obj: Objective, theta: Tensor, test: Data, heldout: Data, eval_chunk: int,
            what: str = "correct") -> dict[str, Tensor]:
    """Predictions and losses at the checkpoint (on the host): the test examples, which must all be
    mis-predicted, and the held-out set."""
    (test_x, test_y), (heldout_x, heldout_y) = test, heldout
    labels = _labels(test_y)
    with torch.no_grad():
        test_logits0 = _forward_all(obj, theta, test_x, int(test_y.shape[0]), eval_chunk)
        pred0 = predict_labels(test_logits0).cpu()
        already = (pred0 == labels.cpu()).nonzero().flatten()
        if len(already):
            raise ValueError(
                f"test examples {already[:5].tolist()} are already predicted correctly at theta; "
                f"{what}() expects mis-predicted examples: select them with iu.correction.mispredicted"
            )
        loss0 = obj.loss_fn(test_logits0, test_y).cpu()
        h_logits0 = _forward_all(obj, theta, heldout_x, int(heldout_y.shape[0]), eval_chunk)
        h_loss0 = obj.loss_fn(h_logits0, heldout_y).cpu()
    h_labels = _labels(heldout_y).cpu()
    return {"labels": labels, "pred": pred0, "loss": loss0, "h_labels": h_labels,
            "h_right": predict_labels(h_logits0).cpu() == h_labels, "h_loss": h_loss0}


def _correction_jobs(train: Data, test: Data, selections: Mapping[str, Tensor], ks: list[int],
                     self_reference: bool) -> list[tuple[str, list[int], Any, Tensor]]:
    """``(method, ks it stands for, [n_test, k, ...] inputs, [n_test, k] targets)`` of the fine-tuning sets."""
    (train_x, train_y), (test_x, test_y) = train, test
    jobs = []
    for name, sel in selections.items():
        for k in ks:
            idx = sel[:, :k].cpu()
            jobs.append((name, [k], _stack_rows(train_x, idx), train_y[idx]))
    if self_reference:
        self_x = tree_map(lambda t: t.unsqueeze(1), test_x)  # [n_test, 1, ...]
        jobs.append(("self", ks, self_x, test_y.unsqueeze(1)))
    return jobs


def _fine_tune(obj: Objective, theta: Tensor, test: Data, heldout: Data, jobs: list, steps: list[int], lr: float,
               wd: float, chunk: int, eval_chunk: int, progress_bar: bool | None) -> list[list[tuple]]:
    """Every job's runs, ``chunk`` test examples at a time in one block of
    :func:`~influence_utils.runs.descend` (full-batch steps on each run's own selection, objective
    ``obj.loss`` with weight decay ``wd``): per job, a list of ``(test logits, test loss,
    held-out logits, held-out losses)`` blocks on the host, each ``[runs, len(steps), ...]``."""
    test_x, test_y = test
    evaluate = _evaluator(obj, *heldout, eval_chunk)
    tuner = copy.copy(obj)
    tuner.weight_decay = float(wd)
    schedule = SGD(max(steps), lr, record_every=tuple(steps))
    test_x1 = tree_map(lambda t: t.unsqueeze(1), test_x)  # each run's own test example, [1, ...]
    test_y1 = test_y.unsqueeze(1)
    n_test = int(test_y.shape[0])
    tasks = [(j, a) for j in range(len(jobs)) for a in range(0, n_test, chunk)]
    results: list[list[tuple]] = [[] for _ in jobs]
    for j, a in progress(tasks, desc="correction runs", total=len(tasks), show=progress_bar):
        _, _, xs, ys = jobs[j]
        sl = slice(a, min(a + chunk, n_test))
        x1, y1, recorded = index_batch(test_x1, sl), test_y1[sl], []
        with torch.no_grad():
            descend(tuner, theta.expand(len(ys[sl]), -1), (index_batch(xs, sl), ys[sl]), schedule, data_per_run=True,
                    on_record=lambda t, th, x1=x1, y1=y1, rec=recorded: rec.append(evaluate(th, x1, y1)),
                    desc="fine-tuning run", progress_bar=False)
        out = tuple(torch.stack(parts, dim=1) for parts in zip(*recorded))
        if not all(torch.isfinite(t).all() for t in out):
            raise FloatingPointError("a fine-tuning run diverged (non-finite values); lower lr")
        results[j].append(tuple(t.cpu() for t in out))
    return results


def _correction_rows(name: str, k_list: list[int], parts: list[tuple], before: dict[str, Tensor], steps: list[int],
                     ids: list[int]) -> list[dict]:
    """:func:`correct`'s rows of one job: one per (example, s, k)."""
    t_logits, t_loss, h_logits, h_loss = (torch.cat(blocks) for blocks in zip(*parts))
    # shapes: t_logits [n_test, S(, C)], t_loss [n_test, S], h_* [n_test, S, n_h(, C)]
    n_test, n_h = t_loss.shape[0], h_loss.shape[-1]
    labels, pred0, loss0, h_right0 = before["labels"], before["pred"], before["loss"], before["h_right"]
    t_pred = predict_labels(t_logits.reshape(n_test * len(steps), *t_logits.shape[2:])).view(n_test, -1)
    h_pred = predict_labels(h_logits.reshape(-1, *h_logits.shape[3:])).view(n_test, len(steps), n_h)
    h_right = h_pred == before["h_labels"]
    acc_change = (h_right.double().mean(-1) - h_right0.double().mean())
    loss_change_h = h_loss.double().mean(-1) - before["h_loss"].double().mean()
    broken = (h_right0 & ~h_right).sum(-1)
    fixed = (~h_right0 & h_right).sum(-1)
    rows = []
    for i in range(n_test):
        for si, s in enumerate(steps):
            base = {
                "method": name, "example": ids[i], "s": s, "label": int(labels[i]),
                "pred_before": int(pred0[i]), "pred_after": int(t_pred[i, si]),
                "flipped": bool(t_pred[i, si] == labels[i]),
                "loss_before": float(loss0[i]), "loss_after": float(t_loss[i, si]),
                "loss_change": float(t_loss[i, si] - loss0[i]),
                "heldout_acc_change": float(acc_change[i, si]),
                "heldout_loss_change": float(loss_change_h[i, si]),
                "heldout_broken": int(broken[i, si]), "heldout_fixed": int(fixed[i, si]),
            }
            rows.extend({**base, "k": k} for k in k_list)
    return rows


def first_order_loss_change(obj: Objective, theta: Tensor, train: Data, test: Data, selection: Tensor, k: int,
                            steps: Sequence[int], lr: float, *, chunk_size: int | None = 256) -> Tensor:
    """The first-order prediction of what :func:`correct` measures as ``loss_change``, ``[n_test, len(steps)]``.

    Gradient descent on the mean loss of the k selected examples moves θ by
    ``−lr·s·ḡ_S`` to first order (gradients frozen at the checkpoint: zero curvature, the
    TracIn view), so the test loss changes by ``−lr·s·∇ℓ(test_i)ᵀ ḡ_S`` with
    ``ḡ_S = (1/k) Σ_{j∈S} ∇ℓ(z_j)``: linear in s. Comparing it with the measured change shows over
    how many steps the first-order picture holds (the horizon). Without weight decay.

    Args:
        selection: ``[n_test, ≥ k]`` training indices, most helpful first.
        k, steps, lr: as in :func:`correct`.
        chunk_size: training examples whose gradients are held at once (at most what the memory budget holds).
    """
    test_y = validate_batch(test)[1]
    validate_batch(train)
    if selection.ndim != 2 or selection.shape[0] != test_y.shape[0] or selection.shape[1] < k:
        raise ValueError(f"selection must be [n_test={test_y.shape[0]}, >= k={k}], got {tuple(selection.shape)}")
    idx = selection[:, :k].cpu()
    used, inverse = idx.unique(return_inverse=True)
    dots = gradient_dot(obj, theta, subset(train, used), test, n=1,
                        chunk_size=chunk_size).cpu()  # [n_test, u]: ∇ℓ(test_i)ᵀ∇ℓ(z_j)
    dot = torch.gather(dots, 1, inverse).mean(1)  # [n_test]: ∇ℓ(test_i)ᵀ ḡ_S
    s = torch.tensor([float(v) for v in _check_grid("steps", steps)], dtype=dot.dtype, device=dot.device)
    return -lr * dot[:, None] * s[None, :]


def _check_columns(results: Any, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in getattr(results, "columns", [])]
    if missing:
        raise ValueError(f"results must be the DataFrame from correct(); missing columns {missing}")


# --------------------------------------------------------------------------- several estimators at once
def score_methods(
    methods: Sequence[str],
    obj: Objective,
    theta: Tensor,
    train: Data,
    test: Data,
    *,
    solver: Solver | None = None,
    horizon: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    chunk_size: int = 256,
) -> dict[str, Tensor]:
    """:func:`helpful_scores` of several methods from **one** pass over the training gradients.

    The per-example training gradients dominate the cost of every gradient-based estimator; here
    each chunk of them is computed once and projected for all methods: ``"abif"`` (and
    ``"influence"`` with an eigen-solver) and ``"tbif"`` through the solver's eigenvectors,
    ``"tracin"`` (at the checkpoint, step 1) and ``"cosine"`` through the test gradients.
    ``"random"`` needs no gradients. Same values, sign and units as :func:`helpful_scores`
    (positive = helps the test example's true label).

    Args:
        methods: names from :data:`METHODS`.
        obj, theta, train, test, solver, horizon, lr, seed: as in :func:`helpful_scores`.
        chunk_size: training examples whose gradients are held at once (fewer when the memory
            budget of θ's device, :func:`~influence_utils.resources.memory_budget`, holds fewer).

    Returns:
        method -> ``[n_test, n_train]`` scores.

    Raises:
        ValueError: for an unknown method, or a missing solver / horizon / lr.
    """
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    out: dict[str, Tensor] = {}
    if "random" in methods:
        out["random"] = random_scores(validate_batch(train)[1], validate_batch(test)[1], seed=seed)
    grad_methods = [m for m in methods if m != "random"]
    if not grad_methods:
        return out
    projected = [m for m in grad_methods if m in ("abif", "influence", "tbif")]
    if projected and (solver is None or getattr(solver, "eigenvectors", None) is None):
        raise ValueError(f"methods {projected} need a fitted eigen-solver (e.g. iu.ArnoldiSolver(...).fit(...))")
    if "abif" in projected and not isinstance(solver, ArnoldiSolver):
        raise TypeError(f"method='abif' needs an ArnoldiSolver, got {type(solver).__name__}")
    if "tbif" in projected and (horizon is None or lr is None):
        raise ValueError("method='tbif' needs horizon (steps T) and lr (the step size η)")

    n = int(validate_batch(train)[1].shape[0])
    g_test = obj.per_example_grads(theta, test)  # [n_test, p]
    left: dict[str, Tensor] = {}
    if projected:
        V, lam = solver.eigenvectors, solver.eigenvalues + solver.damping
        p_test = g_test @ V  # [n_test, r]
        for m in projected:
            coef = time_bounded_coefficients(lam, int(horizon), float(lr)) if m == "tbif" else 1.0 / lam
            left[m] = p_test * coef
    unit_test = g_test / g_test.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cols: dict[str, list[Tensor]] = {m: [] for m in grad_methods}
    # chunks of training examples (the scores do not depend on their size), capped by the memory budget
    for x, y, _ in iter_chunks(train, budget_chunk(obj, train, chunk_size)):
        g = obj.per_example_grads(theta, (x, y))  # [chunk, p]
        p_tr = g @ solver.eigenvectors if projected else None
        for m in grad_methods:
            if m in left:
                cols[m].append(left[m] @ p_tr.T / n)
            elif m == "tracin":
                cols[m].append(g_test @ g.T / n)
            else:  # cosine
                cols[m].append(unit_test @ (g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)).T)
    out.update({m: torch.cat(cols[m], dim=1) for m in grad_methods})
    return {m: out[m] for m in methods}


# --------------------------------------------------------------------------- random baseline, several draws
def random_selections(train_targets: Tensor, test_targets: Tensor, k: int, *, draws: int = 5,
                      seed: int = 0, prefix: str = "random") -> dict[str, Tensor]:
    """Several independent random selections of k training examples of each test example's true class.

    Draw d uses :func:`random_scores` with seed ``seed + d``. Pass the result to :func:`correct`
    with the other selections and merge the draws with :func:`average_draws`.

    Returns:
        ``{f"{prefix}#{d}": [n_test, k] indices}`` for d = 0 .. draws − 1.

    Raises:
        ValueError: for ``draws < 1``.
    """
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws}")
    return {f"{prefix}#{d}": select_helpful(random_scores(train_targets, test_targets, seed=seed + d), k)
            for d in range(int(draws))}


def clean_fix(results: Any, tolerance: float = CLEAN_TOLERANCE):
    """Per row of :func:`correct`'s results: the example flipped and held-out accuracy fell by at most ``tolerance``.

    ``flipped and heldout_acc_change >= −tolerance`` (a tolerance of 0.01 is one point of
    accuracy). Returns a boolean ``pandas.Series`` aligned with ``results``.
    """
    _check_columns(results, ("flipped", "heldout_acc_change"))
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return results["flipped"].astype(bool) & (results["heldout_acc_change"] >= -tolerance - 1e-12)


def average_draws(results: Any, prefix: str = "random", tolerance: float = CLEAN_TOLERANCE):
    """Merge the draws ``f"{prefix}#d"`` of :func:`random_selections` into one method ``prefix``.

    Per (example, k, s) the merged row holds the **fraction of draws** that flipped the example
    (``flipped``, a number in [0, 1]), the fraction of clean fixes (``clean``, see
    :func:`clean_fix`) and the means over draws of every other numeric column; ``draws`` counts
    them. Rows of other methods are kept as they are (with ``clean`` 0/1 and ``draws`` 1).

    Raises:
        ValueError: when there are no draws, the draws do not cover the same (example, k, s), or
            another method is already named ``prefix``.
    """
    import pandas as pd

    if "method" not in getattr(results, "columns", []):
        raise ValueError("results must be the DataFrame from correct()")
    frame = results.copy()
    frame["clean"] = clean_fix(frame, tolerance).astype(float)
    is_draw = frame["method"].astype(str).str.match(rf"^{prefix}#\d+$")
    if not is_draw.any():
        raise ValueError(f"no draws named {prefix!r}#<d> in results; build them with random_selections")
    draws, rest = frame[is_draw].copy(), frame[~is_draw].copy()
    if (rest["method"] == prefix).any():
        raise ValueError(f"results already hold a method named {prefix!r}, the name the merged draws would take; "
                         f"rename that method or pass another prefix")
    keys = ["example", "k", "s"]
    sizes = draws.groupby(keys).size()
    if sizes.nunique() != 1:
        raise ValueError("the draws do not all cover the same (example, k, s); run them together")
    draws["flipped"] = draws["flipped"].astype(float)
    numeric = [c for c in draws.columns if c not in ("method", *keys) and pd.api.types.is_numeric_dtype(draws[c])]
    merged = draws.groupby(keys, sort=False)[numeric].mean().reset_index()
    merged.insert(0, "method", prefix)
    merged["draws"] = int(sizes.iloc[0])
    rest["draws"] = 1
    rest["flipped"] = rest["flipped"].astype(float)
    return pd.concat([rest, merged[rest.columns]], ignore_index=True)


# --------------------------------------------------------------------------- classical use: remove opponents
def select_harmful(scores: Tensor, k: int) -> Tensor:
    """Indices of the k most **harmful** training examples per test example (most negative scores), ``[n_test, k]``.

    The opponents of the test example's true label: removing them is predicted to lower its loss.
    """
    return select_helpful(-scores, k)


def _evaluate_thetas(obj: Objective, thetas: Tensor, x1: Any, y1: Tensor, heldout: Data,
                     eval_chunk: int, chunk: int) -> tuple[Tensor, ...]:
    """Test logits/losses of example i at ``thetas[i]`` and held-out logits/losses, for each row of ``thetas``.

    Returns CPU tensors ``[m(, C)]``, ``[m]``, ``[m, n_h(, C)]``, ``[m, n_h]``; ``chunk`` runs at a time.
    """
    evaluate = _evaluator(obj, *heldout, eval_chunk)
    with torch.no_grad():
        parts = [evaluate(thetas[a:a + chunk], index_batch(x1, slice(a, a + chunk)), y1[a:a + chunk])
                 for a in range(0, thetas.shape[0], chunk)]
    return tuple(torch.cat([p[i].cpu() for p in parts]) for i in range(4))


def _evaluate_shared(obj: Objective, theta: Tensor, test: Data, heldout: Data, eval_chunk: int) -> tuple[Tensor, ...]:
    """:func:`_evaluate_thetas` for one θ ``[p]`` shared by every test example (evaluated once, expanded)."""
    (test_x, test_y), (hx, hy) = test, heldout
    n_test = int(test_y.shape[0])
    with torch.no_grad():
        t_logits = _forward_all(obj, theta, test_x, n_test, eval_chunk).cpu()
        h_logits = _forward_all(obj, theta, hx, int(hy.shape[0]), eval_chunk)
        t_loss, h_loss = obj.loss_fn(t_logits, test_y.cpu()), obj.loss_fn(h_logits, hy).cpu()
    return t_logits, t_loss, h_logits.cpu().expand(n_test, *h_logits.shape), h_loss.expand(n_test, -1)


def remove_and_retrain(
    obj: Objective,
    theta: Tensor,
    train: Data,
    test: Data,
    heldout: Data,
    scores: Tensor,
    *,
    ks: Sequence[int],
    steps: Sequence[int],
    recipe: SGD,
    test_ids: Sequence[int] | None = None,
    chunk: int = 16,
    eval_chunk: int = 256,
):
    """The classical use of influence: remove each test example's top-k opponents and keep training.

    For test example i and k in ``ks``, the k training examples with the most negative
    ``scores[i]`` (:func:`select_harmful`: the ones predicted to raise i's true-label loss) get
    weight 0 (the 1/n normalisation kept), and training continues from the checkpoint ``theta``
    with the checkpoint's ``recipe``: s of its SGD steps (its step size, batch size and batch
    order), with the objective's weight decay, for each s in ``steps`` — exactly
    :func:`~influence_utils.training.retrain_without` (``method="gd"``), which runs them vectorised. A paired run without any removal (``"continue"``, same batch
    order) separates the effect of the removal from that of continued training.

    Args:
        obj, theta, train, test, heldout, test_ids, eval_chunk: as in :func:`correct` (the test
            examples must be mis-predicted at ``theta``).
        scores: ``[n_test, n_train]`` scores of the test examples' true-label loss (e.g. ABIF),
            positive = helps.
        ks: numbers of removed opponents.
        steps: horizons s (each a separate run of s steps from ``theta``; include a long one,
            e.g. an epoch, to see whether the removal ever matters).
        recipe: the checkpoint's schedule (e.g. ``checkpoint.task.schedule``); its ``steps`` are
            replaced by each s of ``steps``.
        chunk: runs vectorised together.

    Returns:
        A DataFrame with :func:`correct`'s columns and methods ``"remove"`` and ``"continue"``
        (the latter does not depend on k and is repeated under every k).

    Raises:
        ValueError: for bad grids, scores of the wrong shape, or a test example the checkpoint
            already predicts correctly.
    """
    import pandas as pd

    train_y, (test_x, test_y) = validate_batch(train)[1], validate_batch(test)
    ks_, steps_ = _check_grid("ks", ks), _check_grid("steps", steps)
    if not isinstance(recipe, SGD):
        raise TypeError(f"recipe must be the checkpoint's iu.SGD schedule (e.g. task.schedule), got {recipe!r}")
    n_test, n_train = int(test_y.shape[0]), int(train_y.shape[0])
    if scores.shape != (n_test, n_train):
        raise ValueError(f"scores must be [n_test={n_test}, n_train={n_train}], got {tuple(scores.shape)}")
    ids = list(range(n_test)) if test_ids is None else [int(i) for i in test_ids]
    if len(ids) != n_test:
        raise ValueError(f"test_ids has {len(ids)} entries for {n_test} test examples")
    validate_batch(heldout)
    before = _before(obj, theta, test, heldout, eval_chunk, "remove_and_retrain")
    harmful = select_harmful(scores, max(ks_)).cpu()
    removals = [harmful[i, :k].tolist() for k in ks_ for i in range(n_test)] + [[]]  # the last: no removal
    x1, y1 = tree_map(lambda t: t.unsqueeze(1), test_x), test_y.unsqueeze(1)
    rows = []
    for s in steps_:
        thetas = retrain_without(obj, theta, train, removals, recipe.replace(steps=s), chunk=chunk, progress_bar=False)
        for j, k in enumerate(ks_):
            out = _evaluate_thetas(obj, thetas[j * n_test:(j + 1) * n_test], x1, y1, heldout, eval_chunk, chunk)
            rows += _correction_rows("remove", [k], [tuple(t.unsqueeze(1) for t in out)], before, [s], ids)
        out = _evaluate_shared(obj, thetas[-1], test, heldout, eval_chunk)  # the run without removal
        rows += _correction_rows("continue", ks_, [tuple(t.unsqueeze(1) for t in out)], before, [s], ids)
    frame = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    return frame.sort_values(["method", "k", "s", "example"], ascending=[False, True, True, True],
                             kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- analysis and paired tests
def _rate(values: Any, confidence: float, n_boot: int, seed: int, averaged: bool) -> tuple[float, float, float, str]:
    """Mean of per-example outcomes with an interval: Wilson for 0/1 outcomes, the bootstrap for averages."""
    v = np.asarray(values, dtype=float)
    if not averaged:
        low, high = wilson_interval(int(v.sum()), v.size, confidence)
        return float(v.mean()), low, high, "wilson"
    iv = bootstrap_mean(v, n_boot=n_boot, confidence=confidence, seed=seed)
    return iv.estimate, iv.low, iv.high, "bootstrap"


def analyze(results: Any, *, tolerance: float = CLEAN_TOLERANCE, confidence: float = 0.95, n_boot: int = 2000,
            seed: int = 0):
    """One row per (method, k, s) with intervals, the test example as the unit.

    Args:
        results: rows of :func:`correct` / :func:`remove_and_retrain`, random draws merged by
            :func:`average_draws` (rows without a ``clean`` value get :func:`clean_fix`).
        tolerance: the clean-fix tolerance on the held-out accuracy drop (0.01 = one point).
        confidence: level of every interval.
        n_boot, seed: the bootstrap of the held-out change (and of averaged-draw rates).

    Returns:
        A DataFrame with columns ``method, k, s, n, flips`` (the sum of per-example outcomes: a
        fraction per example for averaged draws), ``flip_rate, flip_low, flip_high`` (Wilson for
        deterministic methods, percentile bootstrap over examples for methods averaged over draws;
        ``interval`` names which), ``acc_change, acc_low, acc_high`` (mean net change of held-out accuracy, bootstrap
        over test examples; negative = damage), ``clean_rate, clean_low, clean_high`` and
        ``broken`` (mean held-out predictions broken).
    """
    import pandas as pd

    _check_columns(results, ("method", "k", "s", "flipped", "heldout_acc_change"))
    frame = results.copy()
    computed = clean_fix(frame, tolerance).astype(float)
    frame["clean"] = computed if "clean" not in frame.columns else frame["clean"].astype(float).fillna(computed)
    rows = []
    for (method, k, s), part in frame.groupby(["method", "k", "s"], sort=False):
        averaged = _averaged(part)
        flip = _rate(part["flipped"].astype(float), confidence, n_boot, seed, averaged)
        clean = _rate(part["clean"].astype(float), confidence, n_boot, seed, averaged)
        acc = bootstrap_mean(part["heldout_acc_change"].to_numpy(), n_boot=n_boot, confidence=confidence, seed=seed)
        rows.append({"method": method, "k": int(k), "s": int(s), "n": len(part),
                     "flips": float(part["flipped"].astype(float).sum()), "flip_rate": flip[0],
                     "flip_low": flip[1], "flip_high": flip[2], "interval": flip[3],
                     "acc_change": acc.estimate, "acc_low": acc.low, "acc_high": acc.high,
                     "clean_rate": clean[0], "clean_low": clean[1], "clean_high": clean[2],
                     "broken": float(part["heldout_broken"].mean()) if "heldout_broken" in part else float("nan")})
    return pd.DataFrame(rows)


def _outcomes(frame: Any, method: str, k: int, s: int):
    part = frame[(frame["method"] == method) & (frame["k"] == k) & (frame["s"] == s)]
    return part.set_index("example")["flipped"].astype(float).sort_index()


def _averaged(part: Any) -> bool:
    """Whether a method's outcomes are averages over draws: by its ``draws`` column, else by the values."""
    if "draws" in part.columns and part["draws"].notna().any():
        return bool((part["draws"] > 1).any())
    return not bool(np.isin(part["flipped"].astype(float).to_numpy(), (0.0, 1.0)).all())


def compare(results: Any, pairs: Sequence[tuple[str, str]], *, alpha: float = 0.05):
    """Paired tests of flip outcomes between methods at each (k, s), Holm-corrected across all of them.

    For each pair ``(a, b)`` and each (k, s) that both methods have, on the same test examples:

    * two deterministic methods (0/1 outcomes): the exact McNemar test
      (:func:`~influence_utils.stats.mcnemar_exact`), ``n`` = number of test examples,
      ``only_a`` / ``only_b`` = examples only a / only b flips;
    * either method averaged over draws (``draws > 1``, :func:`average_draws`; without a ``draws``
      column: outcomes that are not all 0/1): the exact sign test of the per-example difference
      a − b, ``n`` = examples with a non-zero difference, ``only_a`` / ``only_b`` = examples where
      a / b is larger. The test follows the method, not the values a run happened to give.

    Holm's correction (:func:`~influence_utils.stats.holm`) runs over **every row** returned, so
    pass all comparisons of a study in one call (a mapping of model name -> results runs them all
    and adds a ``model`` column).

    Args:
        results: a DataFrame from :func:`correct` / :func:`average_draws` /
            :func:`remove_and_retrain` (concatenated), or a mapping model -> such a DataFrame.
        pairs: ``(a, b)`` method names.
        alpha: family-wise level for ``significant``.

    Returns:
        A DataFrame with columns ``[model,] a, b, k, s, test, n, rate_a, rate_b, only_a, only_b,
        pvalue, pvalue_holm, significant`` and ``verdict`` (``"a"`` or ``"b"`` for the method
        that flips more when significant, else ``"no difference"``).

    Raises:
        ValueError: for an unknown method, or when a pair has no (k, s) in common.
    """
    import pandas as pd

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    frames = dict(results) if isinstance(results, Mapping) else {None: results}
    rows = []
    for model, frame in frames.items():
        have = set(frame["method"].unique())
        for a, b in pairs:
            for m in (a, b):
                if m not in have:
                    raise ValueError(f"unknown method {m!r}{'' if model is None else f' for {model!r}'}; "
                                     f"results have {sorted(have)}")
            cells = sorted(set(map(tuple, frame[frame.method == a][["k", "s"]].drop_duplicates().to_numpy()))
                           & set(map(tuple, frame[frame.method == b][["k", "s"]].drop_duplicates().to_numpy())))
            if not cells:
                raise ValueError(f"methods {a!r} and {b!r} share no (k, s)")
            for k, s in cells:
                oa, ob = _outcomes(frame, a, k, s), _outcomes(frame, b, k, s)
                if not oa.index.equals(ob.index):
                    raise ValueError(f"{a!r} and {b!r} were run on different test examples at k={k}, s={s}")
                row = {"model": model, "a": a, "b": b, "k": int(k), "s": int(s),
                       "rate_a": float(oa.mean()), "rate_b": float(ob.mean())}
                averaged = _averaged(frame[frame.method == a]) or _averaged(frame[frame.method == b])
                if not averaged:
                    t = mcnemar_exact(oa.to_numpy(), ob.to_numpy())
                    row.update(test="mcnemar", n=t.n, only_a=t.only_a, only_b=t.only_b, pvalue=t.pvalue)
                else:
                    d = oa.to_numpy() - ob.to_numpy()
                    row.update(test="sign", n=int((d != 0).sum()), only_a=int((d > 0).sum()),
                               only_b=int((d < 0).sum()), pvalue=sign_test(d))
                rows.append(row)
    out = pd.DataFrame(rows)
    out["pvalue_holm"] = holm(out["pvalue"].to_numpy())
    out["significant"] = out["pvalue_holm"] < alpha
    out["verdict"] = np.where(~out["significant"], "no difference", np.where(out["only_a"] > out["only_b"], "a", "b"))
    cols = ["model", "a", "b", "k", "s", "test", "n", "rate_a", "rate_b", "only_a", "only_b", "pvalue",
            "pvalue_holm", "significant", "verdict"]
    if None in frames:
        cols.remove("model")
    return out[cols]


# --------------------------------------------------------------------------- cost
def _timing(seconds: Any, name: str) -> tuple[float, float, float]:
    v = np.atleast_1d(np.asarray(seconds, dtype=float))
    if v.size == 0 or not np.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"{name} must be one or more finite, non-negative durations in seconds, got {seconds}")
    return float(np.median(v)), float(v.min()), float(v.max())


def correction_costs(*, fit: Any, per_correction: Any, retrain_top: Any, retrain_scratch: Any,
                     counts: Sequence[int] = (1, 100)):
    """What n corrections cost, by influence-guided fine-tuning and by retraining, from measured seconds.

    Each duration is one measurement or several repeats (the table gives the median and the range,
    min to max). Influence-guided corrections pay the Arnoldi ``fit`` once, amortised over all the
    corrections that share the checkpoint, plus ``per_correction`` (scoring one test example
    against the training set and s steps on k examples) each. Retraining pays one run per
    correction: ``retrain_top`` (continue training the top layers from the checkpoint, as
    :func:`remove_and_retrain`) or ``retrain_scratch`` (the whole recipe from the initialisation,
    including any pretraining).

    Args:
        fit, per_correction, retrain_top, retrain_scratch: seconds, a number or repeats.
        counts: the numbers of corrections to price.

    Returns:
        A DataFrame, one row per strategy and number of corrections, with ``seconds`` (from the medians),
        ``low``, ``high`` (from the minima and maxima), ``per_correction`` (seconds / corrections)
        and ``vs_influence``: ``"costs less"`` when the strategy's range lies entirely below that of
        influence-guided fine-tuning at the same count, ``"costs more"`` when entirely above,
        ``"comparable"`` otherwise (``"—"`` on influence's own rows).
    """
    import pandas as pd

    t_fit, t_one = _timing(fit, "fit"), _timing(per_correction, "per_correction")
    t_top, t_scr = _timing(retrain_top, "retrain_top"), _timing(retrain_scratch, "retrain_scratch")
    if not counts or any(int(c) != c or c < 1 for c in counts):
        raise ValueError(f"counts must be positive integers, got {counts}")
    rows = []
    for c in counts:
        c = int(c)
        ours = tuple(f + c * o for f, o in zip(t_fit, t_one))
        for name, t in [("influence + fine-tuning", ours), ("retrain top from checkpoint", tuple(c * v for v in t_top)),
                        ("retrain from scratch", tuple(c * v for v in t_scr))]:
            if name.startswith("influence"):
                verdict = "—"
            elif t[2] < ours[1]:
                verdict = "costs less"
            elif t[1] > ours[2]:
                verdict = "costs more"
            else:
                verdict = "comparable"
            rows.append({"strategy": name, "corrections": c, "seconds": t[0], "low": t[1], "high": t[2],
                         "per_correction": t[0] / c, "vs_influence": verdict})
    return pd.DataFrame(rows)
