"""Serve MathJax from the book's own ``_static`` folder instead of a CDN.

The ``django-static-mathjax`` wheel (in the ``[book]`` extra) ships MathJax 3 as files inside
the Python package ``mathjax``. When it is installed, this extension points Sphinx's
``mathjax_path`` at ``_static/mathjax/tex-chtml.js`` and copies the parts of MathJax that the
book can use into the build (about 7 MB): the ``tex-chtml`` component, its fonts, the TeX
extensions it loads on demand, and the accessibility and speech modules that its menu offers. The rendered book then
shows its equations with no network, which is how the browser tests open it.

Without the package the CDN default stays in place (a book built that way needs the network to
show equations).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

# What tex-chtml.js loads at run time, relative to MathJax's es5/ folder.
_PARTS = ("tex-chtml.js", "output/chtml", "input/tex/extensions", "a11y", "ui", "adaptors", "sre")
STATIC_SUBDIR = "mathjax"
ENTRY = "tex-chtml.js"


def mathjax_es5() -> Path | None:
    """The ``es5`` folder of the installed MathJax copy, or None if it is not installed."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        es5 = Path(root) / "static" / "mathjax" / "es5"
        if (es5 / ENTRY).is_file():
            return es5
    return None


def _configure(app: Sphinx, config) -> None:
    es5 = mathjax_es5()
    if es5 is None:
        logger.info("local_mathjax: MathJax package not installed; equations load from the CDN")
        app._local_mathjax = None  # type: ignore[attr-defined]
        return
    config.mathjax_path = f"{STATIC_SUBDIR}/{ENTRY}"
    app._local_mathjax = es5  # type: ignore[attr-defined]


def _copy(app: Sphinx, exception: Exception | None) -> None:
    es5 = getattr(app, "_local_mathjax", None)
    if exception is not None or es5 is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / STATIC_SUBDIR
    for part in _PARTS:
        src, dst = es5 / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    license_file = es5.parent / "LICENSE"
    if license_file.is_file():
        shutil.copy2(license_file, target / "LICENSE")


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _configure, priority=900)
    app.connect("build-finished", _copy)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
