"""The select section of a sweep: how ΔTC and the output score are computed, over which latents,
and how a selection tier is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SelectConfig:
    """Feature selection by ΔTC and the output score."""

    prefix: str = "From my experience,"
    """Neutral prefix whose next-token distribution is read (Arad et al.)."""
    alpha: float = 10.0
    """Amplification α."""
    k: int = 1
    """C_k: number of top probabilities."""
    mode: Literal["additive", "decoder"] = "additive"
    """"additive" (Arad et al.'s hook, default) or "decoder" (x + α·m_f·v_f)."""
    pool: Literal["all", "concepts"] = "all"
    """Latents scored by ΔTC and output score: "all" (every latent; the default) or "concepts"
    (only the steered concepts). Tiers are always formed over the steered concepts (only they
    have steering scores): top-K among them; a tail-quantile tier takes its threshold from the
    ΔTC distribution of every scored latent (with "all": the SAE's whole ΔTC distribution, so a
    0.99 tier holds the steered concepts in the SAE's top 1 %), with "concepts" from theirs."""
    tier_choice: Literal["dev", "eval"] = "dev"
    """"dev": tier chosen on dev instructions, reported on test; "eval": the paper's variant
    (best tier by the evaluation itself, optimistic)."""
