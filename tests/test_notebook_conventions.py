"""Every chapter notebook follows the book's conventions, so that it reads and runs like the others.

For each ``book/NN_*.ipynb``:

* cell 0 is a markdown title (``# ...``) with an overview;
* cell 1, the first code cell, is the Colab setup cell (tagged ``colab-setup``), copied verbatim
  from chapter 1: it installs the package on Colab without touching Colab's torch and does
  nothing elsewhere; it installs from the repository the book's Colab buttons open
  (``repository.url`` in ``_config.yml``);
* cell 2 reads the configuration and prints the chapter's own section, ``cfg.describe("chN")``;
* the chapter ends with at least one exercise whose solution is hidden (a dropdown), links at
  least one glossary term, and every name its prose pastes with ``{glue:...}`` is glued in the
  notebook itself (so the text cannot refer to a number the notebook does not compute);
* no stored output is an error or a progress bar.

And the helpers around the notebooks: progress bars are silent under tests, and the execution
record that ``make notebooks`` writes (``tools/execution_record.py``) touches only the
notebook's metadata, which nbval does not compare. Finally, the README's taste of the API runs
as printed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.ipynb") if re.match(r"\d\d_", p.name))
FIRST = BOOK / "01_influence_from_scratch.ipynb"

GLUE_ROLE = re.compile(r"\{glue(?::[\w-]+)?\}`([^`:<]+?)(?::[^`]*)?`")
# A name pasted from another document: {glue:text}`07_divergence_at_scale.ipynb::ch7-key:s`.
CROSS_GLUE = re.compile(r"\{glue(?::[\w-]+)?\}`([\w.-]+\.ipynb)::([^`:<]+?)(?::[^`]*)?`")
GLUE_DIRECTIVE = re.compile(r"^[ \t]*(?:`{3,}|:{3,})\{glue(?::[\w-]+)?\}[ \t]+(\S+)", re.M)
TERM = re.compile(r"\{term\}`[^`]+`")
EXERCISE = re.compile(r"\{exercise(?:-start)?\}")
HIDDEN_SOLUTION = re.compile(r"\{solution(?:-start)?\}[^\n]*\n(?:[ \t]*:[\w-]+:[^\n]*\n)*?[ \t]*:class:[^\n]*\bdropdown\b")
PROGRESS = re.compile(r"\d+%\|.*\|.*(?:it/s|s/it)|\bit/s\]")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _markdown(nb: dict) -> str:
    return "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")


def _code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


def _colab_cell(nb: dict) -> dict:
    return nb["cells"][1]


def _glued_names(nb: dict) -> set[str]:
    names = set()
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                names.add(name)
    return names


def _chapter_number(path: Path) -> int:
    return int(path.name[:2])


ids = [p.stem for p in CHAPTERS]
chapters = pytest.mark.parametrize("path", CHAPTERS, ids=ids)


def test_chapter_one_exists():
    assert FIRST.is_file(), "chapter 1 is the model every chapter copies its Colab setup cell from"


# ---------------------------------------------------------------------------- the Colab cell


def test_colab_cell_installs_from_the_books_repository():
    source = _source(_colab_cell(_load(FIRST)))
    urls = re.findall(r"git\+(https://[^\s\"'@]+)", source)
    assert urls, f"chapter 1's Colab cell installs nothing from a repository:\n{source}"
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert {u.rstrip("/").removesuffix(".git") for u in urls} == {repo}, (
        f"the Colab cell installs from {urls}, but the book's Colab buttons open notebooks from "
        f"{repo} (_config.yml repository.url): make them the same repository"
    )


def test_colab_cell_is_a_no_op_outside_colab_and_keeps_colabs_torch():
    source = _source(_colab_cell(_load(FIRST)))
    lines = [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    guard = [i for i, line in enumerate(lines) if re.match(r'if\s+"google\.colab"\s+in\s+sys\.modules\s*:', line)]
    assert guard, f"the Colab cell must run its installs only under `if \"google.colab\" in sys.modules:`\n{source}"
    for line in lines[guard[0] + 1:]:
        assert line.startswith((" ", "\t")), f"everything after the Colab guard must be inside it: {line!r}"
    installs = [line for line in lines if "pip install" in line]
    assert installs, "the Colab cell installs nothing"
    for line in installs:
        assert not re.search(r"(?<![\w-])torch(?:vision)?(?:[=<>~!]|\s|$)", line.split("#")[0]), (
            f"the Colab cell must not install torch (Colab's own build is kept): {line.strip()}"
        )
        assert "--upgrade" not in line and " -U " not in line, f"do not upgrade Colab's packages: {line.strip()}"


# What a Colab runtime has preinstalled (2025–2026 images; ipywidgets has stayed on 7.7.1 because
# Colab's frontend does not support 8). The Colab cell must leave every one of them in place.
COLAB_PREINSTALLED = {
    "torch": "2.6.0",
    "torchvision": "0.21.0",
    "transformers": "4.48.3",
    "numpy": "1.26.4",
    "pandas": "2.2.2",
    "ipywidgets": "7.7.1",
}


def test_colab_cell_installs_the_full_extra_and_keeps_colabs_packages():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    from packaging.requirements import Requirement

    source = _source(_colab_cell(_load(FIRST)))
    extras = set()
    for spec in re.findall(r"influence-utils\[([^\]]*)\]", source):
        extras |= {e.strip() for e in spec.split(",")}
    assert extras == {"full"}, (
        f"the Colab cell installs the extras {sorted(extras)}: install [full] only ([book] builds the "
        "HTML book and would replace Colab's ipywidgets)"
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["full"]]
    for req in requirements:
        name = req.name.lower()
        if name in COLAB_PREINSTALLED and req.marker is None:
            assert req.specifier.contains(COLAB_PREINSTALLED[name]), (
                f"{req} would make pip replace Colab's {name} {COLAB_PREINSTALLED[name]}; "
                "keep it a lower bound that Colab's version meets"
            )


@pytest.mark.parametrize("doc", ["book/intro.md", "README.md"])
def test_the_docs_show_the_colab_cell_as_it_is(doc):
    cell = _source(_colab_cell(_load(FIRST))).strip()
    blocks = re.findall(r"```(?:ipython|python)\n(.*?)```", (ROOT / doc).read_text(encoding="utf-8"), re.S)
    assert cell in [b.strip() for b in blocks], (
        f"{doc} documents the Colab path with a copy of chapter 1's Colab setup cell; "
        f"update its code block to:\n{cell}"
    )


@chapters
def test_cell_0_is_the_title_and_overview(path):
    cell = _load(path)["cells"][0]
    assert cell["cell_type"] == "markdown", f"{path.name}: cell 0 must be markdown (title and overview)"
    text = _source(cell).strip()
    assert text.startswith("# "), f"{path.name}: cell 0 must start with the chapter title (`# Title`)"
    assert len(text.splitlines()) > 2, f"{path.name}: cell 0 needs an overview under the title"


@chapters
def test_first_code_cell_is_chapter_ones_colab_setup_cell(path):
    nb, reference = _load(path), _colab_cell(_load(FIRST))
    first_code = _code_cells(nb)[0]
    assert first_code[0] == 1, f"{path.name}: the Colab setup cell must be cell 1 (found the first code cell at {first_code[0]})"
    cell = first_code[1]
    assert "colab-setup" in cell.get("metadata", {}).get("tags", []), (
        f"{path.name}: cell 1 must carry the tag `colab-setup`"
    )
    assert _source(cell) == _source(reference), (
        f"{path.name}: the Colab setup cell differs from chapter 1's; copy it verbatim:\n{_source(reference)}"
    )


@chapters
def test_cell_2_prints_the_chapters_own_configuration(path):
    n = _chapter_number(path)
    source = _source(_load(path)["cells"][2])
    for needed in ("import influence_utils as iu", "iu.get_config()", "iu.seed_everything(cfg.seed)"):
        assert needed in source, f"{path.name}: cell 2 must contain `{needed}`"
    assert re.search(rf"""print\(cfg\.describe\(["']ch{n}["']\)\)""", source), (
        f'{path.name}: cell 2 must print its own section of the configuration: print(cfg.describe("ch{n}"))'
    )


# ---------------------------------------------------------------------------- prose


@chapters
def test_exercises_with_hidden_solutions(path):
    text = _markdown(_load(path))
    assert EXERCISE.search(text), f"{path.name}: end the chapter with exercises ({{exercise}} with a :label:)"
    assert HIDDEN_SOLUTION.search(text), (
        f"{path.name}: give each exercise a hidden solution ({{solution}} or {{solution-start}} with `:class: dropdown`)"
    )


@chapters
def test_links_glossary_terms(path):
    assert TERM.search(_markdown(_load(path))), (
        f"{path.name}: link at least one glossary term, e.g. {{term}}`damping` (terms in book/glossary.md)"
    )


@chapters
def test_every_pasted_name_is_glued_in_the_notebook(path):
    nb = _load(path)
    text = _markdown(nb)
    local = CROSS_GLUE.sub("", text)
    used = set(GLUE_ROLE.findall(local)) | set(GLUE_DIRECTIVE.findall(local))
    missing = sorted(used - _glued_names(nb))
    assert not missing, (
        f"{path.name}: the prose pastes {missing}, which no stored output of this notebook glues; "
        "glue them with iu.plotting.glue / glue_figure and re-execute the notebook"
    )
    _check_cross_glue(path.name, text)


def _check_cross_glue(where: str, text: str) -> None:
    for doc, name in CROSS_GLUE.findall(text):
        assert (BOOK / doc).is_file(), f"{where}: pastes {name!r} from {doc}, which is not a notebook of the book"
        assert name in _glued_names(_load(BOOK / doc)), (
            f"{where}: pastes {name!r} from {doc}, but no stored output of {doc} glues that name"
        )


@pytest.mark.parametrize("page", sorted(p.name for p in BOOK.glob("*.md")))
def test_names_pasted_from_notebooks_into_pages_exist(page):
    _check_cross_glue(page, (BOOK / page).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- outputs


@chapters
def test_no_error_or_progress_bar_in_stored_outputs(path):
    for i, cell in enumerate(_load(path)["cells"]):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}, cell {i}: stored error {out.get('ename')}"
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), (
                f"{path.name}, cell {i}: a widget (progress bar or explorer) in the stored outputs; "
                "execute with `make notebooks`, which sets IU_PROGRESS=0 and IU_STATIC=1"
            )
            text = out.get("text", "") or "".join(out.get("data", {}).get("text/plain", ""))
            text = "".join(text) if isinstance(text, list) else text
            assert not PROGRESS.search(text), f"{path.name}, cell {i}: a progress bar in the stored outputs"


def test_progress_bars_are_silent_under_tests(monkeypatch):
    import tqdm.auto

    import influence_utils as iu

    bars = []

    class Bar:  # stands in for tqdm.auto.tqdm and records that a bar was made
        def __init__(self, iterable, **kwargs):
            bars.append(kwargs)
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    items = list(range(5))
    assert list(iu.utils.progress(items, desc="x")) == items
    assert bars == [], "progress bars must be off under pytest"
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.setenv("IU_PROGRESS", "0")
    assert list(iu.utils.progress(items, desc="x")) == items
    assert bars == [], "IU_PROGRESS=0 must switch progress bars off"
    monkeypatch.setenv("IU_PROGRESS", "1")
    assert list(iu.utils.progress(items, desc="x", total=5)) == items
    assert len(bars) == 1 and bars[0]["desc"] == "x", "in interactive use, progress() shows a tqdm.auto bar"
    assert list(iu.utils.progress(items, show=False)) == items and len(bars) == 1


# ---------------------------------------------------------------------------- execution records


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_execution_record_changes_only_the_notebook_metadata(tmp_path):
    record = _import(ROOT / "tools" / "execution_record.py", "execution_record")
    copy = tmp_path / FIRST.name
    shutil.copy(FIRST, copy)
    before = _load(copy)
    entry = record.record(copy, 83.24, "quick")
    after = _load(copy)
    assert after["cells"] == before["cells"], "the execution record must not touch cells or outputs"
    assert after["metadata"]["influence_utils"]["execution"] == entry
    assert entry["profile"] == "quick" and entry["seconds"] == 83.2 and entry["machine"]["cores"] >= 1
    assert entry["notebook"] == FIRST.name
    rest = {k: v for k, v in after["metadata"].items() if k != "influence_utils"}
    assert rest == {k: v for k, v in before["metadata"].items() if k != "influence_utils"}

    status = _import(BOOK / "_ext" / "execution_status.py", "execution_status")
    shutil.copy(copy, tmp_path / "09_copied.ipynb")  # a chapter started as a copy of chapter 1
    stale = _load(copy)
    stale["cells"][2]["outputs"] = []  # outputs changed since the record
    (tmp_path / "10_stale.ipynb").write_text(json.dumps(stale))
    (tmp_path / "11_unrecorded.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    rows = status.chapter_records(tmp_path)
    assert [r[0] for r in rows] == [FIRST.stem, "09_copied", "10_stale", "11_unrecorded"]
    assert rows[0][1] == "Influence functions from scratch" and rows[0][2] == entry
    assert [r[2] for r in rows[1:]] == [None, None, None], "copied, stale and missing records are not shown"


@chapters
def test_an_execution_record_describes_this_notebook_as_stored(path):
    """A record is optional (the status page then says "not recorded"), but one in the new format
    must have been written for this notebook and these outputs."""
    status = _import(BOOK / "_ext" / "execution_status.py", "execution_status")
    nb = _load(path)
    record = nb.get("metadata", {}).get("influence_utils", {}).get("execution")
    if not record or "notebook" not in record:
        pytest.skip(f"{path.name} has no execution record naming it (the status page says 'not recorded'); "
                    f"`make notebooks NOTEBOOKS=book/{path.name}` writes one")
    assert record["notebook"] == path.name, (
        f"{path.name} carries the execution record of {record['notebook']} (copied metadata): "
        f"re-execute it with `make notebooks NOTEBOOKS=book/{path.name}`"
    )
    assert record.get("fingerprint") == status.fingerprint(nb), (
        f"{path.name}: code or outputs changed since its execution record was written; "
        f"re-execute it with `make notebooks NOTEBOOKS=book/{path.name}`"
    )


# ---------------------------------------------------------------------------- the README


def test_the_readmes_taste_of_the_api_runs(capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A taste of the API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 30, "the README's taste of the API should stay within 30 lines"
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    r = float(re.search(r"Pearson r = ([-\d.]+)", out).group(1))
    assert r > 0.99, f"the README promises Arnoldi agrees with the exact inverse Hessian here; got r = {r}"
