"""benchmarks/run.py: a smoke run of influence_utils' own estimators (no peers, no second
environment) with repeats, checking the timing schema, the interleaving of the rounds and the
agreement with the exact references that the small model affords."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--no-peers", "--models", "small",
         "--repeats", str(REPEATS), "--n-boot", "100", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=str(ROOT),
        env={"IU_PROGRESS": "0", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_every_method_timed_every_round(smoke):
    res, _ = smoke
    assert res["repeats"] == REPEATS and len(res["models"]) == 1
    m = res["models"][0]
    assert m["order"][0] == "floor" and set(m["order"][1:]) == set(m["methods"])
    assert len(m["floor_s_all"]) == REPEATS and m["floor_s_min"] <= m["floor_s"] <= m["floor_s_max"]
    for name, e in m["methods"].items():
        assert "error" not in e, (name, e)
        assert e["repeats"] == REPEATS and len(e["total_s_all"]) == REPEATS, name
        assert e["total_s_min"] <= e["total_s"] <= e["total_s_max"], name
        assert e["total_s"] == pytest.approx(sorted(e["total_s_all"])[REPEATS // 2], abs=1e-3), name
        for a, b, t in zip(e["fit_s_all"], e["scores_s_all"], e["total_s_all"]):
            assert a + b == pytest.approx(t, abs=2e-3), name
        assert len(e["ratio_to_floor_all"]) == REPEATS, name
        assert e["scores_repeat_max_rel_diff"] < 1e-6, name  # seeded: every round gives the same scores
    assert len(m["rounds"]) == REPEATS
    for r in m["rounds"]:
        assert len(r["load_average_1_5_15_before"]) == 3 and len(r["load_average_1_5_15_after"]) == 3
    assert len(res["machine"]["load_average_1_5_15_at_end"]) == 3


def test_rounds_are_interleaved(smoke):
    """Round r runs every method once, in the recorded order, before round r + 1 starts."""
    res, stdout = smoke
    order = res["models"][0]["order"][1:]
    rounds = []
    for line in stdout.splitlines():
        if re.match(r"\s*round \d+/\d+", line):
            rounds.append([])
        elif rounds and (hit := re.match(r"\s{4}(\w+)\s+fit", line)):
            rounds[-1].append(hit.group(1))
    assert rounds == [order] * REPEATS


def test_agreement_with_exact_references(smoke):
    m = smoke[0]["models"][0]
    assert m["reference"] == "ours_exact"
    meth = m["methods"]
    # exact influence is the positive-part influence up to the few negative eigenvalues
    assert meth["ours_exact"]["vs_positive_damped"]["pearson"] > 0.99
    # Arnoldi at rank k approximates the ideal top-k influence (at smoke sizes: 30 HVPs for rank 10)
    assert meth["ours_arnoldi"]["vs_ideal_topk"]["pearson"] > 0.95
    assert meth["ours_arnoldi"]["vs_ideal_topk"]["pearson"] > meth["ours_arnoldi"]["vs_reference"]["pearson"]
    for key in ("ours_cg", "ours_lissa"):
        assert meth[key]["vs_reference"]["pearson"] > 0.99, key
    low, high = meth["ours_arnoldi"]["vs_reference"]["pearson_ci"]
    assert low <= meth["ours_arnoldi"]["vs_reference"]["pearson"] <= high
    # compatibility with chapter 9's reader
    for key in ("total_s", "ratio_to_floor", "library", "queries"):
        assert all(key in e for e in meth.values()), key
    assert "arnoldi_scores_over_floor" in m and "ours_arnoldi|ours_exact" in m["agreement"]


def test_paired_scoring_over_floor_and_hvp_costs(smoke):
    """The scoring/floor ratio comes from paired steady-state timings; the HVP lower bound is rank
    products at the cheaper per-vector cost."""
    m = smoke[0]["models"][0]
    sof = m["scores_over_floor"]
    assert sof["pairs"] == 7 and sof["calls_per_timing"] >= 1
    assert len(sof["ratio_all"]) == len(sof["floor_s_all"]) == len(sof["scores_s_all"]) == 7
    for r, f, s in zip(sof["ratio_all"], sof["floor_s_all"], sof["scores_s_all"]):
        assert f > 0 and s > 0 and r == pytest.approx(s / f, rel=0.02, abs=0.01)
    assert sof["ratio_min"] <= sof["ratio"] <= sof["ratio_max"]
    assert m["arnoldi_scores_over_floor"] == sof["ratio"]
    hvp = m["hvp"]
    best = min(hvp["per_vector_block1_s"], hvp["per_vector_block4_s"])
    assert hvp["rank"] == 10 and hvp["arnoldi_fit_lower_bound_s"] == pytest.approx(10 * best, rel=1e-3, abs=1e-3)
    # the bound is a bound: the measured fit took at least rank products (up to timing noise)
    assert m["methods"]["ours_arnoldi"]["fit_s_min"] >= 0.5 * hvp["arnoldi_fit_lower_bound_s"]


def test_peers_if_installed(tmp_path):
    """With the peers importable here (the .venv-bench environment), every peer method runs."""
    for peer in ("captum", "pydvl", "kronfluence"):
        pytest.importorskip(peer)
    out = tmp_path / "peers.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--models", "small",
                    "--repeats", "3", "--n-boot", "0", "--out", str(out)], check=True, timeout=1800, cwd=str(ROOT))
    meth = json.loads(out.read_text())["models"][0]["methods"]
    for name in ("kronfluence_ekfac", "captum_arnoldi", "captum_naive", "captum_tracincp", "pydvl_arnoldi", "pydvl_cg"):
        assert "error" not in meth[name] and len(meth[name]["total_s_all"]) == 3, name
    assert meth["kronfluence_ekfac"]["covered_fraction"] == 1.0  # an MLP: every layer is Linear
    assert meth["kronfluence_ekfac"]["vs_gauss_newton"]["pearson"] > 0.95
    assert meth["captum_naive"]["vs_reference"]["pearson"] > 0.99
    assert meth["pydvl_arnoldi"]["vs_ideal_topk"]["pearson"] > 0.99


def _run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_merging_a_run_replaces_its_models_and_keeps_every_runs_provenance():
    """--merge: a second run's models replace those of the same name, the others stay, and each
    contributing run keeps its command, date and git state; files of other rounds are refused."""
    merge = _run_module().merge_results

    def run(command, models, repeats=3, wall=10.0):
        return {"command": command, "date": command[-1], "machine": {"cpus": 2}, "versions": {},
                "influence_utils_git": "g" + command[-1], "smoke": False, "repeats": repeats, "wall_s": wall,
                "models": [{"model": m, "by": command} for m in models]}

    first = run("run A", ["small", "mlp"], wall=100.0)
    second = run("run B", ["mlp", "resnet8"], wall=50.0)
    merged = merge(first, second)
    assert [(m["model"], m["by"]) for m in merged["models"]] == [("small", "run A"), ("mlp", "run B"),
                                                                 ("resnet8", "run B")]
    assert [(r["command"], r["models"], r["influence_utils_git"]) for r in merged["runs"]] == [
        ("run A", ["small"], "gA"), ("run B", ["mlp", "resnet8"], "gB")]
    assert merged["command"] == "run A && run B" and merged["wall_s"] == 150.0 and merged["date"] == "B"
    third = merge(merged, run("run C", ["small"]))  # run A no longer contributes a model: dropped
    assert [r["command"] for r in third["runs"]] == ["run B", "run C"]
    assert [m["by"] for m in third["models"]] == ["run C", "run B", "run B"]
    with pytest.raises(ValueError, match="repeats = 3 a run with repeats = 5"):
        merge(first, run("run D", ["mlp"], repeats=5))
