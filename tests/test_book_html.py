"""The built book, opened page by page in a real browser (headless Chromium, no network).

Run by ``make test-browser``, which ``make test`` calls right after the strict book build
(``make test-book``), so CI builds the book once and checks what it built. The tests read the
build in ``_build/html`` (or ``$IU_BOOK_HTML``) and save a screenshot of the first screen of
every page under ``_build/screenshots`` for a human to look through.

Every page must show all its figures, no error or traceback in an output cell, no broken
internal link, and all its mathematics rendered by MathJax, which the book serves from its own
``_static`` folder. See ``tools/book_browser.py`` for what exactly is checked.

Under a plain ``pytest tests`` (``make test-package``, before any build) this module is
skipped; ``make test-browser`` sets ``IU_BROWSER_TESTS=1``, and then a missing build or a
missing Chromium is a failure, not a skip.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import book_browser as bb  # noqa: E402

HTML = Path(os.environ.get("IU_BOOK_HTML", ROOT / "_build" / "html"))
SCREENSHOTS = ROOT / "_build" / "screenshots"
REQUIRED = os.environ.get("IU_BROWSER_TESTS", "") == "1"
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.ipynb") if re.match(r"\d\d_", p.name))

pytestmark = pytest.mark.skipif(
    not REQUIRED, reason="browser tests of the built book run through `make test-browser` (after `make test-book`)"
)

PAGES = bb.BookChecker(HTML).pages() if HTML.is_dir() else []


def _repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


@pytest.fixture(scope="module")
def browser():
    if not bb.find_chromium():
        pytest.fail("Chromium is not installed: `apt-get install chromium` (Debian), or set $CHROMIUM")
    with bb.Chromium() as b:
        yield b


@pytest.fixture(scope="module")
def reports(browser) -> dict[str, bb.PageReport]:
    """Every page of the built book, opened once; screenshots refreshed."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `make test-book` first")
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    checker = bb.BookChecker(HTML, SCREENSHOTS, browser)
    reports = checker.check_all(PAGES)
    bb.write_gallery(reports, SCREENSHOTS)  # _build/screenshots/index.html, for a human to look through
    return {r.page: r for r in reports}


def test_the_book_is_built():
    assert (HTML / "index.html").is_file(), f"no built book in {HTML}: run `make test-book` first"
    assert PAGES, f"no HTML pages in {HTML}"


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_well(reports, page):
    problems = reports[page].problems
    assert not problems, f"{page}:\n  - " + "\n  - ".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_is_a_page_with_an_open_in_colab_button(reports, chapter):
    page = f"book/{chapter.stem}.html"
    assert page in reports, f"{chapter.name} is not in the built book (is it in _toc.yml's globs?)"
    expected = (
        "https://colab.research.google.com/github/"
        + _repository_url().removeprefix("https://github.com/")
        + f"/blob/main/book/{chapter.name}"
    )
    assert expected in reports[page].colab, (
        f"{page} has no 'Open in Colab' link to {expected}; found {reports[page].colab or 'none'}. "
        "Check launch_buttons and repository in _config.yml."
    )


def test_mathematics_is_rendered_from_the_local_copy(reports):
    with_math = {p: r for p, r in reports.items() if r.math}
    assert "book/notation.html" in with_math, "the notation page shows no mathematics: the math check saw nothing"
    for page, r in with_math.items():
        assert r.mathjax and r.mathjax.startswith("3."), f"{page}: MathJax {r.mathjax!r}"
        assert r.rendered_math >= r.math, f"{page}: {r.rendered_math} rendered of {r.math} math elements"
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file(), (
        "MathJax is not in the build's _static folder: install the [book] extra (django-static-mathjax)"
    )


def _glued_figures(chapter: Path) -> int:
    """How many {glue:figure} directives the chapter's markdown has."""
    nb = json.loads(chapter.read_text(encoding="utf-8"))
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return len(re.findall(r"^[ \t]*(?:`{3,}|:{3,})\{glue:figure\}", text, re.M))


