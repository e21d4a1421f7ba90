"""Delta Token Confidence (ΔTC) and the output score, for every latent of an SAE, batched.

For a neutral prefix s ("From my experience,") and a feature f, both scores read the next-token
distribution after s when f is amplified at the SAE's layer. ΔTC's intervention (``reading``;
protocol §7), with a_j(h) the SAE's codes at a position and d_f = decode(e_f) − decode(0) the
decoder row (unit once exported, see ``jaxsae.sae.arch.fold_decoder_norms``):

- ``"A"`` (Arad et al.'s code): encode h, add α · max_j a_j to a_f, decode, add back the SAE
  error: h + α · max_j a_j(h) · d_f (``mode="additive"``), or h + α · m_f · v_f with v_f the unit
  direction and m_f the feature's maximum activation over harvested tokens (``mode="decoder"``).
- ``"B"`` (default; the paper's main text, "amplify only the coefficient of f by α"): the other
  codes and the error are kept, so h + (α − 1) · a_f(h) · d_f. A latent silent on the prefix gets
  ΔC = 0 exactly.
- ``"B'"`` (App. D, "keeping all other codes at zero"): h + α · a_f(h) · d_f.

``positions="last"`` (default) intervenes at the prefix's last position; ``"all"`` at every prefix
position (each position's own codes). The output score always uses reading A (Arad's hook,
``mode``) at the same positions.

ΔC_k(f) = C_k(p_int) − C_k(p_base), C_k(p) = −(1/k) Σ log p_(i) over the k largest probabilities.
Output score (Arad et al.): with T_f the top-20 logit-lens tokens of f's decoder direction
(final norm + unembedding), (1 − best rank of T_f under p_int / |V|) · max_{t ∈ T_f} p_int(t).

At the last position the kernel runs the prefix once: keys/values of the first P−1 tokens for every
layer are cached, the last token is run through blocks 0..layer once, and then only that single
position goes through blocks layer+1..L−1 for a batch of features at a time (attending to the
shared cache), jitted. At every position the whole prefix goes through blocks layer+1..L−1 per
feature.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.select.config import SelectConfig
from jaxsae.errors import UserError
from jaxsae.models import forward, forward_from, prefix_cache, unembed

DEFAULT_PREFIX = SelectConfig.prefix
MODES = ("additive", "decoder")
READINGS = ("A", "B", "B'")
"""ΔTC interventions (module docstring): A = Arad et al.'s hook, B = scale f's own code (default),
B' = f's code alone."""
POSITIONS = ("last", "all")


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def prefix_state(params, cfg, prefix_1p, layer: int):
    """(KV cache of the first P−1 prefix tokens [1 x P slots], residual of the last token after
    block ``layer`` f32[D], base logits at the last position f32[V])."""
    P = prefix_1p.shape[1]
    cache = prefix_cache(params, cfg, prefix_1p[:, :-1], slots=P)  # the last slot is the intervened token's
    last = prefix_1p[:, -1:]
    x_last, _ = forward(params, cfg, last, cache=cache, write_at=P - 1, stop_layer=layer, update_cache=False)
    base, _ = forward_from(params, cfg, x_last, layer, cache=cache, write_at=P - 1, update_cache=False)
    return cache, x_last[0, 0], base[0, 0]


def confidence(logits_bv, k: int):
    """C_k = −(1/k) Σ of the k largest log-probabilities, per row, from logits: log p = z − lse(z),
    so C_k = lse(z) − mean of the k largest z (no [B, V] log-softmax is materialised)."""
    return _confidence(logits_bv, jax.nn.logsumexp(logits_bv, axis=-1), k)


def _confidence(logits_bv, lse_b, k: int):
    top = jnp.max(logits_bv, axis=-1) if k == 1 else jnp.mean(jax.lax.top_k(logits_bv, k)[0], axis=-1)
    return lse_b - top


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "k"))
def score_batch(params, cfg, layer: int, cache, x_d, delta_fd, lens_tokens_fc, base_logits_v, k: int):
    """ΔC_k and output score for a batch of interventions x + delta_f at the prefix's last position.

    ``lens_tokens_fc``: int32[F, C] logit-lens tokens (C = 20) of each feature for the output score
    (None: ΔC_k only, and the second result is None)
    Ranks and probabilities are read from the logits (a softmax shifts a row by one constant)."""
    P = cache.valid_bs.shape[1]
    x = (x_d[None, :] + delta_fd)[:, None, :]  # [F, 1, D]
    logits, _ = forward_from(params, cfg, x, layer, cache=cache, write_at=P - 1, update_cache=False)
    return _scores(logits[:, 0], lens_tokens_fc, base_logits_v, k)


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def prefix_residual(params, cfg, prefix_1p, layer: int):
    """f32[P, D]: the prefix's residual after block ``layer``, every position."""
    return forward(params, cfg, prefix_1p, stop_layer=layer)[0][0]


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "k"))
def score_batch_all(params, cfg, layer: int, x_pd, delta_fpd, lens_tokens_fc, base_logits_v, k: int):
    """:func:`score_batch` for interventions at every prefix position: rows x + delta_f [F, P, D]
    run through blocks layer+1..L−1 (no cache), and the next-token logits are read at the last."""
    logits, _ = forward_from(params, cfg, x_pd[None] + delta_fpd, layer, last_only=True)
    return _scores(logits[:, 0], lens_tokens_fc, base_logits_v, k)


