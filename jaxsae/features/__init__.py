"""Per-latent statistics of an SAE over held-out text, gathered in one streaming jitted pass.

    from jaxsae.features import FeatureStatsConfig, compute_feature_stats, sae_encoder, save, load
    stats = compute_feature_stats(lm, layer, *sae_encoder(sae), FeatureStatsConfig())
    save(stats, sae_dir / "feature_stats")
    m_f = load(sae_dir / "feature_stats").max_act      # f32[F], for steering

Kept per latent in memory independent of the token count: firing count / frequency, sum and
max activation, the top non-overlapping windows, an exact importance-weighted draw and random
windows (SAEBench AutoInterp's sampling). See :mod:`jaxsae.features.stream` for the algorithm.
"""

from jaxsae.features.compute import (
    FeatureStatsConfig,
    compute_feature_stats,
    held_out_tokens,
    sae_encoder,
    stats_from_codes,
)
from jaxsae.features.store import FeatureStats, load, save
from jaxsae.features.stream import StreamSpec

__all__ = [
    "FeatureStats",
    "FeatureStatsConfig",
    "StreamSpec",
    "compute_feature_stats",
    "held_out_tokens",
    "load",
    "sae_encoder",
    "stats_from_codes",
    "save",
]
