"""Score arithmetic: per-latent accuracy over the scoring windows, and the SAE-level summary."""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np


def accuracy(predicted: Sequence[int], labels: np.ndarray) -> float:
    """Fraction of the N windows classified right; ``predicted`` holds 1-based window numbers
    (numbers outside 1..N predict nothing), ``labels`` is bool[N]."""
    labels = np.asarray(labels, bool)
    pred = np.zeros(labels.shape, bool)
    for i in predicted:
        if 1 <= i <= len(labels):
            pred[i - 1] = True
    return float(np.mean(pred == labels))


class SmallConceptWarning(UserWarning):
    """µ(θ) rests on fewer CONCEPT latents than asked for (too few eligible or too many failed)."""


def summarize(scores: Mapping[int, float | None], concept: Sequence[int], n_requested: int | None = None) -> dict:
    """µ(θ) = mean score over the CONCEPT100 latents (those that got a score); also the mean over
    all scored latents, its standard deviation (ddof 1, as SAEBench's autointerp_std_dev) and
    standard error. ``n_concept`` is how many latents µ rests on; with ``n_requested`` (the asked
    CONCEPT size, 100) a warning says when that is fewer."""
    ok = {int(f): float(s) for f, s in scores.items() if s is not None}
    all_ = np.array(list(ok.values()), np.float64)
    conc = np.array([ok[int(f)] for f in concept if int(f) in ok], np.float64)
    n = len(all_)
    std = float(np.std(all_, ddof=1)) if n > 1 else math.nan
    if n_requested is not None and len(conc) < n_requested:
        warnings.warn(
            f"µ rests on {len(conc)} CONCEPT latents, not the {n_requested} asked for ({len(concept)} drawn, "
            f"{len(concept) - len(conc)} failed); score more latents (n_latents) or give more held-out text",
            SmallConceptWarning, stacklevel=2,
        )
    return dict(
        mu=float(np.mean(conc)) if len(conc) else math.nan,
        n_concept=int(len(conc)),
        n_concept_requested=n_requested,
        mean_all=float(np.mean(all_)) if n else math.nan,
        std_all=std,
        se_all=std / math.sqrt(n) if n > 1 else math.nan,
        n_scored=int(n),
        n_failed=int(len(scores) - n),
    )