def test_figures_are_checked(reports):
    assert sum(r.figures for r in reports.values()) > 0, "no figure on any page: the figure check saw nothing"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_glued_figure_is_shown(reports, chapter):
    page = f"book/{chapter.stem}.html"
    expected = _glued_figures(chapter)
    assert page in reports and reports[page].figures >= expected, (
        f"{page} shows {reports.get(page) and reports[page].figures} images in its text, "
        f"but its markdown has {expected} {{glue:figure}} blocks"
    )


def test_status_page_lists_every_chapter(reports):
    status = (HTML / "book" / "status.html").read_text(encoding="utf-8")
    for chapter in CHAPTERS:
        assert f'href="{chapter.stem}.html"' in status, f"the status page does not list {chapter.name}"


def test_a_screenshot_of_every_page(reports):
    for page, r in reports.items():
        if r.screenshot is None:  # a redirect stub
            continue
        data = r.screenshot.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, f"{page}: empty screenshot {r.screenshot}"


# ---------------------------------------------------------------------------- the checker itself

_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _page(body: str, mathjax: bool) -> str:
    script = '<script defer src="_static/mathjax/tex-chtml.js"></script>' if mathjax else ""
    return f"<!doctype html><html><head><title>t</title>{script}</head><body>{body}</body></html>"


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    """A tiny site with one good page and pages with each defect the browser test must catch."""
    site = tmp_path_factory.mktemp("site")
    mathjax = HTML / "_static" / "mathjax"
    if not mathjax.is_dir():
        pytest.fail(f"no MathJax copy in {mathjax}: run `make test-book` first")
    (site / "_static").mkdir()
    (site / "_static" / "mathjax").symlink_to(mathjax, target_is_directory=True)
    (site / "ok.png").write_bytes(_PNG)
    math = '<span class="math notranslate nohighlight">\\(x^2 + \\theta\\)</span>'
    pages = {
        "good.html": _page(f'<h1 id="top">Good</h1><img src="ok.png"><p>{math}</p>'
                           '<a href="good.html#top">here</a>', mathjax=True),
        "missing_figure.html": _page('<img src="gone.png">', mathjax=False),
        "bad_link.html": _page('<a href="nowhere.html">x</a><a href="good.html#no-such-anchor">y</a>', mathjax=False),
        "traceback.html": _page(
            '<div class="cell_output"><div class="output traceback"><pre>Traceback (most recent call last):\n'
            'ValueError: boom</pre></div></div>', mathjax=False),
        "math_without_mathjax.html": _page(f"<p>{math}</p>", mathjax=False),
        "raw_tex.html": _page("<p>the loss $\\ell(z, \\theta)$ of one example</p>", mathjax=True),
        "tex_error.html": _page('<span class="math notranslate nohighlight">\\(\\frac{1}\\)</span>', mathjax=True),
    }
    for name, html in pages.items():
        (site / name).write_text(html, encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def broken_reports(browser, broken_site):
    checker = bb.BookChecker(broken_site, None, browser)
    return {r.page: r for r in checker.check_all(checker.pages())}


@pytest.mark.parametrize(
    "page, expected",
    [
        ("missing_figure.html", ["figure did not load: gone.png"]),
        ("bad_link.html", ["broken link: nowhere.html", "broken link: good.html#no-such-anchor"]),
        ("traceback.html", ["error in an output cell"]),
        ("math_without_mathjax.html", ["MathJax did not load"]),
        ("raw_tex.html", ["TeX left visible"]),
        ("tex_error.html", ["TeX error in math"]),
    ],
)
def test_the_checker_catches_each_defect(broken_reports, page, expected):
    problems = broken_reports[page].problems
    for text in expected:
        assert any(text in p for p in problems), f"{page}: expected a problem with {text!r}, got {problems}"


def test_the_checker_passes_a_good_page(broken_reports):
    good = broken_reports["good.html"]
    assert good.problems == [], good.problems
    assert good.images == 1 and good.math == 1 and good.rendered_math >= 1
    assert good.figures == 0, "figures count images inside the page's <article> only"
