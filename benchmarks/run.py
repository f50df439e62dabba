"""Cost and accuracy of influence estimators: influence_utils against Captum and pyDVL.

    python benchmarks/run.py                 # every model, writes benchmarks/results/results.json
    python benchmarks/run.py --models small  # one model
    python benchmarks/run.py --smoke         # tiny sizes, a minute: checks that everything runs

On the same model, data and damping, in one process, it measures wall-clock time for

* the floor: one vectorised pass of per-example gradients over the training and test sets;
* influence_utils: Arnoldi (ABIF) fit + influence matrix, exact (small model only), CG, LiSSA,
  TracIn over the training checkpoints;
* Captum: ArnoldiInfluenceFunction, NaiveInfluenceFunction (small model only: it builds the
  explicit p x p Hessian), TracInCP;
* pyDVL: ArnoldiInfluence and CgInfluence;

and reports each time as a ratio to the floor, and the agreement (Pearson, Spearman) of every
score matrix with the reference (exact influence where it can be computed, else CG solved to a
small residual) and with each other. The peers are external dependencies, installed as the
``bench`` extra. They pin an older numpy than the book's environment, so this script creates and
re-executes itself in its own virtual environment ``.venv-bench`` (with the same torch pin)
unless it already runs in one where both import.

Scores are compared in influence_utils' sign convention (positive: the training example helps
the test example), which Captum and pyDVL share up to a positive factor (n, or the number of
Hessian examples). Each library's Hessian is of the same training loss on the same examples plus the same
damping d·I (Captum's Hessian is of the summed loss, so its regulariser is m·d for m examples).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".venv-bench"
TORCH_PIN = "torch==2.14.1"


# --------------------------------------------------------------------------- environment


def _peers_importable() -> bool:
    try:
        import captum  # noqa: F401
        import pydvl  # noqa: F401
    except ImportError:
        return False
    return True


def _ensure_environment(args: argparse.Namespace) -> None:
    """Re-execute in .venv-bench (created on first use) unless the peers import here."""
    if args.no_peers or _peers_importable():
        return
    if Path(sys.prefix).resolve() == BENCH_VENV.resolve():
        sys.exit("captum/pydvl do not import in .venv-bench; remove .venv-bench and run again")
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {BENCH_VENV} for the peer libraries (once; a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
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
}

SMOKE = dict(n_train=200, n_test=20, hessian=100, epochs=2, iterations=30, rank=10, queries=4,
             cg_iter=10, lissa_depth=10, tracin_checkpoints=2)


# --------------------------------------------------------------------------- helpers


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


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


# --------------------------------------------------------------------------- one model


def run_model(name: str, spec: dict, args) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset, TensorDataset

    import influence_utils as iu

    seed = args.seed
    iu.seed_everything(seed, deterministic=False)
    workdir = Path(tempfile.mkdtemp(prefix=f"iu-bench-{name}-"))
    ds, model = _build(spec, seed)
    train, test = ds.train, ds.test
    with Timer() as t_train:
        checkpoints = _train(model, train, spec, seed, workdir)
    tracin_ckpts = checkpoints[-spec["tracin_checkpoints"]:]  # TracIn over the last epochs
    model.eval()
    obj = iu.Objective(model, iu.per_example_cross_entropy)
    theta = obj.theta()
    n, n_test, p = len(train[1]), len(test[1]), obj.p
    m = spec["hessian"]
    hess = (train[0][:m], train[1][:m])  # the examples whose Hessian every method uses
    q = min(spec["queries"], n_test)
    test_q = (test[0][:q], test[1][:q])
    acc = float((obj.forward(theta, test[0]).argmax(1) == test[1]).float().mean())
    print(f"\n[{name}] p = {p:,}, train {n}, test {n_test}, Hessian on {m} examples, "
          f"test accuracy {acc:.3f} (trained in {t_train.seconds:.0f} s)", flush=True)

    results: dict = {"model": name, "p": p, "n_train": n, "n_test": n_test, "hessian_examples": m,
                     "queries_iterative": q, "test_accuracy": round(acc, 4), "methods": {}}
    scores: dict = {}

    def record(method, library, fit_s, score_s, s=None, n_queries=n_test, note=""):
        total = fit_s + score_s
        entry = {"library": library, "fit_s": round(fit_s, 3), "scores_s": round(score_s, 3),
                 "total_s": round(total, 3), "queries": n_queries, "note": note}
        if n_queries < n_test:  # extrapolate the per-query part to the whole test set
            entry["total_all_queries_s"] = round(fit_s + score_s * n_test / n_queries, 3)
        results["methods"][method] = entry
        if s is not None:
            scores[method] = s.detach().to(torch.float64)
        print(f"  {method:<16} fit {fit_s:7.2f} s  scores {score_s:7.2f} s  ({n_queries} queries) {note}", flush=True)

    # ---- the floor: one pass of per-example gradients over train and test
    def floor_pass():
        total = 0.0
        for part in (train, test):
            for xb, yb, _ in iu.batching.iter_chunks(part, 1024):
                total += float(obj.per_example_grads(theta, (xb, yb)).sum())
        return total

    floor_pass()  # warm-up
    with Timer() as t:
        floor_pass()
    floor = t.seconds
    results["floor_s"] = round(floor, 3)
    print(f"  floor            {floor:7.2f} s  (per-example gradients, {n + n_test} examples)", flush=True)

    # ---- ours: Arnoldi; its Ritz values also set the damping all methods share
    arn = iu.ArnoldiSolver(rank=spec["rank"], iterations=spec["iterations"], seed=seed)
    with Timer() as t_fit:
        arn.fit(obj, theta, hess)
    lam_max, lam_min = float(arn.ritz_values.max()), float(arn.ritz_values.min())
    damping = max(1e-3 * lam_max, 2 * max(0.0, -lam_min))
    arn.damping = damping
    results.update(damping=damping, lambda_max=lam_max, lambda_min_found=lam_min)
    with Timer() as t_sc:
        s = iu.influence(obj, theta, arn, train=train, test=test)
    record("ours_arnoldi", "influence_utils", t_fit.seconds, t_sc.seconds, s)

    if p <= 5000:
        with Timer() as t_fit:
            ex = iu.ExactSolver(damping=damping).fit(obj, theta, hess)
        with Timer() as t_sc:
            s = iu.influence(obj, theta, ex, train=train, test=test)
        record("ours_exact", "influence_utils", t_fit.seconds, t_sc.seconds, s)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", iu.ConvergenceWarning)
        cg = iu.CGSolver(damping=damping, max_iter=spec["cg_iter"], tol=1e-6)
        with Timer() as t_fit:
            cg.fit(obj, theta, hess)
        with Timer() as t_sc:
            s = iu.influence(obj, theta, cg, train=train, test=test_q, n=n)
    residual = float(cg.residuals[-1].max())
    record("ours_cg", "influence_utils", t_fit.seconds, t_sc.seconds, s, q, f"residual {residual:.1e}")
    results["methods"]["ours_cg"]["residual"] = residual

    scale = 1.5 * (lam_max + damping)
    lissa = iu.LissaSolver(damping=damping, scale=scale, depth=spec["lissa_depth"],
                           batch_size=spec["lissa_batch"], seed=seed)
    try:
        with Timer() as t_fit:
            lissa.fit(obj, theta, hess)
        with Timer() as t_sc:
            s = iu.influence(obj, theta, lissa, train=train, test=test_q, n=n)
        record("ours_lissa", "influence_utils", t_fit.seconds, t_sc.seconds, s, q, f"scale {scale:.3g}")
    except iu.LissaDivergenceError as err:
        results["methods"]["ours_lissa"] = {"library": "influence_utils", "error": str(err)[:200]}

    thetas, lrs = [], []
    for path in tracin_ckpts:
        lr = _load_checkpoint(model, path)
        thetas.append(obj.theta())
        lrs.append(lr)
    _load_checkpoint(model, checkpoints[-1])
    with Timer() as t_sc:
        s = iu.tracin(obj, thetas, lrs, train=train, test=test)
    record("ours_tracin", "influence_utils", 0.0, t_sc.seconds, s, note=f"{len(thetas)} checkpoints")

    # ---- peers
    if not args.no_peers:
        _run_captum(results, record, model, train, test, hess, tracin_ckpts, damping, spec, n, workdir)
        _run_pydvl(results, record, model, train, test, test_q, hess, damping, spec, n)

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
    for name_, entry in results["methods"].items():
        if "total_s" in entry:
            entry["ratio_to_floor"] = round(entry["total_s"] / floor, 2)
            if "total_all_queries_s" in entry:
                entry["ratio_to_floor_all_queries"] = round(entry["total_all_queries_s"] / floor, 2)
            if name_ in scores and name_ != reference:
                entry["vs_reference"] = agreement.get(f"{name_}|{reference}") or agreement.get(f"{reference}|{name_}")
    arn_entry = results["methods"]["ours_arnoldi"]
    results["arnoldi_scores_over_floor"] = round(arn_entry["scores_s"] / floor, 2)
    return results


def _run_captum(results, record, model, train, test, hess, checkpoints, damping, spec, n, workdir):
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    try:
        from captum.influence import NaiveInfluenceFunction, TracInCP
        from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction  # not re-exported
    except ImportError as err:  # pragma: no cover
        results["methods"]["captum"] = {"error": f"captum not importable: {err}"}
        return
    loss = nn.CrossEntropyLoss(reduction="none")
    train_ds = TensorDataset(*train)
    hess_ds = TensorDataset(*hess)
    last = str(checkpoints[-1])
    m = len(hess[1])
    # Captum's Hessian is of the summed loss over hessian_dataset: regulariser m·d matches (H + dI)
    # of the mean loss; its scores are then ∇ℓ_testᵀ (m(H + dI))⁻¹ ∇ℓ_train (same sign as ours).
    with Timer() as t_fit:
        cap = ArnoldiInfluenceFunction(model, train_ds, last, checkpoints_load_func=_load_checkpoint,
                                       loss_fn=loss, batch_size=256, hessian_dataset=hess_ds,
                                       projection_dim=spec["rank"], arnoldi_dim=spec["iterations"],
                                       hessian_reg=m * damping, seed=0)
    with Timer() as t_sc:
        s = cap.influence((test[0], test[1]))
    record("captum_arnoldi", "captum", t_fit.seconds, t_sc.seconds, s)
    if results["p"] <= 5000:
        with Timer() as t_fit:
            naive = NaiveInfluenceFunction(model, train_ds, last, checkpoints_load_func=_load_checkpoint,
                                           loss_fn=loss, batch_size=256, hessian_dataset=hess_ds,
                                           hessian_reg=m * damping, projection_dim=None)
        with Timer() as t_sc:
            s = naive.influence((test[0], test[1]))
        record("captum_naive", "captum", t_fit.seconds, t_sc.seconds, s)
    else:
        results["methods"]["captum_naive"] = {
            "library": "captum",
            "skipped": f"builds the explicit p x p Hessian: p = {results['p']:,} needs "
                       f"{results['p'] ** 2 * 4 / 1e9:.0f} GB"}
    with Timer() as t_fit:
        tr = TracInCP(model, train_ds, [str(c) for c in checkpoints], checkpoints_load_func=_load_checkpoint,
                      loss_fn=loss, batch_size=256)
    with Timer() as t_sc:
        s = tr.influence((test[0], test[1]))
    _load_checkpoint(model, checkpoints[-1])
    record("captum_tracincp", "captum", t_fit.seconds, t_sc.seconds, s / n,
           note=f"{len(checkpoints)} checkpoints")


def _run_pydvl(results, record, model, train, test, test_q, hess, damping, spec, n):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    try:
        from pydvl.influence.base_influence_function_model import InfluenceMode
        from pydvl.influence.torch import ArnoldiInfluence, CgInfluence
    except ImportError as err:  # pragma: no cover
        results["methods"]["pydvl"] = {"error": f"pydvl not importable: {err}"}
        return
    loader = DataLoader(TensorDataset(*hess), batch_size=256)

    def all_scores(inf, queries):
        cols = []
        for i in range(0, n, 1024):
            cols.append(inf.influences(queries[0], queries[1], train[0][i : i + 1024], train[1][i : i + 1024],
                                       mode=InfluenceMode.Up))
        # pyDVL's "Up" influence is ∇ℓ_testᵀ(H + dI)⁻¹∇ℓ_train of the mean loss: our sign, times n
        return torch.cat(cols, dim=1)

    with Timer() as t_fit:
        arn = ArnoldiInfluence(model, F.cross_entropy, regularization=damping, rank=spec["rank"],
                               krylov_dimension=spec["iterations"]).fit(loader)
    with Timer() as t_sc:
        s = all_scores(arn, test)
    record("pydvl_arnoldi", "pydvl", t_fit.seconds, t_sc.seconds, s / n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Timer() as t_fit:
            cg = CgInfluence(model, F.cross_entropy, regularization=damping, rtol=1e-6,
                             maxiter=spec["cg_iter"], solve_simultaneously=True,
                             warn_on_max_iteration=False).fit(loader)
        with Timer() as t_sc:
            s = all_scores(cg, test_q)
    record("pydvl_cg", "pydvl", t_fit.seconds, t_sc.seconds, s / n, len(test_q[1]))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small,mlp,resnet8", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "results.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that everything runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine, multi-threaded BLAS under "
                             "contention distorts timings far more than it speeds them up)")
    parser.add_argument("--no-peers", action="store_true", help="influence_utils only, in this environment")
    args = parser.parse_args()
    _ensure_environment(args)

    import torch

    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in names if s not in MODELS]
    if unknown:
        sys.exit(f"unknown models {unknown}; choose from {list(MODELS)}")
    versions = {"torch": torch.__version__}
    for lib in ("captum", "pydvl", "numpy"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            versions[lib] = None
    load_before = os.getloadavg()
    started = time.perf_counter()
    out = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.machine(),
                    "load_average_1_5_15_at_start": [round(x, 2) for x in load_before]},
        "versions": versions,
        "smoke": args.smoke,
        "models": [],
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = dict(MODELS[name])
        if args.smoke:
            spec.update(SMOKE)
        out["models"].append(run_model(name, spec, args))
        # written after every model, so an interrupted run keeps what it measured
        out["machine"]["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out["wall_s"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {path} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
