"""The dry-run tool (tools/dry_run.py): failed asserts are recorded and the cell goes on; other
exceptions stop the chapter. Runs a tiny notebook in a real kernel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run():
    spec = importlib.util.spec_from_file_location("dry_run", ROOT / "tools" / "dry_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, sources: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_failed_assert_is_recorded_and_its_cell_goes_on(dry_run, tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", [
        "x = 1\nassert x == 2, 'a phenomenon'\ny = x + 2",  # the assignment after the assert still runs
        "assert y == 3\nprint(y)",
        "def f(v):\n    assert v > 0\n    return v\nf(-1)",  # asserts inside cell-defined functions too
        "import torch\ntorch.testing.assert_close(torch.tensor(1.0), torch.tensor(2.0))\nz = 1",
        "raise ValueError('broken code path')",
        "never = 1",
    ])
    (tmp_path / "out").mkdir(exist_ok=True)
    record = dry_run.run_notebook(path, tmp_path / "out", timeout=60)
    assert record["status"] == "stopped" and record["cell"] == 4 and record["exception"] == "ValueError"
    assert [(a["cell"], a["line"]) for a in record["asserts"][:2]] == [(0, "assert x == 2"), (2, "assert v > 0")]
    assert record["asserts"][2]["cell"] == 3 and "not close" in record["asserts"][2]["message"]
    assert len(record["asserts"]) == 3
    executed = nbformat.read(tmp_path / "out" / "nb.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "3\n"


def test_a_notebook_that_runs_through_reports_no_asserts(dry_run, tmp_path):
    path = _notebook(tmp_path / "ok.ipynb", ["a = 2", "assert a == 2"])
    (tmp_path / "out").mkdir(exist_ok=True)
    record = dry_run.run_notebook(path, tmp_path / "out", timeout=60)
    assert record["status"] == "ran to the end" and record["asserts"] == [] and record["cells"] == 2
