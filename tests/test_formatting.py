from __future__ import annotations

import doctest
import re

import numpy as np
import pandas as pd
import pytest

import dermctx.formatting as fmt
from dermctx import DermctxError
from dermctx.formatting import (
    format_ci,
    format_number,
    format_probability,
    format_probability_change,
    format_seconds,
    plural,
)

SCIENTIFIC = re.compile(r"\d[eE][-+]?\d")


def test_docstring_examples_hold():
    result = doctest.testmod(fmt, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize(("p", "text"), [
    (0.12, "12%"), (0.012, "1.2%"), (0.0035, "0.35%"), (0.001, "0.10%"), (0.0345, "3.5%"),
    (0.0999, "10%"), (0.00999, "1.0%"), (0.5, "50%"), (0.994, "99%"), (0.995, "99.5%"),
    (0.999, "99.9%"), (0.0, "< 0.1%"), (1e-5, "< 0.1%"), (9.425e-05, "< 0.1%"),
    (0.99999, "> 99.9%"), (1.0, "> 99.9%"), (np.float32(0.25), "25%"), (1 + 1e-12, "> 99.9%"),
])
def test_format_probability(p, text):
    assert format_probability(p) == text


@pytest.mark.parametrize("missing", [float("nan"), None, pd.NA, np.nan])
def test_missing_probability(missing):
    assert format_probability(missing) == "missing"


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("inf"), "12%"])
def test_format_probability_refuses_what_is_not_a_probability(bad):
    with pytest.raises(DermctxError, match=r"probability|number"):
        format_probability(bad)


def test_no_probability_is_ever_scientific():
    for p in np.concatenate([np.logspace(-12, 0, 400), 1 - np.logspace(-12, 0, 400)[:-1],
                             np.linspace(0, 1, 1001)]):
        text = format_probability(p)
        assert not SCIENTIFIC.search(text), (p, text)
        assert text.endswith("%") and (len(text.replace(".", "").strip("<> %").lstrip("0")) <= 3), (p, text)


@pytest.mark.parametrize(("d", "text"), [
    (0.051, "+5.1 pp"), (-0.0035, "-0.35 pp"), (0.25, "+25 pp"), (0.0, "0 pp"),
    (-2e-6, "< 0.01 pp"), (1e-5, "< 0.01 pp"), (-1.0, "-100 pp"), (float("nan"), "missing"),
])
def test_format_probability_change(d, text):
    assert format_probability_change(d) == text


def test_format_probability_change_unsigned_and_unit():
    assert format_probability_change(-0.051, signed=False, unit="percentage points") == \
        "5.1 percentage points"


@pytest.mark.parametrize(("x", "digits", "text"), [
    (0.000123456, 3, "0.000123"), (1e-20, 3, "0.00000000000000000001"), (-3.14159, 3, "-3.14"),
    (2.5, 3, "2.5"), (2.0, 3, "2"), (12345.6, 3, "12,346"), (999.6, 3, "1,000"), (0, 3, "0"),
    (-0.0, 3, "0"), (1234, 3, "1,234"), (np.int64(1234567), 3, "1,234,567"), (True, 3, "1"),
    (0.0009996, 3, "0.001"), (1 / 3, 2, "0.33"), (float("inf"), 3, "inf"), (None, 3, "n/a"),
])
def test_format_number(x, digits, text):
    assert format_number(x, digits) == text


def test_format_number_refuses_bad_digits_and_values():
    with pytest.raises(DermctxError, match="digits"):
        format_number(1.0, 0)
    with pytest.raises(DermctxError, match="expected a number"):
        format_number("abc")


@pytest.mark.parametrize(("args", "kw", "text"), [
    ((0.91234, 0.8876, 0.9481), {}, "0.912 [0.888, 0.948]"),
    ((0.91234, 0.8876, 0.9481), {"digits": 4}, "0.9123 [0.8876, 0.9481]"),
    ((0.0123, -0.0004, 0.0251), {"signed": True}, "+0.012 [0.000, +0.025]"),
    ((-0.0123, -0.031, 0.0051), {"signed": True}, "-0.012 [-0.031, +0.005]"),
    ((-0.5, -0.7, -0.3), {}, "-0.500 [-0.700, -0.300]"),
    ((float("nan"), 0.1, 0.2), {}, "n/a"), ((None, 0.1, 0.2), {}, "n/a"),
    ((0.5, None, 0.6), {"digits": 2}, "0.50"), ((0.5, 0.4, float("nan")), {}, "0.500"),
    ((1.0, 1.0, 1.0), {"digits": 0}, "1 [1, 1]"),
])
def test_format_ci(args, kw, text):
    assert format_ci(*args, **kw) == text


@pytest.mark.parametrize(("args", "text"), [
    ((1, "lesion"), "1 lesion"), ((2, "lesion"), "2 lesions"), ((0, "lesion"), "0 lesions"),
    ((1234, "patient"), "1,234 patients"), ((np.int64(1), "melanoma"), "1 melanoma"),
    ((1.0, "lesion"), "1 lesion"), ((1.5, "lesion"), "1.5 lesions"), ((3, "patch"), "3 patches"),
    ((2, "box"), "2 boxes"), ((2, "study"), "2 studies"), ((2, "day"), "2 days"),
    ((2, "diagnosis", "diagnoses"), "2 diagnoses"), ((1, "diagnosis", "diagnoses"), "1 diagnosis"),
    ((-1, "degree"), "-1 degrees"), ((None, "image"), "n/a images"),
])
def test_plural(args, text):
    assert plural(*args) == text


@pytest.mark.parametrize(("s", "text"), [
    (0, "0.0 s"), (0.04, "0.0 s"), (4.24, "4.2 s"), (9.96, "10 s"), (42, "42 s"), (59.4, "59 s"),
    (59.7, "1 min"), (60, "1 min"), (185, "3 min 5 s"), (3599.6, "1 h"), (3600, "1 h"),
    (7530, "2 h 6 min"), (90000, "25 h"), (float("nan"), "missing"),
])
def test_format_seconds(s, text):
    assert format_seconds(s) == text


@pytest.mark.parametrize("bad", [-1, float("inf")])
def test_format_seconds_refuses_negative_or_infinite(bad):
    with pytest.raises(DermctxError, match="duration"):
        format_seconds(bad)


def test_explanation_reexports_the_one_format_probability():
    from dermctx.models import explanation

    assert explanation.format_probability is format_probability
    assert "format_probability" in explanation.__all__
