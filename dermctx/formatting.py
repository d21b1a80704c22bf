"""Numbers as people read them: one place for every figure dermctx shows a person.

Reports, printed summaries, the patient page and the command line all format their numbers
here, so that a probability reads the same everywhere and never in scientific notation:

======================================= ============================================================
function                                example
======================================= ============================================================
:func:`format_probability`              ``0.012`` -> ``"1.2%"``, ``9.4e-05`` -> ``"< 0.1%"``
:func:`format_probability_change`       ``0.051`` -> ``"+5.1 pp"`` (percentage points)
:func:`format_number`                   ``0.000123`` -> ``"0.000123"``, ``12345.6`` -> ``"12,346"``
:func:`format_ci`                       ``(0.912, 0.888, 0.948)`` -> ``"0.912 [0.888, 0.948]"``
:func:`plural`                          ``(1234, "patient")`` -> ``"1,234 patients"``
:func:`format_seconds`                  ``185`` -> ``"3 min 5 s"``
======================================= ============================================================

Missing values (None, NaN, pandas' NA) never raise: a probability reads ``"missing"``, other
numbers ``"n/a"``.
"""

from __future__ import annotations

import math
from typing import Any

from dermctx.errors import DermctxError

__all__ = [
    "format_ci",
    "format_number",
    "format_probability",
    "format_probability_change",
    "format_seconds",
    "plural",
]

#: Probabilities this far outside [0, 1] (rounding error) are clipped instead of refused.
_TOLERANCE = 1e-9


def _as_float(x: Any) -> float | None:
    """``x`` as a float; None when it is missing (None, NaN, NA, NaT)."""
    if x is None or type(x).__name__ in ("NAType", "NaTType"):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError) as exc:
        raise DermctxError(f"expected a number, got {x!r} ({type(x).__name__})") from exc
    return None if math.isnan(value) else value


