"""Include each script of a page once.

In a Jupyter Book 1.x build, sphinx-thebe registers its inline configuration script (which
declares ``const THEBE_JS_URL``) twice, once with ``None`` and once with ``""`` as its file
name, so Sphinx keeps both and every page throws "Identifier 'THEBE_JS_URL' has already been
declared" in the browser console. This extension drops exact
duplicates (same file or same inline body) from each page's script list, keeping the first.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _key(script) -> tuple:
    filename = getattr(script, "filename", script) or ""  # inline scripts: None or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    # After every extension (mathjax, myst-nb, ...) has added its scripts for the page.
    app.connect("html-page-context", _dedupe, priority=1000)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
