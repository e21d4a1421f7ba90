"""Rank agreement between two per-SAE scores (µ and g): pooled tau_b, per-axis tau_b, psi, Psi.

Definitions (arXiv 2510.03659, Table 1):
  overall  tau_b over all SAEs pooled.
  axis A   one group per architecture;  psi_A = mean of the group tau_b's.
  axis B   one group per sparsity level; psi_B = mean of the group tau_b's.
  axis C   one group per model;          psi_C = mean of the group tau_b's.
  Psi      = (psi_A + psi_B + psi_C) / 3.

A psi averages the groups that carry a statistic ("too small"/"constant" groups are listed but
left out, and ``n_groups_used`` says how many went in). Uncertainty of a psi is given two ways:
  * ``se_over_groups`` / ``ci_over_groups``: the paper's reading, reproducible from the published
    group taus alone: SE = sd(group taus, ddof=1)/sqrt(k) and the percentile interval of the mean of
    k group taus resampled with replacement (this reproduces the paper's psi_C CI exactly and its
    SEs to the 4th decimal).
  * ``se_bootstrap`` / ``ci_bootstrap``: a stratified bootstrap over SAEs: every replicate resamples
    the SAEs of each group with replacement, recomputes each group's tau_b and the psi; Psi's
    interval comes from the same replicates.
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jaxsae.errors import UserError

from .kendall import MIN_PAIRS, TauSettings, tau_b_batch, tau_group

DEFAULT_AXES: tuple[tuple[str, str], ...] = (("A", "architecture"), ("B", "level"), ("C", "model"))
"""(axis name, record key) pairs, in the paper's order."""


def _rng(settings: TauSettings, *names: str) -> np.random.Generator:
    """A stream that depends only on the seed and the names (so adding a group changes nothing
    else; ``hash()`` of a str is salted per process, crc32 is not)."""
    words = [settings.seed & 0xFFFFFFFF] + [zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence(words))


def _sort_key(v: Any):
    return (0, float(v), "") if isinstance(v, (int, float, np.integer, np.floating)) else (1, 0.0, str(v))


def _clean(records: Sequence[Mapping[str, Any]], x: str, y: str, keys: Iterable[str]):
    """Keep records whose x and y are finite numbers, in a canonical order; check the axis keys."""
    keys = list(keys)
    kept, dropped = [], 0
    for i, r in enumerate(records):
        for k in keys:
            if k not in r:
                raise UserError(
                    f"record {i} has no {k!r} field (has {sorted(r)}): every SAE record needs "
                    f"{', '.join(repr(k) for k in keys)} for the per-axis analysis"
                )
        try:
            xv, yv = float(r[x]), float(r[y])
        except (KeyError, TypeError, ValueError):
            dropped += 1
            continue
        if math.isfinite(xv) and math.isfinite(yv):
            kept.append((r, xv, yv))
        else:
            dropped += 1
    # a canonical order, so that resampling (and so every interval) ignores the records' order
    kept.sort(key=lambda t: (tuple(_sort_key(t[0][k]) for k in keys), t[1], t[2]))
    return kept, dropped


