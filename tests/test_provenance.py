"""The book keeps the paper's statements apart from its own derivations, and says one thing about
how fast paired runs separate.

* Every "Our derivation" box is a MyST admonition with the class ``our-derivation`` (one visible
  marker, the same everywhere), and no such box cites the paper: a reconstruction is never
  attributed to it.
* The book's own reconstructions (the validity horizon from Grönwall's inequality, the closed form
  of the time-bounded coefficient, TracIn as the zero-curvature case) appear either inside a box or
  in a paragraph that calls them the book's derivation, and such a paragraph does not cite the
  paper for them.
* "Exponential": chapters 5 and 7 measure that the gap between paired runs grows like a power law.
  A sentence of the book or the README that says "exponential" must say whose statement it is (the
  frozen-curvature theory, a fit, the secondary summaries) or negate it; none may state exponential
  separation as a measured fact.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAPER = "schioppa2023theoretical"

FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.M | re.S)
OWN = re.compile(r"our derivation|book's (own )?derivation|our reconstruction|book's (own )?reconstruction", re.I)
RECONSTRUCTIONS = {
    "Grönwall horizon": re.compile(r"Gr[öo]nwall", re.I),
    "closed form of c(T)": re.compile(r"1\s*-\s*\(1\s*-\s*\\eta\s*\\lambda(_k)?\)\^\{?T"),
    "TracIn as the zero-curvature case": re.compile(r"zero-curvature", re.I),
}
# Words that make a sentence about exponential growth a qualified one: a negation, the theory or
# derivation it comes from, a fit being compared, or whose description it is.
QUALIFIERS = re.compile(
    r"\bnot\b|\bno\b|\bnever\b|instead|rather than|predict|derivation|theory|theoretical|frozen|"
    r"would|\bfit|R²|R\^2|\$R|summar|describe|bends|e\^|\(1 \+|\bif\b|as long as|checkpoint's|"
    r"against an exponential|than an exponential|an exponential\b|extrapolat|whether|fixed|coefficient",
    re.I,
)


def _markdown_sources() -> list[tuple[str, str]]:
    """(where, text) for every markdown page of the book, every notebook markdown cell, the README."""
    out = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(BOOK.glob("*.md"))]
    out.append(("README.md", (ROOT / "README.md").read_text(encoding="utf-8")))
    for nb_path in sorted(BOOK.glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "markdown":
                src = cell["source"]
                out.append((f"{nb_path.name} cell {i}", "".join(src) if isinstance(src, list) else src))
    return out


SOURCES = _markdown_sources()


def _boxes(text: str) -> list[tuple[str, str, str]]:
    """(directive name, argument, body) of every fenced directive, nested ones included."""
    found = []
    for m in FENCE.finditer(text):
        found.append((m["name"], m["arg"].strip(), m["body"]))
        found.extend(_boxes(m["body"]))
    return found


def _derivation_boxes(text: str) -> list[str]:
    return [body for name, arg, body in _boxes(text) if name == "admonition" and arg == "Our derivation"]


def _outside_boxes(text: str) -> str:
    return FENCE.sub(lambda m: "\n" if m["name"] == "admonition" and m["arg"].strip() == "Our derivation" else m[0], text)


def _paragraphs(text: str) -> list[str]:
    """Paragraphs of prose; headings (which only name a section) are left out."""
    text = re.sub(r"^#+ [^\n]*$", "", text, flags=re.M)
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def test_the_marker_is_one_admonition_with_one_class():
    n = 0
    for where, text in SOURCES:
        for name, arg, body in _boxes(text):
            options = dict(re.findall(r"^:(\w+):[ \t]*(.*)$", body, re.M))
            classes = options.get("class", "").split()
            if arg == "Our derivation" or "our-derivation" in classes:
                n += 1
                assert name == "admonition" and arg == "Our derivation" and "our-derivation" in classes, (
                    f"{where}: a derivation box must be ```{{admonition}} Our derivation with "
                    f":class: tip our-derivation (got {name} {arg!r}, classes {classes})")
    assert n >= 5, f"only {n} 'Our derivation' boxes in the whole book"


def test_no_derivation_box_cites_the_paper():
    for where, text in SOURCES:
        for body in _derivation_boxes(text):
            assert PAPER not in body, f"{where}: an 'Our derivation' box cites the paper ({PAPER})"


@pytest.mark.parametrize("topic", sorted(RECONSTRUCTIONS))
def test_reconstructions_are_marked_as_ours(topic):
    pattern = RECONSTRUCTIONS[topic]
    for where, text in SOURCES:
        for para in _paragraphs(_outside_boxes(text)):
            if pattern.search(para):
                assert OWN.search(para), (
                    f"{where}: the {topic} is the book's own reconstruction; put it in an 'Our derivation' "
                    f"box or say so in the paragraph:\n{para[:300]}")
                assert PAPER not in para, f"{where}: the {topic} is ours, but the paragraph cites the paper"


def _sentences(text: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # code blocks
    return [s for s in re.split(r"(?<=[.!])\s+(?=[A-Z*(])|\n\s*\n|\n[*-] ", text) if s.strip()]


def test_exponential_is_never_stated_as_measured():
    bad = []
    for where, text in SOURCES:
        for sentence in _sentences(text):
            if re.search(r"exponential", sentence, re.I) and not QUALIFIERS.search(sentence):
                bad.append(f"{where}: {' '.join(sentence.split())[:240]}")
    assert not bad, "sentences that state exponential growth without qualification:\n" + "\n".join(bad)


def test_the_lint_catches_an_unqualified_sentence():
    assert not QUALIFIERS.search("The two runs separate roughly exponentially in T along directions of negative curvature.")
    assert QUALIFIERS.search("The gap grows like a power law, not exponentially.")
