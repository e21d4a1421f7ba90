"""Permutation p-value of Kendall tau_b: ``scipy.stats.permutation_test`` (what
``jaxsae.analysis`` uses) against a hand-written NumPy reference (every permutation's tau_b from
the permuted sign matrix, the code jaxsae used before), side by side in one run, at the study's
group sizes (a 90-SAE pooled group, 30-SAE model groups, 10-SAE level groups).

    python benchmarks/permutation.py [--n-perm 9999]
"""

from __future__ import annotations

import sys  # noqa: I001 - first: benchmarks/select.py would shadow the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse
import json
import time

import numpy as np

from jaxsae.analysis.kendall import kendall_tau_b, permutation_test


def reference(x_n, y_n, n_perm: int, rng) -> float:
    """Two-sided P(|tau_null| >= |tau_obs|) over ``n_perm`` random permutations, (hits + 1) / (n_perm + 1)."""
    n = x_n.size
    sx = np.sign(x_n[:, None] - x_n[None, :]).astype(np.int8)
    sy = np.sign(y_n[:, None] - y_n[None, :]).astype(np.int8)
    den = np.sqrt(float(np.abs(sx).sum()) * float(np.abs(sy).sum()))
    perms = rng.permuted(np.broadcast_to(np.arange(n), (n_perm, n)), axis=1)
    taus = np.empty(n_perm)
    step = max(1, 4_000_000 // (n * n))
    for s in range(0, n_perm, step):
        p = perms[s:s + step]
        taus[s:s + step] = np.einsum("ij,pij->p", sx, sy[p[:, :, None], p[:, None, :]], dtype=np.int64) / den
    tau = kendall_tau_b(x_n, y_n)
    return (int(np.sum(np.abs(taus) >= abs(tau) - 1e-12)) + 1) / (n_perm + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-perm", type=int, default=9999)
    args = ap.parse_args()
    rows = []
    for n in (90, 30, 10):
        rng = np.random.default_rng(0)
        x = rng.normal(size=n)
        y = 0.3 * x + rng.normal(size=n)
        t0 = time.perf_counter()
        p_ref = reference(x, y, args.n_perm, np.random.default_rng(1))
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        p_scipy, _, _ = permutation_test(x, y, args.n_perm, np.random.default_rng(1))
        t_scipy = time.perf_counter() - t0
        rows.append({"n": n, "n_perm": args.n_perm, "reference_s": t_ref, "scipy_s": t_scipy,
                     "scipy_over_reference": t_scipy / t_ref, "p_reference": p_ref, "p_scipy": p_scipy})
        print(f"n={n:3d}  reference {t_ref:7.3f} s (p={p_ref:.4f})   scipy.stats.permutation_test {t_scipy:7.3f} s "
              f"(p={p_scipy:.4f})   time ratio scipy / reference {t_scipy / t_ref:5.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
