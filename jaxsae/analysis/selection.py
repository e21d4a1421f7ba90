"""Selection results: mean steering score per group for each selection method, lifts, and the rank
agreement of µ with the post-selection score and with the gain (the paper reports both readings:
v1 correlates µ with the gain L(θ), the ICLR version with the post-selection score).

Definitions (arXiv 2510.03659, Table 2 and Fig. 8):
  mean[m]        mean over the group's SAEs of record[methods[m]] (``none`` = no selection, g).
  lift_pct[m]    100 * (mean[m] / mean[none] - 1): a ratio of the group means (Table 2 -> +146.6 %).
  relative_pct   100 * (mean[b] / mean[a] - 1) for each later method b over an earlier one a.
  gain (per SAE) L(θ) = 100 * (g_sel - g) / g, undefined (left out, counted) where g <= 0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .kendall import TauSettings
from .rank import DEFAULT_AXES, _sort_key, rank_agreement

DEFAULT_METHODS: dict[str, str] = {"none": "g", "output": "g_output", "dtc": "g_dtc"}
"""Selection method label -> record key of its steering score. ``none`` is the baseline."""


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return 100.0 * (num / den - 1.0)


def gain_pct(g_sel: Any, g: Any) -> float | None:
    """Per-SAE steering gain L(θ) = 100 (g_sel - g) / g; None where undefined (g <= 0, missing)."""
    return _pct(_finite(g_sel), _finite(g))


def selection_summary(
    records: Sequence[Mapping[str, Any]],
    *,
    by: str = "model",
    methods: Mapping[str, str] = DEFAULT_METHODS,
) -> dict:
    """Mean steering score per group of ``by`` for each method, with lifts (JSON-serialisable).

    ``methods``: label -> record key, the first entry being the no-selection baseline. A record
    without a finite value for a method does not count towards that method's mean (``n`` per
    method says how many did). Returns::

        {"by", "methods", "groups": {name: {"n": {m: k}, "mean": {m: v}, "se": {m: v}, "lift_pct": {m: v},
                                            "relative_pct": {"b_over_a": v}}},
         "average": {"mean": {m: v}, "lift_pct": {m: v}, "relative_pct": {...},
                     "pp_lift_difference": {"b_minus_a": v}}}

    ``se`` is the standard error of ``mean`` over the group's SAEs (sample SD / sqrt(k); None below
    2 SAEs). ``average`` takes the plain mean over groups of each per-group figure (how the paper's
    "+52.52 %" most likely arises: the mean over models of the difference in percentage-point lift
    between ΔTC and the output score, from the paper's Table 2).
    """
    labels = list(methods)
    base = labels[0]
    names = sorted({r[by] for r in records if by in r}, key=_sort_key)
    groups: dict[str, Any] = {}
    for name in names:
        rows = [r for r in records if r.get(by) == name]
        n, mean, se = {}, {}, {}
        for m in labels:
            vals = [v for v in (_finite(r.get(methods[m])) for r in rows) if v is not None]
            n[m] = len(vals)
            mean[m] = float(np.mean(vals)) if vals else None
            se[m] = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) >= 2 else None
        lift = {m: _pct(mean[m], mean[base]) for m in labels[1:]}
        rel = {f"{b}_over_{a}": _pct(mean[b], mean[a])
               for i, a in enumerate(labels[1:], 1) for b in labels[i + 1:]}
        groups[str(name)] = {"n": n, "mean": mean, "se": se, "lift_pct": lift, "relative_pct": rel}

    def avg(field: str, key: str) -> float | None:
        vals = [g[field][key] for g in groups.values() if g[field].get(key) is not None]
        return float(np.mean(vals)) if vals else None

    sel = labels[1:]
    pp = {}
    for i, a in enumerate(sel):
        for b in sel[i + 1:]:
            diffs = [g["lift_pct"][b] - g["lift_pct"][a] for g in groups.values()
                     if g["lift_pct"][a] is not None and g["lift_pct"][b] is not None]
            pp[f"{b}_minus_{a}"] = float(np.mean(diffs)) if diffs else None
    average = {
        "mean": {m: avg("mean", m) for m in labels},
        "lift_pct": {m: avg("lift_pct", m) for m in sel},
        "relative_pct": {k: avg("relative_pct", k) for k in
                         (next(iter(groups.values()))["relative_pct"] if groups else {})},
        "pp_lift_difference": pp,
    }
    return {"by": by, "methods": dict(methods), "groups": groups, "average": average}


def selection_rank(
    records: Sequence[Mapping[str, Any]],
    *,
    x: str = "mu",
    methods: Mapping[str, str] = DEFAULT_METHODS,
    axes: Sequence[tuple[str, str]] = DEFAULT_AXES,
    settings: TauSettings = TauSettings(),
) -> dict:
    """tau_b tables of µ against each selection method's post-selection score ("post") and
    against its per-SAE gain over no selection ("gain"), per :func:`rank_agreement`.

    Returns ``{"post": {m: table}, "gain": {m: table}}`` for every method after the baseline that
    some record carries. SAEs whose gain is undefined (g <= 0) are left out of the gain tables and
    counted in their ``n_dropped``.
    """
    labels = list(methods)
    base_key = methods[labels[0]]
    out: dict[str, Any] = {"post": {}, "gain": {}}
    for m in labels[1:]:
        key = methods[m]
        if not any(_finite(r.get(key)) is not None for r in records):
            continue
        out["post"][m] = rank_agreement(records, x=x, y=key, axes=axes, settings=settings)
        gkey = f"gain_pct_{m}"
        with_gain = [{**r, gkey: gain_pct(r.get(key), r.get(base_key))} for r in records]
        out["gain"][m] = rank_agreement(with_gain, x=x, y=gkey, axes=axes, settings=settings)
    return out


def lift_ci(
    records: Sequence[Mapping[str, Any]],
    *,
    methods: Mapping[str, str] = DEFAULT_METHODS,
    settings: TauSettings = TauSettings(),
) -> dict:
    """Lift of each selection method over no selection, pooled over the SAEs that have both
    scores, with a paired percentile bootstrap CI (SAEs resampled with replacement):

        lift_pct = 100 (mean(g_sel) / mean(g) - 1)    over the n SAEs with finite g and g_sel

    Returns ``{m: {"lift_pct", "ci": [lo, hi] | None, "n", "ci_level"}}`` for every method after
    the baseline (lift None where mean(g) <= 0 or n = 0; CI None below 2 SAEs)."""
    labels = list(methods)
    base = methods[labels[0]]
    out = {}
    for m in labels[1:]:
        pairs = [(a, b) for a, b in ((_finite(r.get(base)), _finite(r.get(methods[m]))) for r in records)
                 if a is not None and b is not None]
        g_n = np.asarray([a for a, _ in pairs], np.float64)
        s_n = np.asarray([b for _, b in pairs], np.float64)
        lift = _pct(float(s_n.mean()), float(g_n.mean())) if pairs else None
        ci = None
        if len(pairs) >= 2 and lift is not None:
            rng = np.random.default_rng([settings.seed, labels.index(m)])
            idx = rng.integers(0, len(pairs), size=(settings.n_boot, len(pairs)))
            gb, sb = g_n[idx].mean(axis=1), s_n[idx].mean(axis=1)
            ok = gb > 0
            boot = 100.0 * (sb[ok] / gb[ok] - 1.0)
            if boot.size:
                a = (1.0 - settings.ci_level) / 2.0
                ci = [float(q) for q in np.quantile(boot, [a, 1.0 - a])]
        out[m] = {"lift_pct": lift, "ci": ci, "n": len(pairs), "ci_level": settings.ci_level}
    return out
