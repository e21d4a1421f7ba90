"""How SAEs are grouped into sparsity levels for axis B ("matched sparsity ranks").

``"grid"`` (default): an SAE's level is its position in the sparsity grid (the i-th sparsest
setting of every architecture: target L0 / k ascending, L1 coefficient descending).
``"l0_rank"``: within each (model, architecture), the SAE with the i-th smallest *measured* L0
takes the i-th smallest of that group's grid levels (the paper's SAEs did not hit their targets
exactly, and an L1 grid's order in L0 is only known once trained). The grid level is kept as
``grid_level``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

LEVEL_GROUPINGS = ("grid", "l0_rank")
LevelGrouping = Literal["grid", "l0_rank"]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(float(v))


def group_levels(records: Sequence[Mapping[str, Any]], grouping: str = "grid") -> list[dict]:
    """Copies of ``records`` with ``level`` set by ``grouping`` (see the module docstring) and
    ``grid_level`` the grid position. A (model, architecture) group with a missing or non-finite
    L0 keeps its grid levels (its ranks are unknown)."""
    if grouping not in LEVEL_GROUPINGS:
        raise ValueError(f"level grouping must be one of {LEVEL_GROUPINGS}, got {grouping!r}")
    out = [{**r, "grid_level": r.get("grid_level", r.get("level"))} for r in records]
    if grouping == "grid":
        return out
    groups: dict[tuple, list[dict]] = {}
    for r in out:
        groups.setdefault((r.get("model"), r.get("architecture")), []).append(r)
    for members in groups.values():
        if any(r["grid_level"] is None or not _finite(r.get("l0")) for r in members):
            continue
        levels = sorted(r["grid_level"] for r in members)
        by_l0 = sorted(members, key=lambda r: (float(r["l0"]), r["grid_level"]))  # ties keep grid order
        for lv, r in zip(levels, by_l0):
            r["level"] = lv
    return out
