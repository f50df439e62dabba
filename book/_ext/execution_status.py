"""The ``{execution-status}`` directive: a table of every chapter's last execution.

Chapters are executed by ``make notebooks`` (``make book``), not by the book build, which
renders the outputs committed with each notebook. After executing a notebook, the Makefile
calls ``tools/execution_record.py``, which stores in the notebook's metadata
(``influence_utils.execution``) the wall-clock time, the profile, the date and the machine
class. This directive reads those records from every chapter notebook (``book/NN_*.ipynb``)
and renders them as a table, with links to the chapters.

A record names its notebook and carries a fingerprint of the notebook's code cells and outputs
at the time it was written. A chapter whose record is missing, names another notebook (a
notebook started as a copy of another), or no longer matches its code and outputs (executed
some other way since) is listed as "not recorded": run ``make notebooks NOTEBOOKS=...``.

The last column gives each chapter's full-profile time: a recorded full run's, or until one is
recorded the estimate of :func:`influence_utils.estimates.estimate_time` on a T4-class GPU.

Usage in a MyST page::

    ```{execution-status}
    ```
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

CHAPTER = re.compile(r"^(\d\d)_.*\.ipynb$")


def fingerprint(nb: dict) -> str:
    """SHA-256 of the notebook's code cells: their sources and stored outputs (not markdown)."""
    code = [
        ["".join(c.get("source", "")), c.get("outputs", [])]
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
    ]
    return hashlib.sha256(json.dumps(code, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def valid_record(nb: dict, name: str) -> dict | None:
    """The notebook's execution record if it was written for this notebook as it is now."""
    record = nb.get("metadata", {}).get("influence_utils", {}).get("execution")
    if not record or record.get("notebook") != name or record.get("fingerprint") != fingerprint(nb):
        return None
    return record


def _title(nb: dict, fallback: str) -> str:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{seconds:.1f} s"


def _machine(m: dict) -> str:
    parts = [f"{m.get('cores', '?')} CPU cores ({m.get('cpu', 'unknown CPU')})"]
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']:.0f} GiB RAM")
    parts.append(f"GPU: {m['gpu']}" if m.get("gpu") else "no GPU")
    parts.append(f"Python {m.get('python', '?')}, PyTorch {m.get('torch', '?')}")
    return ", ".join(parts)


def full_profile_cell(stem: str, rec: dict | None) -> str:
    """The full-profile column: a recorded full run's time, else the estimate on a T4-class GPU."""
    if rec is not None and rec.get("profile") == "full":
        return _duration(float(rec.get("seconds", 0)))
    from influence_utils.estimates import estimate_time

    minutes = estimate_time(f"ch{int(stem[:2])}").gpu_seconds / 60
    return f"estimate: ~{minutes:.0f} min (T4)" if minutes >= 1 else "estimate: < 1 min (T4)"


def chapter_records(book_dir: Path) -> list[tuple[str, str, dict | None]]:
    """(docname relative to the book dir, title, valid execution record or None) per chapter."""
    rows = []
    for path in sorted(book_dir.glob("*.ipynb")):
        if not CHAPTER.match(path.name):
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        rows.append((path.stem, _title(nb, path.stem), valid_record(nb, path.name)))
    return rows


class ExecutionStatus(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        book_dir = Path(self.env.doc2path(self.env.docname)).parent
        rows = chapter_records(book_dir)
        for stem, _, _ in rows:
            self.env.note_dependency(str(book_dir / f"{stem}.ipynb"))
        if not rows:
            para = nodes.paragraph(text="No chapter notebook has been executed yet.")
            return [para]
        lines = [
            "| Chapter | Profile | Execution time | Machine | Executed | Full profile |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        total = {}
        for stem, title, rec in rows:
            link = f"{{doc}}`{title} <{stem}>`"
            if rec is None:
                lines.append(f"| {link} | not recorded | | | | {full_profile_cell(stem, rec)} |")
                continue
            m = rec.get("machine", {})
            total[rec.get("profile", "?")] = total.get(rec.get("profile", "?"), 0.0) + float(rec.get("seconds", 0))
            lines.append(
                f"| {link} | `{rec.get('profile', '?')}` | {_duration(float(rec.get('seconds', 0)))} "
                f"| {_machine(m)} | {rec.get('date', '?')} | {full_profile_cell(stem, rec)} |"
            )
        text = StringList(lines, source="execution-status")
        container = nodes.container(classes=["execution-status"])
        self.state.nested_parse(text, self.content_offset, container)
        out: list[nodes.Node] = [container]
        if total:
            summary = "; ".join(f"{_duration(sec)} in the `{prof}` profile" for prof, sec in sorted(total.items()))
            para = StringList([f"All recorded chapters together: {summary}."], source="execution-status")
            box = nodes.container()
            self.state.nested_parse(para, self.content_offset, box)
            out.extend(box.children)
        return out


def setup(app: Sphinx) -> dict:
    app.add_directive("execution-status", ExecutionStatus)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
