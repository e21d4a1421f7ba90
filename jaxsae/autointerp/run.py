"""AutoInterp end to end: statistics -> windows -> explanations -> detection -> scores, saved."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxsae import features
from jaxsae.autointerp import prompts as P
from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.autointerp.roles import Detection, Detector, Explainer, judge_name
from jaxsae.autointerp.sampling import latent_examples, select_latents
from jaxsae.autointerp.scoring import accuracy, summarize
from jaxsae.errors import UserError
from jaxsae.features.compute import text_label
from jaxsae.io import atomic_write_json, provenance_hash
from jaxsae.templates import describe as describe_templates

RESULTS_FILE = "autointerp.json"
STATS_DIR = "feature_stats"


def run_autointerp(stats: features.FeatureStats, explainer: Explainer, detector: Detector, cfg: AutoInterpConfig,
                   token_text: P.TokenText) -> dict[str, Any]:
    """Score the selected latents of one SAE: ``explainer`` explains each, ``detector`` predicts
    its scoring windows from that explanation.

    Returns a JSON-ready dict: ``summary`` (µ over CONCEPT100, mean/SE over all scored, counts,
    timing), ``config``, ``concept100``, and per latent its explanation, windows (highlighted
    explanation windows; scoring windows with label, prediction and P(yes) for a local detector),
    predictions, labels and score.
    """
    t0 = time.perf_counter()
    sel = select_latents(stats, cfg)
    exs = [latent_examples(stats, f, cfg) for f in sel.scored]
    gen_texts = [[P.render_window(token_text(w.tokens), w.acts, ex.threshold) for w in ex.generation] for ex in exs]
    templates = P.load_templates(cfg.templates)
    raw = explainer.explain([P.explanation_messages(g, use_demos=cfg.use_demos, templates=templates)
                             for g in gen_texts]) if exs else []
    # a failed request, or a reply with no explanation in it (e.g. an immediate end token): not scored
    explanations = [None if r is None else P.parse_explanation(r) or None for r in raw]
    score_texts = [[P.render_window(token_text(w.tokens)) for w in ex.scoring] for ex in exs]
    examples = [
        sorted(int(i) for i in np.random.default_rng([cfg.sampling_seed, ex.latent, 1]).choice(
            np.arange(1, len(ex.scoring) + 1), size=min(cfg.n_expected_positive, len(ex.scoring)), replace=False))
        for ex in exs
    ]
    todo = [i for i, e in enumerate(explanations) if e is not None]  # failed explanations are not scored
    dets: list[Detection] = [Detection(predicted=None)] * len(exs)
    if todo:
        got = detector.detect([explanations[i] for i in todo], [score_texts[i] for i in todo], [examples[i] for i in todo])
        for i, d in zip(todo, got):
            dets[i] = d

    concept = set(int(f) for f in sel.concept)
    records, scores = [], {}
    for ex, r, e, gt, st, det in zip(exs, raw, explanations, gen_texts, score_texts, dets):
        f = ex.latent
        score = None if det.predicted is None else accuracy(det.predicted, ex.labels)
        scores[f] = score
        pred = set(det.predicted or [])
        records.append(dict(
            latent=f,
            in_concept100=f in concept,
            explanation=e,
            explanation_raw=r,
            score=score,
            predictions=det.predicted,
            labels=[i + 1 for i in np.flatnonzero(ex.labels).tolist()],
            threshold=ex.threshold,
            max_act=float(stats.max_act[f]),
            frequency=float(stats.frequency[f]),
            generation=[dict(kind=w.kind, max_act=w.max_act, text=t) for w, t in zip(ex.generation, gt)],
            scoring=[
                dict(kind=w.kind, max_act=w.max_act, label=bool(lab), predicted=(i + 1) in pred, text=t,
                     **({"p_yes": det.p_yes[i]} if det.p_yes is not None else {}))
                for i, (w, t, lab) in enumerate(zip(ex.scoring, st, ex.labels))
            ],
            detection_raw=det.raw,
        ))
    seconds = time.perf_counter() - t0
    summary = summarize(scores, sel.concept, n_requested=cfg.n_concepts)
    summary.update(
        n_request_failed=request_failures(records),
        held_out_tokens=int(stats.meta["n_tokens"]),  # fewer than requested when the held-out text ran out
        held_out_tokens_requested=int(stats.meta["config"]["total_tokens"]),
        d_sae=stats.d_sae,
        n_alive=int(sel.alive.sum()),
        n_eligible=int(sel.eligible.sum()),
        judge=judge_name(explainer, detector),
        detection=getattr(detector, "rule", None),
        random_labels=cfg.random_labels,
        templates=describe_templates(cfg.templates),
        temperature=cfg.api_temperature if any(str(getattr(r, "name", "")).startswith("api:") for r in (explainer, detector))
        else None,
        max_explanation_tokens=cfg.max_explanation_tokens,
        seconds=round(seconds, 3),
        latents_per_s=round(len(exs) / seconds, 4) if seconds > 0 else None,
    )
    return dict(
        summary=summary,
        config=dataclasses.asdict(cfg),
        stats=dict(stats.meta),
        concept100=[int(f) for f in sel.concept],
        latents=records,
    )


def request_failures(latents: Sequence[dict]) -> int:
    """Judge requests of saved latent records that failed for good (no answer at all: an
    explanation request, or the detection request of an explained latent). These latents are not
    results; a re-run asks only them again (every answered request is in the judge's cache).
    An answer that does not parse is a result (the latent counts as failed, ``n_failed``)."""
    n = 0
    for r in latents:
        if r.get("explanation_raw") is None:
            n += 1
        elif r.get("explanation") is not None and r.get("predictions") is None and r.get("detection_raw") is None:
            n += 1
    return n


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def save_results(result: dict, path: str | Path) -> Path:
    """Write the results JSON atomically (non-finite numbers as null)."""
    atomic_write_json(path, _json_safe(result))
    return Path(path)


# ------------------------------------------------------------------------- one SAE folder

def sae_layer(sae_cfg: dict) -> int | None:
    """The block an SAELens-format cfg hooks (``metadata.hook_layer`` or ``blocks.L.`` in the
    hook name), or None."""
    md = sae_cfg.get("metadata") or {}
    for d in (md, sae_cfg):
        if d.get("hook_layer") is not None:
            return int(d["hook_layer"])
        m = re.match(r"blocks\.(\d+)\.", str(d.get("hook_name") or ""))
        if m:
            return int(m.group(1))
    return None


def _fingerprint(sae_dir: Path, lm, layer: int, stats_cfg, tokens: np.ndarray) -> str:
    w = sae_dir / "sae_weights.safetensors"
    st = w.stat() if w.exists() else None
    key = dict(
        model=str(getattr(lm, "source", "")),
        layer=layer,
        config=dataclasses.asdict(stats_cfg),
        weights=[st.st_size, st.st_mtime_ns] if st else None,
    )
    return provenance_hash(key, arrays=[tokens])


def stats_for_sae(
    sae_dir: str | Path,
    sae,
    lm,
    layer: int,
    stats_cfg: features.FeatureStatsConfig,
    *,
    texts: Iterable[str] | None = None,
    tokens: np.ndarray | None = None,
    recompute: bool = False,
    progress: bool = False,
    resid_ntd: np.ndarray | Callable[[], np.ndarray | None] | None = None,
    text_source: str | None = None,
) -> features.FeatureStats:
    """The SAE's feature statistics, reused from ``sae_dir/feature_stats`` when they were made
    with the same model, layer, config, held-out tokens and SAE weights; else computed and saved.

    ``tokens``: the held-out contexts when already packed from ``texts`` (shared between SAEs;
    see :func:`features.held_out_tokens`). ``resid_ntd``: their residuals at ``layer``, or a
    function giving them (or None), called only when the pass runs (see
    :func:`features.compute.residuals_on_disk`). ``text_source``: provenance of the text."""
    sae_dir = Path(sae_dir)
    if tokens is None:
        tokens, _ = features.held_out_tokens(lm, stats_cfg, texts)
    fp = _fingerprint(sae_dir, lm, layer, stats_cfg, tokens)
    out = sae_dir / STATS_DIR
    if not recompute and (out / "stats.json").is_file():
        try:
            old = features.load(out)
        except UserError:
            old = None
        if old is not None and old.meta.get("fingerprint") == fp:
            return old
    if callable(resid_ntd):
        resid_ntd = resid_ntd()
    encode_fn, params = features.sae_encoder(sae)
    stats = features.compute_feature_stats(
        lm, layer, encode_fn, params, stats_cfg, tokens=tokens, progress=progress, resid_ntd=resid_ntd,
        meta=dict(fingerprint=fp, sae=str(sae_dir), text_source=text_source or text_label(texts)),
    )
    features.save(stats, out)
    return stats


def stats_for_saes(
    sae_dirs: Sequence[str | Path],
    saes: Sequence | None,
    lm,
    layer: int,
    stats_cfg: features.FeatureStatsConfig,
    *,
    tokens: np.ndarray,
    text_source: str | None = None,
    progress: bool = False,
    resid_ntd: np.ndarray | Callable[[], np.ndarray | None] | None = None,
) -> list[features.FeatureStats]:
    """:func:`stats_for_sae` for several SAEs of one model and layer: the statistics still valid
    on disk are reused, the others computed together in one pass over ``tokens``
    (:func:`features.compute.compute_feature_stats_many`: the model runs once per batch for all
    of them, or ``resid_ntd``, the contexts' residuals at ``layer`` or a function giving them,
    called only when a pass runs, are read instead) and saved in each SAE's folder. ``saes``: the
    loaded SAEs, or None to load from ``sae_dirs`` only those whose statistics are computed."""
    dirs = [Path(d) for d in sae_dirs]
    fps = [_fingerprint(d, lm, layer, stats_cfg, tokens) for d in dirs]
    out: list[features.FeatureStats | None] = [None] * len(dirs)
    for k, (d, fp) in enumerate(zip(dirs, fps)):
        if (d / STATS_DIR / "stats.json").is_file():
            try:
                old = features.load(d / STATS_DIR)
            except UserError:
                old = None
            if old is not None and old.meta.get("fingerprint") == fp:
                out[k] = old
    todo = [k for k, s in enumerate(out) if s is None]
    if todo:
        from jaxsae.features.compute import compute_feature_stats_many

        if saes is None:
            import jaxsae.sae as S

            saes = {k: S.load(dirs[k]) for k in todo}
        if callable(resid_ntd):
            resid_ntd = resid_ntd()
        made = compute_feature_stats_many(
            lm, layer, [features.sae_encoder(saes[k]) for k in todo], stats_cfg, tokens=tokens, progress=progress,
            resid_ntd=resid_ntd, metas=[dict(fingerprint=fps[k], sae=str(dirs[k]), text_source=text_source or text_label(None))
                   for k in todo])
        for k, stats in zip(todo, made):
            features.save(stats, dirs[k] / STATS_DIR)
            out[k] = stats
    return out
