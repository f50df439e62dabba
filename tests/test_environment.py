"""The set-up files agree with each other, and the notebooks are stored executed.

* ``environment.yml`` (conda) must list exactly the pip requirements of ``pyproject.toml``:
  the ``[project]`` dependencies plus the ``[book]`` and ``[test]`` extras, and ``-e .``.
* Every chapter notebook in ``book/`` must be stored with the outputs of one top-to-bottom run
  in the ``python3`` kernel. nbval does not compare cells whose stored execution count is empty,
  so a notebook committed without outputs would otherwise pass the notebook tests unchecked.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _normalise(requirement: str) -> str:
    """Requirement text without spaces, name lower-case with '-' for '_' and '.'."""
    req = re.sub(r"\s+", "", requirement)
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
    if not match:
        return req
    name = re.sub(r"[-_.]+", "-", match.group(0)).lower()
    return name + req[match.end():].replace('"', "'")


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    missing = {"book", "test"} - set(extras)
    assert not missing, f"pyproject.toml lacks the extras {sorted(missing)}"
    return list(project["dependencies"]) + list(extras["book"]) + list(extras["test"])


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _environment_pip_requirements() -> list[str]:
    pip_sections = [d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    return [str(r) for r in pip_sections[0]]


def test_environment_yml_mirrors_pyproject():
    expected = sorted(_normalise(r) for r in _pyproject_requirements())
    listed = [r for r in _environment_pip_requirements() if r.strip() not in ("-e .", "-e.")]
    actual = sorted(_normalise(r) for r in listed)
    only_pyproject = sorted(set(expected) - set(actual))
    only_environment = sorted(set(actual) - set(expected))
    assert not only_pyproject and not only_environment and expected == actual, (
        "environment.yml's pip section has drifted from pyproject.toml "
        "([project] dependencies + [book] + [test] extras).\n"
        f"  only in pyproject.toml:  {only_pyproject}\n"
        f"  only in environment.yml: {only_environment}\n"
        "Copy the requirements over so that both list the same ones."
    )


def test_environment_yml_installs_this_package_and_python_311():
    env = _environment()
    assert env["name"] == "influence-book"
    assert "python=3.11" in [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in env["dependencies"]
    assert "-e ." in _environment_pip_requirements(), "environment.yml must install the package with `-e .`"


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in book/ yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{path.name}: kernelspec is {kernel!r}; use the 'python3' kernel"
    counts = [
        cell.get("execution_count")
        for cell in nb["cells"]
        if cell["cell_type"] == "code" and "".join(cell.get("source", "")).strip()
    ]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name} is not stored with the outputs of one top-to-bottom run "
        f"(execution counts {counts}); run `make book` to re-execute it, then commit it."
    )


def _make_variable(name: str) -> str:
    """The value of ``name := ...`` / ``name = ...`` in the Makefile, continuation lines joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:?=(.*)$", text, flags=re.M)
    assert match, f"no {name} in the Makefile"
    return " ".join(match.group(1).split())


def test_notebooks_run_on_the_same_cpu_code_paths_everywhere():
    """`make book` and `make test` hold threads and kernels fixed, and torch obeys the setting."""
    import subprocess

    cpu_env = dict(item.split("=", 1) for item in _make_variable("CPU_ENV").split())
    assert cpu_env["OMP_NUM_THREADS"] == "2" and cpu_env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert cpu_env["MKL_CBWR"] == "AVX2" and cpu_env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "$(CPU_ENV)" in _make_variable("NB_ENV")  # used by make notebooks and make test-notebooks
    probe = "import torch; print(torch.get_num_threads(), torch.backends.cpu.get_cpu_capability())"
    env = {"PATH": "/usr/bin:/bin", **cpu_env}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "AVX2"]
