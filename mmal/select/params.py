"""Range checks for strategy parameters given by users (``-p KEY=VALUE``).

Each check returns the value as the type the strategy computes with, or raises
``ValueError`` with a message naming the parameter and its allowed range;
:func:`mmal.select.api.select` turns that into a one-line ``SelectionError``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: Float types of the badge/bmmal embedding (``precision``); float64 makes NumPy and CuPy agree.
PRECISIONS = ("float32", "float64")


def int_param(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (booleans and fractional numbers are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def float_param(name: str, value: Any, *, low: float, high: float = float("inf"),
                open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (open ends as flagged)."""
    closes = ")" if open_high or math.isinf(high) else "]"
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{closes}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an integer too large for a float
        x = math.inf
    below = x <= low if open_low else x < low
    above = x >= high if open_high else x > high
    if below or above or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    return x
