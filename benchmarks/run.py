"""Cost and accuracy of influence estimators: influence_utils against Captum, pyDVL and Kronfluence.

    python benchmarks/run.py                 # every model, writes benchmarks/results/results.json
    python benchmarks/run.py --models small  # one model
    python benchmarks/run.py --smoke         # tiny sizes: checks that everything runs (minutes)

On the same model, data and damping, in one process, it measures wall-clock time for

* the floor: one vectorised pass of per-example gradients over the training and test sets;
* influence_utils: Arnoldi (ABIF) fit + influence matrix, exact (small model only), CG, LiSSA,
  TracIn over the training checkpoints;
* Kronfluence: EK-FAC on every layer it supports (Linear and Conv2d; not GroupNorm);
* Captum: ArnoldiInfluenceFunction, NaiveInfluenceFunction (small model only: it builds the
  explicit p x p Hessian), TracInCP;
* pyDVL: ArnoldiInfluence and CgInfluence;

each ``--repeats`` times (default 3), interleaved: round r runs every method once, in a fixed
order, before round r + 1, so that a change of load on a shared machine hits every method alike.
It reports the median and the range of every time, each time as a ratio to the floor of the same
round, the load average before and after every round, and the agreement (Pearson, Spearman, with
bootstrap intervals) of every score matrix with the reference (exact influence where it can be
computed, else CG solved to a small residual) and with each other. On the small model it also
compares every method with three exact references from the eigendecomposition of H: the ideal
top-k influence (the top ``rank`` positive eigenpairs, damped: what Arnoldi approximates), damped
influence on the positive part of the spectrum, and damped Gauss-Newton influence (what EK-FAC
approximates, with a Fisher that is the Gauss-Newton matrix for the cross-entropy).

The peers are external dependencies, installed as the ``bench`` extra. They pin an older numpy
than the book's environment, so this script creates and re-executes itself in its own virtual
environment ``.venv-bench`` (with the same torch pin) unless it already runs in one where they
import.

Scores are compared in influence_utils' sign convention (positive: the training example helps
the test example), which Captum, pyDVL and Kronfluence share up to a positive factor (n, or the
number of Hessian examples). Each library's Hessian is of the same training loss on the same
examples plus the same damping d·I (Captum's Hessian is of the summed loss, so its regulariser is
m·d for m examples; Kronfluence's EK-FAC is of the mean Fisher, so its damping is d).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".venv-bench"
TORCH_PIN = "torch==2.14.1"
PEERS = ("captum", "pydvl", "kronfluence")


# --------------------------------------------------------------------------- environment


def _peers_importable() -> bool:
    try:
        import captum  # noqa: F401
        import kronfluence  # noqa: F401
        import pydvl  # noqa: F401
    except ImportError:
        return False
    return True


def _ensure_environment(args: argparse.Namespace) -> None:
    """Re-execute in .venv-bench (created on first use) unless the peers import here."""
    if args.no_peers or _peers_importable():
        return
    py = BENCH_VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == BENCH_VENV.resolve():
        sys.exit(f"captum/pydvl/kronfluence do not import in .venv-bench; run "
                 f"`{py} -m pip install -e '{ROOT}[bench]'`, or remove .venv-bench and run again")
    if not py.exists():
        print(f"creating {BENCH_VENV} for the peer libraries (once; a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    if subprocess.run([str(py), "-c", "import " + ", ".join(PEERS)], capture_output=True).returncode:
        # first use, or a .venv-bench from before a peer joined the bench extra
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", TORCH_PIN, "-e", f"{ROOT}[bench]"], check=True)
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------- settings

MODELS = {
    # p = 2,410: exact influence and Captum's naive (explicit Hessian) are affordable
    "small": dict(dataset="digits", arch="mlp", hidden=(32,), n_train=1000, n_test=200, hessian=500,
                  epochs=30, batch=50, lr=0.1, rank=50, iterations=150, queries=50,
                  cg_iter=100, lissa_depth=300, lissa_batch=None, tracin_checkpoints=5),
    # p = 101,770
    "mlp": dict(dataset="mnist5k", arch="mlp", hidden=(128,), n_train=4000, n_test=500, hessian=1000,
                epochs=8, batch=50, lr=0.1, rank=50, iterations=100, queries=10,
                cg_iter=60, lissa_depth=200, lissa_batch=200, tracin_checkpoints=2),
    # p = 77,754: GroupNorm ResNet-8; small sizes, since every Hessian-vector product of a
    # convolutional net costs seconds on a CPU
    "resnet8": dict(dataset="mnist5k", arch="resnet", depth=8, n_train=500, n_test=50, hessian=128,
                    epochs=8, batch=25, lr=0.05, rank=20, iterations=30, queries=3,
                    cg_iter=20, lissa_depth=30, lissa_batch=32, tracin_checkpoints=2),
    # p = 38,410: the MLP 64-512-10 of issue 14's goal (1,400 of the 1,438 training digits there are,
    # where the issue had 1,500); not in the default list (--models digits512)
    "digits512": dict(dataset="digits", arch="mlp", hidden=(512,), n_train=1400, n_test=200, hessian=1400,
                      epochs=30, batch=50, lr=0.1, rank=50, iterations=200, queries=20,
                      cg_iter=100, lissa_depth=200, lissa_batch=200, tracin_checkpoints=2),
}
DEFAULT_MODELS = "small,mlp,resnet8"

SMOKE = dict(n_train=200, n_test=20, hessian=100, epochs=2, iterations=30, rank=10, queries=4,
             cg_iter=10, lissa_depth=10, tracin_checkpoints=2)

EXACT_MAX_P = 5000  # exact influence, Captum's naive influence and the ideal references up to this p
CI_MAX_SHAPE = (200, 1000)  # bootstrap intervals on at most about this many queries x training examples


# --------------------------------------------------------------------------- helpers


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


@dataclass
class Method:
    """One timed estimator. ``run()`` returns ``{"fit_s", "scores_s", "scores"}`` (scores in
    influence_utils' sign and scale, ``[queries, n_train]``, or None) and may add ``"note"``."""

    name: str
    library: str
    queries: int
    run: Callable[[], dict]
    info: dict = field(default_factory=dict)  # constant facts stored with the method's entry


def _build(spec: dict, seed: int):
    import torch

    import influence_utils as iu

    ds = iu.load_dataset(spec["dataset"], n_train=spec["n_train"], n_test=spec["n_test"], seed=seed,
                         flatten=spec["arch"] == "mlp")
    torch.manual_seed(seed)
    n_classes = ds.num_classes
    if spec["arch"] == "mlp":
        model = iu.models.MLP(ds.train[0].shape[1], hidden=spec["hidden"], n_classes=n_classes)
    else:
        model = iu.models.ResNet(depth=spec["depth"], in_channels=ds.train[0].shape[1], n_classes=n_classes)
    return ds, model


def _train(model, train, spec: dict, seed: int, workdir: Path):
    """Plain mini-batch SGD with momentum; saves one checkpoint per epoch for TracIn."""
    import torch
    import torch.nn.functional as F

    x, y = train
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9)
    checkpoints = []
    for epoch in range(spec["epochs"]):
        perm = torch.randperm(len(y), generator=gen)
        model.train()
        for i in range(0, len(y), spec["batch"]):
            idx = perm[i : i + spec["batch"]]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        path = workdir / f"ckpt{epoch}.pt"
        torch.save({"state": {k: v.clone() for k, v in model.state_dict().items()}, "lr": spec["lr"]}, path)
        checkpoints.append(path)
    return checkpoints


