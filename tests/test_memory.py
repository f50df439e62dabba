"""Memory budget: chunk sizes derived from it, the same scores for any chunk size, and the
full profile's estimated peak memory per chapter against a 16 GB GPU and 12 GB of host RAM."""

from __future__ import annotations

import pytest
import torch

import influence_utils as iu
from influence_utils import correction as cr
from influence_utils import estimates as es
from influence_utils import resources as rs
from influence_utils import scores as sc


# --------------------------------------------------------------------------- the budget
def test_budget_from_the_environment_wins(monkeypatch):
    monkeypatch.setenv(rs.BUDGET_ENV, "0.5")
    assert rs.memory_budget() == 2**29
    assert rs.memory_budget("cpu") == 2**29


@pytest.mark.parametrize("text", ["zero", "0", "-1", "nan", "inf"])
def test_a_bad_budget_says_how_to_fix_it(monkeypatch, text):
    monkeypatch.setenv(rs.BUDGET_ENV, text)
    with pytest.raises(ValueError, match=f"{rs.BUDGET_ENV}=4 or unset it"):
        rs.memory_budget()


def test_host_budget_is_a_fraction_of_the_available_memory(monkeypatch):
    monkeypatch.delenv(rs.BUDGET_ENV, raising=False)
    monkeypatch.setattr(rs, "_available_host_bytes", lambda: 10 * 2**30)
    assert rs.memory_budget("cpu") == int(10 * 2**30 * rs.HOST_FRACTION)
    monkeypatch.setattr(rs, "_available_host_bytes", lambda: None)  # /proc/meminfo unreadable
    assert rs.memory_budget() == int(rs._HOST_FALLBACK * rs.HOST_FRACTION)


def test_host_budget_respects_the_process_memory_limit():
    """Under RLIMIT_DATA (a capped kernel, a batch job) the room is the limit less what is held."""
    import subprocess
    import sys

    probe = (
        "import resource\n"
        "from influence_utils import resources as rs\n"
        "held = rs._read_kb('/proc/self/status', 'VmData')\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (held + 2**30, resource.getrlimit(resource.RLIMIT_DATA)[1]))\n"
        "print(rs._available_host_bytes(), rs.memory_budget('cpu'))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    room, budget = map(int, out.stdout.split())
    assert 0.9 * 2**30 < room <= 2**30  # not the host's MemAvailable (many GB here)
    assert budget == int(room * rs.HOST_FRACTION)


def test_device_budget_is_a_fraction_of_the_free_gpu_memory(monkeypatch):
    monkeypatch.delenv(rs.BUDGET_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * 2**30, 16 * 2**30))
    assert rs.memory_budget("cuda:0") == int(6 * 2**30 * rs.DEVICE_FRACTION)


def test_chunk_size_is_the_budget_over_the_bytes_per_example():
    assert rs.chunk_size_for(100, budget=1050) == 10
    assert rs.chunk_size_for(100, 4, budget=1050) == 4  # the caller's own chunk is the most
    assert rs.chunk_size_for(100, 0, budget=1050) == 10  # 0 / None: no limit but the budget
    assert rs.chunk_size_for(100, budget=1050, reserved=500) == 5
    assert rs.chunk_size_for(10**9, budget=1050) == 1  # never less than one example
    with pytest.raises(ValueError, match="bytes_per_example"):
        rs.chunk_size_for(0, budget=1)
    with pytest.raises(ValueError, match="limit"):
        rs.chunk_size_for(1, -3, budget=1)


# --------------------------------------------------------------------------- chunked == unchunked
def _budget_for(monkeypatch, obj, examples: float) -> None:
    """Set $IU_MEMORY_BUDGET_GB to what ``examples`` training examples of ``obj`` cost."""
    per = sc.GRADIENT_COPIES * obj.p * obj.dtype.itemsize
    monkeypatch.setenv(rs.BUDGET_ENV, repr(examples * per / 2**30))


