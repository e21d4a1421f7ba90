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
    """Reading A's hook, which the output score always uses: "additive" (Arad et al.'s code,
    x + α·max_j a_j·d_f; default) or "decoder" (x + α·m_f·v_f)."""
    reading: Literal["A", "B", "B'"] = "B"
    """ΔTC's intervention (protocol §7): "B" (default; the paper's main text: f's own code scaled
    by α, x + (α − 1)·a_f(x)·d_f, so a latent silent on the prefix has ΔC = 0), "B'" (App. D: f's
    code alone, x + α·a_f(x)·d_f) or "A" (Arad et al.'s hook, as ``mode``). Recorded in dtc.npz,
    results.json and the report."""
    positions: Literal["last", "all"] = "last"
    """Where ΔTC and the output score intervene: "last" (the prefix's last position, as Arad et al.)
    or "all" (every prefix position, each with its own codes)."""
    compare_readings: bool = True
    """Also score ΔTC under the two other readings (dtc.npz ``delta_tc_A`` / ``_B`` / ``_Bp``), for
    the report's table of how the readings rank latents and the selection lift each gives."""
    ranking: Literal["direction", "magnitude"] = "direction"
    """How ΔTC tiers rank latents: "direction" (App. D: UP = largest ΔC, DOWN = most negative, each
    its own tier) or "magnitude" (§4.1: largest |ΔC|, tiers ``abs_top{K}`` and ``abs_q{q}``)."""
    pool: Literal["all", "concepts"] = "all"
    """Latents scored by ΔTC and output score: "all" (every latent; the default) or "concepts"
    (only the steered concepts). Tiers are always formed over the steered concepts (only they
    have steering scores): top-K among them; a tail-quantile tier takes its threshold from the
    ΔTC distribution of every scored latent (with "all": the SAE's whole ΔTC distribution, so a
    0.99 tier holds the steered concepts in the SAE's top 1 %), with "concepts" from theirs."""
    tier_choice: Literal["dev", "eval"] = "dev"
    """"dev": tier chosen on dev instructions, reported on test; "eval": the paper's variant
    (best tier by the evaluation itself, optimistic)."""
