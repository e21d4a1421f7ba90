"""AutoInterpConfig: the SAEBench AutoInterp protocol's knobs (defaults = SAEBench's); a sweep's ``[autointerp]`` section."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class AutoInterpConfig:
    """Which latents are scored, how their windows are drawn, and how the judge decides."""

    n_latents: int = 1000
    """Latents scored per SAE (drawn at random among the eligible ones)."""
    n_concepts: int = 100
    """Size of CONCEPT100, drawn from the scored latents; µ(θ) is its mean score."""
    latent_seed: int = 42
    """Seed of the draw of the scored latents (SAEBench's random_seed is 42)."""
    concept_seed: int = 0
    """Seed of the CONCEPT100 draw."""
    latents: tuple[int, ...] | None = None
    """Score exactly these latents instead of a random draw (they must be eligible)."""
    min_activations: int = 15
    """A latent is alive when it fires on at least this many held-out tokens."""
    act_threshold_frac: float = 0.01
    """τ = this × the largest activation in the latent's top windows: tokens above τ are
    highlighted; a window is positive when its maximum activation is above τ."""
    n_top_gen: int = 10
    """Top windows shown to the judge for the explanation."""
    n_iw_gen: int = 5
    """Importance-weighted windows shown for the explanation."""
    n_top_score: int = 2
    """Top windows in the scoring set."""
    n_iw_score: int = 2
    """Importance-weighted windows in the scoring set."""
    n_random_score: int = 10
    """Random windows in the scoring set."""
    random_labels: Literal["negative", "activation"] = "negative"
    """Labels of the random scoring windows: "negative" (default), as SAEBench's code builds them
    (with zero activations, so never positive), or "activation": positive when the window happens
    to hold an activation above τ (which makes µ drift with L0: about 6% of random windows fire at
    L0 50 of 16384 latents, about 66% at 820). Recorded in autointerp.json."""
    sampling_seed: int = 0
    """Seed of the per-latent split of top/IW windows into explanation/scoring and of the
    shuffle of the scoring set (combined with the latent id)."""
    max_explanation_tokens: int = 30
    """Token cap on the judge's explanation."""
    use_demos: bool = True
    """Show example explanations in the explanation prompt (SAEBench default)."""
    detection: Literal["rank", "threshold"] = "rank"
    """The local detector's decision rule over its per-window P(yes) (see ``jaxsae.autointerp.roles``)."""
    yes_threshold: float = 0.5
    """P(yes) at or above which a window is predicted active, for ``detection="threshold"``."""
    api_temperature: float = 0.0
    """Sampling temperature of the API judge (0: reproducible; SAEBench leaves the API default)."""
    templates: str = ""
    """A TOML/JSON file of explainer/detector prompt templates (``prompts.TEMPLATE_FIELDS``) that
    replace ours, e.g. SAEBench's own wording; "" = ours. Its SHA-256 is recorded."""
    explain_batch: int = 8
    """Local judge: explanation prompts generated together, at most (an SAE's prompts are split
    into equal batches: 5 latents run as one batch of 5)."""
    detect_batch: int = 28
    """Local judge: yes/no prompts per forward pass, at most (the detector runs one latent's windows
    at a time, after their shared prefix: 14 windows in one pass of 14 rows)."""

    @property
    def n_scoring(self) -> int:
        """Windows in a scoring set (14)."""
        return self.n_top_score + self.n_iw_score + self.n_random_score

    @property
    def n_expected_positive(self) -> int:
        """Scoring windows positive by design (the top and IW ones: 4)."""
        return self.n_top_score + self.n_iw_score
