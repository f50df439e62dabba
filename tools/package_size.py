"""The size of the package: lines by kind, the longest functions, the parameters of the entry points.

Usage::

    python tools/package_size.py [REV ...]

With no REV it reads the working tree; each REV (a commit, e.g. ``HEAD~3``) is read with ``git show``.
For every ``influence_utils/*.py``: ``total`` is ``wc -l``; ``docstring`` counts the non-blank lines
of the first-statement strings of modules, classes and functions; ``comment`` the lines outside
them that start with ``#``; ``code`` the rest that is not blank. A function's length is its code
lines after its docstring (nested functions included). The training-run entry points' parameters
count positional and keyword-only ones, ``*args`` once, ``**kwargs`` not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("train", "retrain_without", "weighted_runs", "perturbed_runs", "correct")


def _sources(rev: str | None) -> dict[str, str]:
    if rev is None:
        return {p.name: p.read_text() for p in sorted((ROOT / "influence_utils").glob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "influence_utils/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {Path(n).name: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                                         text=True).stdout for n in names if n.endswith(".py")}


def _docstring(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", None)
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def measure(rev: str | None) -> dict:
    counts = dict(total=0, code=0, docstring=0, blank=0, comment=0)
    functions, params = [], {}
    for name, src in _sources(rev).items():
        lines, tree = src.splitlines(), ast.parse(src)
        doc = set()
        for node in ast.walk(tree):
            d = _docstring(node) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) else None
            if d is not None:
                doc.update(range(d.lineno, d.end_lineno + 1))
        blank = {i for i, line in enumerate(lines, 1) if not line.strip()}
        comment = {i for i, line in enumerate(lines, 1) if line.strip().startswith("#") and i not in doc}
        counts["total"] += len(lines)
        counts["blank"] += len(blank)
        counts["comment"] += len(comment)
        counts["docstring"] += len(doc - blank)
        counts["code"] += len(lines) - len(blank) - len(comment) - len(doc - blank)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            d = _docstring(node)
            start = d.end_lineno + 1 if d is not None else node.body[0].lineno
            body = [i for i in range(start, node.end_lineno + 1) if i not in blank and i not in comment]
            functions.append((len(body), f"{name[:-3]}.{node.name}"))
            a = node.args
            params.setdefault(node.name, len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg))
    functions.sort(reverse=True)
    return dict(counts, longest=functions[:5], entry_points={n: params.get(n) for n in ENTRY_POINTS})


def main(revs: list[str]) -> None:
    for rev in revs or [None]:
        m = measure(rev)
        print(f"{rev or 'working tree'}: " + ", ".join(f"{k} {m[k]:,}" for k in
                                                       ("total", "code", "docstring", "blank", "comment")))
        print("  longest: " + ", ".join(f"{name} {n}" for n, name in m["longest"]))
        print("  parameters: " + ", ".join(f"{k} {v}" for k, v in m["entry_points"].items()))


if __name__ == "__main__":
    main(sys.argv[1:])
