"""Selection tiers (the paper's §4): candidate feature sets from a score vector, and the choice
of the best tier.

ΔTC tiers over a candidate pool: top-K by ΔC in each direction (UP: largest ΔC; DOWN: most
negative; or, with ``ranking="magnitude"``, by |ΔC|), K = 1…5, and tail quantiles q ∈ {0.99, 0.95, 0.90, 0.80} (UP: ΔC ≥ its q-quantile;
DOWN: the same on −ΔC, i.e. ΔC ≤ its (1 − q)-quantile). The quantiles are those of the pool's
own scores, or of a ``reference`` distribution (e.g. the ΔC of every latent of the SAE, when the
pool is only the steered concepts: a q tier then holds the pool members in the SAE's tail).
Non-finite scores are left out of the pool and of the reference. Output-score tiers have the
same sizes (the top-n by output score for each ΔTC tier's n), so the two selectors are compared
at equal set size.

A tier's score is the mean per-feature steering score of its members. Default: the tier is
chosen by the members' dev scores and reported by their test scores (held-out); the paper's
variant — the best tier by the evaluation itself — is available as ``choice="eval"`` and is
labelled so in the output (it is optimistic: selection on the test data).
"""

from __future__ import annotations

import numpy as np

TOP_K = (1, 2, 3, 4, 5)
QUANTILES = (0.99, 0.95, 0.90, 0.80)
CHOICE_LABELS = {
    "dev": "chosen on dev instructions, reported on test",
    "eval": "paper variant: best tier by the evaluation itself (optimistic)",
}
"""How the tier was chosen (``choose_tier``'s ``choice``), as reports label it."""


def _finite(scores, features) -> tuple[np.ndarray, np.ndarray]:
    """Scores and features without non-finite scores (a NaN would sort first in the DOWN tail)."""
    scores, features = np.asarray(scores, np.float64), np.asarray(features)
    if scores.shape != features.shape:
        raise ValueError(f"scores {scores.shape} and features {features.shape} differ in shape")
    keep = np.isfinite(scores)
    return scores[keep], features[keep]


RANKINGS = ("direction", "magnitude")
"""How ΔTC tiers rank latents: by signed ΔC per direction (UP / DOWN), or by |ΔC| (``abs_*``)."""


def dtc_tiers(scores: np.ndarray, features: np.ndarray, reference: np.ndarray | None = None, *,
              ranking: str = "direction") -> dict[str, np.ndarray]:
    """{tier name: feature ids} from ΔC scores over the candidate ``features``; tail-quantile
    thresholds from ``reference`` scores (None: from ``scores`` themselves).

    ``ranking="direction"``: ``up_top{K}`` / ``down_top{K}`` and ``up_q{q}`` / ``down_q{q}``;
    ``"magnitude"`` (the paper's §4.1): the same sizes and quantiles on |ΔC|, ``abs_top{K}`` and
    ``abs_q{q}`` (|ΔC| ≥ the q-quantile of the reference's |ΔC|)."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    scores, features = _finite(scores, features)
    if not len(scores):
        return {}
    ref = scores if reference is None else np.asarray(reference, np.float64)
    ref = ref[np.isfinite(ref)]
    if not len(ref):
        raise ValueError("the reference distribution of the quantile tiers has no finite score")
    if ranking == "magnitude":
        mag, ref_mag = np.abs(scores), np.abs(ref)
        order = np.argsort(-mag, kind="stable")
        tiers = {f"abs_top{k}": features[order[:k]] for k in TOP_K if k <= len(features)}
        tiers.update({f"abs_q{q:.2f}": features[mag >= np.quantile(ref_mag, q)] for q in QUANTILES})
        return {k: v for k, v in tiers.items() if len(v)}
    up, down = np.argsort(-scores, kind="stable"), np.argsort(scores, kind="stable")  # ties: pool order
    tiers: dict[str, np.ndarray] = {}
    for k in TOP_K:
        if k <= len(features):
            tiers[f"up_top{k}"] = features[up[:k]]
            tiers[f"down_top{k}"] = features[down[:k]]
    for q in QUANTILES:
        # DOWN is UP of −ΔC: mirrored exactly (np.quantile(s, 1 − q) rounds 1 − q and can drop a boundary member)
        tiers[f"up_q{q:.2f}"] = features[scores >= np.quantile(ref, q)]
        tiers[f"down_q{q:.2f}"] = features[-scores >= np.quantile(-ref, q)]
    return {k: v for k, v in tiers.items() if len(v)}


def size_matched_tiers(scores: np.ndarray, features: np.ndarray, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """For each named size, the top-n features by ``scores`` (higher is better)."""
    scores, features = _finite(scores, features)
    order = np.argsort(-scores, kind="stable")
    return {name: features[order[:n]] for name, n in sizes.items() if n > 0}


def choose_tier(tiers: dict[str, np.ndarray], dev: dict[int, float], test: dict[int, float], *, choice: str = "dev") -> dict:
    """Pick the tier with the best mean dev score (``choice="dev"``) or test score (``"eval"``,
    the paper's variant) and report the mean test score of its members."""
    if choice not in CHOICE_LABELS:
        raise ValueError("choice must be 'dev' or 'eval'")
    rows = []
    for name, feats in tiers.items():
        f = [int(x) for x in feats if int(x) in test and int(x) in dev]
        if not f:
            continue
        rows.append({"tier": name, "size": len(f), "features": f, "dev": float(np.mean([dev[x] for x in f])),
                     "test": float(np.mean([test[x] for x in f]))})
    if not rows:
        return {"tier": None, "score": None, "choice": choice, "choice_label": CHOICE_LABELS[choice], "tiers": []}
    key = "dev" if choice == "dev" else "test"
    best = max(rows, key=lambda r: (r[key], -r["size"]))
    return {"tier": best["tier"], "score": best["test"], "size": best["size"], "features": best["features"],
            "choice": choice, "choice_label": CHOICE_LABELS[choice], "tiers": rows}
