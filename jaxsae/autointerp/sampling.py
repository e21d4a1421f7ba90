"""Which latents are scored, and each latent's explanation and scoring windows (SAEBench).

Per latent (from :class:`jaxsae.features.FeatureStats`):

* the 12 top windows are split at random into 10 for the explanation and 2 for scoring, and the
  7 importance-weighted (IW) windows into 5 and 2 (SAEBench's ``randperm`` splits);
* τ = ``act_threshold_frac`` × the largest activation in the 12 top windows;
* explanation set: 10 top + 5 IW windows, strongest first, tokens above τ highlighted;
* scoring set: 2 top + 2 IW + 10 random windows, shuffled, not highlighted; a window's label
  is whether its largest activation is above τ, except that random windows are negative by default
  (SAEBench builds them without activations; ``random_labels="activation"`` labels them too).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.errors import UserError
from jaxsae.features import FeatureStats


@dataclasses.dataclass
class Window:
    """One window of held-out text around a centre token."""

    kind: str
    """"top", "iw" or "random"."""
    pos: int
    """Global position of the centre token (context * T + t)."""
    tokens: np.ndarray
    """i32[W]."""
    acts: np.ndarray
    """f32[W]: the latent's activations on those tokens."""

    @property
    def max_act(self) -> float:
        return float(np.max(self.acts))


@dataclasses.dataclass
class LatentExamples:
    latent: int
    threshold: float
    """τ: highlight / label threshold."""
    generation: list[Window]
    """Shown for the explanation, strongest first."""
    scoring: list[Window]
    """Shown for detection, shuffled."""
    labels: np.ndarray
    """bool[N]: which scoring windows are active."""


@dataclasses.dataclass
class Selection:
    alive: np.ndarray
    """bool[F]: fires on at least ``min_activations`` counted tokens."""
    eligible: np.ndarray
    """bool[F]: alive and with enough top and IW windows to build both sets."""
    scored: np.ndarray
    """i64[n]: the latents to score, ascending."""
    concept: np.ndarray
    """i64[<=100]: CONCEPT100, a fixed-seed draw from ``scored``, ascending."""


def _need(cfg: AutoInterpConfig, stats: FeatureStats):
    n_top, n_iw = cfg.n_top_gen + cfg.n_top_score, cfg.n_iw_gen + cfg.n_iw_score
    if stats.top_pos.shape[1] < n_top or stats.iw_pos.shape[1] < n_iw or stats.rand_pos.shape[1] < cfg.n_random_score:
        raise UserError(
            f"the feature statistics keep {stats.top_pos.shape[1]} top / {stats.iw_pos.shape[1]} IW / "
            f"{stats.rand_pos.shape[1]} random windows, fewer than the protocol's {n_top} / {n_iw} / "
            f"{cfg.n_random_score}; recompute them with larger n_top / n_iw / n_random"
        )
    return n_top, n_iw


def select_latents(stats: FeatureStats, cfg: AutoInterpConfig) -> Selection:
    """Alive (≥ ``min_activations`` firings) latents that have the 12 non-overlapping top windows
    and the 7 IW draws the protocol needs (SAEBench skips the others); ``n_latents`` of them drawn
    with ``latent_seed``, then CONCEPT100 drawn from those with ``concept_seed``."""
    n_top, n_iw = _need(cfg, stats)
    alive = stats.count >= cfg.min_activations
    eligible = alive & np.all(stats.top_pos[:, :n_top] >= 0, axis=1) & np.all(stats.iw_pos[:, :n_iw] >= 0, axis=1)
    pool = np.flatnonzero(eligible)
    if cfg.latents is not None:
        scored = np.unique(np.asarray(cfg.latents, np.int64))
        bad = [int(f) for f in scored if not (0 <= f < stats.d_sae and eligible[f])]
        if bad:
            raise UserError(f"latents {bad[:10]} are dead or lack windows; choose among the {len(pool)} eligible latents")
    else:
        rng = np.random.default_rng(cfg.latent_seed)
        scored = np.sort(rng.choice(pool, size=min(cfg.n_latents, len(pool)), replace=False)).astype(np.int64)
    rng = np.random.default_rng(cfg.concept_seed)
    concept = np.sort(rng.choice(scored, size=min(cfg.n_concepts, len(scored)), replace=False)).astype(np.int64)
    return Selection(alive=alive, eligible=eligible, scored=scored, concept=concept)


def latent_examples(stats: FeatureStats, latent: int, cfg: AutoInterpConfig) -> LatentExamples:
    """The explanation and scoring windows of one eligible latent (deterministic per latent)."""
    n_top, n_iw = _need(cfg, stats)
    f = int(latent)
    rng = np.random.default_rng([cfg.sampling_seed, f])

    def windows(kind, pos, win):
        return [Window(kind, int(p), stats.window_tokens(p), np.asarray(w, np.float32)) for p, w in zip(pos, win)]

    top = windows("top", stats.top_pos[f, :n_top], stats.top_win[f, :n_top])
    iw = windows("iw", stats.iw_pos[f, :n_iw], stats.iw_win[f, :n_iw])
    rand = windows("random", stats.rand_pos[f, : cfg.n_random_score], stats.rand_win[f, : cfg.n_random_score])
    threshold = cfg.act_threshold_frac * max(w.max_act for w in top)

    t_perm, i_perm = rng.permutation(n_top), rng.permutation(n_iw)
    gen = [top[i] for i in t_perm[: cfg.n_top_gen]] + [iw[i] for i in i_perm[: cfg.n_iw_gen]]
    gen.sort(key=lambda w: -w.max_act)
    score = [top[i] for i in t_perm[cfg.n_top_gen :]] + [iw[i] for i in i_perm[cfg.n_iw_gen :]] + rand
    score = [score[i] for i in rng.permutation(len(score))]
    # SAEBench builds random windows without activations: never positive (their real activations
    # are kept in the windows, for the record)
    labels = np.array([w.max_act > threshold and (w.kind != "random" or cfg.random_labels == "activation")
                       for w in score], bool)
    return LatentExamples(latent=f, threshold=float(threshold), generation=gen, scoring=score, labels=labels)