def _scores(z, lens_tokens_fc, base_logits_v, k: int):
    """(ΔC_k f32[F], output score f32[F] or None) from intervened next-token logits z f32[F, V]."""
    lse = jax.nn.logsumexp(z, axis=-1)
    dc = _confidence(z, lse, k) - confidence(base_logits_v[None], k)
    if lens_tokens_fc is None:
        return dc, None
    z_best = jnp.max(jnp.take_along_axis(z, lens_tokens_fc, axis=1), axis=1)
    rank = jnp.sum(z > z_best[:, None], axis=1)
    out = (1.0 - rank / z.shape[-1]) * jnp.exp(z_best - lse)
    return dc, out


@functools.partial(jax.jit, static_argnames=("cfg", "n"))
def logit_lens_tokens(params, cfg, dirs_fd, n: int = 20):
    """int32[F, n]: the top-n tokens of softmax(unembed(final_norm(d_f))) per direction."""
    logits = unembed(params, cfg, dirs_fd[:, None, :].astype(params["embed_vd"].dtype))[:, 0]
    return jax.lax.top_k(logits, n)[1].astype(jnp.int32)


def decoder_rows(sae, features: np.ndarray) -> jax.Array:
    """d_f = decode(e_f) − decode(0): the feature's contribution per unit activation, f32[F, D]
    (a gather of decoder rows; no decode of one-hot codes)."""
    from jaxsae.sae.inference import decoder_rows as rows

    return rows(sae.params, jnp.asarray(features), sae.static)


