"""Formatting for report.md: numbers that may be missing, free text made safe for a table cell,
and tables."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

MISSING = "–"
"""What a missing or non-finite value shows as (the same dash as jaxsae.analysis.tables)."""

MIN_N_TEST = 8
"""Smallest group whose Kendall τ_b the report and the headline test (p-value, CI); a smaller one
shows as "too few (n = 5)": with a handful of SAEs τ_b's p-value and interval say nothing."""

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#$])")


def finite(v: Any) -> float | None:
    """``v`` as a float, or None when it is missing, not a number, NaN or infinite."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def num(v: Any, digits: int = 3) -> str:
    f = finite(v)
    return MISSING if f is None else f"{f:.{digits}f}"


def cell(text: Any, limit: int = 200) -> str:
    """Free text (a generation, an explanation) as one markdown table cell.

    Line breaks show as ``↵``, runs of whitespace collapse, control characters go, text longer
    than ``limit`` characters is cut with ``…``, and markdown's special characters are
    backslash-escaped (after the cut, so that no escape is split).
    """
    if text is None:
        return MISSING
    s = str(text).replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ↵ ")
    s = "".join(ch if ch.isprintable() else " " for ch in s)
    s = re.sub(r"\s+", " ", s).strip()
    if not s:
        return "(empty)"
    if len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return _SPECIAL.sub(r"\\\1", s)


def duration(seconds: Any) -> str:
    """``8.6 s``, ``3 min 05 s`` or ``2 h 07 min``."""
    s = finite(seconds)
    if s is None:
        return MISSING
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table (cells must already be escaped)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
