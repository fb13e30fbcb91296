"""Numbers and names as text, the same way in the report, the cards and the verdict table."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["format_effect", "format_p", "format_value", "safe_name"]


def format_value(value: Any, fmt: str | None = None, signed: bool = False) -> str:
    """``value`` with the metric's format spec (``".4f"``); ``"n/a"`` for None or NaN.

    The spec comes from the metric, so it may not suit the value (``"d"`` on a float mean of integer
    counts); such values fall back to 4 significant digits instead of raising while a report is being
    written.
    """
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):  # e.g. one equal-time T per seed
        return ", ".join(format_value(v, fmt, signed) for v in value) if value else "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    spec = fmt or ".4g"
    sign = "+" if signed else ""
    if spec.endswith("d"):
        # a mean of integer counts is a float; show it whole when it is whole, else with decimals
        if float(value).is_integer():
            return format(int(value), sign + spec)
        spec = ".4g"
    try:
        return format(value, sign + spec)
    except (ValueError, TypeError):
        return format(float(value), sign + ".4g")


def format_p(p: float | None) -> str:
    """A p-value, with very small ones shown as a bound because their digits carry no information."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    return format(p, ".3g")


def format_effect(diff: float | None, low: float | None, high: float | None, fmt: str | None) -> str:
    """``"+0.0012 [-0.0030, 0.0050]"``, or ``"+0.0012 (interval cannot be computed)"`` without bounds."""
    if diff is None:
        return "n/a"
    head = format_value(diff, fmt, signed=True)
    if low is None or high is None:
        return f"{head} (interval cannot be computed)"
    return f"{head} [{format_value(low, fmt)}, {format_value(high, fmt)}]"


def safe_name(name: str) -> str:
    """A file-name-safe form of a variant name (combinations look like ``ema+grad_clip``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)
    # "." and ".." would name a folder, not a file next to the others
    return cleaned if cleaned.strip(".") else f"_{cleaned}"