def _batch_size(cfg, requested: int | None, n: int) -> int:
    """Features per batch: at most ``requested`` (default: logits of one batch <= 256 MB, and at
    most 1024), spread evenly over the batches (a multiple of 8) so the last is not mostly padding."""
    cap = int(requested) if requested else int(max(8, min(1024, (1 << 26) // cfg.vocab_size)))
    n_batches = -(-max(n, 1) // cap)
    even = -(-max(n, 1) // n_batches)
    return cap if requested else min(cap, -(-even // 8) * 8)


def _coefs(reading: str, mode: str, alpha: float, codes_pf, feats_f, max_acts):
    """f32[F, P]: the multiple of each feature's direction added at each position (module docstring)."""
    if reading == "A":
        if mode == "decoder":
            return jnp.broadcast_to(alpha * jnp.asarray(max_acts[feats_f])[:, None], (len(feats_f), codes_pf.shape[0]))
        return jnp.broadcast_to(alpha * jnp.max(codes_pf, axis=1)[None, :], (len(feats_f), codes_pf.shape[0]))
    a_fp = codes_pf[:, feats_f].T
    return (alpha - 1.0) * a_fp if reading == "B" else alpha * a_fp


def feature_scores(
    lm,
    sae,
    layer: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    alpha: float = 10.0,
    k: int = 1,
    features: Sequence[int] | None = None,
    mode: str = "additive",
    reading: str = "B",
    positions: str = "last",
    max_acts: np.ndarray | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    output_score: bool = True,
) -> dict[str, np.ndarray]:
    """ΔC_k (intervention ``reading``) and output score (reading A, ``mode``) of each feature (all
    latents when ``features`` is None), intervening at the prefix's ``positions``.

    Returns {"features": int[F], "delta_tc": f32[F], "output_score": f32[F]} (without
    "output_score", and without its logit-lens pass, when ``output_score`` is False); when the
    reading is not A, the output score's pass also gives reading A's ΔC_k, as "delta_tc_A"."""
    if mode not in MODES:
        raise UserError(f"unknown ΔTC mode {mode!r}; use one of {', '.join(MODES)}")
    if reading not in READINGS:
        raise UserError(f"unknown ΔTC reading {reading!r}; use one of {', '.join(READINGS)} (select.reading)")
    if positions not in POSITIONS:
        raise UserError(f"unknown ΔTC positions {positions!r}; use 'last' (the prefix's last position) or 'all'")
    if sae.d_in != lm.config.d_model:
        raise UserError(
            f"the SAE reads d_in={sae.d_in} but the model's residual is d_model={lm.config.d_model}; "
            "use the SAE trained on this model"
        )
    layer = lm.check_layer(layer)
    if k < 1:
        raise UserError("k must be >= 1 (the number of top probabilities in C_k)")
    feats = np.arange(sae.d_sae) if features is None else np.asarray(features, dtype=np.int64)
    if feats.size and (feats.min() < 0 or feats.max() >= sae.d_sae):
        raise UserError(f"feature ids must lie in [0, {sae.d_sae}); got {feats.min()}..{feats.max()}")
    a_needed = reading == "A" or output_score
    if mode == "decoder" and a_needed:
        if max_acts is None:
            raise UserError("mode='decoder' needs max_acts (per-feature maximum activations from the statistics pass)")
        max_acts = np.asarray(max_acts, np.float32)
        if max_acts.shape != (sae.d_sae,):
            raise UserError(f"max_acts must have shape ({sae.d_sae},), got {max_acts.shape}")
    cfg, params = lm.config, lm.params
    prefix_ids = jnp.asarray(np.asarray([lm.token_ids(prefix)], np.int32))
    cache, x_d, base = prefix_state(params, cfg, prefix_ids, layer)
    x_pd = prefix_residual(params, cfg, prefix_ids, layer) if positions == "all" else x_d[None]
    codes_pf = sae.encode(x_pd)  # [P, d_sae]: the codes the interventions read (P = 1 at the last position)
    n_pos = x_pd.shape[0]
    bs = _batch_size(cfg, batch_size, len(feats))
    if positions == "all" and not batch_size:
        bs = max(8, bs // n_pos // 8 * 8)  # the residual batch is P times larger
    dtc = np.zeros(len(feats), np.float32)
    dtc_a = np.zeros(len(feats), np.float32)  # reading A's ΔC, from the output score's pass
    out = np.zeros(len(feats), np.float32)
    batches = range(0, len(feats), bs)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="ΔTC", unit="batch", leave=False)

    def run(coef_fp, dirs_fd, lens):
        delta_fpd = coef_fp[:, :, None] * dirs_fd[:, None, :]
        if positions == "last":
            d, o = score_batch(params, cfg, layer, cache, x_d, delta_fpd[:, 0], lens, base, k)
        else:
            d, o = score_batch_all(params, cfg, layer, x_pd, delta_fpd, lens, base, k)
        # no intervention (e.g. a latent silent on the prefix under reading B): exactly no change
        return jnp.where(jnp.any(delta_fpd != 0, axis=(1, 2)), d, 0.0), o

    for s in batches:
        idx = feats[s : s + bs]
        n = len(idx)
        padded = np.concatenate([idx, np.full(bs - n, idx[0])]) if n < bs else idx  # one compiled shape
        rows = decoder_rows(sae, padded)
        unit = rows / jnp.maximum(jnp.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        a_dirs = unit if mode == "decoder" else rows
        lens = logit_lens_tokens(params, cfg, rows) if output_score else None
        d, o = run(_coefs(reading, mode, alpha, codes_pf, padded, max_acts), a_dirs if reading == "A" else rows,
                   lens if reading == "A" else None)
        if output_score and reading != "A":  # the output score keeps Arad's hook
            d_a, o = run(_coefs("A", mode, alpha, codes_pf, padded, max_acts), a_dirs, lens)
            dtc_a[s : s + n] = np.asarray(d_a)[:n]
        dtc[s : s + n] = np.asarray(d)[:n]
        if output_score:
            out[s : s + n] = np.asarray(o)[:n]
    bad = ~(np.isfinite(dtc) & np.isfinite(out))
    if bad.any():
        raise UserError(f"ΔTC: {int(bad.sum())} of {len(feats)} features score NaN or inf (first: latent "
                        f"{int(feats[bad][0])}); the SAE's decoder rows or the model's logits are not finite "
                        "(re-export the SAE, or load the model in float32)")
    result = {"features": feats, "delta_tc": dtc}
    if output_score and reading != "A":
        result["delta_tc_A"] = dtc_a
    return {**result, "output_score": out} if output_score else result


def delta_token_confidence(
    lm, sae, layer: int, *, prefix: str = DEFAULT_PREFIX, alpha: float = 10.0, k: int = 1,
    features: Sequence[int] | None = None, mode: str = "additive", reading: str = "B", positions: str = "last",
    max_acts: np.ndarray | None = None, batch_size: int | None = None, progress: bool = False,
) -> np.ndarray:
    """ΔC_k per feature, float32[n_features] (see the module docstring); the output score's
    logit-lens pass is skipped."""
    return feature_scores(
        lm, sae, layer, prefix=prefix, alpha=alpha, k=k, features=features, mode=mode, reading=reading,
        positions=positions, max_acts=max_acts, batch_size=batch_size, progress=progress, output_score=False,
    )["delta_tc"]
