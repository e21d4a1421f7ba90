"""Kendall tau_b for one group of pairs, with a permutation p-value and a bootstrap CI.

The point estimate is ``scipy.stats.kendalltau(x, y, variant="b")`` (tie-corrected), the p-value
``scipy.stats.permutation_test`` and the interval ``scipy.stats.bootstrap``. Resampling needs
tau_b for thousands of reorderings at once, so their statistic is
:func:`tau_b_batch`, a vectorised transcription of the same formula checked against scipy in
the tests:

    tau_b = sum_{i<j} sx_ij * sy_ij / sqrt(sum_{i<j} |sx_ij| * sum_{i<j} |sy_ij|),
    sx_ij = sign(x_i - x_j),  sy_ij = sign(y_i - y_j)

(the numerator is concordant minus discordant pairs; each factor of the denominator counts the
pairs not tied in that variable, i.e. n0 - n1 and n0 - n2).

A group with fewer than 3 pairs is reported as ``{"status": "too small"}`` and one whose x or y
is constant as ``{"status": "constant"}``; neither produces a NaN in the output.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.stats

from .levels import LevelGrouping

MIN_PAIRS = 3
"""Smallest group for which tau_b is reported (with 2 pairs tau is always +-1)."""

_CHUNK_ELEMS = 4_000_000
"""Work per chunk of the vectorised tau (resamples x n x n sign products)."""


@dataclass(frozen=True)
class TauSettings:
    """How a group's statistics are computed and SAEs grouped into levels; a sweep's ``[analysis]`` section."""

    n_perm: int = 9999
    """Permutations for the p-value. When n! <= n_perm every permutation is enumerated (exact)."""
    n_boot: int = 9999
    """Bootstrap resamples for confidence intervals and standard errors."""
    ci_level: float = 0.95
    """Two-sided confidence level of every interval."""
    seed: int = 0
    """Base seed; each group derives its own stream from it and its name (order independent)."""
    level_grouping: LevelGrouping = "grid"
    """Sparsity levels of axis B (:func:`jaxsae.analysis.group_levels`): "grid" (the i-th sparsest
    grid setting of every architecture) or "l0_rank" (within each model and architecture, the i-th
    smallest measured L0); recorded in results.json."""


def kendall_tau_b(x_n, y_n) -> float:
    """Kendall tau_b of two equal-length 1-D sequences, by scipy (tie-corrected variant b)."""
    return float(scipy.stats.kendalltau(np.asarray(x_n), np.asarray(y_n), variant="b").statistic)


def _signs(v_bn: np.ndarray) -> np.ndarray:
    """int8[..., n, n]: sign(v_i - v_j)."""
    return np.sign(v_bn[..., :, None] - v_bn[..., None, :]).astype(np.int8)


def tau_b_batch(x_bn, y_bn) -> np.ndarray:
    """f64[...]: tau_b along the last axis of x and y (broadcast leading axes); NaN where x or y
    is constant within a row (0/0).

    Vectorised, chunked over the leading axis so that memory stays bounded.
    """
    x_bn = np.asarray(x_bn, dtype=np.float64)
    y_bn = np.asarray(y_bn, dtype=np.float64)
    lead = np.broadcast_shapes(x_bn.shape[:-1], y_bn.shape[:-1])
    n = x_bn.shape[-1]
    x_bn = np.broadcast_to(x_bn, lead + (n,)).reshape(-1, n)
    y_bn = np.broadcast_to(y_bn, lead + (n,)).reshape(-1, n)
    out_b = np.empty(x_bn.shape[0], dtype=np.float64)
    step = max(1, _CHUNK_ELEMS // max(1, n * n))
    for s in range(0, x_bn.shape[0], step):
        sx = _signs(x_bn[s : s + step])
        sy = _signs(y_bn[s : s + step])
        num = np.einsum("bij,bij->b", sx, sy, dtype=np.int64)
        nx = np.abs(sx).sum(axis=(-1, -2), dtype=np.int64)
        ny = np.abs(sy).sum(axis=(-1, -2), dtype=np.int64)
        den = np.sqrt(nx.astype(np.float64) * ny)
        with np.errstate(invalid="ignore", divide="ignore"):
            out_b[s : s + step] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out_b.reshape(lead)


def group_status(x_n, y_n) -> str:
    """``"ok"``, ``"too small"`` (fewer than :data:`MIN_PAIRS` pairs) or ``"constant"``."""
    x_n, y_n = np.asarray(x_n, dtype=np.float64), np.asarray(y_n, dtype=np.float64)
    if x_n.size < MIN_PAIRS:
        return "too small"
    if np.ptp(x_n) == 0 or np.ptp(y_n) == 0:
        return "constant"
    return "ok"


def permutation_test(x_n, y_n, n_perm: int, rng: np.random.Generator) -> tuple[float, np.ndarray, bool]:
    """Two-sided permutation p-value of tau_b (``scipy.stats.permutation_test``, pairings: y
    reordered against x) -> (p, f64[n_null] tau_b of the permuted orderings (n_null: n! when exact,
    else ``n_perm``), exact: bool).

    Exact (every permutation, each once) when n! <= n_perm, the p-value then the plain fraction;
    otherwise ``n_perm`` random permutations from ``rng`` and scipy's (hits + 1) / (n_perm + 1) per tail,
    which never returns 0. Two-sided is scipy's: twice the smaller tail, at most 1 (for the
    symmetric null of tau_b, P(|tau_null| >= |tau_obs|))."""
    x_n, y_n = np.asarray(x_n, dtype=np.float64), np.asarray(y_n, dtype=np.float64)
    n = x_n.size
    sx = _signs(x_n)
    den = math.sqrt(float(np.abs(sx).sum(dtype=np.int64)) * float(np.abs(_signs(y_n)).sum(dtype=np.int64)))

    def tau_b(y_bn, axis=-1):  # a reordering keeps y's ties, so only the numerator changes
        y_bn = np.moveaxis(y_bn, axis, -1)
        return np.einsum("ij,...ij->...", sx, _signs(y_bn), dtype=np.int64) / den

    exact = math.factorial(n) <= n_perm
    res = scipy.stats.permutation_test((y_n,), tau_b, permutation_type="pairings", vectorized=True,
                                       n_resamples=np.inf if exact else n_perm, alternative="two-sided",
                                       batch=max(1, _CHUNK_ELEMS // max(1, n * n)), rng=rng)
    return float(res.pvalue), np.asarray(res.null_distribution, dtype=np.float64), exact


def _tau_stat_vectorised(x, y, axis=-1):
    return tau_b_batch(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1))


def bootstrap_ci(x_n, y_n, settings: TauSettings, rng: np.random.Generator) -> dict:
    """Paired bootstrap of tau_b: BCa (``scipy.stats.bootstrap``) where it applies, otherwise the
    percentile interval of the same bootstrap distribution.

    BCa does not apply when the bootstrap distribution is degenerate (e.g. perfect concordance:
    every resample has tau = 1) or contains undefined resamples (a resample with constant x or y,
    likely only for very small groups); scipy then returns NaN and we fall back to percentiles
    over the defined resamples. Returns {"ci": [lo, hi], "ci_method": "BCa" | "percentile",
    "se": bootstrap standard error}.
    """
    x_n, y_n = np.asarray(x_n, dtype=np.float64), np.asarray(y_n, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = scipy.stats.bootstrap(
            (x_n, y_n), _tau_stat_vectorised, n_resamples=settings.n_boot, paired=True,
            vectorized=True, confidence_level=settings.ci_level, method="BCa",
            batch=max(1, _CHUNK_ELEMS // max(1, x_n.size**2)), rng=rng,
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    method = "BCa"
    if not (np.isfinite(lo) and np.isfinite(hi)) or not np.all(np.isfinite(dist)):
        a = (1.0 - settings.ci_level) / 2.0
        lo, hi = (float(v) for v in np.nanquantile(dist, [a, 1.0 - a]))
        method = "percentile"
    return {"ci": [lo, hi], "ci_method": method, "se": float(np.nanstd(dist, ddof=1))}


def tau_group(x_n, y_n, settings: TauSettings, rng: np.random.Generator) -> dict:
    """All statistics of one group, JSON-serialisable.

    ``{"status": "ok", "n", "tau_b", "p_perm", "p_exact", "ci", "ci_method", "se",
    "perm_null_band"}`` where ``perm_null_band`` is the central ``ci_level`` interval of tau under
    the permutation null (what the paper's subgroup "95% CI"s appear to be). For a group that
    cannot carry a statistic: ``{"status": "too small" | "constant", "n"}``.
    """
    x_n, y_n = np.asarray(x_n, dtype=np.float64), np.asarray(y_n, dtype=np.float64)
    status = group_status(x_n, y_n)
    if status != "ok":
        return {"status": status, "n": int(x_n.size)}
    tau = kendall_tau_b(x_n, y_n)
    p, null, exact = permutation_test(x_n, y_n, settings.n_perm, rng)
    a = (1.0 - settings.ci_level) / 2.0
    band = [float(v) for v in np.quantile(null, [a, 1.0 - a])]
    out = {
        "status": "ok",
        "n": int(x_n.size),
        "tau_b": tau,
        "p_perm": p,
        "p_exact": bool(exact),
    }
    out.update(bootstrap_ci(x_n, y_n, settings, rng))
    out["perm_null_band"] = band
    return out
