"""The stand-in dry run of the full profile: every chapter, top to bottom, on the CPU, offline.

``make dry-run`` calls it::

    python tools/dry_run.py [--out /tmp/iu-dry-run] [--timeout 900] [--memory-gb 12] [book/07_*.ipynb ...]

Each chapter notebook is executed in a fresh kernel with ``IU_PROFILE=full`` and ``IU_STANDIN=1``
(:mod:`influence_utils.standin`: official split sizes with random data, a small random BERT,
ResNet-18 untrained, compute cut), no GPU (``CUDA_VISIBLE_DEVICES=``), the Hugging Face hub
offline, a fresh artifact cache and data folder under ``--out``. The committed notebooks are never
written: the executed copies go to ``--out``. Cells run one by one:

* an ``assert`` statement in a cell is a phenomenon that need not hold on random stand-in data:
  before the first cell, an IPython AST transformer (:data:`RECORD_ASSERTS`) rewrites every
  ``assert`` of the notebook's own code into a call that records a false condition (on stderr,
  read back here) and lets the cell go on, so the lines after it still run and define what later
  cells use. An ``AssertionError`` raised some other way (``torch.testing.assert_close``) is
  recorded too, but ends its cell;
* any other exception (or a cell running past ``--timeout`` seconds) stops the chapter: the
  full profile's code path is broken there.

The kernel's data segment is capped at ``--memory-gb`` (``RLIMIT_DATA``; default 12 GiB, the host RAM of a free Colab runtime), so an allocation
the full profile could not afford fails with an exception instead of exhausting the machine.

The report (printed, and written to ``--out/report.md`` and ``report.json``) says per chapter:
ran to the end, or stopped at cell N (0-based, as in the notebook) with exception X, and the
failed asserts. Exit status 1 when any chapter stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The environment of every chapter's kernel (added to the caller's).
ENV = {
    "IU_PROFILE": "full",
    "IU_STANDIN": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "IU_PROGRESS": "0",
    "TQDM_DISABLE": "1",
    "PYTHONHASHSEED": "0",
    "IU_STATIC": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "JUPYTER_PREFER_ENV_PATH": "1",
}


#: Marks a recorded failed assert on the kernel's stderr.
ASSERT_MARK = "IU-DRY-RUN failed assert: "

#: Run in each kernel before the first cell: every ``assert cond`` of the notebook's cells becomes
#: ``_iu_dry_assert(cond, "cond")``, which prints :data:`ASSERT_MARK` and the condition to stderr
#: when it is false instead of raising. The library's own asserts are untouched.
RECORD_ASSERTS = f"""
import ast as _iu_ast, sys as _iu_sys

def _iu_dry_assert(ok, text):
    if not ok:
        print({ASSERT_MARK!r} + text, file=_iu_sys.stderr, flush=True)

class _IuRecordAsserts(_iu_ast.NodeTransformer):
    def visit_Assert(self, node):
        call = _iu_ast.Call(_iu_ast.Name("_iu_dry_assert", _iu_ast.Load()),
                            [node.test, _iu_ast.Constant(_iu_ast.unparse(node.test))], [])
        return _iu_ast.copy_location(_iu_ast.Expr(call), node)

    def visit_Module(self, node):
        self.generic_visit(node)
        return _iu_ast.fix_missing_locations(node)

get_ipython().ast_transformers.append(_IuRecordAsserts())
"""


def _recorded_asserts(cell) -> list[str]:
    """The conditions :data:`RECORD_ASSERTS` reported false in ``cell``'s stderr."""
    lines = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            lines += [line[len(ASSERT_MARK):] for line in output.get("text", "").splitlines()
                      if line.startswith(ASSERT_MARK)]
    return lines


