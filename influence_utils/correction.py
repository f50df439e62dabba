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
(method, test example, k, s), :func:`summarize` one row per (method, k, s) with the flip rate and
its Wilson confidence interval (:func:`wilson_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vmap
from torch.utils._pytree import tree_map

from .batching import index_batch, validate_batch
from .objective import Objective
from .scores import gradient_cosine, gradient_dot, influence, time_bounded_influence, tracin
from .solvers import ArnoldiSolver
from .utils import progress

__all__ = [
    "METHODS",
    "predict_labels",
    "mispredicted",
    "sample_mispredicted",
    "helpful_scores",
    "random_scores",
    "select_helpful",
    "correct",
    "first_order_loss_change",
    "summarize",
    "wilson_interval",
]

#: Estimators understood by :func:`helpful_scores`.
METHODS = ("abif", "influence", "tbif", "tracin", "cosine", "random")

_ROW_COLUMNS = [
    "method", "example", "k", "s", "label", "pred_before", "pred_after", "flipped",
    "loss_before", "loss_after", "loss_change",
    "heldout_acc_change", "heldout_loss_change", "heldout_broken", "heldout_fixed",
]


# --------------------------------------------------------------------------- predictions
def predict_labels(logits: Tensor) -> Tensor:
    """Predicted class under the package's logit convention, ``[n]`` int64.

    One logit per example (``[n]``, binary): class 1 where the logit is positive. ``[n, C]``: the
    argmax.
    """
    if logits.ndim == 1:
        return (logits > 0).long()
    if logits.ndim == 2:
        return logits.argmax(-1)
    raise ValueError(f"logits must be [n] (binary) or [n, C], got shape {tuple(logits.shape)}")


def _labels(targets: Tensor) -> Tensor:
    if targets.ndim != 1:
        raise ValueError(f"targets must be class labels [n], got shape {tuple(targets.shape)}")
    if targets.is_floating_point():
        rounded = targets.round()
        if not torch.equal(rounded, targets):
            raise ValueError("targets must be class labels (0/1 floats or int64), got non-integer values")
        return rounded.long()
    return targets.long()


def mispredicted(obj: Objective, theta: Tensor, data: Any) -> Tensor:
    """Indices of the examples in ``data`` whose prediction at ``theta`` is not their label, ``[m]``."""
    inputs, targets = validate_batch(data)
    with torch.no_grad():
        pred = predict_labels(obj.forward(theta, inputs))
    return (pred != _labels(targets).to(pred.device)).nonzero().flatten().cpu()


def sample_mispredicted(obj: Objective, theta: Tensor, data: Any, n: int, *, n_heldout: int,
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
    picked = wrong[torch.randperm(len(wrong), generator=gen)[:n]].sort().values
    rest = torch.ones(n_all, dtype=torch.bool)
    rest[picked] = False
    others = rest.nonzero().flatten()
    if len(others) < n_heldout:
        raise ValueError(f"only {len(others)} examples remain for a held-out set of {n_heldout}")
    held = others[torch.randperm(len(others), generator=gen)[:n_heldout]].sort().values
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
    u = torch.rand(te.shape[0], tr.shape[0], generator=gen, dtype=torch.float64)
    same = te.cpu()[:, None] == tr.cpu()[None, :]
    return torch.where(same, u, torch.full_like(u, -math.inf))


def helpful_scores(
    method: str,
    obj: Objective,
    theta: Tensor,
    train: Any,
    test: Any,
    *,
    solver: Any = None,
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
        chunk_size: training examples whose gradients are held at once.

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


# --------------------------------------------------------------------------- statistics
def wilson_interval(successes: Any, n: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    ``(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z`` the two-sided normal
    quantile. Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n
    successes and small n.

    Args:
        successes: number of successes (a number or an array).
        n: number of trials, > 0 (same shape).
        confidence: two-sided level, in (0, 1).

    Returns:
        ``(low, high)``, floats or arrays like the inputs.
    """
    import numpy as np
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    s, m = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if (m <= 0).any() or (s < 0).any() or (s > m).any():
        raise ValueError("need 0 <= successes <= n and n > 0")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = s / m
    denom = 1 + z * z / m
    centre = (p + z * z / (2 * m)) / denom
    half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    low, high = np.where(s == 0, 0.0, low), np.where(s == m, 1.0, high)  # exact ends, no rounding
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


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


def _runner(obj: Objective, lr: float, weight_decay: float, record: list[int], heldout_x: Any,
            heldout_y: Tensor, eval_chunk: int):
    """A function of one run (vmapped over runs): s_max steps, evaluated at the recorded steps."""
    record_set, s_max = set(record), max(record)
    n_h = int(heldout_y.shape[0])

    def evaluate(theta: Tensor, x1: Any, y1: Tensor):
        test_logits = obj.forward(theta, x1)  # [1] or [1, C]
        test_loss = obj.loss_fn(test_logits, y1)[0]
        outs = [obj.forward(theta, index_batch(heldout_x, slice(a, min(a + eval_chunk, n_h))))
                for a in range(0, n_h, eval_chunk)]
        h_logits = torch.cat(outs)
        h_loss = obj.loss_fn(h_logits, heldout_y)
        return test_logits[0], test_loss, h_logits, h_loss

    def run(theta0: Tensor, xs: Any, ys: Tensor, x1: Any, y1: Tensor):
        def objective(t: Tensor) -> Tensor:
            value = obj.loss_fn(obj.forward(t, xs), ys).mean()
            if weight_decay:
                value = value + 0.5 * weight_decay * t.pow(2).sum()
            return value

        g = grad(objective)
        theta, recorded = theta0, []
        for step in range(1, s_max + 1):
            theta = theta - lr * g(theta)
            if step in record_set:
                recorded.append(evaluate(theta, x1, y1))
        return tuple(torch.stack(parts) for parts in zip(*recorded))

    return run


def _forward_all(obj: Objective, theta: Tensor, inputs: Any, n: int, chunk: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([obj.forward(theta, index_batch(inputs, slice(a, min(a + chunk, n))))
                          for a in range(0, n, chunk)])


def correct(
    obj: Objective,
    theta: Tensor,
    train: Any,
    test: Any,
    heldout: Any,
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

    train_x, train_y = validate_batch(train)
    test_x, test_y = validate_batch(test)
    heldout_x, heldout_y = validate_batch(heldout)
    ks_, steps_ = _check_grid("ks", ks), _check_grid("steps", steps)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if chunk < 1 or eval_chunk < 1:
        raise ValueError("chunk and eval_chunk must be >= 1")
    n_train, n_test, n_h = int(train_y.shape[0]), int(test_y.shape[0]), int(heldout_y.shape[0])
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

    labels = _labels(test_y)
    test_logits0 = _forward_all(obj, theta, test_x, n_test, eval_chunk)
    pred0 = predict_labels(test_logits0).cpu()
    already = (pred0 == labels.cpu()).nonzero().flatten()
    if len(already):
        raise ValueError(
            f"test examples {already[:5].tolist()} are already predicted correctly at theta; "
            "correct() expects mis-predicted examples: select them with iu.correction.mispredicted"
        )
    with torch.no_grad():
        loss0 = obj.loss_fn(test_logits0, test_y).cpu()
        h_logits0 = _forward_all(obj, theta, heldout_x, n_h, eval_chunk)
        h_loss0 = obj.loss_fn(h_logits0, heldout_y).cpu()
    h_labels = _labels(heldout_y).cpu()
    h_right0 = predict_labels(h_logits0).cpu() == h_labels

    wd = obj.weight_decay if weight_decay else 0.0
    run = vmap(_runner(obj, float(lr), wd, steps_, heldout_x, heldout_y, eval_chunk),
               in_dims=(None, 0, 0, 0, 0))

    # jobs: (method, k, [n_test, k] inputs/targets of the fine-tuning sets)
    jobs = []
    for name, sel in selections.items():
        for k in ks_:
            idx = sel[:, :k].cpu()
            jobs.append((name, [k], _stack_rows(train_x, idx), train_y[idx]))
    if self_reference:
        self_x = tree_map(lambda t: t.unsqueeze(1), test_x)  # [n_test, 1, ...]
        jobs.append(("self", ks_, self_x, test_y.unsqueeze(1)))
    test_x1 = tree_map(lambda t: t.unsqueeze(1), test_x)  # each run's own test example, [1, ...]
    test_y1 = test_y.unsqueeze(1)

    tasks = [(j, a) for j in range(len(jobs)) for a in range(0, n_test, chunk)]
    results: dict[int, list] = {j: [] for j in range(len(jobs))}
    for j, a in progress(tasks, desc="correction runs", total=len(tasks), show=progress_bar):
        _, _, xs, ys = jobs[j]
        b = min(a + chunk, n_test)
        sl = slice(a, b)
        with torch.no_grad():
            out = run(theta, index_batch(xs, sl), ys[sl], index_batch(test_x1, sl), test_y1[sl])
        if not all(torch.isfinite(t).all() for t in out):
            raise FloatingPointError("a fine-tuning run diverged (non-finite values); lower lr")
        results[j].append(tuple(t.cpu() for t in out))

    rows = []
    for j, (name, k_list, _, _) in enumerate(jobs):
        t_logits, t_loss, h_logits, h_loss = (torch.cat(parts) for parts in zip(*results[j]))
        # shapes: t_logits [n_test, S(, C)], t_loss [n_test, S], h_* [n_test, S, n_h(, C)]
        t_pred = predict_labels(t_logits.reshape(n_test * len(steps_), *t_logits.shape[2:])).view(n_test, -1)
        h_pred = predict_labels(h_logits.reshape(-1, *h_logits.shape[3:])).view(n_test, len(steps_), n_h)
        h_right = h_pred == h_labels
        acc_change = (h_right.double().mean(-1) - h_right0.double().mean())
        loss_change_h = h_loss.double().mean(-1) - h_loss0.double().mean()
        broken = (h_right0 & ~h_right).sum(-1)
        fixed = (~h_right0 & h_right).sum(-1)
        for i in range(n_test):
            for si, s in enumerate(steps_):
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
    frame = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    order = {name: r for r, name in enumerate([*selections, "self"])}
    frame = frame.sort_values(["method", "k", "s", "example"], key=lambda c: c.map(order) if c.name == "method" else c,
                              kind="stable").reset_index(drop=True)
    return frame


def first_order_loss_change(obj: Objective, theta: Tensor, train: Any, test: Any, selection: Tensor, k: int,
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
        chunk_size: training examples whose gradients are held at once.
    """
    test_x, test_y = validate_batch(test)
    train_x, train_y = validate_batch(train)
    if selection.ndim != 2 or selection.shape[0] != test_y.shape[0] or selection.shape[1] < k:
        raise ValueError(f"selection must be [n_test={test_y.shape[0]}, >= k={k}], got {tuple(selection.shape)}")
    idx = selection[:, :k].cpu()
    used, inverse = idx.unique(return_inverse=True)
    dots = gradient_dot(obj, theta, (index_batch(train_x, used), train_y[used]), test, n=1,
                        chunk_size=chunk_size).cpu()  # [n_test, u]: ∇ℓ(test_i)ᵀ∇ℓ(z_j)
    dot = torch.gather(dots, 1, inverse).mean(1)  # [n_test]: ∇ℓ(test_i)ᵀ ḡ_S
    s = torch.tensor([float(v) for v in _check_grid("steps", steps)], dtype=dot.dtype, device=dot.device)
    return -lr * dot[:, None] * s[None, :]


def summarize(results: Any, confidence: float = 0.95):
    """One row per (method, k, s): the flip rate with its Wilson interval and the mean effects.

    Args:
        results: the DataFrame from :func:`correct`.
        confidence: level of the Wilson interval.

    Returns:
        A DataFrame with columns ``method, k, s, n, flips, flip_rate, ci_low, ci_high,
        loss_change`` (mean change of the test loss), ``heldout_acc_change,
        heldout_loss_change, heldout_broken`` (means over test examples).
    """
    import pandas as pd

    missing = [c for c in ("method", "k", "s", "flipped") if c not in getattr(results, "columns", [])]
    if missing:
        raise ValueError(f"results must be the DataFrame from correct(); missing columns {missing}")
    g = results.groupby(["method", "k", "s"], sort=False)
    out = g.agg(
        n=("flipped", "size"),
        flips=("flipped", "sum"),
        loss_change=("loss_change", "mean"),
        heldout_acc_change=("heldout_acc_change", "mean"),
        heldout_loss_change=("heldout_loss_change", "mean"),
        heldout_broken=("heldout_broken", "mean"),
    ).reset_index()
    out["flips"] = out["flips"].astype(int)
    out["flip_rate"] = out["flips"] / out["n"]
    low, high = wilson_interval(out["flips"].to_numpy(), out["n"].to_numpy(), confidence)
    out["ci_low"], out["ci_high"] = low, high
    cols = ["method", "k", "s", "n", "flips", "flip_rate", "ci_low", "ci_high", "loss_change",
            "heldout_acc_change", "heldout_loss_change", "heldout_broken"]
    return pd.DataFrame(out[cols]).reset_index(drop=True)
