"""How the three ΔTC readings (protocol §7: A = Arad's hook, B = f's own code scaled, B' = f's
code alone) differ on a sweep: Kendall tau_b between the latent rankings they give, the share of
latents each scores exactly ΔC = 0, and the steering score of the tier each would select.

The paper is ambiguous between them; this summary lets a user see whether the choice matters.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from .kendall import kendall_tau_b

READINGS = ("A", "B", "B'")


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def compare_readings(per_sae: Sequence[tuple[Mapping[str, Any], Mapping[str, np.ndarray]]],
                     used: str | None = None) -> dict | None:
    """Summary over SAEs of the readings each dtc.npz holds.

    ``per_sae``: (record, {reading: ΔC f32[n] over the same scored latents}) per SAE; a record's
    ``g`` (steering without selection) and ``g_dtc_by_reading`` ({reading: selected tier's test
    score}) give the selection lift. Returns None when no SAE has two readings. Means are over SAEs
    (tau_b: over the SAEs where both rankings vary)."""
    rows = [(r, a) for r, a in per_sae if len(a) >= 2]
    if not rows:
        return None
    readings = [x for x in READINGS if any(x in a for _, a in rows)]
    zero, tau = {x: [] for x in readings}, {}
    for r, arrays in rows:
        for x in readings:
            if x in arrays:
                v = np.asarray(arrays[x], np.float64)
                zero[x].append(float(np.mean(v[np.isfinite(v)] == 0.0)) if np.isfinite(v).any() else None)
        for x, y in itertools.combinations(readings, 2):
            if x in arrays and y in arrays:
                a, b = np.asarray(arrays[x], np.float64), np.asarray(arrays[y], np.float64)
                ok = np.isfinite(a) & np.isfinite(b)
                t = kendall_tau_b(a[ok], b[ok]) if ok.sum() > 1 else float("nan")
                tau.setdefault(f"{x}|{y}", []).append(t)
    g_sel, lift = {}, {}
    for x in readings:
        pairs = [(r.get("g"), (r.get("g_dtc_by_reading") or {}).get(x)) for r, _ in rows]
        pairs = [(g, s) for g, s in pairs if g is not None and s is not None]
        g_sel[x] = _mean(s for _, s in pairs)
        lift[x] = _mean(s - g for g, s in pairs)
    return {
        "used": used,
        "readings": readings,
        "n_saes": len(rows),
        "zero_share": {x: _mean(v) for x, v in zero.items()},
        "tau_b": {k: _mean(v) for k, v in tau.items()},
        "g_selected": g_sel,
        "lift": lift,
    }