def _load_checkpoint(model, path) -> float:
    import torch

    ck = torch.load(path, weights_only=True)
    model.load_state_dict(ck["state"])
    return float(ck["lr"])


def _corr(a, b) -> dict:
    import influence_utils as iu

    return {"pearson": round(iu.pearson(a, b), 4), "spearman": round(iu.spearman(a, b), 4)}


def _corr_ci(a, b, n_boot: int, seed: int) -> dict:
    """Pearson and Spearman of two ``[queries, n_train]`` matrices, with 95% bootstrap intervals.

    Queries and training examples are resampled independently (``unit="both"``, as in the book).
    Matrices larger than ``CI_MAX_SHAPE`` are bootstrapped on an evenly strided sub-grid of about
    that size (every k-th query and training example), which keeps the cost to seconds; then
    ``ci_block`` gives its shape and ``pearson_block``/``spearman_block`` the correlations on it,
    which the intervals bracket (the intervals bracket ``pearson``/``spearman`` only on the whole
    matrix).
    """
    import influence_utils as iu

    out = _corr(a, b)
    if n_boot <= 0:
        return out
    rows, cols = a.shape
    r_step, c_step = -(-rows // CI_MAX_SHAPE[0]), -(-cols // CI_MAX_SHAPE[1])
    xa, xb = a[::r_step, ::c_step].numpy(), b[::r_step, ::c_step].numpy()
    for method in ("pearson", "spearman"):
        iv = iu.stats.bootstrap_correlation(xa, xb, method=method, unit="both", n_boot=n_boot, seed=seed)
        out[f"{method}_ci"] = [round(iv.low, 4), round(iv.high, 4)]
        if (r_step, c_step) != (1, 1):
            out[f"{method}_block"] = round(iv.estimate, 4)
    out["ci_block"] = list(xa.shape)
    return out


def _summary(values: list[float], digits: int = 3) -> dict:
    """``{"": median, "_all": every repeat, "_min", "_max"}`` suffixes for one timed quantity."""
    return {"": round(statistics.median(values), digits), "_all": [round(v, digits) for v in values],
            "_min": round(min(values), digits), "_max": round(max(values), digits)}


def _put(entry: dict, key: str, values: list[float], digits: int = 3) -> None:
    for suffix, value in _summary(values, digits).items():
        entry[key + suffix] = value


def _git_state() -> str | None:
    """The commit the measured code is at, with ``-dirty`` for uncommitted changes."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- one model


def run_model(name: str, spec: dict, args) -> dict:
    import torch

    import influence_utils as iu

    seed = args.seed
    iu.seed_everything(seed, deterministic=False)
    workdir = Path(tempfile.mkdtemp(prefix=f"iu-bench-{name}-"))
    ds, model = _build(spec, seed)
    train, test = ds.train, ds.test
    with Timer() as t_train:
        checkpoints = _train(model, train, spec, seed, workdir)
    model.eval()
    obj = iu.Objective(model, iu.per_example_cross_entropy)
    theta = obj.theta()
    n, n_test, p = len(train[1]), len(test[1]), obj.p
    m = spec["hessian"]
    q = min(spec["queries"], n_test)
    acc = float((obj.forward(theta, test[0]).argmax(1) == test[1]).float().mean())
    print(f"\n[{name}] p = {p:,}, train {n}, test {n_test}, Hessian on {m} examples, "
          f"test accuracy {acc:.3f} (trained in {t_train.seconds:.0f} s), {args.repeats} rounds", flush=True)
    ctx = SimpleNamespace(
        name=name, spec=spec, seed=seed, model=model, obj=obj, theta=theta, train=train, test=test,
        hess=(train[0][:m], train[1][:m]),  # the examples whose Hessian every method uses
        test_q=(test[0][:q], test[1][:q]), n=n, n_test=n_test, p=p, q=q, workdir=workdir,
        checkpoints=checkpoints, tracin_ckpts=checkpoints[-spec["tracin_checkpoints"]:],
        damping=None, lam_max=None, lam_min=None, exact=None, arnoldi=None,
    )
    results: dict = {"model": name, "p": p, "n_train": n, "n_test": n_test, "hessian_examples": m,
                     "queries_iterative": q, "test_accuracy": round(acc, 4), "methods": {}}

    methods, skipped = _ours(ctx)
    if not args.no_peers:
        for build in (_kronfluence, _captum, _pydvl):
            more, more_skipped = build(ctx)
            methods += more
            skipped.update(more_skipped)

    # ---- the floor: one pass of per-example gradients over train and test
    def floor_pass():
        total = 0.0
        for part in (train, test):
            for xb, yb, _ in iu.batching.iter_chunks(part, 1024):
                total += float(obj.per_example_grads(theta, (xb, yb)).sum())
        return total

    floor_pass()  # warm-up

    # ---- rounds: every method once per round, in a fixed order
    floor_s: list[float] = []
    times = {mt.name: {"fit": [], "scores": []} for mt in methods}
    scores: dict = {}  # round-0 score matrices, float64
    drift = {mt.name: 0.0 for mt in methods}  # largest change of a later round's scores, relative
    notes: dict = {}
    errors: dict = {}
    rounds = []
    for r in range(args.repeats):
        before, t_round = _load(), time.perf_counter()
        with Timer() as t:
            floor_pass()
        floor_s.append(t.seconds)
        print(f"  round {r + 1}/{args.repeats} (load {before[0]:.1f}): floor {t.seconds:.2f} s", flush=True)
        for mt in methods:
            if mt.name in errors:
                continue
            try:
                with warnings.catch_warnings():  # the peers' deprecation notices, once per round
                    warnings.simplefilter("ignore", FutureWarning)
                    warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
                    out = mt.run()
            except Exception as err:  # noqa: BLE001 -- recorded; a peer's failure must not end the run
                if args.smoke and not isinstance(err, iu.LissaDivergenceError):
                    raise
                errors[mt.name] = f"{type(err).__name__}: {str(err)[:200]}"
                print(f"    {mt.name:<18} failed: {errors[mt.name]}", flush=True)
                continue
            times[mt.name]["fit"].append(out["fit_s"])
            times[mt.name]["scores"].append(out["scores_s"])
            notes[mt.name] = out.get("note", "")
            s = out.get("scores")
            if s is not None:
                s = s.detach().to(torch.float64).cpu()
                if mt.name not in scores:
                    scores[mt.name] = s
                else:
                    ref = scores[mt.name]
                    drift[mt.name] = max(drift[mt.name], float((s - ref).abs().max() / ref.abs().max()))
            print(f"    {mt.name:<18} fit {out['fit_s']:7.2f} s  scores {out['scores_s']:7.2f} s  "
                  f"({mt.queries} queries) {notes[mt.name]}", flush=True)
        rounds.append({"round": r, "load_average_1_5_15_before": before, "load_average_1_5_15_after": _load(),
                       "wall_s": round(time.perf_counter() - t_round, 1)})

    results["repeats"] = args.repeats
    results["order"] = ["floor"] + [mt.name for mt in methods]
    results["rounds"] = rounds
    _put(results, "floor_s", floor_s)
    results.update(damping=ctx.damping, lambda_max=ctx.lam_max, lambda_min_found=ctx.lam_min)

    for mt in methods:
        if mt.name in errors:
            results["methods"][mt.name] = {"library": mt.library, "error": errors[mt.name]}
            continue
        fit, sc = times[mt.name]["fit"], times[mt.name]["scores"]
        total = [a + b for a, b in zip(fit, sc)]
        entry = {"library": mt.library}
        _put(entry, "fit_s", fit)
        _put(entry, "scores_s", sc)
        _put(entry, "total_s", total)
        entry.update(repeats=len(total), queries=mt.queries, note=notes[mt.name], **mt.info)
        floors = floor_s[-len(total):]  # the rounds it ran in (all of them unless it failed in round 0)
        _put(entry, "ratio_to_floor", [t / f for t, f in zip(total, floors)], 2)
        if mt.queries < n_test:  # extrapolate the per-query part to the whole test set
            all_q = [a + b * n_test / mt.queries for a, b in zip(fit, sc)]
            _put(entry, "total_all_queries_s", all_q)
            _put(entry, "ratio_to_floor_all_queries", [t / f for t, f in zip(all_q, floors)], 2)
        if mt.name in scores and len(total) > 1:
            entry["scores_repeat_max_rel_diff"] = float(f"{drift[mt.name]:.2e}")
        results["methods"][mt.name] = entry
    results["methods"].update(skipped)

    # ---- agreement
    reference = "ours_exact" if "ours_exact" in scores else "ours_cg"
    results["reference"] = reference
    names = list(scores)
    agreement = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            k = min(scores[a].shape[0], scores[b].shape[0])
            agreement[f"{a}|{b}"] = _corr(scores[a][:k], scores[b][:k])
    results["agreement"] = agreement
    refs = _ideal_references(ctx, results) if ctx.exact is not None else {}
    for name_, entry in results["methods"].items():
        if name_ not in scores:
            continue
        s = scores[name_]
        k = min(s.shape[0], scores[reference].shape[0])
        if name_ != reference:
            entry["vs_reference"] = _corr_ci(s[:k], scores[reference][:k], args.n_boot, seed)
        for ref_name, ref in refs.items():
            entry[f"vs_{ref_name}"] = _corr_ci(s, ref[: s.shape[0]], args.n_boot, seed)
    if ctx.arnoldi is not None:
        results["scores_over_floor"] = _scores_over_floor(ctx, floor_pass, args.pairs)
        results["arnoldi_scores_over_floor"] = results["scores_over_floor"]["ratio"]
        results["hvp"] = _hvp_costs(ctx)
    if args.save_scores:
        path = Path(args.save_scores) / f"scores_{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"methods": {k: v.float() for k, v in scores.items()},
                    "references": {k: v.float() for k, v in refs.items()}}, path)
        results["scores_file"] = str(path)
    return results


def _scores_over_floor(ctx, floor_pass, pairs: int) -> dict:
    """The fitted Arnoldi's influence matrix over the floor, timed in steady state and paired.

    The rounds time each method once, which at a few milliseconds (the small model) is mostly
    noise and first-call cost. Here the floor (one pass of per-example gradients over train and
    test) and Arnoldi's scoring pass (``influence`` with the solver fitted in the rounds) are timed
    ``pairs`` times, alternately and in alternating order; each timing repeats its call ``calls``
    times (enough for about 0.2 s) and keeps the mean. The ratio is taken within each pair; the
    median and range are reported.
    """
    import math

    import influence_utils as iu

    obj, theta, arn = ctx.obj, ctx.theta, ctx.arnoldi

    def scoring():
        return iu.influence(obj, theta, arn, train=ctx.train, test=ctx.test)

    with Timer() as t:
        floor_pass()
    calls = max(1, math.ceil(0.2 / max(t.seconds, 1e-6)))

    def timed(f) -> float:
        with Timer() as tt:
            for _ in range(calls):
                f()
        return tt.seconds / calls

    scoring()  # warm-up
    floor_s, scores_s = [], []
    for i in range(pairs):
        if i % 2 == 0:
            floor_s.append(timed(floor_pass))
            scores_s.append(timed(scoring))
        else:
            scores_s.append(timed(scoring))
            floor_s.append(timed(floor_pass))
    ratios = [s / f for s, f in zip(scores_s, floor_s)]
    out = {"pairs": pairs, "calls_per_timing": calls}
    _put(out, "ratio", ratios, 2)
    _put(out, "floor_s", floor_s, 6)
    _put(out, "scores_s", scores_s, 6)
    print(f"  scoring / floor, paired in steady state: {out['ratio']} [{out['ratio_min']}, "
          f"{out['ratio_max']}] ({pairs} pairs, {calls} calls each)", flush=True)
    return out


def _hvp_costs(ctx, repeats: int = 3) -> dict:
    """Seconds per vector of one Hessian-vector product on the Hessian examples, alone and in a block
    of 4, and the least time any Arnoldi fit at this rank can take: ``rank`` products (one per kept
    eigenpair) at the cheaper per-vector cost, ignoring everything else the fit does.
    """
    import torch

    obj, theta, rank = ctx.obj, ctx.theta, ctx.spec["rank"]
    gen = torch.Generator(device=theta.device).manual_seed(ctx.seed)
    out = {}
    for b in (1, 4):
        v = torch.randn(b, obj.p, generator=gen, dtype=theta.dtype, device=theta.device)
        obj.hvp(theta, ctx.hess, v)  # warm-up
        times = []
        for _ in range(repeats):
            with Timer() as t:
                obj.hvp(theta, ctx.hess, v)
            times.append(t.seconds / b)
        _put(out, f"per_vector_block{b}_s", times, 4)
    best = min(out["per_vector_block1_s"], out["per_vector_block4_s"])
    out["rank"] = rank
    out["arnoldi_fit_lower_bound_s"] = round(rank * best, 3)
    print(f"  Hessian-vector product: {out['per_vector_block1_s']} s alone, {out['per_vector_block4_s']} s "
          f"per vector in a block of 4; an Arnoldi fit at rank {rank} needs at least "
          f"{out['arnoldi_fit_lower_bound_s']} s", flush=True)
    return out


def _ideal_references(ctx, results: dict) -> dict:
    """Exact score matrices from the eigendecomposition of H (small model), untimed.

    ``ideal_topk``: V_k diag(1/(λ + d)) V_kᵀ on the top ``rank`` positive eigenpairs (what Arnoldi
    approximates); ``positive_damped``: (H₊ + dI)⁻¹ with H₊ = V max(Λ, 0) Vᵀ; ``gauss_newton``:
    (G + dI)⁻¹ with G the exact Gauss-Newton matrix (the Fisher that EK-FAC approximates).
    """
    import torch

    import influence_utils as iu

    obj, theta, d, n, k = ctx.obj, ctx.theta, ctx.damping, ctx.n, ctx.spec["rank"]
    evals, V = ctx.exact.eigenvalues, ctx.exact.eigenvectors  # descending
    g_tr = obj.per_example_grads(theta, ctx.train).to(V.dtype) @ V  # [n, p] in the eigenbasis
    g_te = obj.per_example_grads(theta, ctx.test).to(V.dtype) @ V
    positive = evals > 1e-8 * evals.abs().max()
    top = positive.nonzero().flatten()[:k]
    refs = {
        "ideal_topk": ((g_te[:, top] / (evals[top] + d)) @ g_tr[:, top].T) / n,
        "positive_damped": ((g_te / (evals.clamp_min(0) + d)) @ g_tr.T) / n,
    }
    gn = iu.ExactSolver(damping=d, gauss_newton=True).fit(obj, theta, ctx.hess)
    refs["gauss_newton"] = iu.influence(obj, theta, gn, train=ctx.train, test=ctx.test)
    refs = {key: v.detach().to(torch.float64).cpu() for key, v in refs.items()}
    results["ideal_references"] = {
        "ideal_topk": {"rank": len(top), "description": "top-k positive eigenpairs of the exact H, damped"},
        "positive_damped": {"positive_eigenvalues": int(positive.sum()), "of": len(evals),
                            "description": "(H+ + dI)^-1, H+ the positive part of the exact H"},
        "gauss_newton": {"description": "(G + dI)^-1, G the exact Gauss-Newton matrix (= Fisher)"},
    }
    return refs


# --------------------------------------------------------------------------- influence_utils


def _ours(ctx) -> tuple[list[Method], dict]:
    import torch

    import influence_utils as iu

    obj, theta, spec, seed = ctx.obj, ctx.theta, ctx.spec, ctx.seed
    train, test, test_q, hess, n = ctx.train, ctx.test, ctx.test_q, ctx.hess, ctx.n

    def arnoldi():
        arn = iu.ArnoldiSolver(rank=spec["rank"], iterations=spec["iterations"], seed=seed)
        with Timer() as t_fit:
            arn.fit(obj, theta, hess)
        if ctx.damping is None:  # the first fit sets the damping every method shares
            ctx.lam_max, ctx.lam_min = float(arn.ritz_values.max()), float(arn.ritz_values.min())
            ctx.damping = max(1e-3 * ctx.lam_max, 2 * max(0.0, -ctx.lam_min))
        arn.damping = ctx.damping
        ctx.arnoldi = arn  # for the paired scoring-over-floor measurement after the rounds
        with Timer() as t_sc:
            s = iu.influence(obj, theta, arn, train=train, test=test)
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s,
                "note": f"{arn!r}, {arn.hvp_count} HVPs"}

    def exact():
        with Timer() as t_fit:
            ex = iu.ExactSolver(damping=ctx.damping).fit(obj, theta, hess)
        with Timer() as t_sc:
            s = iu.influence(obj, theta, ex, train=train, test=test)
        ctx.exact = ex
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s}

    def cg():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", iu.ConvergenceWarning)
            solver = iu.CGSolver(damping=ctx.damping, max_iter=spec["cg_iter"], tol=1e-6)
            with Timer() as t_fit:
                solver.fit(obj, theta, hess)
            with Timer() as t_sc:
                s = iu.influence(obj, theta, solver, train=train, test=test_q, n=n)
        residual = float(solver.residuals[-1].max())
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s, "note": f"residual {residual:.1e}"}

    def lissa():
        scale = 1.5 * (ctx.lam_max + ctx.damping)
        solver = iu.LissaSolver(damping=ctx.damping, scale=scale, depth=spec["lissa_depth"],
                                batch_size=spec["lissa_batch"], seed=seed)
        with Timer() as t_fit:
            solver.fit(obj, theta, hess)
        with Timer() as t_sc:
            s = iu.influence(obj, theta, solver, train=train, test=test_q, n=n)
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s, "note": f"scale {scale:.3g}"}

    thetas, lrs = [], []
    for path in ctx.tracin_ckpts:
        lrs.append(_load_checkpoint(ctx.model, path))
        thetas.append(obj.theta())
    _load_checkpoint(ctx.model, ctx.checkpoints[-1])
    assert torch.equal(obj.theta(), theta)

    def tracin():
        with Timer() as t_sc:
            s = iu.tracin(obj, thetas, lrs, train=train, test=test)
        return {"fit_s": 0.0, "scores_s": t_sc.seconds, "scores": s, "note": f"{len(thetas)} checkpoints"}

    lib = "influence_utils"
    methods = [Method("ours_arnoldi", lib, ctx.n_test, arnoldi)]  # first: it sets the damping
    skipped = {}
    if ctx.p <= EXACT_MAX_P:
        methods.append(Method("ours_exact", lib, ctx.n_test, exact))
    methods += [Method("ours_cg", lib, ctx.q, cg), Method("ours_lissa", lib, ctx.q, lissa),
                Method("ours_tracin", lib, ctx.n_test, tracin)]
    return methods, skipped


# --------------------------------------------------------------------------- Kronfluence


def _kronfluence(ctx) -> tuple[list[Method], dict]:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import TensorDataset

    try:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        from kronfluence.task import Task
    except ImportError as err:  # pragma: no cover
        return [], {"kronfluence_ekfac": {"library": "kronfluence", "error": f"kronfluence not importable: {err}"}}

    class ClassificationTask(Task):
        """Summed cross-entropy: per-example gradients of ℓ(z), as influence_utils."""

        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if sample:  # labels drawn from the model: the true Fisher (= Gauss-Newton for softmax)
                with torch.no_grad():
                    y = torch.multinomial(F.softmax(logits.detach(), dim=-1), num_samples=1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    supported = (nn.Linear, nn.Conv2d)  # what Kronfluence 1.0 tracks
    covered = sum(prm.numel() for mod in ctx.model.modules() if isinstance(mod, supported)
                  for prm in mod.parameters(recurse=False))
    uncovered = sorted({type(mod).__name__ for mod in ctx.model.modules()
                        if not isinstance(mod, supported) and any(True for _ in mod.parameters(recurse=False))})
    task = ClassificationTask()
    train_ds, test_ds, hess_ds = TensorDataset(*ctx.train), TensorDataset(*ctx.test), TensorDataset(*ctx.hess)
    logging_level = 40  # logging.ERROR: Kronfluence logs every phase at INFO

    def ekfac():
        model = copy.deepcopy(ctx.model).eval()  # prepare_model wraps layers in place
        torch.manual_seed(ctx.seed)  # the sampled labels of the Fisher
        with Timer() as t_fit:
            model = prepare_model(model, task)
            analyzer = Analyzer(analysis_name="bench", model=model, task=task, cpu=True, log_level=logging_level,
                                disable_tqdm=True, output_dir=str(ctx.workdir / "kronfluence"))
            analyzer.fit_all_factors(factors_name="ekfac", dataset=hess_ds, per_device_batch_size=256,
                                     factor_args=FactorArguments(strategy="ekfac"), overwrite_output_dir=True)
        with Timer() as t_sc:
            analyzer.compute_pairwise_scores(
                scores_name="scores", factors_name="ekfac", query_dataset=test_ds, train_dataset=train_ds,
                per_device_query_batch_size=ctx.n_test, per_device_train_batch_size=256,
                score_args=ScoreArguments(damping_factor=ctx.damping), overwrite_output_dir=True)
            s = analyzer.load_pairwise_scores("scores")["all_modules"]
        # ∇f(test)ᵀ(F + dI)⁻¹∇ℓ(train) with f the test loss: our sign, times n
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s / ctx.n}

    info = {"covered_parameters": covered, "covered_fraction": round(covered / ctx.p, 4),
            "uncovered_modules": uncovered,
            "curvature": "EK-FAC of the Fisher (labels sampled from the model) on the Hessian examples"}
    return [Method("kronfluence_ekfac", "kronfluence", ctx.n_test, ekfac, info)], {}


# --------------------------------------------------------------------------- Captum


def _captum(ctx) -> tuple[list[Method], dict]:
    from torch import nn
    from torch.utils.data import TensorDataset

    try:
        from captum.influence import NaiveInfluenceFunction, TracInCP
        from captum.influence._core.arnoldi_influence_function import (
            ArnoldiInfluenceFunction,  # not re-exported
        )
    except ImportError as err:  # pragma: no cover
        return [], {"captum": {"library": "captum", "error": f"captum not importable: {err}"}}
    model, spec, test = ctx.model, ctx.spec, ctx.test
    loss = nn.CrossEntropyLoss(reduction="none")
    train_ds, hess_ds = TensorDataset(*ctx.train), TensorDataset(*ctx.hess)
    last = str(ctx.tracin_ckpts[-1])
    m = len(ctx.hess[1])

    # Captum's Hessian is of the summed loss over hessian_dataset: regulariser m·d matches (H + dI)
    # of the mean loss; its scores are then ∇ℓ_testᵀ (m(H + dI))⁻¹ ∇ℓ_train (same sign as ours).
    def arnoldi():
        with Timer() as t_fit:
            cap = ArnoldiInfluenceFunction(model, train_ds, last, checkpoints_load_func=_load_checkpoint,
                                           loss_fn=loss, batch_size=256, hessian_dataset=hess_ds,
                                           projection_dim=spec["rank"], arnoldi_dim=spec["iterations"],
                                           hessian_reg=m * ctx.damping, seed=0)
        with Timer() as t_sc:
            s = cap.influence((test[0], test[1]))
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s}

    def naive():
        with Timer() as t_fit:
            cap = NaiveInfluenceFunction(model, train_ds, last, checkpoints_load_func=_load_checkpoint,
                                         loss_fn=loss, batch_size=256, hessian_dataset=hess_ds,
                                         hessian_reg=m * ctx.damping, projection_dim=None)
        with Timer() as t_sc:
            s = cap.influence((test[0], test[1]))
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s}

    def tracincp():
        ckpts = [str(c) for c in ctx.tracin_ckpts]
        with Timer() as t_fit:
            tr = TracInCP(model, train_ds, ckpts, checkpoints_load_func=_load_checkpoint, loss_fn=loss, batch_size=256)
        with Timer() as t_sc:
            s = tr.influence((test[0], test[1]))
        _load_checkpoint(model, ctx.checkpoints[-1])
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s / ctx.n,
                "note": f"{len(ckpts)} checkpoints"}

    methods = [Method("captum_arnoldi", "captum", ctx.n_test, arnoldi)]
    skipped = {}
    if ctx.p <= EXACT_MAX_P:
        methods.append(Method("captum_naive", "captum", ctx.n_test, naive))
    else:
        skipped["captum_naive"] = {
            "library": "captum",
            "skipped": f"builds the explicit p x p Hessian: p = {ctx.p:,} needs {ctx.p ** 2 * 4 / 1e9:.0f} GB"}
    methods.append(Method("captum_tracincp", "captum", ctx.n_test, tracincp))
    return methods, skipped


# --------------------------------------------------------------------------- pyDVL


def _pydvl(ctx) -> tuple[list[Method], dict]:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    try:
        from pydvl.influence.base_influence_function_model import InfluenceMode
        from pydvl.influence.torch import ArnoldiInfluence, CgInfluence
    except ImportError as err:  # pragma: no cover
        return [], {"pydvl": {"library": "pydvl", "error": f"pydvl not importable: {err}"}}
    model, spec, train, n = ctx.model, ctx.spec, ctx.train, ctx.n
    loader = DataLoader(TensorDataset(*ctx.hess), batch_size=256)

    def all_scores(inf, queries):
        cols = []
        for i in range(0, n, 1024):
            cols.append(inf.influences(queries[0], queries[1], train[0][i : i + 1024], train[1][i : i + 1024],
                                       mode=InfluenceMode.Up))
        # pyDVL's "Up" influence is ∇ℓ_testᵀ(H + dI)⁻¹∇ℓ_train of the mean loss: our sign, times n
        return torch.cat(cols, dim=1) / n

    def arnoldi():
        with Timer() as t_fit:
            inf = ArnoldiInfluence(model, F.cross_entropy, regularization=ctx.damping, rank=spec["rank"],
                                   krylov_dimension=spec["iterations"]).fit(loader)
        with Timer() as t_sc:
            s = all_scores(inf, ctx.test)
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s}

    def cg():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Timer() as t_fit:
                inf = CgInfluence(model, F.cross_entropy, regularization=ctx.damping, rtol=1e-6,
                                  maxiter=spec["cg_iter"], solve_simultaneously=True,
                                  warn_on_max_iteration=False).fit(loader)
            with Timer() as t_sc:
                s = all_scores(inf, ctx.test_q)
        return {"fit_s": t_fit.seconds, "scores_s": t_sc.seconds, "scores": s}

    return [Method("pydvl_arnoldi", "pydvl", ctx.n_test, arnoldi), Method("pydvl_cg", "pydvl", ctx.q, cg)], {}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated, from {', '.join(MODELS)} (default {DEFAULT_MODELS})")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "results.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that everything runs")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; each runs every method once, in a fixed order (default 3)")
    parser.add_argument("--pairs", type=int, default=7,
                        help="paired steady-state timings of Arnoldi's scoring pass against the floor")
    parser.add_argument("--n-boot", type=int, default=200,
                        help="bootstrap replicates of the correlation intervals (0: none; default 200)")
    parser.add_argument("--save-scores", metavar="DIR", default=None,
                        help="also save every score matrix (round 1, float32) to DIR/scores_<model>.pt")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine, multi-threaded BLAS under "
                             "contention distorts timings far more than it speeds them up)")
    parser.add_argument("--no-peers", action="store_true", help="influence_utils only, in this environment")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other models of an existing --out file (same --repeats and --smoke) "
                             "and replace or add the models of this run; each run's command, date and git "
                             "state are kept under 'runs'")
    args = parser.parse_args()
    # no progress bars from this package: their terminal writes would be timed with its estimators
    os.environ["IU_PROGRESS"] = "0"
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}; pass 5 or more for a median and a range")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}; pass 3 or more for a median and a range")
    if args.n_boot and args.n_boot < 100:
        parser.error(f"--n-boot must be 0 (no intervals) or >= 100, got {args.n_boot}")
    _ensure_environment(args)

    import torch

    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in names if s not in MODELS]
    if unknown:
        sys.exit(f"unknown models {unknown}; choose from {list(MODELS)}")
    versions = {"torch": torch.__version__}
    for lib in (*PEERS, "numpy"):
        try:
            versions[lib] = __import__(lib).__version__
        except (ImportError, AttributeError):
            versions[lib] = None
    started = time.perf_counter()
    out = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.machine(),
                    "load_average_1_5_15_at_start": _load()},
        "versions": versions,
        "influence_utils_git": _git_state(),
        "smoke": args.smoke,
        "repeats": args.repeats,
        "models": [],
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if args.merge and path.exists() else None
    if previous is not None:
        try:
            merge_results(previous, out)  # refuse an incompatible file before hours of measuring
        except ValueError as err:
            sys.exit(str(err))
    for name in names:
        spec = dict(MODELS[name])
        if args.smoke:
            spec.update(SMOKE)
        out["models"].append(run_model(name, spec, args))
        # written after every model, so an interrupted run keeps what it measured
        out["machine"]["load_average_1_5_15_at_end"] = _load()
        out["wall_s"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(out if previous is None else merge_results(previous, out), indent=1) + "\n")
    print(f"\nwrote {path} ({out['wall_s']:.0f} s)")


#: top-level fields that describe one run (kept per run under "runs" in a merged file)
RUN_FIELDS = ("command", "date", "machine", "versions", "influence_utils_git", "wall_s")


def _runs(results: dict) -> list[dict]:
    """The runs a results file holds: its "runs", or the file itself as one run."""
    if "runs" in results:
        return [dict(r) for r in results["runs"]]
    return [{**{k: results.get(k) for k in RUN_FIELDS}, "models": [m["model"] for m in results["models"]]}]


def merge_results(previous: dict, current: dict) -> dict:
    """``previous`` with the models of ``current`` replacing those of the same name (or added).

    Both must have the same ``repeats`` and ``smoke`` (chapter 9 compares every model's rounds
    alike). ``runs`` lists every run that contributed a model (its command, date, machine,
    versions, git state, wall time and models), a run whose models were all replaced is dropped;
    the top-level ``command`` and ``date`` name the latest run, ``wall_s`` is the sum.

    Raises:
        ValueError: the two differ in ``repeats`` or ``smoke``.
    """
    for key in ("repeats", "smoke"):
        if previous.get(key) != current.get(key):
            raise ValueError(f"cannot merge into a results file with {key} = {previous.get(key)!r} a run with "
                             f"{key} = {current.get(key)!r}; pass the same --{key}, or write to another --out")
    new = {m["model"]: m for m in current["models"]}
    models = [new.pop(m["model"], m) for m in previous["models"]] + list(new.values())
    replaced = {m["model"] for m in current["models"]}
    runs = []
    for run in _runs(previous):
        run["models"] = [m for m in run["models"] if m not in replaced]
        if run["models"]:
            runs.append(run)
    runs += _runs({**current, "models": current["models"]})
    merged = {**current, "models": models, "runs": runs}
    merged["command"] = " && ".join(r["command"] for r in runs)
    merged["wall_s"] = round(sum(r.get("wall_s") or 0 for r in runs), 1)
    return merged


if __name__ == "__main__":
    main()