def _first_line(text: str, width: int = 160) -> str:
    line = next((s for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def run_notebook(path: Path, out: Path, timeout: float, verbose: bool = False) -> dict:
    """Execute one notebook cell by cell into ``out``; return its record (see the module docstring)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    record = {"notebook": path.name, "status": "ran to the end", "cell": None, "exception": None,
              "message": None, "asserts": [], "cells": 0, "seconds": 0.0, "slowest": []}
    start = time.perf_counter()
    timings = []
    try:
        with client.setup_kernel():
            client.execute_cell(nbformat.v4.new_code_cell(RECORD_ASSERTS), -1)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                t0 = time.perf_counter()
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    record.update(status="stopped", cell=index, exception="CellTimeoutError",
                                  message=f"cell ran past --timeout {timeout:g} s")
                    break
                finally:
                    timings.append((time.perf_counter() - t0, index))
                    record["cells"] += 1
                    if verbose:
                        print(f"    cell {index}: {timings[-1][0]:.1f} s", flush=True)
                record["asserts"] += [{"cell": index, "message": "", "line": f"assert {_first_line(text)}"}
                                      for text in _recorded_asserts(cell)]
                error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
                if error is None:
                    continue
                if error["ename"] == "AssertionError":
                    record["asserts"].append({"cell": index, "message": _first_line(error.get("evalue", "")),
                                              "line": _assert_line(error)})
                    continue
                record.update(status="stopped", cell=index, exception=error["ename"],
                              message=_first_line(error.get("evalue", "")))
                break
    except DeadKernelError as exc:
        record.update(status="stopped", cell=timings[-1][1] if timings else None, exception="DeadKernelError",
                      message=_first_line(str(exc)))
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["slowest"] = [{"cell": i, "seconds": round(s, 1)} for s, i in sorted(timings, reverse=True)[:3]]
    nbformat.write(nb, out / path.name)
    return record


def _assert_line(error: dict) -> str:
    """The ``assert`` statement a traceback points at (ANSI colours removed), or ``""``."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.get("traceback", [])))
    lines = re.findall(r"^\s*-+>\s*\d+\s+(.*)$", text, flags=re.M)  # "---> 17 assert ..."
    return _first_line(lines[-1].strip()) if lines else ""


def report(records: list[dict]) -> str:
    rows = ["| chapter | result | failed asserts (cell: statement) | time |", "|---|---|---|---|"]
    for r in records:
        if r["status"] == "stopped":
            result = f"**stopped at cell {r['cell']}**: {r['exception']}: {r['message']}"
        else:
            result = "ran to the end"
        asserts = "; ".join(f"{a['cell']}: `{a['line'] or a['message']}`" for a in r["asserts"]) or "none"
        rows.append(f"| {r['notebook']} | {result} | {asserts} | {r['seconds']:.0f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every book/*.ipynb")
    parser.add_argument("--out", type=Path, default=Path("/tmp/iu-dry-run"),
                        help="executed notebooks, cache, data and the report (default /tmp/iu-dry-run)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a cell may run (default 900)")
    parser.add_argument("--memory-gb", type=float, default=12.0,
                        help="cap on the kernel's data segment in GiB (default 12, free Colab's host RAM); 0: no cap")
    parser.add_argument("--verbose", action="store_true", help="print each cell's time as it finishes")
    args = parser.parse_args(argv)

    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    out = args.out.resolve()
    if out == (ROOT / "book").resolve():
        parser.error("--out must not be book/: the dry run never overwrites the committed notebooks")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(ENV, IU_CACHE_DIR=str(out / "cache"), IU_DATA_DIR=str(out / "data"))
    if args.memory_gb > 0:  # inherited by each kernel
        cap = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    records = []
    for path in notebooks:
        print(f"dry run (IU_PROFILE=full, IU_STANDIN=1): {path.name} ...", flush=True)
        record = run_notebook(Path(path).resolve(), out, args.timeout, args.verbose)
        records.append(record)
        where = (f"stopped at cell {record['cell']}: {record['exception']}: {record['message']}"
                 if record["status"] == "stopped" else "ran to the end")
        print(f"  {where}; {len(record['asserts'])} failed assert(s); {record['seconds']:.0f} s", flush=True)

    text = report(records)
    (out / "report.md").write_text(text + "\n")
    (out / "report.json").write_text(json.dumps(records, indent=1) + "\n")
    print()
    print(text)
    print(f"\nexecuted notebooks and report in {out}")
    stopped = [r["notebook"] for r in records if r["status"] == "stopped"]
    if stopped:
        print(f"dry run failed: {len(stopped)} chapter(s) stopped by an exception other than an assert: "
              f"{', '.join(stopped)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
