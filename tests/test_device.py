"""The library never mixes devices: tensors it creates live on the device of the tensors it was given.

Two checks:

* on any machine, a source check of the modules below: every call that creates a tensor from
  scratch (``torch.tensor``, ``torch.zeros``, ``torch.arange``, ...) names its ``device``, or is
  marked ``# host:`` with the reason it belongs on the CPU (a seeded CPU generator whose result is
  returned as plain numbers). A tensor created without a device lands on the CPU and crashes the
  first operation that combines it with a GPU tensor, which a CPU-only machine never sees;
* on a machine with a GPU (skipped otherwise), the device-sensitive functions run on CUDA with tiny
  sizes, their tensors come back on CUDA, and their numbers match the same run on the CPU. One
  command checks it: ``pytest tests/test_device.py``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import pytest
import torch

import influence_utils as iu
from influence_utils import correction as cr
from influence_utils import divergence as dv
from influence_utils import perturbation as pt

#: torch functions that create a tensor from scratch: on the CPU unless given a device.
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye",
             "rand", "randn", "randint", "randperm"}

#: Modules exempt from the source check: the data loaders and their stand-ins build host tensors
#: from files by design (a chapter moves them to ``cfg.device``).
HOST_MODULES = {"data", "standin"}

#: modules whose every tensor factory must name its device (or say why it stays on the host).
CHECKED_MODULES = tuple(importlib.import_module(f"influence_utils.{m.name}")
                        for m in pkgutil.iter_modules(iu.__path__) if m.name not in HOST_MODULES)


def _factory_calls_without_device(source: str, name: str) -> list[str]:
    lines = source.splitlines()
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and node.func.attr in FACTORIES):
            continue
        if any(k.arg == "device" for k in node.keywords):
            continue
        if any("# host:" in line for line in lines[node.lineno - 1 : node.end_lineno]):
            continue
        bad.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return bad


@pytest.mark.parametrize("module", CHECKED_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_created_tensor_names_its_device(module):
    bad = _factory_calls_without_device(inspect.getsource(module), module.__name__)
    assert not bad, ("tensors created without a device (they land on the CPU and mix with GPU inputs); pass "
                     "device=<the input's device>, or mark the line '# host: <why>':\n" + "\n".join(bad))


def test_the_source_check_flags_a_hard_coded_cpu_tensor():
    """The check itself: it flags a tensor created without a device, accepts a device or a host marker."""
    source = ("import torch\n"
              "def f(x):\n"
              "    a = torch.tensor([1.0], dtype=x.dtype)\n"
              "    b = torch.zeros(3, device=x.device)\n"
              "    c = torch.randperm(\n"
              "        3)  # host: seeded draw, returned as a list\n"
              "    d = x.new_zeros(3) + torch.zeros_like(x)\n"
              "    return a, b, c, d\n")
    assert _factory_calls_without_device(source, "m") == ["m:3: a = torch.tensor([1.0], dtype=x.dtype)"]


# --------------------------------------------------------------------------- CUDA


def _problem(device: str):
    """A tiny tanh MLP on 2-class data (float64), trained to a checkpoint, on ``device``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    xt = torch.randn(16, 4, generator=g, dtype=torch.float64)
    yt = (xt[:, 0] + 0.5 * xt[:, 1] > 0).long()
    torch.manual_seed(0)
    model = iu.models.MLP(4, hidden=(6,), n_classes=2).double().to(device)
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    train, test = (x.to(device), y.to(device)), (xt.to(device), yt.to(device))
    theta = iu.train(obj, obj.theta(), train, steps=100, lr=0.5).final
    return obj, theta, train, test


