"""Judge validity for the AutoInterp detector: does the judge tell a latent's activating windows
from random ones, given its own explanation? The measures (AUROC with a bootstrap CI, n per
class) are :mod:`jaxsae.judge.validate`'s, which caches the result with the steering judge's.

    from jaxsae.autointerp.validate import DetectorCheck
    res = validate_cached(judge, settings, cache_dir,
                          detector=DetectorCheck(explainer, detector, stats, token_text, cfg, settings))
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from jaxsae.judge.validate import ValiditySettings, _json, separation

from . import prompts as P
from .config import AutoInterpConfig
from .roles import judge_name
from .sampling import latent_examples, select_latents


def validate_detector(explainer, detector, stats, token_text, cfg=None, *,
                      settings: ValiditySettings = ValiditySettings()) -> dict[str, Any]:
    """How well an AutoInterp detector (:mod:`jaxsae.autointerp.roles`) tells a latent's
    activating scoring windows (label True) from non-activating random ones, given the
    ``explainer``'s explanation from the explanation windows, pooled over ``settings.detector_latents`` latents
    of ``stats`` (a :class:`jaxsae.features.FeatureStats`; ``token_text`` turns token ids into
    strings). A window's score is the judge's P(yes) when it gives one, else 1 if it was
    predicted active and 0 if not. Latents whose explanation failed are left out (counted)."""
    cfg = dataclasses.replace(cfg or AutoInterpConfig(), n_latents=settings.detector_latents,
                              n_concepts=settings.detector_latents, latents=None)
    t0 = time.perf_counter()
    sel = select_latents(stats, cfg)
    exs = [latent_examples(stats, f, cfg) for f in sel.scored]
    gen = [[P.render_window(token_text(w.tokens), w.acts, ex.threshold) for w in ex.generation] for ex in exs]
    raw = explainer.explain([P.explanation_messages(g, use_demos=cfg.use_demos) for g in gen]) if exs else []
    expl = [None if r is None else P.parse_explanation(r) or None for r in raw]
    todo = [i for i, e in enumerate(expl) if e is not None]
    texts = [[P.render_window(token_text(w.tokens)) for w in exs[i].scoring] for i in todo]
    examples = [sorted(range(1, cfg.n_expected_positive + 1)) for _ in todo]  # the API prompt's format example
    dets = detector.detect([expl[i] for i in todo], texts, examples) if todo else []
    scores, labels, kinds = [], [], []
    for i, d in zip(todo, dets):
        ex = exs[i]
        if d.p_yes is None and d.predicted is None:
            continue
        pred = set(d.predicted or [])
        for j, (w, lab) in enumerate(zip(ex.scoring, ex.labels)):
            scores.append(d.p_yes[j] if d.p_yes is not None else float((j + 1) in pred))
            labels.append(bool(lab))
            kinds.append(w.kind)
    res = separation(scores, labels, kinds, n_boot=settings.n_boot, level=settings.ci_level, seed=settings.seed)
    res.update(n_latents=len(exs), n_explained=len(todo), score="p_yes" if dets and dets[0].p_yes is not None
               else "predicted", judge=judge_name(explainer, detector),
               seconds=round(time.perf_counter() - t0, 3))
    return _json(res)


@dataclasses.dataclass
class DetectorCheck:
    """:func:`validate_detector` of one detector on one SAE's statistics, deferred: what
    :func:`jaxsae.judge.validate.validate_cached` calls, with the part of its cache key it adds."""

    explainer: Any
    """An AutoInterp :class:`~jaxsae.autointerp.roles.Explainer`."""
    detector: Any
    """The AutoInterp :class:`~jaxsae.autointerp.roles.Detector` under test."""
    stats: Any
    """A :class:`jaxsae.features.FeatureStats`."""
    token_text: Any
    """Token ids -> strings (:class:`jaxsae.autointerp.prompts.TokenText`)."""
    cfg: AutoInterpConfig | None = None
    settings: ValiditySettings = ValiditySettings()

    def key(self) -> dict[str, Any]:
        return dict(detector=judge_name(self.explainer, self.detector),
                    detector_latents=self.settings.detector_latents, stats=self.stats.meta.get("fingerprint"),
                    autointerp=_json(dataclasses.asdict(self.cfg)) if self.cfg is not None else None)

    def __call__(self) -> dict[str, Any]:
        return validate_detector(self.explainer, self.detector, self.stats, self.token_text, self.cfg, settings=self.settings)