def _all_scores(obj, theta, train, test, solver):
    out = {
        "influence": iu.influence(obj, theta, solver, train, test, progress_bar=False),
        "self": sc.self_influence(obj, theta, solver, train),
        "tbif": sc.time_bounded_influence(obj, theta, solver, train, test, [1, 10], 0.1),
        "tracin": sc.tracin(obj, [theta, 0.9 * theta], [0.1, 0.2], train, test),
        "dot": sc.gradient_dot(obj, theta, train, test),
        "cosine": sc.gradient_cosine(obj, theta, train, test),
        "projected": sc.projected_gradients(obj, theta, train, solver.eigenvectors),
    }
    methods = cr.score_methods(["abif", "tbif", "tracin", "cosine"], obj, theta, train, test, solver=solver,
                               horizon=5, lr=0.1)
    out.update({f"score_methods/{m}": v for m, v in methods.items()})
    return out


def test_a_small_budget_forces_many_chunks_and_changes_no_score(monkeypatch, mlp):
    obj, theta, train, test = mlp
    n = train[1].shape[0]
    monkeypatch.delenv(rs.BUDGET_ENV, raising=False)
    solver = iu.ArnoldiSolver(rank=10, iterations=30, seed=0).fit(obj, theta, train)
    whole = _all_scores(obj, theta, train, test, solver)

    sizes = []
    inner, inner_projected = obj.per_example_grads, obj.per_example_projections

    def spy(t, data):
        sizes.append(int(data[1].shape[0]))
        return inner(t, data)

    def spy_projected(t, data, basis, **kw):  # the low-rank solver's paths score in its basis
        sizes.append(int(data[1].shape[0]))
        return inner_projected(t, data, basis, **kw)

    _budget_for(monkeypatch, obj, 7.5)
    monkeypatch.setattr(obj, "per_example_grads", spy)
    monkeypatch.setattr(obj, "per_example_projections", spy_projected)
    chunked = _all_scores(obj, theta, train, test, solver)
    train_sizes = [s for s in sizes if s != test[1].shape[0]]
    assert max(train_sizes) == 7 and len(train_sizes) >= 8 * -(-n // 7)  # 9 chunks of ≤ 7 per pass, ≥ 8 passes
    for name, value in whole.items():
        torch.testing.assert_close(chunked[name], value, rtol=1e-13, atol=1e-16, msg=name)


def test_one_example_at_a_time_gives_the_same_scores(monkeypatch, logreg):
    obj, theta, train, test = logreg
    monkeypatch.delenv(rs.BUDGET_ENV, raising=False)
    solver = iu.ExactSolver().fit(obj, theta, train)
    whole = iu.influence(obj, theta, solver, train, test, progress_bar=False)
    monkeypatch.setenv(rs.BUDGET_ENV, "1e-12")  # less than one example: one at a time
    one_by_one = iu.influence(obj, theta, solver, train, test, progress_bar=False)
    torch.testing.assert_close(one_by_one, whole, rtol=1e-13, atol=1e-16)


def test_a_roomy_budget_keeps_the_callers_chunk(monkeypatch, mlp):
    """The quick profile's numbers do not move: with room to spare the chunks are the caller's."""
    obj, theta, train, test = mlp
    monkeypatch.setenv(rs.BUDGET_ENV, "4")
    sizes = []
    inner = obj.per_example_grads
    monkeypatch.setattr(obj, "per_example_grads", lambda t, d: sizes.append(int(d[1].shape[0])) or inner(t, d))
    sc.gradient_dot(obj, theta, train, test, chunk_size=16)
    assert sizes[1:] == [16, 16, 16, 12]


def test_projected_gradients_match_the_whole_matrix(mlp):
    obj, theta, train, _ = mlp
    V = torch.linalg.qr(torch.randn(obj.p, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    expected = obj.per_example_grads(theta, train) @ V
    torch.testing.assert_close(sc.projected_gradients(obj, theta, train, V, chunk_size=7), expected)
    with pytest.raises(ValueError, match="solver.eigenvectors"):
        sc.projected_gradients(obj, theta, train, V[:-1])


# --------------------------------------------------------------------------- estimates from the config
GPU_BYTES = 15 * 2**30  # a T4's 16 GB as PyTorch sees it (15.1 GiB), less a little for the CUDA context
HOST_BYTES = 12 * 10**9  # free Colab: 12.7 GB of RAM


@pytest.mark.parametrize("chapter", [f"ch{i}" for i in range(1, 10)])
def test_full_profile_fits_a_16gb_gpu_and_12gb_of_host_ram(chapter):
    est = es.estimate_peak_memory(iu.get_config("full"), chapter)
    assert est.device_bytes <= GPU_BYTES, str(est)
    assert est.host_bytes <= HOST_BYTES, str(est)
    assert est.dominant in est.terms and est.device_bytes > 0 and est.host_bytes >= es.HOST_BASELINE


def test_the_estimate_is_not_vacuous():
    """Chapter 8's former by-hand cell held every training example's gradient of ResNet-18's θ: 189 GB."""
    cfg = iu.get_config("full")
    est = es.estimate_peak_memory(cfg, "ch8")
    p, _ = iu.checkpoints.parameter_counts(cfg.ch7.resnet, 10)
    old = dict(est.terms, **{"image: per-example gradient matrix n × p": (cfg.ch7.resnet.n_train * p * 4, 0)})
    worse = es._combine("ch8", old)
    assert worse.device_bytes > 150 * 10**9 > GPU_BYTES
    assert worse.dominant == "image: per-example gradient matrix n × p"
    # and the full profile asks for more than the quick one in every chapter
    quick = iu.get_config("quick")
    for ch in range(1, 10):
        assert es.estimate_peak_memory(cfg, ch).device_bytes >= es.estimate_peak_memory(quick, ch).device_bytes


def test_quick_seconds_are_the_recorded_runs():
    import json
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "book").glob("0*_*.ipynb")):
        rec = json.loads(path.read_text())["metadata"].get("influence_utils", {}).get("execution")
        if rec and rec.get("profile") == "quick" and not rec.get("machine", {}).get("gpu"):
            ch = f"ch{int(path.name[:2])}"
            assert 0.5 < es.QUICK_SECONDS[ch] / rec["seconds"] < 2, (ch, rec["seconds"])


def test_time_estimate_grows_with_the_work_and_is_faster_on_a_gpu_where_the_chapter_uses_it():
    full, quick = iu.get_config("full"), iu.get_config("quick")
    for ch in range(1, 10):
        t = es.estimate_time(ch, full)
        if es.runs_on_device(ch, "ResNet"):  # chapters 3 (its ResNet), 7 and 8 put their work on the GPU
            assert es.QUICK_SECONDS[t.chapter] < t.gpu_seconds < t.cpu_seconds / 10
        else:  # the small float64 chapters run on the CPU of a GPU runtime too
            assert es.QUICK_SECONDS[t.chapter] < t.gpu_seconds == t.cpu_seconds
        assert t.flops > es.estimate_time(ch, quick).flops
    with pytest.raises(ValueError, match="'ch1'"):
        es.estimate_time("ch10")


def test_full_profile_on_a_cpu_only_runtime_warns_once_with_the_estimate(monkeypatch):
    import warnings

    from influence_utils import config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(config, "_warned_cpu", False)
    monkeypatch.setenv("IU_PROFILE", "full")
    with pytest.warns(config.FullProfileOnCPUWarning, match=r"on a T4-class GPU\. Choose a GPU runtime"):
        assert iu.get_config().device == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iu.get_config()  # once per process
        monkeypatch.setattr(config, "_warned_cpu", False)
        iu.get_config("full")  # reading the full configuration (e.g. its sizes) from a quick run: no warning
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert iu.get_config().device == "cuda"  # a GPU runtime: no warning
        monkeypatch.setenv("IU_PROFILE", "quick")
        iu.get_config()


def test_the_readmes_full_profile_promise_matches_the_estimates():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    hours = float(re.search(r"takes about ([\d.]+) h on a T4-class GPU runtime", readme).group(1))
    gib = float(re.search(r"at most ([\d.]+) GiB of GPU memory", readme).group(1))
    chapter = int(re.search(r"GiB of GPU memory \(chapter (\d)", readme).group(1))
    full = iu.get_config("full")
    total = sum(es.estimate_time(ch, full).gpu_seconds for ch in range(1, 10)) / 3600
    assert round(total) == hours, f"the README says about {hours:g} h; the estimate is {total:.1f} h"
    device = {ch: es.estimate_peak_memory(full, ch).device_bytes for ch in (7, 8) + (3,)}
    worst = max(device, key=device.get)
    assert worst == chapter and abs(device[worst] / 2**30 - gib) < 0.05, (device, gib)
    assert es.runs_on_device(7) and es.runs_on_device(8) and es.runs_on_device(3, "ResNet HVPs")
    assert not any(es.runs_on_device(ch) for ch in (1, 2, 4, 5, 6, 9))