def _device_results(device: str) -> dict:
    """Every device-sensitive function once, tiny sizes; tensors as returned (not moved)."""
    obj, theta, train, test = _problem(device)
    out = {"theta": theta}
    z = (train[0][:3], train[1][:3])
    runs = dv.perturbed_runs(obj, theta, train, z, [-1 / 48, 0.5], steps=12, lr=0.2, batch_size=8,
                             record_every=[0, 1, 3, 12], test=test)
    out.update(gaps=runs.gaps, test_losses=runs.test_losses, actual=runs.actual_scores(), z_index=runs.z_index)
    fit = dv.fit_growth_rate(runs.steps, runs.gaps, window=(1, 12))
    out.update(rate=fit.rate, predict=fit.predict([1, 5]), horizon=fit.horizon(1e-2))
    out["tracin_T"] = dv.tracin_vs_steps(obj, runs.base[:-1], runs.steps[:-1], 0.2, z, test, [1, 3, 12])
    lam = iu.ExactSolver().fit(obj, theta, train).eigenvalues
    out["curvature_rate"] = torch.tensor(dv.curvature_growth_rate(lam, 0.2))
    for name, solver in (("exact", iu.ExactSolver(damping=0.01)), ("cg", iu.CGSolver(damping=0.01, max_iter=200)),
                         ("lissa", iu.LissaSolver(damping=0.01, scale=20.0, depth=50)),
                         ("arnoldi", iu.ArnoldiSolver(rank=5, iterations=20, damping=0.01))):
        solver.fit(obj, theta, train)
        out[f"influence_{name}"] = iu.influence(obj, theta, solver, train, test)
    out["retrain_gd"] = iu.retrain_without(obj, theta, train, [0, [1, 2]], steps=5, lr=0.2, batch_size=8)
    lin = iu.Objective(torch.nn.Linear(4, 2).double().to(device), iu.per_example_cross_entropy, weight_decay=1e-2)
    out["retrain_newton"] = iu.retrain_without(lin, lin.theta(), train, [0, [1, 2]], method="newton",
                                               newton_iterations=30)
    out["time_bounded"] = iu.time_bounded_influence(obj, theta, iu.ExactSolver(damping=0.01).fit(obj, theta, train),
                                                    train, test, [1, 5], 0.2)
    out["tracin"] = iu.tracin(obj, runs.base[:3], [0.2, 0.2, 0.2], train, test)
    checks = iu.diagnose(obj, theta, train, steps=8, n_probes=2).checks
    out["diagnose"] = torch.tensor([c.value for c in checks], dtype=torch.float64)
    W = pt.upweight_weights(48, [0, 1], torch.tensor([0.0, -1 / 48, 0.1], dtype=torch.float64, device=device))
    out["weighted_gd"] = pt.weighted_runs(obj, theta, train, W, steps=5, lr=0.2)
    sweep = pt.epsilon_sweep(obj, theta, train, test, 0, [-1 / 48, 1 / 48], out["influence_exact"][:, 0], steps=5, lr=0.2)
    out.update(sweep_actual=sweep.actual, sweep_predicted=sweep.predicted)
    predicted, actual = pt.group_removal(obj, theta, train, test, [[0, 1], [2]], out["influence_exact"], steps=5, lr=0.2)
    out.update(group_predicted=predicted, group_actual=actual)
    out["linearized"] = pt.linearized_removal(obj, theta, train, test, [[0, 1], [2]], steps=5, lr=0.2)
    out["similar"] = torch.tensor(pt.similar_groups(train[0], 3, [0, 5]))
    study = iu.fading_study(obj, theta, train, test, n_z=3, n_queries=5, horizon=8, record_points=4, lr=0.2,
                            batch_size=8, rank=4, iterations=10, hessian_examples=24, control_seeds=2, n_boot=100)
    out.update(study_gaps=study.gaps, study_control=study.control_gaps)
    wrong = cr.mispredicted(obj, theta, test)
    if len(wrong):
        q = (test[0][wrong[:2].to(test[1].device)], test[1][wrong[:2].to(test[1].device)])
        scores = cr.helpful_scores("influence", obj, theta, train, q, solver=iu.ExactSolver().fit(obj, theta, train))
        df = cr.correct(obj, theta, train, q, test, {"if": cr.select_helpful(scores, 2)}, ks=[1, 2], steps=[1, 3],
                        lr=0.3)
        out["correct_loss_change"] = torch.tensor(df["loss_change"].to_numpy())
    return out


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here: the device tests run where one is")


@needs_cuda
def test_device_sensitive_functions_run_on_cuda_and_match_the_cpu():
    on_gpu, on_cpu = _device_results("cuda"), _device_results("cpu")
    assert on_gpu.keys() == on_cpu.keys()
    created_here = {"curvature_rate", "similar", "correct_loss_change", "diagnose"}  # built by this test from returned numbers
    for key, value in on_gpu.items():
        if isinstance(value, torch.Tensor) and key not in created_here:
            assert value.device.type == "cuda", f"{key} came back on {value.device}, not on the inputs' device"
        torch.testing.assert_close(torch.as_tensor(value).cpu(), torch.as_tensor(on_cpu[key]).cpu(),
                                   rtol=1e-6, atol=1e-9, equal_nan=True, msg=lambda m, k=key: f"{k}: {m}")


def test_the_device_harness_runs_on_the_cpu_and_is_deterministic():
    """What the CUDA test runs works here, and twice gives the same numbers bit for bit."""
    first, second = _device_results("cpu"), _device_results("cpu")
    assert "correct_loss_change" in first  # the checkpoint mis-predicts a few test examples: correct() runs
    for key, value in first.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(second[key])), key


# --------------------------------------------------------------------------- GPU memory in measure


def test_measure_reports_the_gpu_peak_when_the_block_runs_on_cuda(monkeypatch):
    """The logic, on any machine: CUDA's counters stand in for a GPU that allocated 3 GB."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", device)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    with iu.resources.measure("step", device="cuda:0") as m:
        pass
    assert m.gpu_peak_mb == 3072 and m.gpu_memory == "3072 MB"
    assert calls[1] == ("reset", torch.device("cuda", 0)) and "GPU peak" in str(m)
    with iu.resources.measure("step", device="cpu") as host:
        pass
    assert host.gpu_peak_mb is None and "GPU" not in str(host)


@needs_cuda
def test_measure_sees_a_gpu_allocation():
    with iu.resources.measure("alloc", device="cuda") as m:
        block = torch.empty(256, 2**20, dtype=torch.uint8, device="cuda")  # 256 MB
        del block
    assert m.gpu_peak_mb >= 256  # the counter was reset at the start; what was allocated before counts too