def _round_sig(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` significant figures (0 stays 0)."""
    return 0.0 if x == 0 else round(x, digits - 1 - math.floor(math.log10(abs(x))))


def _decimals(magnitude: float, digits: int) -> int:
    """Decimals that show ``magnitude`` (> 0) with ``digits`` significant figures."""
    return max(0, digits - 1 - math.floor(math.log10(_round_sig(magnitude, digits))))


def format_probability(p: Any) -> str:
    """A probability as a percentage, as a person reads it.

    Two significant figures (``"12%"``, ``"1.2%"``, ``"0.35%"``), three where two would round
    to 100% (``"99.5%"``); below 0.1% and above 99.9% only the bound is shown. Never scientific
    notation.

    Parameters
    ----------
    p : float
        A probability in [0, 1] (not a percentage). None, NaN and pandas' NA are missing.

    Returns
    -------
    str
        ``"< 0.1%"`` for p < 0.001 (0 included), ``"> 99.9%"`` for p > 0.999 (1 included),
        ``"missing"`` for a missing value.

    Raises
    ------
    DermctxError
        ``p`` is not a number, is infinite, or lies outside [0, 1].

    Examples
    --------
    >>> [format_probability(p) for p in (0.12, 0.012, 0.0035, 9.425e-05, 0.995, 0.99999)]
    ['12%', '1.2%', '0.35%', '< 0.1%', '99.5%', '> 99.9%']
    >>> format_probability(float("nan"))
    'missing'
    """
    value = _as_float(p)
    if value is None:
        return "missing"
    if not (-_TOLERANCE <= value <= 1 + _TOLERANCE):
        raise DermctxError(f"format_probability: expected a probability in [0, 1], got {p!r}")
    pct = 100.0 * value
    if pct < 0.1:
        return "< 0.1%"
    if pct > 99.9:
        return "> 99.9%"
    text = f"{pct:.{_decimals(pct, 2)}f}"
    if float(text) >= 100:  # 99.5..99.9: two figures would say 100%
        text = f"{pct:.1f}"
    return f"{text}%"


def format_probability_change(d: Any, *, unit: str = "pp", signed: bool = True) -> str:
    """A change of probability in percentage points, with two significant figures.

    Parameters
    ----------
    d : float
        The change in probability units (``0.05`` is five percentage points); may be negative.
    unit : str
        Appended after a space: ``"pp"`` or, in running text, ``"percentage points"``.
    signed : bool
        Prefix ``+`` or ``-`` (``False``: the magnitude only, for text that says "raised" or
        "lowered").

    Returns
    -------
    str
        ``"+5.1 pp"``, ``"-0.35 pp"``, ``"0 pp"``; ``"< 0.01 pp"`` for a change under 0.01
        percentage points either way (its direction is then immaterial); ``"missing"``.

    Examples
    --------
    >>> format_probability_change(0.051), format_probability_change(-0.0035)
    ('+5.1 pp', '-0.35 pp')
    >>> format_probability_change(-2e-6), format_probability_change(0.25, signed=False, unit="points")
    ('< 0.01 pp', '25 points')
    """
    value = _as_float(d)
    if value is None:
        return "missing"
    if not math.isfinite(value):
        raise DermctxError(f"format_probability_change: expected a finite change, got {d!r}")
    pct = 100.0 * value
    if pct == 0:
        return f"0 {unit}"
    if abs(pct) < 0.01:
        return f"< 0.01 {unit}"
    text = format_number(abs(pct), 2)
    sign = ("+" if pct > 0 else "-") if signed else ""
    return f"{sign}{text} {unit}"


def format_number(x: Any, digits: int = 3, *, missing: str = "n/a") -> str:
    """A number with ``digits`` significant figures, never in scientific notation.

    Parameters
    ----------
    x : float or int
        Any number; integers, and floats of ``10 ** (digits - 1)`` or more, are shown whole
        with thousands separators.
    digits : int
        Significant figures (at least 1); trailing zeros are dropped (``2.50`` -> ``"2.5"``).
    missing : str
        What a missing value (None, NaN, NA) reads.

    Returns
    -------
    str
        ``"0.000123"``, ``"2.5"``, ``"-3.14"``, ``"12,346"``, ``"0"``; ``"inf"`` / ``"-inf"``.

    Examples
    --------
    >>> format_number(0.000123456), format_number(-3.14159), format_number(12345.6), format_number(1234)
    ('0.000123', '-3.14', '12,346', '1,234')
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise DermctxError(f"format_number: digits must be an integer of at least 1, got {digits!r}")
    if isinstance(x, bool):
        x = int(x)
    value = _as_float(x)
    if value is None:
        return missing
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if hasattr(x, "__index__"):  # int, numpy integers: whole
        return f"{int(x):,}"
    decimals = _decimals(abs(value), digits)
    if decimals == 0:
        return f"{round(value):,}"
    text = f"{_round_sig(value, digits):,.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_ci(est: Any, lo: Any, hi: Any, digits: int = 3, signed: bool = False) -> str:
    """An estimate and its confidence interval: ``"0.912 [0.888, 0.948]"``.

    Parameters
    ----------
    est, lo, hi : float
        The estimate and the bounds of its interval (same units).
    digits : int
        Decimals of all three (a fixed number, so columns of figures line up).
    signed : bool
        Prefix ``+`` to positive values (differences); a value that rounds to zero is ``0.000``
        without a sign.

    Returns
    -------
    str
        ``"n/a"`` when the estimate is missing; the estimate alone when a bound is missing.

    Examples
    --------
    >>> format_ci(0.91234, 0.8876, 0.9481)
    '0.912 [0.888, 0.948]'
    >>> format_ci(0.0123, -0.0004, 0.0251, digits=3, signed=True)
    '+0.012 [0.000, +0.025]'
    >>> format_ci(float("nan"), 0.1, 0.2), format_ci(0.5, None, 0.6, digits=2)
    ('n/a', '0.50')
    """

    def one(v: float) -> str:
        text = f"{v:{'+' if signed else ''}.{digits}f}"
        return text.lstrip("+-") if float(text) == 0 else text

    e, a, b = _as_float(est), _as_float(lo), _as_float(hi)
    if e is None or not math.isfinite(e):
        return "n/a"
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return one(e)
    return f"{one(e)} [{one(a)}, {one(b)}]"


def plural(n: Any, word: str, plural_word: str | None = None) -> str:
    """A count and its noun, singular for exactly 1: ``"1 lesion"``, ``"1,234 patients"``.

    Parameters
    ----------
    n : int or float
        The count (thousands separators; a float keeps up to three significant figures).
    word : str
        The singular noun.
    plural_word : str, optional
        The plural, for irregular nouns (``"diagnosis"`` -> ``"diagnoses"``). Default: ``word``
        + ``"s"`` (``"es"`` after s, x, z, ch, sh; ``"ies"`` for a consonant + y).

    Examples
    --------
    >>> plural(1, "lesion"), plural(0, "lesion"), plural(1234, "patient"), plural(2, "patch")
    ('1 lesion', '0 lesions', '1,234 patients', '2 patches')
    >>> plural(3, "diagnosis", "diagnoses")
    '3 diagnoses'
    """
    value = _as_float(n)
    count = "n/a" if value is None else format_number(n if isinstance(n, int) else value, 3)
    if value == 1:
        return f"{count} {word}"
    if plural_word is None:
        if word.endswith(("s", "x", "z", "ch", "sh")):
            plural_word = word + "es"
        elif len(word) > 1 and word.endswith("y") and word[-2].lower() not in "aeiou":
            plural_word = word[:-1] + "ies"
        else:
            plural_word = word + "s"
    return f"{count} {plural_word}"


def format_seconds(s: Any) -> str:
    """A duration as a person reads it: ``"4.2 s"``, ``"42 s"``, ``"3 min 5 s"``, ``"2 h 5 min"``.

    Parameters
    ----------
    s : float
        Seconds (not negative). Under 10 s one decimal is shown; above, whole seconds, then
        minutes and seconds, then hours and minutes.

    Returns
    -------
    str
        ``"missing"`` for a missing value.

    Raises
    ------
    DermctxError
        A negative or infinite duration.

    Examples
    --------
    >>> [format_seconds(x) for x in (0, 4.24, 42, 59.7, 185, 3600, 7530)]
    ['0.0 s', '4.2 s', '42 s', '1 min', '3 min 5 s', '1 h', '2 h 6 min']
    """
    value = _as_float(s)
    if value is None:
        return "missing"
    if not math.isfinite(value) or value < 0:
        raise DermctxError(f"format_seconds: expected a duration of 0 seconds or more, got {s!r}")
    if round(value, 1) < 10:
        return f"{value:.1f} s"
    total = round(value)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        m, sec = divmod(total, 60)
        return f"{m} min {sec} s" if sec else f"{m} min"
    h, m = divmod(round(total / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"
