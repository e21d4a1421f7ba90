"""Feature selection for steering: ΔTC and the output score over every latent (one batched
kernel), and the paper's selection tiers.

    from jaxsae.select import delta_token_confidence, output_score, dtc_tiers, choose_tier
    dc = delta_token_confidence(lm, sae, layer)          # f32[d_sae], every latent
"""

from jaxsae.select.dtc import DEFAULT_PREFIX, MODES, POSITIONS, READINGS, delta_token_confidence, feature_scores
from jaxsae.select.output_score import output_score
from jaxsae.select.tiers import CHOICE_LABELS, QUANTILES, RANKINGS, TOP_K, choose_tier, dtc_tiers, size_matched_tiers

__all__ = [
    "CHOICE_LABELS", "DEFAULT_PREFIX", "MODES", "POSITIONS", "QUANTILES", "RANKINGS", "READINGS", "TOP_K", "choose_tier",
    "delta_token_confidence", "dtc_tiers", "feature_scores", "output_score", "size_matched_tiers",
]