def _psi_over_groups(taus: np.ndarray, settings: TauSettings, rng: np.random.Generator) -> dict:
    """The paper's psi uncertainty from the group taus alone (see module docstring)."""
    k = taus.size
    if k < 2:
        return {"se_over_groups": None, "ci_over_groups": None}
    se = float(np.std(taus, ddof=1) / math.sqrt(k))
    idx = rng.integers(0, k, size=(settings.n_boot, k))
    means = taus[idx].mean(axis=1)
    a = (1.0 - settings.ci_level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return {"se_over_groups": se, "ci_over_groups": [float(lo), float(hi)]}


def _group_bootstrap(x_n: np.ndarray, y_n: np.ndarray, n_boot: int, rng) -> np.ndarray:
    """f64[n_boot]: tau_b of the group's SAEs resampled with replacement (NaN if degenerate)."""
    idx = rng.integers(0, x_n.size, size=(n_boot, x_n.size))
    return tau_b_batch(x_n[idx], y_n[idx])


def psi_from_taus(taus: Sequence[float]) -> float:
    """psi: the plain mean of the group taus."""
    return float(np.mean(np.asarray(taus, dtype=np.float64)))


def rank_agreement(
    records: Sequence[Mapping[str, Any]],
    *,
    x: str = "mu",
    y: str = "g",
    axes: Sequence[tuple[str, str]] = DEFAULT_AXES,
    settings: TauSettings = TauSettings(),
) -> dict:
    """Kendall tau_b between ``record[x]`` and ``record[y]``: pooled, per axis group, psi's, Psi.

    ``records``: one dict per SAE with at least x, y and the axis keys (default ``architecture``,
    ``level``, ``model``). Records whose x or y is missing or not finite are left out and counted
    in ``n_dropped``. Returns a JSON-serialisable dict::

        {"x", "y", "n", "n_dropped", "settings": {...},
         "overall": <group stats>,
         "axes": {"A": {"key": "architecture", "groups": {name: <group stats>}, "psi",
                        "n_groups_used", "se_over_groups", "ci_over_groups",
                        "se_bootstrap", "ci_bootstrap"}, "B": ..., "C": ...},
         "Psi": {"value", "se_bootstrap", "ci_bootstrap"}}

    <group stats> is :func:`jaxsae.analysis.kendall.tau_group`'s dict. A psi with no usable group
    is ``{"status": "too small", "psi": None, ...}``; Psi is None unless all three psi's exist.
    """
    kept, dropped = _clean(records, x, y, [k for _, k in axes])
    xs = np.array([v for _, v, _ in kept], dtype=np.float64)
    ys = np.array([v for _, _, v in kept], dtype=np.float64)
    out: dict[str, Any] = {
        "x": x,
        "y": y,
        "n": int(xs.size),
        "n_dropped": int(dropped),
        "settings": {"n_perm": settings.n_perm, "n_boot": settings.n_boot,
                     "ci_level": settings.ci_level, "seed": settings.seed},
        "overall": tau_group(xs, ys, settings, _rng(settings, "overall")),
        "axes": {},
    }
    a = (1.0 - settings.ci_level) / 2.0
    boot_psis: list[np.ndarray] = []
    for axis_name, key in axes:
        values = sorted({r[key] for r, _, _ in kept}, key=_sort_key)
        groups: dict[str, Any] = {}
        used_taus, boot_rows = [], []
        for v in values:
            sel = np.array([r[key] == v for r, _, _ in kept])
            gx, gy = xs[sel], ys[sel]
            stats = tau_group(gx, gy, settings, _rng(settings, axis_name, str(v)))
            groups[str(v)] = stats
            if stats["status"] == "ok":
                used_taus.append(stats["tau_b"])
                boot_rows.append(_group_bootstrap(gx, gy, settings.n_boot,
                                                  _rng(settings, "psi", axis_name, str(v))))
        entry: dict[str, Any] = {"key": key, "groups": groups, "n_groups_used": len(used_taus)}
        if used_taus:
            taus = np.asarray(used_taus)
            entry["status"] = "ok"
            entry["psi"] = psi_from_taus(taus)
            entry.update(_psi_over_groups(taus, settings, _rng(settings, "over_groups", axis_name)))
            with warnings.catch_warnings():  # a replicate where every group is degenerate
                warnings.simplefilter("ignore", RuntimeWarning)
                psi_b = np.nanmean(np.stack(boot_rows), axis=0)  # f64[n_boot]
            entry["se_bootstrap"] = float(np.nanstd(psi_b, ddof=1))
            entry["ci_bootstrap"] = [float(q) for q in np.nanquantile(psi_b, [a, 1.0 - a])]
            boot_psis.append(psi_b)
        else:
            entry.update({"status": "too small", "psi": None, "se_over_groups": None,
                          "ci_over_groups": None, "se_bootstrap": None, "ci_bootstrap": None})
        out["axes"][axis_name] = entry
    psis = [e["psi"] for e in out["axes"].values()]
    if psis and all(p is not None for p in psis):
        big_psi_b = np.mean(np.stack(boot_psis), axis=0)
        out["Psi"] = {
            "value": float(np.mean(psis)),
            "se_bootstrap": float(np.nanstd(big_psi_b, ddof=1)),
            "ci_bootstrap": [float(q) for q in np.nanquantile(big_psi_b, [a, 1.0 - a])],
        }
    else:
        out["Psi"] = {"value": None, "status": "too small", "se_bootstrap": None, "ci_bootstrap": None}
    return out


__all__ = ["DEFAULT_AXES", "MIN_PAIRS", "TauSettings", "psi_from_taus", "rank_agreement"]
