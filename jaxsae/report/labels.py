"""Display names of the rank-agreement groups.

Records carry the sparsity *level index* (0..5), and the axis-B groups of
:func:`jaxsae.analysis.rank_agreement` are named after it ("0", "1", ...), while the paper labels
its levels by target L0 ("50", "80", ...). :func:`with_level_names` renames the groups
"L0≈50", ... (read off the records' ``level_label`` of the L0-targeted architectures), which both
reads better and lets :func:`jaxsae.analysis.tables.rank_table_markdown` find the paper's value.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping, Sequence

from .fmt import MIN_N_TEST

_L0 = re.compile(r"^L0=(\d+(?:\.\d+)?)$")


def level_names(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """str(level index) -> "L0≈N", for the levels whose L0-targeted SAEs agree on one N."""
    seen: dict[str, set[str]] = {}
    for r in records:
        m = _L0.match(str(r.get("level_label") or ""))
        if m and r.get("level") is not None:
            seen.setdefault(str(r["level"]), set()).add(m.group(1))
    return {lv: f"L0≈{next(iter(v))}" for lv, v in seen.items() if len(v) == 1}


def level_legend(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """str(level index) -> the distinct ``level_label``s of its SAEs (e.g. "L0=50", "l1=0.012")."""
    out: dict[str, list[str]] = {}
    for r in records:
        if r.get("level") is None:
            continue
        labels = out.setdefault(str(r["level"]), [])
        lab = str(r.get("level_label") or r["level"])
        if lab not in labels:
            labels.append(lab)
    return out


def with_level_names(result: Mapping[str, Any], records: Sequence[Mapping[str, Any]], axis: str = "B") -> dict:
    """A copy of a rank_agreement result whose ``axis`` groups are renamed per :func:`level_names`."""
    out = copy.deepcopy(dict(result))
    axes = out.get("axes")
    entry = axes.get(axis) if isinstance(axes, dict) else None
    names = level_names(records)
    if isinstance(entry, dict) and isinstance(entry.get("groups"), dict) and names:
        renamed = {names.get(k, k): v for k, v in entry["groups"].items()}
        if len(renamed) == len(entry["groups"]):  # never merge two groups under one name
            entry["groups"] = renamed
    return out


def too_few(result: Mapping[str, Any], min_n: int = MIN_N_TEST) -> dict:
    """A copy of a rank_agreement result whose groups (and pooled row) of fewer than ``min_n`` SAEs
    (with a statistic, or "too small" for one) carry ``{"status": "too few (n = 5)", "n": 5}`` instead of τ_b, p-value
    and CI: the report shows them as too few to test, and the plot leaves them off. ψ and Ψ are
    left as computed."""
    out = copy.deepcopy(dict(result))

    def check(st: Any) -> Any:
        if (isinstance(st, dict) and st.get("status", "ok") in ("ok", "too small") and isinstance(st.get("n"), int)
                and st["n"] < min_n):
            return {"status": f"too few (n = {st['n']})", "n": st["n"]}
        return st

    if "overall" in out:
        out["overall"] = check(out["overall"])
    axes = out.get("axes")
    for entry in (axes.values() if isinstance(axes, dict) else ()):
        if isinstance(entry, dict) and isinstance(entry.get("groups"), dict):
            entry["groups"] = {k: check(v) for k, v in entry["groups"].items()}
    return out
