"""The notebook comparison's sanitizer (book/nbval_sanitize.cfg), applied exactly as nbval applies it.

`make test` re-runs every notebook and compares each output with the stored one after both pass
through the sanitizer. These tests pin down what it must keep apart (a regression in a small
number, a sign change, a Pearson r that drops in the fourth digit) and what it must treat as equal
(floating-point noise, digits past the fourth significant one, durations, a zero printed as -0.000).
"""

from collections import OrderedDict
from pathlib import Path

import pytest

nbval_plugin = pytest.importorskip("nbval.plugin")

CFG = Path(__file__).resolve().parents[1] / "book" / "nbval_sanitize.cfg"


@pytest.fixture(scope="module")
def sanitize():
    # The same parsing and the same container as nbval's IPyNbFile.setup_sanitize_files: an
    # OrderedDict, so a regex that appeared twice would silently keep only its last replacement.
    text = CFG.read_text()
    pairs = nbval_plugin.get_sanitize_patterns(text)
    patterns = OrderedDict(pairs)
    assert len(patterns) == len(pairs), "a regex appears twice in nbval_sanitize.cfg"

    def run(s: str) -> str:
        cell = nbval_plugin.IPyNbCell.__new__(nbval_plugin.IPyNbCell)
        cell.parent = type("Parent", (), {"sanitize_patterns": patterns})()
        return nbval_plugin.IPyNbCell.sanitize(cell, s)

    return run


# Pairs that are different results and must stay different after sanitizing.
APART = [
    ("growth rate 0.00082", "growth rate 0.00009"),          # a rate falling 9x
    ("smallest eigenvalue -0.00096", "smallest eigenvalue 0.0001"),  # a sign change
    ("smallest eigenvalue -0.00096", "smallest eigenvalue 0.00096"),  # the sign alone
    ("Pearson r = 0.9998", "Pearson r = 0.9990"),            # fourth digit of a correlation
    ("r 0.91 [0.86, 0.94]", "r 0.91 [0.85, 0.94]"),          # an interval's end
    ("condition number 123456789.0", "condition number 124456789.0"),  # fourth digit, large
    ("kappa 1.234e+08", "kappa 1.244e+08"),
    ("kappa 1.234e+08", "kappa 1.234e+09"),                  # magnitude of a large number
    ("error 1.5e-07", "error 1.5e-03"),                      # an error growing above the floor
    ("error 3.2e-13", "error 3.2e-04"),                      # from noise to a real error
    ("loss 12.34", "loss 12.43"),
    ("loss 1234.5", "loss 1243.5"),
    ("-0.0012", "0.0012"),
    ("exponent -2.5e-05", "exponent 2.5e-05"),
    ("38410 parameters", "38411 parameters"),                # integers are exact
    ("version 2.14.1", "version 2.14.2"),
]

# Pairs that must compare equal: noise between runs or machines, or digits past the fourth.
EQUAL = [
    ("max error 3.1e-16", "max error 4.4e-16"),              # machine epsilon
    ("max error 2.2e-16", "max error -1.1e-15"),
    ("residual 4.633002882727963e-10", "residual 9.1e-12"),
    ("0.000", "-0.000"),                                     # a zero printed with a sign
    ("r = 0.99981234", "r = 0.99987"),                       # past the fourth significant digit
    ("0.00082341", "0.00082349"),
    ("12.3456", "12.3499"),
    ("123456789.123", "123456789.987"),
    ("123456789.123", "123499999.5"),
    ("6.20248388255937e+161", "6.2024e+161"),
    ("1.518e-04", "1.5189e-4"),
    ("took 1.23 s", "took 45.6 s"),                          # durations
    ("2026-12-01 18:03:02", "2027-01-02 09:10:11"),          # timestamps
]


@pytest.mark.parametrize("a, b", APART)
def test_different_results_stay_apart(sanitize, a, b):
    assert sanitize(a) != sanitize(b), (a, b, sanitize(a))


@pytest.mark.parametrize("a, b", EQUAL)
def test_noise_and_extra_digits_compare_equal(sanitize, a, b):
    assert sanitize(a) == sanitize(b), (a, b, sanitize(a), sanitize(b))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("0.123456", "0.1234"),
        ("-0.00012345", "-0.0001234"),
        ("1.23456", "1.234"),
        ("12.3456", "12.34"),
        ("123.456", "123.4"),
        ("1234.56", "1234."),
        ("12345.6", "1234<+1 digits>."),
        ("1.23456e-05", "1.234e-5"),
        ("5.18e+02", "5.18e2"),
        ("7e-3", "7.e-3"),
        ("-1e-16", "~0"),
        ("0.000", "0.000"),
        ("-0.000", "0.000"),
        ("n = 1500", "n = 1500"),
        ("0.91 [0.86, 0.94]", "0.91 [0.86, 0.94]"),
    ],
)
def test_normal_forms(sanitize, raw, expected):
    assert sanitize(raw) == expected
