"""The output score of Arad et al. (arXiv 2505.20063), for every latent, batched.

Computed by the same kernel as ΔTC (:mod:`jaxsae.select.dtc`) from the same intervened forward:
T_f = top-20 logit-lens tokens of feature f's decoder direction; on the intervened next-token
distribution p after the neutral prefix, score = (1 − best rank of T_f / |V|) · max_{t ∈ T_f} p(t),
ranks counted from 0 (the most likely token). As in Arad et al.'s code, no baseline is subtracted
(the base term is the same for every feature).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsae.select.dtc import DEFAULT_PREFIX, feature_scores


def output_score(
    lm, sae, layer: int, *, prefix: str = DEFAULT_PREFIX, alpha: float = 10.0,
    features: Sequence[int] | None = None, mode: str = "additive", max_acts: np.ndarray | None = None,
    batch_size: int | None = None, progress: bool = False,
) -> np.ndarray:
    """Output score per feature, float32[n_features]."""
    return feature_scores(
        lm, sae, layer, prefix=prefix, alpha=alpha, features=features, mode=mode, max_acts=max_acts,
        batch_size=batch_size, progress=progress,
    )["output_score"]
